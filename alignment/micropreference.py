"""micropreference: DPO, IPO, KTO and SimPO, four preference losses trained from one start.

DPO (microdpo.py) turned RLHF's reward model and RL loop into one classification loss on
preference pairs. Practitioners weigh three well-known alternatives against it, and each
changes one thing about DPO's loss:

    DPO    -log sigmoid(beta * m)               m = log-ratio margin of a pair, vs a reference
    IPO    (m - 1 / (2 tau))^2                  a squared loss with a finite target margin
    KTO    1 - sigmoid(beta * (r - z0))          single examples, good or bad, no pairs; the
           1 - sigmoid(beta * (z0 - r))          reference point z0 is an estimate of the KL
    SimPO  -log sigmoid(beta * (a_c - a_r) - gamma)   no reference model at all: a = log pi / |y|

This file pretrains one tiny GPT on names (microdpo's model, data and pretraining, copied), then
trains four copies of it, one per loss, on the same preference pairs (the longer of two names
with the same first letter is preferred), with the same optimiser, steps and learning rate,
and sets them side by side in one table: held-out preference accuracy, KL to the reference,
the length of the names they write, and the margin they end at. Three points are measured:
- IPO (Azar et al., 2023): with deterministic preferences, as here, DPO's loss has no finite
  minimum and its margin keeps growing; IPO's squared loss settles at its target 1 / (2 tau).
- KTO (Ethayarajh et al., 2024) learns from the same examples with the pairing thrown away,
  each name only labelled desirable or undesirable, and still ranks held-out pairs.
- SimPO (Meng et al., 2024) drops the reference: one model instead of two, and nothing in its
  loss holds the KL to the reference down.
In the run, between steps 50 and 100 DPO's mean held-out margin grows from 3.38 to 11.55 nats
while IPO's stays at 1.43 and 1.48 (the scale its least squares fits, E[m^2]/E[m], at 2.13
and 2.16 against the target 2); KTO ranks 87.5% of the held-out pairs right, DPO 90.5%;
SimPO ranks 99.0% right by its own reward, but its KL to the reference ends at 44.9 nats per
name against DPO's 5.7, and its names run to 12.3 letters (the samples it prints all open
with a run of z's).

Run: python alignment/micropreference.py    (about 43 s on the 2-core CI machine)
"""
import gc
import hashlib
import math
import operator
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request

# === HYPERPARAMETERS ===
# The policy is microdpo's: microgpt's model at half the width (1,328 parameters), pretrained
# for the same number of steps, so the start of all four runs is microdpo's start.
N_EMBD = 8         # width of every hidden vector
N_HEAD = 2         # attention heads, each 4 wide
N_LAYER = 1        # transformer blocks
BLOCK_SIZE = 16    # longest context: the longest name (15 letters) plus its start token
MLP_HIDDEN = 4 * N_EMBD
INIT_STD = 0.08    # small random weights: the first logits are near uniform
BETA1, BETA2, ADAM_EPS = 0.85, 0.99, 1e-8   # Adam, as in microgpt
LEARNING_RATE = 0.01    # pretraining
NUM_STEPS = 800         # pretraining steps, one name each
HELDOUT_SHARE = 0.1     # share of the names kept out of pretraining and of the training pairs
# Preference training: the same for all four methods, so that only the loss differs
PREF_STEPS = 100        # steps of each run; each training pair is used once
PREF_BATCH = 4          # preference pairs per step (KTO: 8 unpaired examples per step)
PREF_LEARNING_RATE = 0.004
# Each method's own knobs
DPO_BETA = 0.1          # TRL's default beta
IPO_TAU = 0.25          # IPO's regulariser; the target margin is 1 / (2 tau) = 2 nats
KTO_BETA = 0.1          # TRL's KTOConfig default
KTO_DESIRABLE_WEIGHT = 1.0     # lambda_D and lambda_U, the loss-aversion weights (TRL's
KTO_UNDESIRABLE_WEIGHT = 1.0   # defaults; equal here, since the data is half and half)
SIMPO_BETA = 2.0        # SimPO's repository: beta 2.0 and gamma / beta = 0.5 for Llama-3-8B-Base
SIMPO_GAMMA = 1.0
HELDOUT_PAIRS = 200     # pairs of held-out names for the accuracy and the margins
KL_SAMPLES = 200        # samples per KL estimate (and for the mean length of the samples)
LOG_EVERY = 20          # progress line every 20 steps

# === DATA ===
# Every no-magic script shares one download cache, so names.txt is fetched once.
# Set NO_MAGIC_DATA_DIR to use another folder (CI points it at a local copy).
DATA_URL = "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt"
DATA_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
DATA_FILE = "names.txt"


def data_dir():
    """The shared cache folder: $NO_MAGIC_DATA_DIR, else $XDG_CACHE_HOME/no-magic."""
    override = os.environ.get("NO_MAGIC_DATA_DIR")
    if override:
        return override
    cache_root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_root, "no-magic")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_dataset():
    """Return the path of a checksum-verified copy of DATA_FILE, downloading it if needed."""
    folder = data_dir()
    path = os.path.join(folder, DATA_FILE)
    cached_sha = sha256_of(path) if os.path.isfile(path) else None
    if cached_sha == DATA_SHA256:
        return path
    # Download beside the target and rename only after the checksum matches, so an
    # interrupted or corrupted download can never be mistaken for the real file.
    partial = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=folder, prefix=DATA_FILE + ".", suffix=".partial")
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(DATA_URL, timeout=30) as response:
            shutil.copyfileobj(response, out)
        if sha256_of(partial) != DATA_SHA256:
            raise OSError("the downloaded file failed its SHA-256 check")
        os.replace(partial, path)
    except OSError as error:  # URLError, timeouts and disk errors are all OSErrors
        if partial and os.path.exists(partial):
            os.remove(partial)
        if cached_sha is not None:
            # A file is there but it is not the expected one (another version, a truncated
            # copy): say exactly that, and leave the file alone.
            sys.exit(f"error: {path} does not match the expected SHA-256,\n"
                     f"and no fresh copy could be downloaded ({error}).\n"
                     f"  expected {DATA_SHA256}\n  found    {cached_sha}\n"
                     f"The file was left as it is. Replace it with a copy of {DATA_URL}\n"
                     f"(or set NO_MAGIC_DATA_DIR to a folder that holds the right {DATA_FILE}).")
        sys.exit(f"error: could not get {DATA_FILE} ({error}).\n"
                 f"Download {DATA_URL}\nand save it as {path}\n"
                 f"(or set NO_MAGIC_DATA_DIR to a folder that holds {DATA_FILE}).")
    return path


def load_names():
    with open(ensure_dataset(), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]



# === TOKENIZER ===
# Character level, as in microgpt: 26 letters plus one BOS token that both starts and ends a
# name, so "emma" is [BOS, e, m, m, a, BOS]. The model stops a name by predicting BOS, which
# is the one decision the preference in this file is about: a policy that wants longer names
# must learn to predict BOS later.


def build_vocab(names):
    chars = sorted(set("".join(names)))   # sorted: the same ids on every run
    return chars, len(chars)              # letters are ids 0..25, BOS is id 26


