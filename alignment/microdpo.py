"""microdpo: direct preference optimisation, from its objective to a policy that obeys it.

Pretraining teaches a model what names look like; preference tuning teaches it which of two
plausible outputs people would rather see. The classic recipe (RLHF) fits a reward model to
preference pairs and then runs reinforcement learning against it, held close to the
pretrained model by a KL penalty. DPO notices that this KL-regularised objective has a
closed-form best policy, solves that formula for the reward, and substitutes it into the
pairwise preference likelihood. The reward model and the RL loop both disappear; what is
left is a classification loss on pairs that trains the policy directly:

    pretrain a tiny GPT on names.txt -> freeze a copy as the reference pi_ref
    pairs (prompt = first letter, chosen = longer name, rejected = shorter name)
    -> loss = -log sigmoid(beta * [(log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r))])
    -> the policy now writes longer names, and KL(pi || pi_ref) measures how far it moved

The preference here ("longer is better") is deliberately simple so that its effect can be
measured exactly: the share of long names in the samples, before and after. The file also
runs the same DPO a second time with a ten times larger beta, from the same start on the same
pairs, to show what beta does: a larger beta keeps the policy closer to the reference. In
the run, 24% of the sampled names are longer than 6 letters before DPO and 98.5% after; the
KL from the reference ends at 2.95 nats per name at beta 0.1 and at 1.15 at beta 1.0. The
samples it prints show what the further move does to the names themselves.

Run: python alignment/microdpo.py    (about 22 s on the 2-core CI machine)
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
# The policy is microgpt's model at half the width (about 1,300 parameters instead of 4,200),
# so that pretraining and two DPO runs fit in the time budget.
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
DPO_STEPS = 60          # steps of each DPO run
DPO_BATCH = 4           # preference pairs per DPO step
DPO_LEARNING_RATE = 0.004
BETA = 0.1              # the DPO beta of the main run (TRL's default too)
BETA_HIGH = 1.0         # the comparison run: the same DPO with a ten times stronger anchor
HELDOUT_PAIRS = 200     # pairs of held-out names for the preference accuracy
EVAL_NAMES = 500        # held-out names for the pretrained policy's loss
KL_SAMPLES = 200        # samples per KL estimate (and per length histogram)
KL_CHECKPOINTS = 10     # KL is estimated after every DPO_STEPS / 10 steps
LONG_NAME = 6           # "long" = more than 6 letters; 36% of the names in names.txt are

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
# - fused_sum(): a sum of many Values as one node (a sequence's log-probability, and the
#   batch mean of the DPO loss as fused_sum(...) / n)
# - dpo_loss(): the whole DPO loss of one pair as one node, with its hand-derived gradient
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
    # flipped: DPO works with log-probabilities, not losses.
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
# DPO tunes a model that already writes names; it does not teach it to write. So the policy
# first learns names.txt as microgpt does: one name per step, loss = mean over the name's
# positions of -log p(next token), Adam with a learning rate decaying linearly to 0.


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


# === THE DPO LOSS, DERIVED ===
# 1. The objective. RLHF wants a policy pi that earns a high reward r(x, y) but stays close to
#    the reference pi_ref (the pretrained model), with beta setting how close:
#        max_pi  E_{y ~ pi(.|x)} [ r(x, y) ]  -  beta * KL( pi(.|x) || pi_ref(.|x) )
# 2. Its optimum in closed form. Write the KL as E_pi[log pi - log pi_ref] and pull out beta:
#        E_pi[r - beta log(pi / pi_ref)] = -beta * E_pi[ log( pi / (pi_ref * exp(r / beta)) ) ]
#                                        = -beta * KL(pi || pi*) + beta * log Z(x)
#    with  pi*(y|x) = pi_ref(y|x) * exp(r(x, y) / beta) / Z(x),  Z(x) = sum_y pi_ref * exp(r/beta)
#    (Z normalises pi* into a distribution). Z does not depend on pi and a KL is 0 only between
#    equal distributions, so the best policy is pi = pi*: the reference, reweighted by
#    exp(reward / beta). Large beta flattens the reweighting (pi* -> pi_ref as beta -> inf);
#    small beta sharpens it toward the highest-reward outputs.
# 3. Solve for the reward. Take logs of pi* and rearrange:
#        r(x, y) = beta * log( pi*(y|x) / pi_ref(y|x) )  +  beta * log Z(x)
#    Any policy defines a reward this way, its "implicit reward"; Z is intractable (a sum over
#    every possible name), but it depends only on the prompt x.
# 4. Bradley-Terry. The standard model of pairwise judgements says y_c is preferred to y_r
#    with probability sigmoid(r(x, y_c) - r(x, y_r)). Both completions share the prompt x, so
#    beta * log Z(x) cancels in the difference:
#        P(y_c > y_r) = sigmoid( beta * log(pi*(c)/pi_ref(c)) - beta * log(pi*(r)/pi_ref(r)) )
# 5. The loss. Put the trainable pi in place of pi* and maximise the likelihood of the
#    observed preferences, i.e. minimise
#        L = -log sigmoid(beta * m),   m = (log pi(c) - log pi_ref(c)) - (log pi(r) - log pi_ref(r))
#    A reward model and a reinforcement-learning loop became one classification loss.
# In the code: x = PROMPT_LENGTH tokens, log pi(c) = logp_chosen, log pi_ref(c) = ref_chosen,
# log pi(r) = logp_rejected, log pi_ref(r) = ref_rejected, m = margin, beta = beta;
# beta * (logp - ref) is a completion's implicit reward, beta * m the implicit-reward margin.
# At the start pi = pi_ref, so m = 0 and L = -log(1/2) = ln 2 = 0.693 for every pair.
#
# The gradient, by hand. With s(z) = 1 / (1 + exp(-z)) and d/dz[-log s(z)] = -s(-z):
#     dL/dm = -beta * s(-beta * m),   dL/dlogp_chosen = -beta * s(-beta m) = -dL/dlogp_rejected
# Every pair pushes log pi(c) up and log pi(r) down, weighted by s(-beta * m): near 1 while
# the implicit reward orders the pair wrongly by a wide margin, 1/2 at a tie, near 0 once it
# orders it right by a wide margin. That weight is where beta acts: it falls below 0.05 at
# beta * m = 3, i.e. at a log-ratio margin of m = 3 nats when beta = 1 but of m = 30 nats
# when beta = 0.1. (The factor beta in front matters little here: Adam's step is unchanged
# when every gradient is multiplied by the same constant, up to its tiny eps.) So with a
# larger beta a pair stops pulling after a smaller move away from the reference: a larger
# beta keeps the policy closer to the reference, a smaller one lets it travel further. The
# run measures this with BETA_HIGH. Both runs move at the same pace for the first 12 steps
# (KL per name 0.62 at beta 0.1, 0.65 at beta 1.0). Then the beta 1.0 run's pairs, already
# ordered by wide implicit-reward margins (+2.28 on average on the held-out pairs at the end),
# pull less and less and its KL stays between 0.96 and 1.23, while the beta 0.1 run climbs to
# 2.95 (final standard errors 0.09 and 0.13).
# Signpost: when preferences are deterministic, as here, -log sigmoid(beta * m) keeps falling
# as m grows: the loss has no finite minimum, so the reference holds the policy back only
# through this fading weight and the finite number of steps. IPO (Azar et al., 2023) answers
# with a squared loss, (m - 1 / (2 beta))^2, which aims at a finite margin; TRL's DPOTrainer
# offers it as loss_type="ipo". KTO learns from single completions labelled good or bad
# instead of pairs.


def softplus(z):
    # log(1 + e^z), written so that exp() never overflows: max(z, 0) + log(1 + e^-|z|)
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def sigmoid(z):
    return 0.5 * (1.0 + math.tanh(0.5 * z))   # = 1 / (1 + e^-z), with no overflow


def dpo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, beta):
    """-log sigmoid(beta * margin) as one node; the reference log-probs are plain floats."""
    margin = (logp_chosen.data - ref_chosen) - (logp_rejected.data - ref_rejected)
    slope = beta * sigmoid(-beta * margin)   # -dL/dm
    # -log s(z) = log(1 + e^-z) = softplus(-z)
    return Value(softplus(-beta * margin), (logp_chosen, logp_rejected), (-slope, slope))


def naive_dpo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected, beta):
    # The same loss from Value operations only (the tests compare it with dpo_loss)
    margin = (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected)
    return -((1.0 + (-beta * margin).exp()) ** -1.0).log()


# === DPO TRAINING ===
# The reference is frozen, so its log-probabilities of every pair are computed once before
# training, on plain floats (TRL's DPOTrainer can do the same with
# precompute_ref_log_probs=True; by default it runs the frozen reference beside the policy).
# Each step: the policy's log-probabilities of DPO_BATCH chosen and rejected completions,
# the mean DPO loss over the batch, backward, one Adam step.


def estimate_kl(policy, reference, bos):
    """KL(pi || pi_ref) per name from KL_SAMPLES names sampled from pi; also those names."""
    # KL(pi || pi_ref) = E_{y ~ pi}[ log pi(y) - log pi_ref(y) ]: draw names from the policy
    # and average the log-ratio. The mean is an unbiased estimate of the KL per name, but a
    # single log-ratio can be negative, and so can the mean when the KL is small; the run
    # prints the standard error (standard deviation / sqrt(KL_SAMPLES)) beside it: 0.06 nats
    # on the first estimate of the main run (KL 0.24), 0.13 on its last (KL 2.95). Names cut
    # at BLOCK_SIZE letters count as one outcome under both models, so the estimate is the KL
    # between the two distributions over names of at most BLOCK_SIZE letters.
    log_ratios, names = [], []
    for _ in range(KL_SAMPLES):
        tokens, logp_policy = sample(policy, bos)
        log_ratios.append(logp_policy - sequence_log_prob(reference, tokens, 1))
        names.append(tokens[1:-1] if tokens[-1] == bos else tokens[1:])
    mean = sum(log_ratios) / len(log_ratios)
    spread = math.sqrt(sum((r - mean) ** 2 for r in log_ratios) / (len(log_ratios) - 1))
    return mean, spread / math.sqrt(len(log_ratios)), names


def run_dpo(start_floats, reference, batches, beta, bos, start):
    policy = trainable_copy(start_floats)
    params = parameters(policy)
    state = new_adam_state(params)
    losses, margins = [], []
    kl_curve = [(0, 0.0, 0.0)]   # at step 0 the policy is the reference: KL is exactly 0
    kl_every = max(1, DPO_STEPS // KL_CHECKPOINTS)
    names = []
    for step in range(DPO_STEPS):
        pair_losses, step_margins = [], []
        for chosen, rejected, ref_chosen, ref_rejected in batches[step]:
            logp_chosen = sequence_log_prob(policy, chosen, PROMPT_LENGTH)
            logp_rejected = sequence_log_prob(policy, rejected, PROMPT_LENGTH)
            pair_losses.append(dpo_loss(logp_chosen, logp_rejected, ref_chosen, ref_rejected,
                                        beta))
            step_margins.append(beta * ((logp_chosen.data - ref_chosen)
                                        - (logp_rejected.data - ref_rejected)))
        # The batch loss is the mean over its pairs: a fused sum times 1/n, one node
        loss = fused_sum(pair_losses) * (1.0 / len(pair_losses))
        loss.backward()
        # Signpost: this uses the pretraining's Adam at a constant rate; TRL trains with AdamW
        # and a learning-rate schedule.
        adam_step(params, state, DPO_LEARNING_RATE)
        losses.append(loss.data)
        # The batch's mean implicit-reward margin beta * m, the number TRL's DPOTrainer logs
        # as rewards/margins
        margins.append(sum(step_margins) / len(step_margins))
        if (step + 1) % kl_every == 0 or step + 1 == DPO_STEPS:
            kl, kl_error, names = estimate_kl(frozen_copy(policy), reference, bos)
            kl_curve.append((step + 1, kl, kl_error))
            window = slice(-kl_every, None)
            print(f"beta {beta:g} step {step + 1:4d}/{DPO_STEPS} | loss "
                  f"{sum(losses[window]) / len(losses[window]):.4f} | reward margin "
                  f"{sum(margins[window]) / len(margins[window]):+.3f} | KL {kl:.3f} "
                  f"+- {kl_error:.3f} | {time.time() - start:.1f}s")
    return {"policy": frozen_copy(policy), "losses": losses, "margins": margins,
            "kl_curve": kl_curve, "names": names}


def implicit_reward_margins(policy, pairs, beta):
    # beta * m for each held-out pair: > 0 means the policy's implicit reward ranks the
    # chosen (longer) name above the rejected one
    return [beta * ((sequence_log_prob(policy, chosen, PROMPT_LENGTH) - ref_chosen)
                    - (sequence_log_prob(policy, rejected, PROMPT_LENGTH) - ref_rejected))
            for chosen, rejected, ref_chosen, ref_rejected in pairs]


# === SAMPLING ===
# Temperature 1: the KL estimate needs names drawn from pi itself, and the length histograms
# should show the policy's own distribution, not a sharpened one.


def sample(model, bos):
    """One name drawn from a float model, as tokens [BOS, ..., BOS], with its log-probability."""
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    tokens, terms = [bos], []
    for pos in range(BLOCK_SIZE):
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


# === ASCII PICTURES ===


def ascii_curve(series, width=50, height=8):
    """Plot a series as rows of text, averaging it into `width` buckets."""
    width = min(width, len(series))
    bucket = len(series) / width
    points = [sum(series[int(i * bucket):int((i + 1) * bucket)]) /
              max(1, int((i + 1) * bucket) - int(i * bucket)) for i in range(width)]
    low, high = min(points), max(points)
    rows = []
    for r in range(height):
        level = high - (high - low) * r / max(1, height - 1)
        line = "".join("*" if abs(p - level) <= (high - low) / (2 * height) + 1e-12 else " "
                       for p in points)
        rows.append(f"{level:7.3f} |{line}")
    rows.append("        +" + "-" * width)
    return "\n".join(rows)


def length_histogram(before, after, width=30):
    """Two bar charts side by side: how many names of each length, before and after."""
    longest = max(len(n) for n in before + after)
    counts = [[sum(len(n) == length for n in group) for group in (before, after)]
              for length in range(longest + 1)]
    scale = width / max(max(pair) for pair in counts)   # the tallest bar is `width` long
    rows = [f"{'letters':>7}  {'before DPO':<{width + 7}}after DPO (beta {BETA:g})"]
    for length, (count_before, count_after) in enumerate(counts):
        rows.append(f"{length:>7}  {'#' * round(scale * count_before):<{width}} {count_before:>4}"
                    f"  {'#' * round(scale * count_after):<{width}} {count_after:>4}")
    return "\n".join(rows)


def long_share(names):
    return sum(len(n) > LONG_NAME for n in names) / len(names)


def gap_in_standard_errors(kl_a, error_a, kl_b, error_b):
    """(a - b) / sqrt(e_a^2 + e_b^2): a difference of two independent KL estimates in units
    of its own sampling noise. Of two estimates of the same KL, one exceeds the other by more
    than 3 of these units about once in 740 draws (the normal tail beyond 3), so a row that
    asks for more than 3 cannot pass by the luck of the samples. With no noise at all (both
    policies equal to the reference) there is no difference to measure: NaN, which fails."""
    spread = math.sqrt(error_a ** 2 + error_b ** 2)
    return (kl_a - kl_b) / spread if spread > 0.0 else float("nan")


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
# Each check fails for some broken version, measured with this file's settings (the spec
# entry lists them with their scores; the tests rerun them):
# - a sign error in the margin (chosen and rejected swapped) drives the loss to 0.03 just as
#   well, but ranks 0% of held-out pairs right and collapses the policy onto empty names
#   (share gain -0.24): the loss cannot see the bug, the accuracy and the lengths can;
# - the reference dropped from the loss (margin = log pi(c) - log pi(r)) ends at loss 0.80,
#   and both betas move the policy equally far: KL 2.91 and 2.78, 0.7 standard errors apart;
# - beta outside the sigmoid (-beta * log sigmoid(m)) passes the first four checks: Adam
#   takes the same steps at both betas, so the KLs end 0.1 standard errors apart;
# - beta used backwards (the loss at 1 / beta) ends with the larger KL at "beta 1.0"
#   (1.12 against 0.41 at "beta 0.1", -6.2 standard errors).
# The two KL rows compare estimates from KL_SAMPLES samples each, so each asks for a gap of
# more than 3 standard errors, which the luck of the samples alone does not produce.
# Before DPO the loss is ln 2, every held-out margin is exactly 0 and the KL is 0.
CRITERIA = [
    ("DPO loss, mean of the last 20 steps (ln 2 at start)", "final_dpo_loss", "<", 0.6),
    ("held-out pairs ranked right by implicit reward", "heldout_preference_accuracy", ">", 0.7),
    ("share of names > 6 letters, after minus before", "preferred_share_gain", ">", 0.2),
    ("KL rise, end minus first 10%, in standard errors", "kl_growth_z", ">", 3.0),
    ("final KL, beta 0.1 minus beta 1.0, in standard errors", "beta_kl_gap_z", ">", 3.0),
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

    # --- 1. pretrain the policy; its frozen copy becomes the reference ---
    model = init_model(vocab_size=bos + 1)
    print(f"{len(train_names)} training names, {len(heldout_names)} held out; "
          f"{len(parameters(model))} parameters")
    pretrain(model, train_names, encode, start)
    reference = frozen_copy(model)
    eval_tokens = [encode(n) for n in heldout_names[:EVAL_NAMES]]
    policy_loss = (-sum(sequence_log_prob(reference, t, 1) for t in eval_tokens)
                   / sum(len(t) - 1 for t in eval_tokens))
    print(f"held-out loss per token: pretrained policy {policy_loss:.4f}, bigram table "
          f"{bigram_loss([encode(n) for n in train_names], eval_tokens, bos + 1):.4f}, "
          f"uniform ln(27) = {math.log(27):.4f}")

    # --- 2. preference pairs, with the reference's log-probabilities computed once ---
    def with_reference(pairs):
        out = []
        for chosen, rejected in pairs:
            c, r = encode(chosen), encode(rejected)
            out.append((c, r, sequence_log_prob(reference, c, PROMPT_LENGTH),
                        sequence_log_prob(reference, r, PROMPT_LENGTH)))
        return out

    # DPO_STEPS * DPO_BATCH training pairs, each used once, in the same order by both runs
    train_pairs = with_reference(make_pairs(train_names, DPO_STEPS * DPO_BATCH, random))
    heldout_pairs = with_reference(make_pairs(heldout_names, HELDOUT_PAIRS, random))
    batches = [train_pairs[i:i + DPO_BATCH] for i in range(0, len(train_pairs), DPO_BATCH)]
    print(f"{len(train_pairs)} training pairs, {len(heldout_pairs)} held-out pairs; "
          f"e.g. prompt '{decode(train_pairs[0][0][1:2])}': chosen "
          f"'{decode(train_pairs[0][0])}', rejected '{decode(train_pairs[0][1])}'")

    # --- 3. samples before DPO (the policy is still the reference) ---
    # The same number of names as each KL estimate draws, so the histograms compare like
    # with like: the "after" names are the final KL estimate's samples.
    before = [decode(sample(reference, bos)[0]) for _ in range(KL_SAMPLES)]

    # --- 4. the two DPO runs: same start, same pairs, same steps, two betas ---
    # Everything but beta is shared, so any difference between the runs is beta's doing
    # (and the sampling noise of the KL estimates, which the table prints beside them).
    main_run = run_dpo(reference, reference, batches, BETA, bos, start)
    high_run = run_dpo(reference, reference, batches, BETA_HIGH, bos, start)
    after = [decode(t) for t in main_run["names"]]
    after_high = [decode(t) for t in high_run["names"]]

    # --- 5. results ---
    # Each step's loss is measured on its batch before the update that uses it: the curve
    # scores fresh draws of pairs, not pairs the policy has already stepped on.
    window = main_run["losses"][-20:]
    final_dpo_loss = sum(window) / len(window)
    print(f"\nDPO loss at beta {BETA:g} (ln 2 = {math.log(2):.3f} at the start, where pi = "
          f"pi_ref; buckets of steps):")
    print(ascii_curve(main_run["losses"], width=30))
    print(f"\nImplicit-reward margin beta * m on the training batches, beta {BETA:g}:")
    print(ascii_curve(main_run["margins"], width=30))

    heldout_margins = implicit_reward_margins(main_run["policy"], heldout_pairs, BETA)
    accuracy = sum(m > 0 for m in heldout_margins) / len(heldout_margins)
    high_margins = implicit_reward_margins(high_run["policy"], heldout_pairs, BETA_HIGH)
    accuracy_high = sum(m > 0 for m in high_margins) / len(high_margins)
    # Before DPO every margin is exactly 0 (pi = pi_ref), so no pair is ranked right.
    print(f"\nHeld-out pairs ranked right (margin > 0): {accuracy:.1%} at beta {BETA:g}, "
          f"{accuracy_high:.1%} at beta {BETA_HIGH:g};\nmean held-out margin beta * m: "
          f"{sum(heldout_margins) / len(heldout_margins):+.3f} and "
          f"{sum(high_margins) / len(high_margins):+.3f} (0 before DPO)")

    print(f"\nKL(pi || pi_ref) per name, mean log-ratio over {KL_SAMPLES} samples from pi "
          f"(+- one standard error):")
    print(f"{'step':>6} {'beta ' + format(BETA, 'g'):>18} {'beta ' + format(BETA_HIGH, 'g'):>18}")
    scale = max(kl for _, kl, _ in main_run["kl_curve"] + high_run["kl_curve"]) or 1.0
    for (step, kl, err), (_, kl_high, err_high) in zip(main_run["kl_curve"],
                                                       high_run["kl_curve"]):
        bars = "#" * max(0, round(20 * kl / scale))   # a negative estimate gets no bar
        bars_high = "o" * max(0, round(20 * kl_high / scale))
        print(f"{step:>6} {kl:>10.3f} +- {err:<5.3f} {kl_high:>10.3f} +- {err_high:<5.3f} "
              f"|{bars:<20}|{bars_high}")
    print(f"  (# = beta {BETA:g}, o = beta {BETA_HIGH:g}, on the same scale)")

    print(f"\nName lengths of {KL_SAMPLES} samples (temperature 1):")
    print(length_histogram(before, after))
    share_before, share_after = long_share(before), long_share(after)
    print(f"share longer than {LONG_NAME} letters: {share_before:.1%} before, {share_after:.1%}"
          f" after beta {BETA:g}, {long_share(after_high):.1%} after beta {BETA_HIGH:g}")
    for label, group in (("before DPO", before), (f"after DPO, beta {BETA:g}", after),
                         (f"after DPO, beta {BETA_HIGH:g}", after_high)):
        print(f"\nsamples {label}:")
        for row in range(0, 15, 5):
            print("  " + "  ".join(f"{s:<16}" for s in group[row:row + 5]))

    # kl_curve[1] is the first checkpoint, after DPO_STEPS / KL_CHECKPOINTS steps (10%)
    _, kl_early, error_early = main_run["kl_curve"][1]
    _, kl_final, error_final = main_run["kl_curve"][-1]
    _, kl_high, error_high = high_run["kl_curve"][-1]
    kl_growth_z = gap_in_standard_errors(kl_final, error_final, kl_early, error_early)
    beta_kl_gap_z = gap_in_standard_errors(kl_final, error_final, kl_high, error_high)
    print(f"\nKL rise at beta {BETA:g}: {kl_final:.3f} - {kl_early:.3f} = {kl_growth_z:.1f} "
          f"standard errors; final KL at beta {BETA:g} minus beta {BETA_HIGH:g}: {kl_final:.3f} "
          f"- {kl_high:.3f} = {beta_kl_gap_z:.1f} standard errors")
    results = {
        "final_dpo_loss": final_dpo_loss,
        "heldout_preference_accuracy": accuracy,
        "preferred_share_gain": share_after - share_before,
        "kl_growth_z": kl_growth_z,
        "beta_kl_gap_z": beta_kl_gap_z,
        "kl_final": kl_final,
        "kl_early": kl_early,
        "kl_final_high_beta": kl_high,
        "kl_final_error": error_final,
        "kl_early_error": error_early,
        "kl_final_high_beta_error": error_high,
        "long_share_before": share_before,
        "long_share_after": share_after,
        "long_share_after_high_beta": long_share(after_high),
        "heldout_accuracy_high_beta": accuracy_high,
        "first_dpo_loss": main_run["losses"][0],
        "pretrained_heldout_loss": policy_loss,
        "num_params": len(parameters(model)),
    }
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microdpo.md")
    print(f"total {time.time() - start:.1f}s")
    return results


if __name__ == "__main__":
    main()