# === AUTOGRAD: THE VALUE CLASS ===
# A Value wraps one float and remembers its inputs (`_children`) with the local derivative of
# its output with respect to each (`_local_grads`), computed in the forward pass.
# backward() walks the graph from the loss to the leaves applying the chain rule,
#     dL/d(child) += dL/d(node) * d(node)/d(child)
# and the += lets a weight used at many positions collect gradient from every use.


class Value:
    __slots__ = ("data", "grad", "_children", "_local_grads")

    def __init__(self, data, children=(), local_grads=()):
        self.data = data
        self.grad = 0.0
        self._children = children
        self._local_grads = local_grads

    def __add__(self, other):
        # d(a + b)/da = 1, d(a + b)/db = 1. Plain numbers are wrapped so `x + 1` works.
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1.0, 1.0))

    def __mul__(self, other):
        # d(a * b)/da = b, d(a * b)/db = a: each input's slope is the other input's value
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, exponent):
        # d(x^k)/dx = k * x^(k-1); the exponent is a plain number, not a Value
        return Value(self.data ** exponent, (self,), (exponent * self.data ** (exponent - 1),))

    # The remaining arithmetic is built from the operations above, so it needs no new
    # derivatives: a - b = a + (-b), a / b = a * b^-1, and the reflected versions let a
    # plain number stand on the left (2 * x, 1 - x, 1 / x).
    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other ** -1.0

    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def __rsub__(self, other):
        return Value(other) - self

    def __rtruediv__(self, other):
        return Value(other) * self ** -1.0

    def tanh(self):
        # d tanh(a)/da = 1 - tanh(a)^2: reuse the forward result instead of recomputing
        t = math.tanh(self.data)
        return Value(t, (self,), (1.0 - t * t,))

    def exp(self):
        # e^a is its own derivative
        e = math.exp(self.data)
        return Value(e, (self,), (e,))

    def relu(self):
        # Passes positive inputs through with slope 1 and blocks negative ones (slope 0)
        return Value(max(0.0, self.data), (self,), (1.0 if self.data > 0 else 0.0,))

    def log(self):
        # Clamped log: log(max(x, 1e-10)) never returns -inf. Below the clamp the function is
        # flat, so its derivative there is 0, not 1/x.
        if self.data > 1e-10:
            return Value(math.log(self.data), (self,), (1.0 / self.data,))
        return Value(math.log(1e-10), (self,), (0.0,))

    def backward(self):
        # Order the graph so that every node comes after all of its children (a topological
        # order), then visit it in reverse. The walk uses an explicit stack rather than
        # recursion: a recursive version overflows Python's ~1000-frame limit on long graphs.
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                order.append(node)
                continue
            if node in visited:
                continue
            visited.add(node)
            stack.append((node, True))
            for child in node._children:
                # A leaf (no children: a parameter, an input, a constant) passes nothing
                # on, so it needs no place in the order; its parents still add to its .grad.
                if child._children and child not in visited:
                    stack.append((child, False))
        self.grad = 1.0
        for node in reversed(order):
            node_grad = node.grad
            for child, local_grad in zip(node._children, node._local_grads):
                child.grad += local_grad * node_grad

    def __repr__(self):
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"


# --- AUTOGRAD DIFFERENCES IN THIS SCRIPT ---
# This Value class follows the canonical interface (docs/autograd-interface.md) exactly.
# On top of it this script adds fused nodes, as plain functions (see FUSED NODES):
# - dot(): a whole dot product (one neuron of a linear layer) as one node
# - softmax(): each attention weight as one node over all the scores
# - log_prob(): log softmax(z)[y], one node over all the logits
# - rms_scale(): the 1/RMS factor of RMSNorm as one node
# - fused_sum(): a sum of many Values as one node (a sequence's log-probability, and a
#   batch's mean loss as fused_sum(...) / n in mean_node())
# - dpo_loss(), ipo_loss(), kto_loss(), simpo_loss(): each preference loss of one pair (or,
#   for KTO, one example) as one node, with its hand-derived gradient (see FOUR PREFERENCE
#   LOSSES), each beside a naive form built from Value operations
# The model helpers also accept plain floats and then compute plain floats: the frozen
# reference model, sampling and evaluation need no gradients and run without any Value.

# === FUSED NODES: THE SAME MATH, FEWER NODES ===
# A dot product built from + and * is 2n - 1 nodes; its derivatives are known in closed form,
#     y = sum_i w_i * x_i   =>   dy/dw_i = x_i,   dy/dx_i = w_i
# so one node with 2n children gives the same value and the same gradients. naive_dot() is
# the slow form, kept beside it; the tests check that every fused node here gives the same
# values and gradients as its naive form built from Value operations.


def naive_dot(weights, inputs):
    total = weights[0] * inputs[0]
    for w, x in zip(weights[1:], inputs[1:]):
        total = total + w * x
    return total


def dot(weights, inputs):
    if not isinstance(weights[0], Value) and not isinstance(inputs[0], Value):
        return sum(map(operator.mul, weights, inputs))   # plain floats: no graph at all
    return Value(sum(w.data * x.data for w, x in zip(weights, inputs)),
                 (*weights, *inputs),
                 (*[x.data for x in inputs], *[w.data for w in weights]))


def data_of(number):
    return number.data if isinstance(number, Value) else number


def linear(inputs, weight_rows):
    return [dot(row, inputs) for row in weight_rows]   # y = W x, no bias


def shifted_exps(numbers):
    # exp(z_i - m) with m = max(z): the max cancels in a softmax, and exp() cannot overflow.
    top = max(numbers)
    return [math.exp(z - top) for z in numbers], top


def softmax(logits):
    # p_i = exp(z_i - m) / sum_j exp(z_j - m),   dp_i/dz_j = p_i * ([i == j] - p_j)
    exps, _ = shifted_exps([data_of(z) for z in logits])
    total = sum(exps)
    probs = [e / total for e in exps]
    if not isinstance(logits[0], Value):
        return probs
    logits = tuple(logits)
    return [Value(p_i, logits, tuple(p_i * ((i == j) - p_j) for j, p_j in enumerate(probs)))
            for i, p_i in enumerate(probs)]


def log_prob(logits, target):
    # log p_y = log softmax(z)[y] = z_y - logsumexp(z)    (z = logits, y = target)
    # d log p_y / dz_j = [j == y] - p_j. This is microgpt's cross-entropy with the sign
    # flipped: preference losses work with log-probabilities, not losses.
    exps, top = shifted_exps([data_of(z) for z in logits])
    total = sum(exps)
    value = data_of(logits[target]) - top - math.log(total)
    if not isinstance(logits[0], Value):
        return value
    return Value(value, tuple(logits), tuple((j == target) - e / total for j, e in enumerate(exps)))


def rms_scale(x):
    # s = (mean_j x_j^2 + eps)^(-1/2),   ds/dx_j = -s^3 * x_j / n
    n = len(x)
    s = (sum(data_of(xi) ** 2 for xi in x) / n + 1e-5) ** -0.5
    if not isinstance(x[0], Value):
        return s
    return Value(s, tuple(x), tuple(-s ** 3 * xi.data / n for xi in x))


def rmsnorm(x):
    s = rms_scale(x)   # Signpost: real RMSNorm also has a learned gain per channel
    return [xi * s for xi in x]


def relu(h):
    return h.relu() if isinstance(h, Value) else max(0.0, h)


def fused_sum(terms):
    # y = sum_i t_i,  dy/dt_i = 1: one node, however many terms (a chain of + would be as
    # deep as the sum is long)
    if not terms or not isinstance(terms[0], Value):
        return float(sum(terms))
    return Value(sum(t.data for t in terms), tuple(terms), (1.0,) * len(terms))


# === MODEL: MICROGPT'S TRANSFORMER, SMALLER ===
# The same block as foundational/microgpt.py, with its departures from GPT-2 (RMSNorm
# without a gain instead of LayerNorm, a norm on the embeddings, ReLU, no biases, no final
# norm, no weight tying; its comments say why): causal attention through a growing
# key/value cache, an MLP, residual connections, one position at a time. It runs on a model
# of Values (the policy being trained) or of plain floats (the frozen reference, sampling,
# evaluation); the arithmetic is the same, and a test checks that the numbers are too.


def matrix(rows, cols):
    return [[Value(random.gauss(0.0, INIT_STD)) for _ in range(cols)] for _ in range(rows)]


def init_model(vocab_size):
    model = {"wte": matrix(vocab_size, N_EMBD), "wpe": matrix(BLOCK_SIZE, N_EMBD),
             "lm_head": matrix(vocab_size, N_EMBD)}
    for layer in range(N_LAYER):
        for name in ("wq", "wk", "wv", "wo"):
            model[f"layer{layer}.{name}"] = matrix(N_EMBD, N_EMBD)
        model[f"layer{layer}.fc1"] = matrix(MLP_HIDDEN, N_EMBD)
        model[f"layer{layer}.fc2"] = matrix(N_EMBD, MLP_HIDDEN)
    # 27*8 (wte) + 16*8 (wpe) + 27*8 (lm_head) + 4*8*8 (attention) + 2*32*8 (MLP) = 1,328
    return model


def parameters(model):
    return [p for mat in model.values() for row in mat for p in row]


def frozen_copy(model):
    # Plain floats: a snapshot that no optimiser step can move and no backward() can reach
    return {name: [[data_of(p) for p in row] for row in mat] for name, mat in model.items()}


def trainable_copy(floats):
    return {name: [[Value(p) for p in row] for row in mat] for name, mat in floats.items()}


def gpt_step(model, token_id, pos, keys, values):
    """Logits for the token after `token_id` at position `pos` (keys/values: the caches)."""
    x = rmsnorm([t + p for t, p in zip(model["wte"][token_id], model["wpe"][pos])])
    head_dim = N_EMBD // N_HEAD
    for layer in range(N_LAYER):
        residual = x
        x = rmsnorm(x)
        q = linear(x, model[f"layer{layer}.wq"])
        keys[layer].append(linear(x, model[f"layer{layer}.wk"]))
        values[layer].append(linear(x, model[f"layer{layer}.wv"]))
        attended = []
        for h in range(0, N_EMBD, head_dim):
            # weight_t = softmax_t(q . k_t / sqrt(head_dim)); output = sum_t weight_t * v_t
            scores = [dot(q[h:h + head_dim], k[h:h + head_dim]) * (1.0 / math.sqrt(head_dim))
                      for k in keys[layer]]
            weights = softmax(scores)
            for i in range(h, h + head_dim):
                attended.append(dot(weights, [v[i] for v in values[layer]]))
        x = [a + r for a, r in zip(linear(attended, model[f"layer{layer}.wo"]), residual)]
        residual = x
        hidden = [relu(h) for h in linear(rmsnorm(x), model[f"layer{layer}.fc1"])]
        x = [m + r for m, r in zip(linear(hidden, model[f"layer{layer}.fc2"]), residual)]
    return linear(x, model["lm_head"])


def sequence_log_prob(model, tokens, prompt_length):
    """log pi(y | x): the sum of the log-probabilities of the tokens after the prompt."""
    # A sequence's probability is the product of its next-token probabilities (the chain rule
    # of probability), so its log-probability is their sum:
    #     log pi(y | x) = sum_{t >= len(x)} log p(tokens[t] | tokens[:t])
    # The prompt's own tokens are given, not generated, so they are not counted.
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    terms = []
    for pos in range(min(BLOCK_SIZE, len(tokens) - 1)):
        logits = gpt_step(model, tokens[pos], pos, keys, values)
        if pos + 1 >= prompt_length:
            terms.append(log_prob(logits, tokens[pos + 1]))
    return fused_sum(terms)


# === PRETRAINING: A POLICY TO START FROM ===
# Preference tuning starts from a model that already writes names; it does not teach it to
# write. So the policy first learns names.txt as microgpt does: one name per step, loss =
# mean over the name's positions of -log p(next token), Adam with a learning rate decaying
# linearly to 0. This is done once; the frozen result is the reference and every run's start.


def adam_step(params, state, lr):
    # m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g^2 ; p -= lr * m_hat / (sqrt(v_hat) + eps)
    state["t"] += 1
    m, v, t = state["m"], state["v"], state["t"]
    for i, p in enumerate(params):
        m[i] = BETA1 * m[i] + (1.0 - BETA1) * p.grad
        v[i] = BETA2 * v[i] + (1.0 - BETA2) * p.grad * p.grad
        m_hat, v_hat = m[i] / (1.0 - BETA1 ** t), v[i] / (1.0 - BETA2 ** t)
        p.data -= lr * m_hat / (math.sqrt(v_hat) + ADAM_EPS)
        p.grad = 0.0   # backward() adds into .grad, so it must be emptied after every step


def new_adam_state(params):
    return {"m": [0.0] * len(params), "v": [0.0] * len(params), "t": 0}


def pretrain(model, names, encode, start):
    params = parameters(model)
    state = new_adam_state(params)
    losses = []
    for step in range(NUM_STEPS):
        tokens = encode(names[step % len(names)])
        # mean per-token loss = -log pi(name) / number of predictions (prompt = BOS alone)
        predictions = min(BLOCK_SIZE, len(tokens) - 1)
        loss = sequence_log_prob(model, tokens, 1) * (-1.0 / predictions)
        loss.backward()
        adam_step(params, state, LEARNING_RATE * (1.0 - step / NUM_STEPS))
        losses.append(loss.data)
        if (step + 1) % 200 == 0 or step + 1 == NUM_STEPS:
            recent = losses[-200:]
            print(f"pretrain step {step + 1:5d}/{NUM_STEPS} | loss {sum(recent) / len(recent):.4f}"
                  f" | {time.time() - start:.1f}s")


def bigram_loss(train_tokens, heldout_tokens, vocab_size):
    # The simplest model worth beating: P(next | current) with add-one smoothing, counted on
    # every pretraining name. Mean -log p per held-out token.
    counts = [[1] * vocab_size for _ in range(vocab_size)]
    for tokens in train_tokens:
        for current, following in zip(tokens, tokens[1:]):
            counts[current][following] += 1
    log_probs = [[math.log(c / sum(row)) for c in row] for row in counts]
    pairs = [pair for tokens in heldout_tokens for pair in zip(tokens, tokens[1:])]
    return -sum(log_probs[a][b] for a, b in pairs) / len(pairs)


# === PREFERENCE DATA ===
# A preference pair is (prompt x, chosen y_c, rejected y_r). The prompt is a first letter;
# the two completions are the rest of two real names that start with it, and the longer
# name is chosen (two names of equal length make no pair). In real preference data a person
# or a model judges which completion is better; here the judge is a rule, so that the run can
# check exactly whether the policy learned it. Every name in a held-out pair is a held-out
# name, never seen in pretraining or in a training pair.
PROMPT_LENGTH = 2   # tokens of the prompt: BOS and the first letter


def make_pairs(names, count, rng):
    by_letter = {}
    for name in names:
        by_letter.setdefault(name[0], []).append(name)
    starts = [name for name in names if len(by_letter[name[0]]) > 1]
    pairs = []
    while len(pairs) < count:
        first = rng.choice(starts)
        second = rng.choice(by_letter[first[0]])
        if len(first) != len(second):   # a tie says nothing about length: skip it
            pairs.append((first, second) if len(first) > len(second) else (second, first))
    return pairs


# === FOUR PREFERENCE LOSSES ===
# Notation for all four: x = the prompt (PROMPT_LENGTH tokens: BOS and a first letter),
# y = a completion (the rest of the name and its closing BOS), log pi(y) = the policy's
# sequence log-probability (sequence_log_prob), log pi_ref(y) = the frozen reference's,
# r(y) = log pi(y) - log pi_ref(y), the log-ratio; for a pair (chosen c, rejected r):
#     m = r(c) - r(rejected) = (log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r))
# In the code: logp_chosen, logp_rejected (Values, the policy's), ref_chosen, ref_rejected
# (plain floats, computed once before training), margin = m. At the start pi = pi_ref, so
# every r(y) and every m is exactly 0.
#
# --- 1. DPO (Rafailov et al., 2023), as derived in microdpo.py ---
#     L = -log sigmoid(beta * m),      dL/dm = -beta * sigmoid(-beta * m)
# Bradley-Terry's likelihood of the observed preference, with the implicit reward
# beta * r(y). When every pair is ordered the same way by a rule, as here, the loss falls
# toward 0 as m grows and never reaches it: no finite m is best, the gradient only fades.
#
# --- 2. IPO (Azar et al., 2023, "A General Theoretical Paradigm to Understand Learning from
# Human Preferences") ---
# Azar et al. show that DPO's reliance on Bradley-Terry is what lets the margin run off: with
# deterministic preferences the Bradley-Terry reward difference is infinite, whatever beta,
# so the KL regularisation stops acting. Their Identity-PO objective regularises toward the
# reference without Bradley-Terry, and on a data set of pairs it comes down to regressing
# the margin onto a fixed target (their Eq. 17):
#     L = (m - 1 / (2 tau))^2,         dL/dm = 2 * (m - 1 / (2 tau))
# A pair below the target is pushed up, a pair above it is pushed DOWN: the loss has a
# minimum at m = 1 / (2 tau), 2 nats at tau = 0.25. tau plays beta's role: a larger tau, a
# smaller target, a policy nearer the reference.
# What settles, exactly: the loss is the mean of (m_i - t)^2 over the pairs (t = the target),
# and no policy here can give every pair the same margin, since a pair whose names differ
# by one letter gets a smaller margin than one that differs by four. Scaling every margin by
# one factor c changes the loss at c = 1 at the rate 2 * sum_i (m_i - t) * m_i, which is 0
# where sum_i m_i^2 / sum_i m_i = t. So at IPO's optimum, as far as the policy can scale
# how strongly it prefers length, the ratio E[m^2] / E[m] (fitted_margin()) sits at the
# target while the plain mean sits below it, at t * E[m] / E[m^2]. The run prints both.
# Signpost: TRL's DPOTrainer has this as loss_type="ipo", with beta standing for tau, but it
# divides each completion's log-ratio by its number of tokens before taking m (its code says
# the IPO paper does not discuss this normalisation and that the choice was confirmed with
# the IPO authors). Here m is the sum over tokens, as Eq. 17 is written, so the IPO margin
# and the DPO margin are the same quantity and can be compared on one scale.
#
# --- 3. KTO (Ethayarajh et al., 2024, "KTO: Model Alignment as Prospect Theoretic
# Optimization") ---
# KTO needs no pairs: each example is one completion labelled desirable or undesirable
# (a thumbs up or down). Its value of an example compares the implicit reward with a
# reference point z0, as Kahneman and Tversky's prospect theory values an outcome as a gain
# or a loss relative to a reference point:
#     desirable:    L = lambda_D * (1 - sigmoid(beta * (r(y) - z0)))
#     undesirable:  L = lambda_U * (1 - sigmoid(beta * (z0 - r(y))))
#     z0 = KL(pi(.|x) || pi_ref(.|x)), estimated on the batch, clamped at 0, no gradient
# lambda_D and lambda_U (KTO_DESIRABLE_WEIGHT, KTO_UNDESIRABLE_WEIGHT) weigh gains against
# losses: loss aversion. z0 is the policy's drift from the reference: a desirable example
# counts as a gain only when its reward beats the drift, and an undesirable one as a loss
# only when its reward is above it. No gradient flows through z0; it moves the point where
# each example's sigmoid is steepest.
# How to estimate the KL on a batch. The paper and TRL pair each prompt x in the batch with
# the completion y' of another example (TRL shifts the completions by one place) and average
# log pi(y'|x) - log pi_ref(y'|x): cheap, since y' is already in the batch, but y' is a name
# from the data, not a draw from pi, so this only stands in for the KL. Here it fails: the
# reference was pretrained on these very names, and a policy moving toward long names loses
# likelihood on the data's short ones, so the mismatched average comes out below 0 and the
# clamp holds z0 at 0 (the run prints it for the final KTO policy). This file therefore
# estimates z0 as the KL is defined, the way estimate_kl() does: one completion sampled from
# the policy for each prompt in the batch, its log-ratio averaged, clamped at 0.
# The gradients, with s = sigmoid(beta * (r - z0)) for a desirable example and
# s = sigmoid(beta * (z0 - r)) for an undesirable one, and d sigmoid(z)/dz = s * (1 - s):
#     desirable:    dL/dr = -lambda_D * beta * s * (1 - s)    (push r up)
#     undesirable:  dL/dr = +lambda_U * beta * s * (1 - s)    (push r down)
# Each is largest where the example sits at the reference point and fades on both sides.
# Signpost: TRL's KTOTrainer computes the mismatched completions' log-ratio under
# torch.no_grad(), takes its batch mean detached and clamped at 0 as z0, then the losses
# desirable_weight * (1 - sigmoid(beta * (r - kl))) and undesirable_weight *
# (1 - sigmoid(beta * (kl - r))), both weights 1.0 by default; its documentation advises
# weights that put desirable_weight * #desirable : undesirable_weight * #undesirable
# between 1:1 and 4:3. The paper writes the same loss as lambda_y - v(x, y).
#
# --- 4. SimPO (Meng et al., 2024, "SimPO: Simple Preference Optimization with a
# Reference-Free Reward") ---
# SimPO's implicit reward is the policy's average log-probability per token, with no
# reference model at all, and its Bradley-Terry loss asks for a margin of at least gamma:
#     a(y) = log pi(y) / |y|      (|y| = completion tokens)
#     L = -log sigmoid(beta * (a(c) - a(r)) - gamma)
#     dL/dlog pi(c) = -beta * sigmoid(-z) / |c|,  dL/dlog pi(r) = +beta * sigmoid(-z) / |r|
# with z = beta * (a(c) - a(r)) - gamma. The average keeps a long completion from
# scoring low just for having more tokens, which matters here, where the longer name is the
# preferred one: under the sum each extra letter costs about 2.4 nats of log-probability
# (the pretrained policy's loss per token). Nothing anchors the policy: the KL to the
# reference is whatever training makes it.
# Signpost: TRL has SimPO in CPOTrainer (now trl.experimental.cpo) with loss_type="simpo",
# cpo_alpha=0 (else a behaviour-cloning term is added) and simpo_gamma; it computes
# -logsigmoid(beta * ((a(c) - a(r)) - simpo_gamma / beta)), the same loss.


def softplus(z):
    # log(1 + e^z), written so that exp() never overflows: max(z, 0) + log(1 + e^-|z|)
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def sigmoid(z):
    return 0.5 * (1.0 + math.tanh(0.5 * z))   # = 1 / (1 + e^-z), with no overflow


# Each loss is one fused node over the policy's log-probabilities (the references are plain
# floats), with the hand-derived gradient above; a naive form built from Value operations
# stands beside each, and the tests check both against each other and finite differences.


def dpo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, beta):
    """-log sigmoid(beta * margin) as one node."""
    margin = (logp_chosen.data - ref_chosen) - (logp_rejected.data - ref_rejected)
    slope = beta * sigmoid(-beta * margin)   # -dL/dm
    # -log s(z) = log(1 + e^-z) = softplus(-z)
    return Value(softplus(-beta * margin), (logp_chosen, logp_rejected), (-slope, slope))


def naive_dpo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, beta):
    margin = (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected)
    return -((1.0 + (-beta * margin).exp()) ** -1.0).log()


def ipo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, tau):
    """(margin - 1 / (2 tau))^2 as one node."""
    margin = (logp_chosen.data - ref_chosen) - (logp_rejected.data - ref_rejected)
    gap = margin - 1.0 / (2.0 * tau)   # Eq. 17's target margin is 1 / (2 tau)
    return Value(gap * gap, (logp_chosen, logp_rejected), (2.0 * gap, -2.0 * gap))


def naive_ipo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, tau):
    margin = (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected)
    return (margin - 1.0 / (2.0 * tau)) ** 2


def kto_loss(logp, ref, z0, desirable, beta, weight):
    """weight * (1 - sigmoid(beta * (r - z0))) for a desirable example (z0 - r if not)."""
    sign = 1.0 if desirable else -1.0
    s = sigmoid(beta * sign * ((logp.data - ref) - z0))
    return Value(weight * (1.0 - s), (logp,), (-sign * weight * beta * s * (1.0 - s),))


def naive_kto_loss(logp, ref, z0, desirable, beta, weight):
    sign = 1.0 if desirable else -1.0
    z = beta * sign * ((logp - ref) - z0)
    return weight * (1.0 - (1.0 + (-z).exp()) ** -1.0)


def simpo_loss(logp_chosen, len_chosen, logp_rejected, len_rejected, beta, gamma):
    """-log sigmoid(beta * (logp_c / |c| - logp_r / |r|) - gamma) as one node."""
    z = beta * (logp_chosen.data / len_chosen - logp_rejected.data / len_rejected) - gamma
    weight = beta * sigmoid(-z)
    return Value(softplus(-z), (logp_chosen, logp_rejected),
                 (-weight / len_chosen, weight / len_rejected))


def naive_simpo_loss(logp_chosen, len_chosen, logp_rejected, len_rejected, beta, gamma):
    z = beta * (logp_chosen * (1.0 / len_chosen) - logp_rejected * (1.0 / len_rejected)) - gamma
    return -((1.0 + (-z).exp()) ** -1.0).log()


def completion_length(tokens):
    # |y|: the tokens sequence_log_prob() scores after the prompt (letters and closing BOS)
    return min(BLOCK_SIZE, len(tokens) - 1) - (PROMPT_LENGTH - 1)


def mean_node(terms):
    # The batch loss is the mean over its terms: a fused sum times 1/n, one node
    return fused_sum(terms) * (1.0 / len(terms))


# === ONE STEP OF EACH METHOD ===
# Each returns the batch's loss (a Value) and the number its progress line and curve show.
# A paired batch is a list of (chosen, rejected, ref_chosen, ref_rejected); the log-ratio
# margins it returns are measured before the step's update, on pairs not yet trained on.


def policy_log_probs(policy, chosen, rejected):
    return (sequence_log_prob(policy, chosen, PROMPT_LENGTH),
            sequence_log_prob(policy, rejected, PROMPT_LENGTH))


def dpo_step(policy, batch):
    terms, margins = [], []
    for chosen, rejected, ref_chosen, ref_rejected in batch:
        logp_chosen, logp_rejected = policy_log_probs(policy, chosen, rejected)
        terms.append(dpo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, DPO_BETA))
        margins.append((logp_chosen.data - ref_chosen) - (logp_rejected.data - ref_rejected))
    return mean_node(terms), sum(margins) / len(margins)


def ipo_step(policy, batch):
    terms, margins = [], []
    for chosen, rejected, ref_chosen, ref_rejected in batch:
        logp_chosen, logp_rejected = policy_log_probs(policy, chosen, rejected)
        terms.append(ipo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, IPO_TAU))
        margins.append((logp_chosen.data - ref_chosen) - (logp_rejected.data - ref_rejected))
    return mean_node(terms), sum(margins) / len(margins)


def simpo_step(policy, batch):
    # The references' log-probabilities are in the batch but SimPO never reads them
    terms, margins = [], []
    for chosen, rejected, _, _ in batch:
        logp_chosen, logp_rejected = policy_log_probs(policy, chosen, rejected)
        len_chosen, len_rejected = completion_length(chosen), completion_length(rejected)
        terms.append(simpo_loss(logp_chosen, len_chosen, logp_rejected, len_rejected,
                                SIMPO_BETA, SIMPO_GAMMA))
        margins.append(logp_chosen.data / len_chosen - logp_rejected.data / len_rejected)
    return mean_node(terms), sum(margins) / len(margins)


def kto_reference_point(policy_floats, reference, prompts, bos):
    """z0: the mean log-ratio of one completion sampled from pi for each prompt, at least 0."""
    # Plain floats: z0 is a number the loss compares against, not something to train.
    log_ratios = []
    for prompt in prompts:
        tokens, logp_policy = sample(policy_floats, prompt, bos)
        log_ratios.append(logp_policy - sequence_log_prob(reference, tokens, PROMPT_LENGTH))
    mean_ratio = sum(log_ratios) / len(log_ratios)
    # Clamped at 0, as TRL clamps it; a NaN stays NaN, where max(0.0, nan) would give 0.0.
    return mean_ratio if math.isnan(mean_ratio) else max(0.0, mean_ratio)


def kto_step(policy, examples, reference, bos):
    """A KTO batch is a list of (tokens, ref, desirable): single names, each with its label."""
    prompts = [tokens[:PROMPT_LENGTH] for tokens, _, _ in examples]
    z0 = kto_reference_point(frozen_copy(policy), reference, prompts, bos)
    terms = []
    for tokens, ref, desirable in examples:
        weight = KTO_DESIRABLE_WEIGHT if desirable else KTO_UNDESIRABLE_WEIGHT
        terms.append(kto_loss(sequence_log_prob(policy, tokens, PROMPT_LENGTH), ref, z0,
                              desirable, KTO_BETA, weight))
    return mean_node(terms), z0


def kto_batches(pair_batches, rng):
    """The same examples as the pairs, with the pairing thrown away."""
    # Unpairing, as TRL's unpair_preference_dataset does: each pair becomes one desirable
    # and one undesirable example. The shuffle then scatters the two halves of a pair across
    # different batches. Each batch keeps the pairs' count of sequences, 2 * PREF_BATCH.
    examples = [(tokens, ref, desirable) for chosen, rejected, ref_c, ref_r in
                (pair for batch in pair_batches for pair in batch)
                for tokens, ref, desirable in ((chosen, ref_c, True), (rejected, ref_r, False))]
    rng.shuffle(examples)
    size = 2 * PREF_BATCH
    return [examples[i:i + size] for i in range(0, len(examples), size)]


def mismatched_log_ratio(policy_floats, reference, examples):
    """TRL's KL estimate, unclamped: example j's prompt with example j-1's completion."""
    log_ratios = []
    for j, (tokens, _, _) in enumerate(examples):
        other = examples[j - 1][0]
        joined = tokens[:PROMPT_LENGTH] + other[PROMPT_LENGTH:]
        log_ratios.append(sequence_log_prob(policy_floats, joined, PROMPT_LENGTH)
                          - sequence_log_prob(reference, joined, PROMPT_LENGTH))
    return sum(log_ratios) / len(log_ratios)


# === PREFERENCE TRAINING: ONE LOOP, FOUR LOSSES ===
# Everything but the loss is shared: the start (a trainable copy of the pretrained policy),
# the pairs and their order, the optimiser (microgpt's Adam at a constant rate; TRL trains
# with AdamW and a schedule), the steps and the learning rate.


def train(name, step_fn, start_floats, batches, start):
    policy = trainable_copy(start_floats)
    params = parameters(policy)
    state = new_adam_state(params)
    losses, curve, middle = [], [], None
    for step in range(PREF_STEPS):
        loss, tracked = step_fn(policy, batches[step])
        loss.backward()
        adam_step(params, state, PREF_LEARNING_RATE)
        losses.append(loss.data)
        curve.append(tracked)
        if step + 1 == PREF_STEPS // 2:
            middle = frozen_copy(policy)   # the policy halfway, for the margin's growth
        if (step + 1) % LOG_EVERY == 0 or step + 1 == PREF_STEPS:
            window = slice(-LOG_EVERY, None)
            label = "z0" if name == "KTO" else "margin"
            print(f"{name:<5} step {step + 1:4d}/{PREF_STEPS} | loss "
                  f"{sum(losses[window]) / len(losses[window]):.4f} | {label} "
                  f"{sum(curve[window]) / len(curve[window]):+.3f} | {time.time() - start:.1f}s")
    return {"policy": frozen_copy(policy), "middle": middle, "losses": losses, "curve": curve}


# === EVALUATION ===


def heldout_margins(policy, pairs):
    """For each held-out pair: the log-ratio margin m, and SimPO's a(c) - a(r)."""
    log_ratio, average = [], []
    for chosen, rejected, ref_chosen, ref_rejected in pairs:
        logp_chosen = sequence_log_prob(policy, chosen, PROMPT_LENGTH)
        logp_rejected = sequence_log_prob(policy, rejected, PROMPT_LENGTH)
        log_ratio.append((logp_chosen - ref_chosen) - (logp_rejected - ref_rejected))
        average.append(logp_chosen / completion_length(chosen)
                       - logp_rejected / completion_length(rejected))
    return log_ratio, average


def mean_and_error(xs):
    """The mean of xs and its standard error, standard deviation / sqrt(n)."""
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, 0.0   # one number has no spread to measure
    spread = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    return mean, spread / math.sqrt(len(xs))


def fitted_margin(margins):
    """E[m^2] / E[m]: the common scale of the margins that IPO's least squares fits to t."""
    return sum(m * m for m in margins) / sum(margins)


def completion_kl(policy, reference, prompts, bos):
    """KL(pi(.|x) || pi_ref(.|x)) per completion over the prompts, by sampling, with its
    standard error: what KTO's reference point z0 stands for."""
    log_ratios = []
    for i in range(KL_SAMPLES):
        tokens, logp_policy = sample(policy, prompts[i % len(prompts)], bos)
        log_ratios.append(logp_policy - sequence_log_prob(reference, tokens, PROMPT_LENGTH))
    return mean_and_error(log_ratios)


def share_positive(xs):
    # A margin of exactly 0 (a tie, as every margin is before training) is not a right ranking
    return sum(x > 0 for x in xs) / len(xs)


# === SAMPLING AND THE KL TO THE REFERENCE ===
# Temperature 1: the KL estimate needs names drawn from pi itself, and the mean length should
# describe the policy's own distribution, not a sharpened one.


def sample(model, prompt, bos):
    """A completion drawn from a float model after `prompt`, as the whole token list, with
    the log-probability of the tokens after the prompt. prompt = [BOS] draws a whole name."""
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    tokens, terms = list(prompt), []
    for pos in range(len(prompt) - 1):   # the prompt fills the key/value caches
        gpt_step(model, tokens[pos], pos, keys, values)
    for pos in range(len(prompt) - 1, BLOCK_SIZE):
        logits = gpt_step(model, tokens[-1], pos, keys, values)
        weights, top = shifted_exps(logits)
        token = random.choices(range(len(weights)), weights=weights)[0]
        terms.append(logits[token] - top - math.log(sum(weights)))   # log softmax(logits)[token]
        tokens.append(token)
        if token == bos:
            break
    # A name that reaches BLOCK_SIZE letters without BOS is cut there; its log-probability
    # (and the reference's, computed on the same tokens) covers the letters drawn. The terms
    # are the ones log_prob() computes and are added up as sequence_log_prob() adds them
    # (fused_sum), so a model scored against itself gives a log-ratio of exactly 0 on any
    # Python (sum() of floats rounds differently from a chain of += since Python 3.12).
    return tokens, fused_sum(terms)


def estimate_kl(policy, reference, bos):
    """KL(pi || pi_ref) per name from KL_SAMPLES names sampled from pi; also those names."""
    # KL(pi || pi_ref) = E_{y ~ pi}[ log pi(y) - log pi_ref(y) ]: draw names from the policy
    # and average the log-ratio. The mean is an unbiased estimate of the KL per name; its
    # standard error (standard deviation / sqrt(KL_SAMPLES)) is printed beside it. Names cut
    # at BLOCK_SIZE letters count as one outcome under both models, so the estimate is the KL
    # between the two distributions over names of at most BLOCK_SIZE letters.
    log_ratios, names = [], []
    for _ in range(KL_SAMPLES):
        tokens, logp_policy = sample(policy, [bos], bos)
        log_ratios.append(logp_policy - sequence_log_prob(reference, tokens, 1))
        names.append(tokens[1:-1] if tokens[-1] == bos else tokens[1:])
    kl, kl_error = mean_and_error(log_ratios)
    return kl, kl_error, names


# === ASCII PICTURES ===


def margin_picture(series, target, width=50, height=10):
    """Several curves on one grid (bucket means), with a dashed line at the target."""
    width = min(width, min(len(s) for _, s in series))
    bucketed = []
    for mark, values in series:
        edges = [int(i * len(values) / width) for i in range(width + 1)]
        bucketed.append((mark, [sum(values[a:b]) / (b - a) for a, b in zip(edges, edges[1:])]))
    low = min(0.0, min(min(p) for _, p in bucketed))
    high = max(target, max(max(p) for _, p in bucketed))
    step = (high - low) / (height - 1)
    grid = [[" "] * width for _ in range(height)]
    target_row = round((high - target) / step)
    grid[target_row] = ["-"] * width
    for mark, points in bucketed:
        for col, p in enumerate(points):
            grid[round((high - p) / step)][col] = mark
    return "\n".join(f"{high - r * step:7.2f} |{''.join(row)}" for r, row in
                     enumerate(grid)) + "\n        +" + "-" * width


def gap_in_standard_errors(a, error_a, b, error_b):
    """(a - b) / sqrt(e_a^2 + e_b^2): a difference of two independent estimates in units of
    its own sampling noise; NaN when neither has any noise, which fails every row."""
    spread = math.sqrt(error_a ** 2 + error_b ** 2)
    return (a - b) / spread if spread > 0.0 else float("nan")


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("DPO: held-out pairs ranked right", "dpo_accuracy", ">", 0.75),
    ("IPO: held-out pairs ranked right", "ipo_accuracy", ">", 0.75),
    ("KTO: held-out pairs ranked right", "kto_accuracy", ">", 0.75),
    ("SimPO: held-out pairs ranked right (its reward)", "simpo_accuracy", ">", 0.75),
    ("IPO: |held-out E[m^2]/E[m] - 1/(2 tau)|, nats", "ipo_margin_error", "<", 0.5),
    ("DPO: held-out margin, end minus middle, in s.e.", "dpo_margin_growth_z", ">", 3.0),
    ("DPO accuracy minus KTO accuracy", "kto_accuracy_gap", "<", 0.1),
    ("KTO: |z0 - KL of its final policy|, in s.e.", "kto_z0_gap_z", "<", 3.0),
    ("KL to the reference, SimPO minus DPO, in s.e.", "simpo_kl_gap_z", ">", 3.0),
]
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
           "==": operator.eq}


def print_criteria(results):
    print(f"\n{'criterion':<52} {'measured':>12} {'threshold':>14}  result")
    for description, key, op, target in CRITERIA:
        value = results[key]
        threshold = results[target] if isinstance(target, str) else target
        # A non-finite value fails every row: NaN compares False with anything, but
        # inf would pass a ">" row, so finiteness is checked explicitly.
        finite = math.isfinite(value) and math.isfinite(threshold)
        verdict = "PASS" if finite and COMPARE[op](value, threshold) else "FAIL"
        print(f"{description:<52} {value:>12.6g} {op:>2} {threshold:<11.6g}  {verdict}")


# === MAIN ===


def main():
    random.seed(42)   # every random draw below (init, data, pairs, sampling) follows from this
    # Speed: the graph has no reference cycles (a node points only at the older nodes it was
    # computed from), so reference counting frees each step's graph the moment the step
    # ends. Python's cycle collector would keep rescanning the live nodes as millions are
    # created and find nothing to free, so it is switched off (no number changes).
    gc.disable()
    start = time.time()
    names = load_names()
    random.shuffle(names)
    # names.txt lists some names twice: a held-out name that also occurs in the training part
    # is dropped, so no held-out name was ever trained on.
    split = int(len(names) * (1.0 - HELDOUT_SHARE))
    train_names = names[:split]
    seen = set(train_names)
    heldout_names = [n for n in names[split:] if n not in seen]
    chars, bos = build_vocab(names)
    stoi = {c: i for i, c in enumerate(chars)}

    def encode(name):
        return [bos] + [stoi[c] for c in name] + [bos]

    def decode(tokens):
        return "".join(chars[t] for t in tokens if t != bos)

    # --- 1. pretrain once; the frozen copy is the reference and every method's start ---
    model = init_model(vocab_size=bos + 1)
    print(f"{len(train_names)} training names, {len(heldout_names)} held out; "
          f"{len(parameters(model))} parameters")
    pretrain(model, train_names, encode, start)
    reference = frozen_copy(model)

    # --- 2. preference pairs, with the reference's log-probabilities computed once ---
    def with_reference(pairs):
        out = []
        for chosen, rejected in pairs:
            c, r = encode(chosen), encode(rejected)
            out.append((c, r, sequence_log_prob(reference, c, PROMPT_LENGTH),
                        sequence_log_prob(reference, r, PROMPT_LENGTH)))
        return out

    train_pairs = with_reference(make_pairs(train_names, PREF_STEPS * PREF_BATCH, random))
    heldout_pairs = with_reference(make_pairs(heldout_names, HELDOUT_PAIRS, random))
    pair_batches = [train_pairs[i:i + PREF_BATCH] for i in range(0, len(train_pairs), PREF_BATCH)]
    unpaired = kto_batches(pair_batches, random)
    print(f"{len(train_pairs)} training pairs, {len(heldout_pairs)} held-out pairs; "
          f"e.g. prompt '{decode(train_pairs[0][0][1:2])}': chosen "
          f"'{decode(train_pairs[0][0])}', rejected '{decode(train_pairs[0][1])}'")
    print(f"KTO sees the same {2 * len(train_pairs)} names unpaired, e.g. " + ", ".join(
        f"'{decode(tokens)}' {'desirable' if good else 'undesirable'}"
        for tokens, _, good in unpaired[0][:3]))

    # --- 3. the four runs: same start, same examples, same steps; only the loss differs ---
    runs = {}
    def kto(policy, examples):
        return kto_step(policy, examples, reference, bos)   # z0 samples need the reference

    for name, step_fn, batches in (("DPO", dpo_step, pair_batches),
                                   ("IPO", ipo_step, pair_batches),
                                   ("KTO", kto, unpaired),
                                   ("SimPO", simpo_step, pair_batches)):
        runs[name] = train(name, step_fn, reference, batches, start)

    # --- 4. held-out margins, accuracy, KL and sample length ---
    # IPO's target, written out again from Eq. 17 rather than read from ipo_loss(), so that
    # the criterion checks the trained margins against the paper, not against the loss
    target = 1.0 / (2.0 * IPO_TAU)
    print(f"\nLog-ratio margin m on each step's fresh training pairs, DPO (*) and IPO (o); "
          f"the dashed line is IPO's target 1/(2 tau) = {target:g} nats:")
    print(margin_picture([("*", runs["DPO"]["curve"]), ("o", runs["IPO"]["curve"])], target))

    reference_log_ratio, reference_average = heldout_margins(reference, heldout_pairs)
    before_names = [decode(sample(reference, [bos], bos)[0]) for _ in range(KL_SAMPLES)]
    table = {}
    for name, run in runs.items():
        log_ratio, average = heldout_margins(run["policy"], heldout_pairs)
        kl, kl_error, sampled = estimate_kl(run["policy"], reference, bos)
        # Each method ranks a pair by its own implicit reward: beta * r(y) for the three with
        # a reference, beta * a(y) for SimPO
        own = average if name == "SimPO" else log_ratio
        table[name] = {"accuracy": share_positive(own), "log_ratio": log_ratio,
                       "average": average, "kl": kl, "kl_error": kl_error,
                       "length": sum(len(s) for s in sampled) / len(sampled),
                       "names": [decode(s) for s in sampled]}
    untrained_simpo_accuracy = share_positive(reference_average)

    print(f"\n{'method':<7}{'held-out acc.':>14}{'KL to ref (nats)':>20}{'mean length':>13}"
          f"{'final m (nats)':>18}{'final a(c)-a(r)':>17}")
    print(f"{'start':<7}{share_positive(reference_log_ratio):>14.3f}{0.0:>12.3f} +- 0.000"
          f"{sum(len(n) for n in before_names) / len(before_names):>13.2f}"
          f"{0.0:>10.3f} +- 0.000{mean_and_error(reference_average)[0]:>17.3f}")
    for name, row in table.items():
        m, m_error = mean_and_error(row["log_ratio"])
        print(f"{name:<7}{row['accuracy']:>14.3f}{row['kl']:>12.3f} +- {row['kl_error']:.3f}"
              f"{row['length']:>13.2f}{m:>10.3f} +- {m_error:.3f}"
              f"{mean_and_error(row['average'])[0]:>17.3f}")
    print(f"(accuracy: the share of {HELDOUT_PAIRS} held-out pairs each method's own reward ranks "
          f"right; the start scores 0 on r(y), where every margin is a tie, and "
          f"{untrained_simpo_accuracy:.3f} on SimPO's reward)")

    # --- 5. IPO settles, DPO keeps growing: the held-out margin halfway and at the end ---
    growth = {}
    for name in ("DPO", "IPO"):
        middle, _ = heldout_margins(runs[name]["middle"], heldout_pairs)
        end = table[name]["log_ratio"]
        difference, difference_error = mean_and_error([e - h for e, h in zip(end, middle)])
        growth[name] = {"middle": mean_and_error(middle)[0], "end": mean_and_error(end)[0],
                        "z": difference / difference_error if difference_error > 0 else
                        float("nan"), "fitted": fitted_margin(end),
                        "fitted_middle": fitted_margin(middle)}
        print(f"{name} held-out margin m: mean {growth[name]['middle']:.3f} after "
              f"{PREF_STEPS // 2} steps, {growth[name]['end']:.3f} after {PREF_STEPS} (a change of "
              f"{growth[name]['z']:+.1f} standard errors); E[m^2]/E[m] "
              f"{growth[name]['fitted_middle']:.3f} and {growth[name]['fitted']:.3f}")
    by_difference = {}
    for m, (chosen, rejected, _, _) in zip(table["IPO"]["log_ratio"], heldout_pairs):
        by_difference.setdefault(min(len(chosen) - len(rejected), 4), []).append(m)
    print(f"IPO's final held-out margin by how many letters longer the chosen name is "
          f"(target {target:g}): " + ", ".join(
              f"{d}{'+' if d == 4 else ''}: {sum(ms) / len(ms):.2f} ({len(ms)} pairs)"
              for d, ms in sorted(by_difference.items())))

    # --- 6. KTO's reference point against the drift it stands for ---
    # z0 as the KTO step computes it, on the final policy, over the held-out names in batches
    # of the training size, against the KL it stands for written out plainly: completions
    # sampled from the same policy after the same prompts, log-ratios averaged.
    heldout_examples = ([(c, ref_c, True) for c, _, ref_c, _ in heldout_pairs]
                        + [(r, ref_r, False) for _, r, _, ref_r in heldout_pairs])
    final_kto = trainable_copy(runs["KTO"]["policy"])
    size = 2 * PREF_BATCH
    z0s = [kto_step(final_kto, heldout_examples[i:i + size], reference, bos)[1]
           for i in range(0, len(heldout_examples), size)]
    z0_mean, z0_error = mean_and_error(z0s)
    prompts = [tokens[:PROMPT_LENGTH] for tokens, _, _ in heldout_examples]
    kl_completion, kl_completion_error = completion_kl(runs["KTO"]["policy"], reference,
                                                       prompts, bos)
    z0_gap = abs(gap_in_standard_errors(z0_mean, z0_error, kl_completion, kl_completion_error))
    mismatched = mismatched_log_ratio(runs["KTO"]["policy"], reference, heldout_examples)
    print(f"\nKTO's reference point: z0 of the final policy over {len(z0s)} batches of held-out "
          f"names {z0_mean:.3f} +- {z0_error:.3f}; its KL per completion, sampled: "
          f"{kl_completion:.3f} +- {kl_completion_error:.3f} ({z0_gap:.1f} standard errors apart)."
          f"\nTRL's mismatched-pair estimate for the same policy and names: {mismatched:+.3f}, "
          f"which its clamp makes 0.")

    # --- 6. what SimPO's missing reference saves and costs ---
    num_params = len(parameters(model))
    print(f"\nModels held: DPO, IPO and KTO read a frozen reference ({num_params} weights more, "
          f"one forward pass per sequence scored); SimPO holds the policy alone.")
    print(f"KL to the reference: SimPO {table['SimPO']['kl']:.3f} +- "
          f"{table['SimPO']['kl_error']:.3f}, DPO {table['DPO']['kl']:.3f} +- "
          f"{table['DPO']['kl_error']:.3f}; mean letters: SimPO {table['SimPO']['length']:.2f}, "
          f"DPO {table['DPO']['length']:.2f}")
    for name, row in table.items():
        print(f"samples after {name}: " + "  ".join(row["names"][:8]))
    print("samples before:    " + "  ".join(before_names[:8]))

    results = {
        "dpo_accuracy": table["DPO"]["accuracy"],
        "ipo_accuracy": table["IPO"]["accuracy"],
        "kto_accuracy": table["KTO"]["accuracy"],
        "simpo_accuracy": table["SimPO"]["accuracy"],
        "ipo_margin_error": abs(growth["IPO"]["fitted"] - target),
        "dpo_margin_growth_z": growth["DPO"]["z"],
        "kto_accuracy_gap": table["DPO"]["accuracy"] - table["KTO"]["accuracy"],
        "kto_z0_gap_z": z0_gap,
        "simpo_kl_gap_z": gap_in_standard_errors(table["SimPO"]["kl"], table["SimPO"]["kl_error"],
                                                 table["DPO"]["kl"], table["DPO"]["kl_error"]),
        "kto_z0": z0_mean,
        "kto_completion_kl": kl_completion,
        "kto_mismatched_estimate": mismatched,
        "ipo_fitted_margin": growth["IPO"]["fitted"],
        "ipo_fitted_margin_middle": growth["IPO"]["fitted_middle"],
        "ipo_mean_margin": growth["IPO"]["end"],
        "ipo_mean_margin_middle": growth["IPO"]["middle"],
        "ipo_margin_growth_z": growth["IPO"]["z"],
        "dpo_mean_margin": growth["DPO"]["end"],
        "dpo_mean_margin_middle": growth["DPO"]["middle"],
        "untrained_simpo_accuracy": untrained_simpo_accuracy,
        "reference_length": sum(len(n) for n in before_names) / len(before_names),
        "num_params": num_params,
    }
    for name, row in table.items():
        key = name.lower()
        results[f"{key}_kl"] = row["kl"]
        results[f"{key}_kl_error"] = row["kl_error"]
        results[f"{key}_length"] = row["length"]
        results[f"{key}_final_log_ratio_margin"] = mean_and_error(row["log_ratio"])[0]
        results[f"{key}_final_average_margin"] = mean_and_error(row["average"])[0]
    print_criteria(results)
    print(f"total {time.time() - start:.1f}s")
    print("\nNext: predict what a change will do, then run it: docs/challenges/micropreference.md")
    return results


if __name__ == "__main__":
    main()
