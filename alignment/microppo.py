"""microppo: the RLHF loop (pretrain, reward model, PPO) on baby names, in plain Python.

Reinforcement learning from human feedback (RLHF) is how InstructGPT-style models were tuned
toward what people prefer. It has three stages, and this file runs all of them:

    1. pretrain   a tiny GPT learns to write names (next-character cross-entropy)
    2. reward     a reward model learns, from pairs "this name is preferred to that one",
                  to give every name a score (the Bradley-Terry loss)
    3. PPO        the GPT writes fresh names, the reward model scores them, and proximal
                  policy optimisation nudges the GPT toward higher scores while a KL
                  penalty holds it near the pretrained model it started from

The preference here is synthetic, the same as in alignment/microdpo.py:
of two names with the same first letter the longer one is preferred. The prompt is a first
letter, and the completion is the rest of the name. Nothing tells the GPT "write longer
names"; it only ever sees a number from the reward model, and has to find out by trying
what earns it.

PPO needs more machinery than DPO: a reward model, a value head, sampling inside the
training loop, advantages. It pays for that with one ability DPO lacks: it can score names
nobody has labelled yet, the ones the policy writes as it changes. The run trains the policy
twice from the same start, with a weak and a strong KL penalty, and prints how the penalty
trades reward against distance from the start.

The policy uses the scalar `Value` autograd (PPO's gradient must flow through it); the
reward model and the value head are plain-float models whose gradients are derived by hand
in the comments (the tests check every one against finite differences).

Run: python alignment/microppo.py    (about 15 s on the 2-core CI machine)
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
# main() reads these when it runs, so a test can shrink a run by assigning new values.
# --- the policy: microgpt's shape, smaller ---
N_EMBD = 8         # width of every hidden vector
N_HEAD = 2         # attention heads, each 4 wide
N_LAYER = 1
MLP_HIDDEN = 4 * N_EMBD
MAX_LETTERS = 8    # a name is cut at 8 letters: PPO completions are at most 7 letters long
BLOCK_SIZE = MAX_LETTERS + 1   # positions: BOS, then up to 8 letters
INIT_STD = 0.1
PRETRAIN_STEPS = 800           # one name per step
PRETRAIN_LR = 0.01
BETA1, BETA2, ADAM_EPS = 0.85, 0.99, 1e-8
# --- the reward model: letter counts -> 16 tanh units -> one score ---
RM_HIDDEN = 16
HELDOUT_SHARE = 0.1            # names kept out of pretraining and of the training pairs
RM_PAIRS = 1800                # training pairs, from the training names
HELDOUT_PAIRS = 200            # pairs of held-out names, to measure the reward model
RM_EPOCHS = 2
RM_LR = 0.01
# --- PPO ---
NUM_STEPS = 30                 # PPO steps per run (each: sample, score, update)
BATCH_SIZE = 8                 # names sampled per PPO step
PPO_EPOCHS = 3                 # optimisation passes over each batch
CLIP_DEMO_EPOCHS = 10          # epochs on one batch to show what the clip holds back
PPO_LR = 0.003
CLIP_EPS = 0.2                 # the ratio may move 20% away from 1 before the clip stops it
KL_COEF = 0.05                 # the main run's KL penalty
KL_COEF_HIGH = 0.5             # the comparison run's, ten times stronger
GAMMA = 1.0                    # no discounting: a name is short and only its end is scored
LAMBDA = 0.95                  # GAE's bias-variance dial (TRL's PPO defaults: 1.0 and 0.95)
VALUE_LR = 0.05
VALUE_EPOCHS = 4
KL_WINDOW = 5                  # kl_early / kl_final average the first / last 5 PPO steps
NUM_EVAL_SAMPLES = 200         # names sampled to measure each policy
LOG_EVERY = 5
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
# Character level, as in microgpt: the 26 letters are tokens 0..25 and one more token, BOS,
# marks both the start and the end of a name. "emma" is [BOS, e, m, m, a, BOS].
LETTERS = "abcdefghijklmnopqrstuvwxyz"
BOS = len(LETTERS)
VOCAB_SIZE = len(LETTERS) + 1
STOI = {c: i for i, c in enumerate(LETTERS)}


def encode(name):
    # Names longer than MAX_LETTERS are cut, and a cut name gets no closing BOS: the model is
    # never taught that a name ends at letter 8 when the real one went on.
    letters = [STOI[c] for c in name[:MAX_LETTERS]]
    return [BOS] + letters + ([BOS] if len(name) <= MAX_LETTERS else [])


def decode(tokens):
    return "".join(LETTERS[t] for t in tokens if t != BOS)


# === AUTOGRAD: THE VALUE CLASS ===
# A Value wraps one float and remembers the Values it was computed from (`_children`) and
# the local derivative with respect to each (`_local_grads`). backward() orders the graph and
# applies the chain rule from the loss down:  dL/d(child) += dL/d(node) * d(node)/d(child).


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

    def clip(self, low, high):
        # min(max(a, low), high): slope 1 inside [low, high], 0 where the bound holds it.
        # PPO's clipped ratio: outside the band the clipped term no longer moves with a.
        if low <= self.data <= high:
            return Value(self.data, (self,), (1.0,))
        return Value(min(max(self.data, low), high), (self,), (0.0,))

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
# This Value class follows the canonical interface (docs/autograd-interface.md) with:
# - clip(low, high): PPO's clipped probability ratio
# On top of it this script uses the fused nodes below, as plain functions:
# - dot(): a whole dot product (one neuron of a linear layer) as one node
# - softmax(): each attention weight as one node over all the scores
# - cross_entropy(): log-softmax plus negative log-likelihood as one node; PPO reads a
#   token's log-probability as minus this node
# - rms_scale(): the 1/RMS factor of RMSNorm as one node
# - mean(): the mean of many losses as one node

# === FUSED NODES: THE SAME MATH, FEWER NODES ===
# A dot product built from + and * is 2n - 1 nodes; its derivatives are known in closed form
#     y = sum_i w_i * x_i   =>   dy/dw_i = x_i,   dy/dx_i = w_i
# so one node with 2n children computes the same numbers and gradients (foundational/
# microgpt.py measures what this buys). naive_dot is the unfused form; the tests check that
# every fused node agrees with its naive form.
# These functions also accept plain floats, where they just compute the number: the same
# gpt_step() then runs the frozen reference model and the sampler with no graph at all.


def naive_dot(weights, inputs):
    total = weights[0] * inputs[0]
    for w, x in zip(weights[1:], inputs[1:]):
        total = total + w * x
    return total


def dot(weights, inputs):
    if type(weights[0]) is float:
        return sum(map(operator.mul, weights, inputs))
    w_data, x_data = [w.data for w in weights], [x.data for x in inputs]
    return Value(sum(map(operator.mul, w_data, x_data)), (*weights, *inputs), (*x_data, *w_data))


def linear(inputs, weight_rows):
    return [dot(row, inputs) for row in weight_rows]


def mean(values):
    # y = (1/n) sum_i x_i, dy/dx_i = 1/n: one node however many losses it averages
    n = len(values)
    return Value(sum(v.data for v in values) / n, tuple(values), (1.0 / n,) * n)


def log_softmax_floats(logits):
    # log p_i = z_i - logsumexp(z), with the max subtracted first so exp() cannot overflow
    top = max(logits)
    log_total = top + math.log(sum(math.exp(z - top) for z in logits))
    return [z - log_total for z in logits]


def softmax(logits):
    # p_i = exp(z_i - m) / sum_j exp(z_j - m), m = max(z);  dp_i/dz_j = p_i * (delta_ij - p_j)
    if type(logits[0]) is float:
        return [math.exp(lp) for lp in log_softmax_floats(logits)]
    probs = [math.exp(lp) for lp in log_softmax_floats([z.data for z in logits])]
    logits = tuple(logits)
    return [Value(p_i, logits, tuple(p_i * ((i == j) - p_j) for j, p_j in enumerate(probs)))
            for i, p_i in enumerate(probs)]


def cross_entropy(logits, target):
    # L = -log softmax(z)[y] = logsumexp(z) - z_y,   dL/dz_j = p_j - [j == y]
    log_probs = log_softmax_floats([z.data for z in logits])
    local_grads = tuple(math.exp(lp) - (j == target) for j, lp in enumerate(log_probs))
    return Value(-log_probs[target], tuple(logits), local_grads)


def rms_scale(x):
    # s = (mean_j x_j^2 + eps)^(-1/2),   ds/dx_j = -s^3 * x_j / n
    n = len(x)
    if type(x[0]) is float:
        return (sum(xi * xi for xi in x) / n + 1e-5) ** -0.5
    s = (sum(xi.data * xi.data for xi in x) / n + 1e-5) ** -0.5
    return Value(s, tuple(x), tuple(-s ** 3 * xi.data / n for xi in x))


def rmsnorm(x):
    s = rms_scale(x)
    return [xi * s for xi in x]


def relu(h):
    return h.relu() if type(h) is Value else max(0.0, h)


# === THE POLICY: A TINY GPT ===
# microgpt's model (foundational/microgpt.py explains every line of it) at half the width:
# token + position embeddings, one block of 2-head causal attention and a ReLU MLP, RMSNorm,
# no biases: 1,272 parameters. In RLHF the language model being tuned is called the policy
# (it picks an action, the next character, in a state, the text so far).


def matrix(rows, cols):
    return [[Value(random.gauss(0.0, INIT_STD)) for _ in range(cols)] for _ in range(rows)]


def init_model():
    model = {"wte": matrix(VOCAB_SIZE, N_EMBD), "wpe": matrix(BLOCK_SIZE, N_EMBD),
             "lm_head": matrix(VOCAB_SIZE, N_EMBD)}
    for layer in range(N_LAYER):
        for name in ("wq", "wk", "wv", "wo"):
            model[f"layer{layer}.{name}"] = matrix(N_EMBD, N_EMBD)
        model[f"layer{layer}.fc1"] = matrix(MLP_HIDDEN, N_EMBD)
        model[f"layer{layer}.fc2"] = matrix(N_EMBD, MLP_HIDDEN)
    return model


def parameters(model):
    return [p for mat in model.values() for row in mat for p in row]


def frozen(model):
    # The same weights as plain floats: a snapshot that gpt_step() runs with no graph.
    return {name: [[p.data for p in row] for row in mat] for name, mat in model.items()}


def gpt_step(model, token_id, pos, keys, values):
    """Logits for the token after `token_id` at position `pos`; Values or floats alike."""
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


def token_logits(model, tokens):
    """Logits after each of tokens[0..n-1], in one left-to-right pass with a fresh cache."""
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    return [gpt_step(model, t, pos, keys, values) for pos, t in enumerate(tokens)]


def adam_step(params, state, lr):
    # Adam, as in microgpt: m and v are running means of the gradient and of its square,
    # bias-corrected, and each parameter steps by lr * m_hat / (sqrt(v_hat) + eps).
    state["t"] += 1
    m, v, t = state["m"], state["v"], state["t"]
    for i, p in enumerate(params):
        m[i] = BETA1 * m[i] + (1.0 - BETA1) * p.grad
        v[i] = BETA2 * v[i] + (1.0 - BETA2) * p.grad * p.grad
        m_hat, v_hat = m[i] / (1.0 - BETA1 ** t), v[i] / (1.0 - BETA2 ** t)
        p.data -= lr * m_hat / (math.sqrt(v_hat) + ADAM_EPS)
        p.grad = 0.0


def adam_state(n):
    return {"m": [0.0] * n, "v": [0.0] * n, "t": 0}


# === STAGE 1: PRETRAINING ===
# Plain next-character training, one name per step. This is the "base model" that RLHF starts
# from, and after it the frozen reference that PPO's KL penalty measures distance to. 800
# names bring the loss from ln 27 = 3.30 to 2.42 (the mean over the last 100 names of each
# name's mean loss per character); the samples are name-like, not good names, which is
# enough: what matters below is how PPO moves them.
# Signpost: InstructGPT first fine-tunes the pretrained model on human demonstrations
# (supervised fine-tuning) and runs RLHF from that; here pretraining stands in for both.


def pretrain(model, names, start):
    params = parameters(model)
    state = adam_state(len(params))
    losses = []
    for step in range(PRETRAIN_STEPS):
        tokens = encode(names[step % len(names)])
        logits = token_logits(model, tokens[:-1])
        loss = mean([cross_entropy(z, y) for z, y in zip(logits, tokens[1:])])
        loss.backward()
        adam_step(params, state, PRETRAIN_LR * (1.0 - step / PRETRAIN_STEPS))
        losses.append(loss.data)
        if (step + 1) % max(1, PRETRAIN_STEPS // 4) == 0:
            recent = losses[-100:]
            print(f"pretrain {step + 1:5d}/{PRETRAIN_STEPS} | loss {sum(recent) / len(recent):.4f}"
                  f" | {time.time() - start:.1f}s")
    return losses


# === STAGE 2: PREFERENCE PAIRS AND THE REWARD MODEL ===
# A preference pair is two names with the same first letter (the prompt); the longer one is
# "chosen", the shorter "rejected", and pairs of equal length are skipped (no preference).
# In real RLHF people compare two answers to the same prompt; here a rule stands in for them.
#
# Bradley-Terry: suppose each name has a hidden score r, and a judge prefers c to r' with
#     P(c preferred to r') = sigmoid(r(c) - r(r')) = 1 / (1 + exp(-(r(c) - r(r'))))
# Only the difference of scores matters, so the scale's zero point is free. Maximising the
# likelihood of the observed choices means minimising, per pair,
#     L = -log sigmoid(m),   m = r(chosen) - r(rejected)   (the margin)
# with dL/dm = sigmoid(m) - 1: a pair already ordered with a wide margin (sigmoid(m) ~ 1)
# contributes almost nothing, a wrongly ordered pair pulls hard.
#
# The reward model itself is a small MLP on plain floats. It reads a name as the count of
# each letter (26 numbers) and nothing else:
#     h = tanh(W1 x + b1)        (x = letter counts, 16 hidden units)
#     r = w2 . h + b2
# 26*16 + 16 + 16 + 1 = 449 parameters. It does not see letter order, and it is not told the
# length: it has to discover, from pairs alone, that more letters earn more. Signpost:
# production reward models are themselves language models (InstructGPT's was a 6B GPT) with
# the word-prediction layer replaced by one scalar output, trained with this same loss on
# human comparisons.


def preference_pairs(names, count):
    by_letter = {}
    for name in names:
        by_letter.setdefault(name[0], []).append(name)
    pairs = []
    while len(pairs) < count:
        first = random.choice(names)
        other = random.choice(by_letter[first[0]])
        if len(first) != len(other):
            pairs.append((first, other) if len(first) > len(other) else (other, first))
    return pairs


def letter_counts(name):
    x = [0.0] * len(LETTERS)
    for c in name:
        x[STOI[c]] += 1.0
    return x


def init_reward_model():
    # Small random W1 so the hidden units differ; w2 starts at 0, so every name scores 0 and
    # the first loss is exactly ln 2 = 0.693 per pair.
    return {"W1": [[random.gauss(0.0, 0.3) for _ in LETTERS] for _ in range(RM_HIDDEN)],
            "b1": [0.0] * RM_HIDDEN, "w2": [0.0] * RM_HIDDEN, "b2": [0.0]}


def reward_forward(rm, name):
    x = letter_counts(name)
    h = [math.tanh(sum(map(operator.mul, row, x)) + b) for row, b in zip(rm["W1"], rm["b1"])]
    return sum(w * hi for w, hi in zip(rm["w2"], h)) + rm["b2"][0], (x, h)


def add_reward_gradient(rm, grads, cache, scale):
    # Chain rule by hand, for r = w2 . h + b2 with h = tanh(W1 x + b1), times `scale` = dL/dr:
    #     dr/dw2_j = h_j          dr/db2 = 1
    #     dr/db1_j = w2_j (1 - h_j^2)          (tanh' = 1 - tanh^2)
    #     dr/dW1_jk = w2_j (1 - h_j^2) x_k
    x, h = cache
    grads["b2"][0] += scale
    for j, hj in enumerate(h):
        grads["w2"][j] += scale * hj
        pre = scale * rm["w2"][j] * (1.0 - hj * hj)
        grads["b1"][j] += pre
        row = grads["W1"][j]
        for k, xk in enumerate(x):
            if xk:
                row[k] += pre * xk


def bradley_terry_loss_and_grads(rm, pairs):
    """Mean Bradley-Terry loss over `pairs` and its gradient for every reward-model weight."""
    grads = {name: [[0.0] * len(row) for row in rows] if name == "W1" else [0.0] * len(rows)
             for name, rows in rm.items()}
    total = 0.0
    for chosen, rejected in pairs:
        r_c, cache_c = reward_forward(rm, chosen)
        r_r, cache_r = reward_forward(rm, rejected)
        margin = r_c - r_r
        # L = -log sigmoid(m) = log(1 + e^-m), and dL/dm = sigmoid(m) - 1 = -1 / (1 + e^m).
        # Each is written with e = exp(-|m|) <= 1, so no exp() can overflow at any margin.
        e = math.exp(-abs(margin))
        total += math.log1p(e) + max(0.0, -margin)
        dl_dm = -e / (1.0 + e) if margin >= 0 else -1.0 / (1.0 + e)
        add_reward_gradient(rm, grads, cache_c, dl_dm / len(pairs))      # dm/dr_c = +1
        add_reward_gradient(rm, grads, cache_r, -dl_dm / len(pairs))     # dm/dr_r = -1
    return total / len(pairs), grads


def flat(tree):
    # The reward model's weights as one list of (container, index), for Adam
    slots = []
    for rows in tree.values():
        for row in (rows if isinstance(rows[0], list) else [rows]):
            slots.extend((row, i) for i in range(len(row)))
    return slots


def train_reward_model(rm, train_pairs, start):
    # Adam on mini-batches of 20 pairs; the loss of each batch is kept for the curve.
    slots = flat(rm)
    m, v, t, losses = [0.0] * len(slots), [0.0] * len(slots), 0, []
    for epoch in range(RM_EPOCHS):
        order = train_pairs[:]
        random.shuffle(order)
        for b in range(0, len(order), 20):
            loss, grads = bradley_terry_loss_and_grads(rm, order[b:b + 20])
            t += 1
            for i, ((row, j), (grow, gj)) in enumerate(zip(slots, flat(grads))):
                g = grow[gj]
                m[i] = BETA1 * m[i] + (1.0 - BETA1) * g
                v[i] = BETA2 * v[i] + (1.0 - BETA2) * g * g
                row[j] -= RM_LR * (m[i] / (1 - BETA1 ** t)) / (math.sqrt(v[i] / (1 - BETA2 ** t))
                                                             + ADAM_EPS)
            losses.append(loss)
        print(f"reward model epoch {epoch + 1}/{RM_EPOCHS} | Bradley-Terry loss "
              f"{sum(losses[-10:]) / len(losses[-10:]):.4f} | {time.time() - start:.1f}s")
    return losses


# In our run the reward model orders all 200 held-out pairs correctly (1.000; no name in them
# was trained on), and its raw score climbs with length: -7.63 for a 2-letter name, 2.59 at
# 6 letters, 9.94 at 10. Its task is easy on purpose: letter counts add up to the length.
# The same network untrained, with random output weights, orders about half of them: 0.505
# in our run, and from 0.375 to 0.61 over nine other random initialisations we tried.


def pair_accuracy(rm, pairs):
    return sum(reward_forward(rm, c)[0] > reward_forward(rm, r)[0] for c, r in pairs) / len(pairs)


# === STAGE 3a: ROLLOUTS ===
# PPO learns from its own samples. A rollout starts from [BOS, first letter] (the prompt) and
# draws one character at a time from the current policy until it draws BOS (the name ends)
# or the name reaches MAX_LETTERS. Each draw is an action a_t taken in state s_t (the tokens
# so far). Sampling needs no gradient, so it runs gpt_step() on a plain-float snapshot of the
# policy, and the frozen reference runs alongside on the same tokens. We keep, per action,
#     old_logp_t = log pi_old(a_t | s_t)   (the policy that sampled, fixed for this batch)
#     ref_logp_t = log pi_ref(a_t | s_t)   (the pretrained model, fixed for the whole run)
# and, since both models' whole next-token distributions are at hand anyway, the exact KL
# between them at that prefix, sum_j pi_old(j | s_t) (log pi_old(j | s_t) - log pi_ref(j | s_t))
# (27 terms), the reference that the sampled KL estimate below is checked against.
# Signpost: production RLHF samples whole batches of completions at once, vectorised on
# GPUs; here each name is drawn one token at a time in plain Python.


def rollout(policy, reference, first_letter):
    tokens = [BOS, STOI[first_letter]]
    caches = {id(m): ([[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)])
              for m in (policy, reference)}
    old_logps, ref_logps, exact_kls = [], [], []
    for pos in range(BLOCK_SIZE):
        # (when the policy is the reference itself, one forward pass serves both)
        logps = {id(m): log_softmax_floats(gpt_step(m, tokens[pos], pos, *caches[id(m)]))
                 for m in {id(policy): policy, id(reference): reference}.values()}
        if pos == 0:
            continue   # the first letter is the prompt: given, not sampled
        policy_logps, reference_logps = logps[id(policy)], logps[id(reference)]
        action = random.choices(range(VOCAB_SIZE), weights=[math.exp(lp) for lp in policy_logps])[0]
        old_logps.append(policy_logps[action])
        ref_logps.append(reference_logps[action])
        exact_kls.append(sum(math.exp(p) * (p - q)
                             for p, q in zip(policy_logps, reference_logps)))
        tokens.append(action)
        if action == BOS or len(tokens) - 1 == MAX_LETTERS:
            break
    return {"tokens": tokens, "old_logps": old_logps, "ref_logps": ref_logps,
            "exact_kl": sum(exact_kls), "name": decode(tokens)}


# === STAGE 3b: THE VALUE HEAD ===
# V(s_t) predicts the return still to come from state s_t: here, the end-of-name reward.
# It is a linear model on plain floats over three kinds of feature of the prefix: which
# position we are at (one-hot, MAX_LETTERS wide), the last letter (one-hot, 26), and how
# often each letter occurs so far (26), plus a bias: 61 parameters. It is trained by
# regression on the returns, minimising
#     L_V = mean_t (1/2) (V(s_t) - G_t)^2,     V(s) = w . f(s) + b
# whose gradient is dL_V/dw = mean_t (V(s_t) - G_t) f(s_t), dL_V/db = mean_t (V(s_t) - G_t).
# Signpost: production value functions are transformers too: a scalar head on the policy's
# own trunk (TRL's AutoModelForCausalLMWithValueHead), or a separate model initialised from
# the reward model (as InstructGPT did). A separate linear model keeps the policy's graph
# small here.


def value_features(prefix):
    f = [0.0] * (MAX_LETTERS + 2 * len(LETTERS))
    f[len(prefix) - 2] = 1.0                                   # position of the last token
    f[MAX_LETTERS + prefix[-1]] = 1.0                          # the last letter
    for t in prefix[1:]:
        f[MAX_LETTERS + len(LETTERS) + t] += 1.0               # letter counts so far
    return f


def value_of(head, features):
    return sum(w * f for w, f in zip(head["w"], features)) + head["b"]


def value_loss_and_grads(head, states, returns):
    grad_w, grad_b, loss = [0.0] * len(head["w"]), 0.0, 0.0
    for f, g in zip(states, returns):
        error = value_of(head, f) - g
        loss += 0.5 * error * error / len(states)
        grad_b += error / len(states)
        for i, fi in enumerate(f):
            if fi:
                grad_w[i] += error * fi / len(states)
    return loss, grad_w, grad_b


# === STAGE 3c: ADVANTAGES BY GENERALISED ADVANTAGE ESTIMATION (GAE) ===
# The advantage A_t says how much better action a_t turned out than the value head expected.
# A reward arrives only at the end of a name: r_t = 0 before the last action, and at the last
#     r_T-1 = RM(name) - KL_COEF * sum_t (old_logp_t - ref_logp_t)
# (the reward model's score minus the KL penalty for the whole name; see KL PENALTY below).
# The one-step temporal-difference (TD) error compares V's guess before and after a_t:
#     delta_t = r_t + gamma * V(s_t+1) - V(s_t)          (V after the last action is 0)
# Two ways to turn deltas into an advantage:
#   - lambda = 0: A_t = delta_t. Low variance (one sampled step), but as wrong as V is.
#   - lambda = 1: A_t = sum_k gamma^k r_t+k - V(s_t), the sampled return minus the baseline
#     (the V terms telescope away). Unbiased whatever V is, but it carries the noise of
#     every later sampled character.
# GAE averages all the k-step estimates in between with weights (1 - lambda) lambda^(k-1)
# (the weight of the steps past the end of the name goes to the full return); the average
# collapses to an exponentially weighted sum of TD errors,
#     A_t = sum_k (gamma * lambda)^k * delta_t+k
# and computing it backwards from the end needs one pass: A_t = delta_t + gamma*lambda*A_t+1.
# The value head's regression target is the return G_t = A_t + V(s_t) (the same estimate,
# with the baseline added back). The tests check both limits exactly.


def gae(rewards, values, gamma, lam):
    advantages, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages, [a + v for a, v in zip(advantages, values)]


# === STAGE 3d: THE CLIPPED SURROGATE ===
# Start from the objective: J(theta) = E_{name ~ pi_theta}[return]. The policy-gradient
# theorem gives its gradient as an expectation over the policy's own samples,
#     grad J = E[ sum_t A_t * grad log pi_theta(a_t | s_t) ]
# (A_t in place of the raw return subtracts a baseline, which changes the variance, not the
# mean). But the samples came from pi_old, and after one update pi_theta has moved. Importance
# weighting corrects for that: with ratio_t = pi_theta(a_t|s_t) / pi_old(a_t|s_t),
#     L_PG(theta) = E_{pi_old}[ sum_t ratio_t * A_t ]
# has exactly the policy gradient at theta = pi_old (there grad ratio = grad log pi), so a
# batch can be reused. Far from pi_old it is a bad guide: a few tokens whose ratio has grown
# dominate, and maximising L_PG drives the ratios on without limit. PPO takes, per token,
#     min(ratio_t * A_t, clip(ratio_t, 1 - eps, 1 + eps) * A_t)
# a pessimistic version of the same objective. While ratio_t is inside [1 - eps, 1 + eps] the
# two terms agree; once a good action (A > 0) has been made eps more likely, or a bad one
# (A < 0) eps less likely, the clipped term is the smaller one, and its gradient is 0 (clip()
# has slope 0 outside the band). That token then stops asking for more: further epochs on the
# same batch get no gradient from it, which is what makes several epochs per batch safe. (A
# move in the wrong direction is never clipped: the min keeps the unclipped term, and its
# gradient pulls the ratio back.) The clip is not a hard wall: the weights are shared, so the
# other tokens' gradients, and Adam's momentum, can still carry a clipped token's ratio past
# 1 + eps. THE CLIP AT WORK below measures how much it holds back.
# The loss to minimise is the negated mean over every action in the batch.


def surrogate_loss(model, batch, advantages, clip_eps=None):
    clip_eps = CLIP_EPS if clip_eps is None else clip_eps
    terms, clipped = [], 0
    for sample, advs in zip(batch, advantages):
        tokens = sample["tokens"]
        logits = token_logits(model, tokens[:-1])[1:]   # the prompt's own prediction is unused
        for z, action, old_logp, a in zip(logits, tokens[2:], sample["old_logps"], advs):
            ratio = (-cross_entropy(z, action) - old_logp).exp()   # pi_theta / pi_old
            unclipped = ratio * a
            clipped_term = ratio.clip(1.0 - clip_eps, 1.0 + clip_eps) * a
            terms.append(unclipped if unclipped.data <= clipped_term.data else clipped_term)
            clipped += not (1.0 - clip_eps <= ratio.data <= 1.0 + clip_eps)
    return -mean(terms), clipped / len(terms)


# === STAGE 3e: ONE PPO STEP ===
# KL PENALTY. Left alone, the policy would chase the reward model wherever it is wrong
# ("reward hacking": letters the reward model overrates, names no one would write). RLHF
# therefore maximises reward minus beta * KL(pi || pi_ref). For one sampled name,
#     sum_t (log pi(a_t|s_t) - log pi_ref(a_t|s_t))
# is an unbiased estimate of the KL between the two models' distributions over whole names
# (one name's estimate can be negative, and so can a mean over the 8 names of a step, as the
# early points on the KL curves are; its expectation cannot, being a KL). Subtracting KL_COEF
# times it from the name's reward puts the penalty into the return. The same expectation is
# sum_t KL(pi_old(. | s_t) || pi_ref(. | s_t)) over the sampled prefixes (at each one, the
# sampled log-ratio averages to that prefix's exact KL), and the rollout records that sum: the
# kl_estimate_gap_se criterion compares the two over the main run's 240 names.
# Signpost: InstructGPT-style RLHF (and TRL's PPO trainer) subtract the penalty per token,
# -beta * (log pi - log pi_ref) at every position, with the reward model's score added at the
# last one. With gamma = 1 the return from the first token is then the same sum as here, but
# only from the first: the return from a later token t sums the penalties of tokens t onward,
# while here every token's return carries the whole name's penalty. The extra part, the
# penalties of the tokens before t, is fixed once s_t is, so it shifts a_t's return by a
# baseline that depends on the state only: more noise in the gradient, no bias.
# What the penalty buys, in our run: with KL_COEF = 0.05 the policy ends 3.5 nats per name
# from the reference and 98.5% of its names are longer than 6 letters (mean length 7.94 of
# at most 8: almost every name runs to the cap); with 0.5 it ends 1.5 nats away, with 89%
# long names and a mean length of 7.57. Both started from the same policy, at 24.5%.


def collect_batch(policy, head, reference, rm, names, kl_coef):
    """Sample BATCH_SIZE names, score them, and give every action its advantage."""
    batch = [rollout(policy, reference, random.choice(names)[0]) for _ in range(BATCH_SIZE)]
    scores, kls, advantages, states, returns = [], [], [], [], []
    exact_kls = [sample["exact_kl"] for sample in batch]
    for sample in batch:
        score = reward_forward(rm, sample["name"])[0]
        kl = sum(o - r for o, r in zip(sample["old_logps"], sample["ref_logps"]))
        tokens = sample["tokens"]
        feats = [value_features(tokens[:t]) for t in range(2, len(tokens))]
        values = [value_of(head, f) for f in feats]
        rewards = [0.0] * (len(values) - 1) + [score - kl_coef * kl]
        advs, rets = gae(rewards, values, GAMMA, LAMBDA)
        scores.append(score)
        kls.append(kl)
        advantages.append(advs)
        states.extend(feats)
        returns.extend(rets)
    # Whitening: advantages shifted and scaled to mean 0 and standard deviation 1 over the
    # batch. The batch mean acts as one more baseline, and the size of the push stays the same
    # from batch to batch while the rewards drift upward (TRL whitens them too).
    every = [a for advs in advantages for a in advs]
    mu = avg(every)
    sd = math.sqrt(avg([(a - mu) ** 2 for a in every])) + 1e-8
    advantages = [[(a - mu) / sd for a in advs] for advs in advantages]
    return {"batch": batch, "advantages": advantages, "states": states, "returns": returns,
            "scores": scores, "kls": kls, "exact_kls": exact_kls}


# Did the update do what PPO's objective asks? After the epochs on a batch, the new policy's
# importance-weighted advantage over the batch's actions,
#     mean_t (pi_new(a_t | s_t) / pi_old(a_t | s_t)) * A_t
# is recomputed here on plain floats, straight from the formula (a fresh forward pass of the
# new weights; nothing from surrogate_loss() is reused). Before the update every ratio is 1
# and the whitened advantages average to 0, so it starts at 0; an update that makes good
# actions likelier and bad ones rarer raises it. (The surrogate loss falling within an
# update says less: a loss with the wrong sign falls too, while the policy moves the wrong
# way.)


def importance_weighted_advantage(new_policy, batch, advantages):
    terms = []
    for sample, advs in zip(batch, advantages):
        tokens = sample["tokens"]
        for z, action, old_logp, a in zip(token_logits(new_policy, tokens[:-1])[1:], tokens[2:],
                                          sample["old_logps"], advs):
            terms.append(math.exp(log_softmax_floats(z)[action] - old_logp) * a)
    return avg(terms)


def ppo_step(model, params, adam, head, reference, rm, names, kl_coef):
    collected = collect_batch(frozen(model), head, reference, rm, names, kl_coef)
    batch, advantages = collected["batch"], collected["advantages"]
    states, returns, scores, kls, exact_kls = (
        collected[k] for k in ("states", "returns", "scores", "kls", "exact_kls"))
    epoch_losses, clip_fractions = [], []
    for epoch in range(PPO_EPOCHS):
        loss, clip_fraction = surrogate_loss(model, batch, advantages)
        loss.backward()
        adam_step(params, adam, PPO_LR)
        epoch_losses.append(loss.data)
        clip_fractions.append(clip_fraction)
    for _ in range(VALUE_EPOCHS):
        value_loss, grad_w, grad_b = value_loss_and_grads(head, states, returns)
        head["w"] = [w - VALUE_LR * g for w, g in zip(head["w"], grad_w)]
        head["b"] -= VALUE_LR * grad_b
    return {"reward": sum(scores) / len(scores), "kl": sum(kls) / len(kls),
            "kl_exact": sum(exact_kls) / len(exact_kls),
            "surrogate_gain": importance_weighted_advantage(frozen(model), batch, advantages),
            # the first epoch's ratios are all exactly 1, so only later epochs can clip
            "clip_fraction": sum(clip_fractions[1:]) / max(1, len(clip_fractions) - 1),
            "surrogate_improvement": epoch_losses[0] - epoch_losses[-1],
            "value_loss": value_loss}


def run_ppo(pretrained, reference, rm, names, kl_coef, start):
    model = {name: [[Value(x) for x in row] for row in mat] for name, mat in pretrained.items()}
    params = parameters(model)
    adam = adam_state(len(params))
    head = {"w": [0.0] * (MAX_LETTERS + 2 * len(LETTERS)), "b": 0.0}
    history = {key: [] for key in ("reward", "kl", "kl_exact", "clip_fraction",
                                   "surrogate_improvement", "surrogate_gain", "value_loss")}
    print(f"\nPPO with KL coefficient {kl_coef}:")
    for step in range(NUM_STEPS):
        for key, value in ppo_step(model, params, adam, head, reference, rm, names,
                                   kl_coef).items():
            history[key].append(value)
        if (step + 1) % LOG_EVERY == 0 or step == 0:
            recent = {k: v[-LOG_EVERY:] for k, v in history.items()}
            print(f"step {step + 1:4d}/{NUM_STEPS} | reward {avg(recent['reward']):6.3f} | "
                  f"KL {avg(recent['kl']):6.3f} | clip frac {avg(recent['clip_fraction']):.3f} | "
                  f"value loss {avg(recent['value_loss']):.3f} | {time.time() - start:.1f}s")
    return frozen(model), history


# === THE CLIP AT WORK ===
# The claim above, measured: one batch from the pretrained policy, optimised for
# CLIP_DEMO_EPOCHS epochs instead of PPO_EPOCHS, once with the clip and once without it
# (eps so large that nothing is ever clipped). Afterwards we look at how far the policy has
# moved from the one that sampled the batch: the largest ratio pi_new / pi_old over the
# batch's actions, and KL(pi_old || pi_new) summed over each name's positions, computed
# exactly over all 27 next tokens at every prefix in the batch (mean over the names).


# In our run: largest ratio 2.132 with the clip against 4.488 without, KL 0.236 against 0.658
# per name. The clip held the drift to about a third, and it did not stop it (2.132 is well
# past 1 + eps = 1.2), one reason to keep the epochs per batch few (3 here).


def clip_demo(pretrained, rm, names):
    head = {"w": [0.0] * (MAX_LETTERS + 2 * len(LETTERS)), "b": 0.0}
    collected = collect_batch(pretrained, head, pretrained, rm, names, KL_COEF)
    batch, advantages = collected["batch"], collected["advantages"]
    moved = {}
    for label, eps in (("with the clip", CLIP_EPS), ("without it", 1e9)):
        model = {k: [[Value(x) for x in row] for row in mat] for k, mat in pretrained.items()}
        params, adam = parameters(model), adam_state(len(parameters(model)))
        for _ in range(CLIP_DEMO_EPOCHS):
            loss, _ = surrogate_loss(model, batch, advantages, eps)
            loss.backward()
            adam_step(params, adam, PPO_LR)
        new = frozen(model)
        log_ratios, kls = [], []
        for sample in batch:
            tokens = sample["tokens"]
            kl = 0.0
            for z_old, z_new, a in zip(token_logits(pretrained, tokens[:-1])[1:],
                                       token_logits(new, tokens[:-1])[1:], tokens[2:]):
                old_lp, new_lp = log_softmax_floats(z_old), log_softmax_floats(z_new)
                log_ratios.append(new_lp[a] - old_lp[a])
                kl += sum(math.exp(o) * (o - n) for o, n in zip(old_lp, new_lp))
            kls.append(kl)
        moved[label] = (math.exp(max(log_ratios)), avg(kls))
        print(f"{CLIP_DEMO_EPOCHS} epochs on one batch, {label:<13}: largest ratio "
              f"{moved[label][0]:.3f}, KL(pi_old || pi_new) per name {moved[label][1]:.4f}")
    return moved


def avg(xs):
    return sum(xs) / len(xs)


# === PPO OR DPO? ===
# DPO (alignment/microdpo.py) optimises the same KL-regularised objective straight
# from the preference pairs: no reward model, no value head, no sampling inside the loop. PPO
# needs four models here (policy, reference, reward model, value head) and more dials (clip,
# lambda, two learning rates). What it buys is a reward that can score names nobody labelled:
# every name the policy samples is scored, including the 8-letter names it learns to write,
# so the feedback follows the policy wherever it moves. When the reward is a program rather
# than a set of pairs (a checker, a test suite) there is nothing for DPO to fit, and an RL
# loop like this one uses the program directly (as GRPO does in alignment/microgrpo.py).

# === EVALUATION ===
# A policy is measured on NUM_EVAL_SAMPLES fresh names (prompts drawn as in training): the
# share longer than 6 letters (what the preference rewards), the mean reward-model score, and
# the KL to the reference per name, estimated as above.


def evaluate(policy, reference, rm, names):
    samples = [rollout(policy, reference, random.choice(names)[0])
               for _ in range(NUM_EVAL_SAMPLES)]
    scores = [reward_forward(rm, s["name"])[0] for s in samples]
    return {"long_share": avg([len(s["name"]) > 6 for s in samples]),
            "reward": avg(scores), "scores": scores,
            "kl": avg([sum(o - r for o, r in zip(s["old_logps"], s["ref_logps"]))
                       for s in samples]),
            "mean_length": avg([len(s["name"]) for s in samples]),
            "names": [s["name"] for s in samples]}


def normalise_reward(rm, scores):
    # r -> (r - mu) / sd, folded into the output layer: w2 / sd and (b2 - mu) / sd. An affine
    # map with sd > 0 keeps every ordering (the accuracy is unchanged) but puts the pretrained
    # policy's names at mean 0 and standard deviation 1, so KL_COEF is in those units.
    mu = avg(scores)
    sd = math.sqrt(avg([(x - mu) ** 2 for x in scores]))
    rm["w2"] = [w / sd for w in rm["w2"]]
    rm["b2"] = [(rm["b2"][0] - mu) / sd]


# === PICTURES ===


def ascii_curve(series, width=50, height=6):
    """Plot a series as rows of text, averaging it into `width` buckets."""
    width = min(width, len(series))
    bucket = len(series) / width
    points = [avg(series[int(i * bucket):max(int(i * bucket) + 1, int((i + 1) * bucket))])
              for i in range(width)]
    low, high = min(points), max(points)
    rows = []
    for r in range(height):
        level = high - (high - low) * r / max(1, height - 1)
        line = "".join("*" if abs(p - level) <= (high - low) / (2 * height) + 1e-12 else " "
                       for p in points)
        rows.append(f"{level:7.3f} |{line}")
    rows.append("        +" + "-" * width)
    return "\n".join(rows)


def show_names(title, names):
    print(title)
    for row in range(0, len(names), 6):
        print("  " + "  ".join(f"{n:<10}" for n in names[row:row + 6]))


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("reward model: held-out pairs ordered correctly", "reward_model_accuracy", ">", 0.95),
    ("share of names > 6 letters, after PPO - before", "preferred_share_gain", ">", 0.4),
    ("mean ratio * advantage after each update (0 before)", "surrogate_gain", ">", 0.01),
    ("KL/name, sampled estimate - exact, in std errors", "kl_estimate_gap_se", "<", 3.0),
    ("final KL, 10x KL coefficient vs main run", "kl_final_high_coef", "<", "kl_final"),
    ("KL moved by 10 epochs on one batch, clip vs none", "demo_kl_clipped", "<",
     "demo_kl_unclipped"),
]
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
           "==": operator.eq}


def print_criteria(results):
    print(f"\n{'criterion':<50} {'measured':>12} {'threshold':>14}  result")
    for description, key, op, target in CRITERIA:
        value = results[key]
        threshold = results[target] if isinstance(target, str) else target
        # A non-finite value fails every row: NaN compares False with anything, but
        # inf would pass a ">" row, so finiteness is checked explicitly.
        finite = math.isfinite(value) and math.isfinite(threshold)
        verdict = "PASS" if finite and COMPARE[op](value, threshold) else "FAIL"
        print(f"{description:<50} {value:>12.6g} {op:>2} {threshold:<11.6g}  {verdict}")


# === MAIN ===


def main():
    random.seed(42)
    # Speed: the graph has no reference cycles (a node points only at the older nodes it was
    # computed from), so reference counting frees each step's graph the moment the step
    # ends. Python's cycle collector would keep rescanning the live nodes as millions are
    # created and find nothing to free, so it is switched off (no number changes).
    gc.disable()
    start = time.time()
    all_names = load_names()
    random.shuffle(all_names)
    # As in microdpo: 10% of the names are held out of pretraining and of the training pairs.
    # names.txt lists some names twice, so a held-out name that also occurs among the
    # training names is dropped: no name in a held-out pair was ever trained on.
    split = int(len(all_names) * (1.0 - HELDOUT_SHARE))
    names = all_names[:split]
    seen = set(names)
    heldout_names = [n for n in all_names[split:] if n not in seen]

    # --- stage 1: pretrain the policy ---
    model = init_model()
    print(f"{len(names)} training names, {len(heldout_names)} held out; policy: "
          f"{len(parameters(model))} parameters, names cut at {MAX_LETTERS} letters")
    pretrain_losses = pretrain(model, names, start)
    print("Pretraining loss per name (mean over its characters), in buckets of steps:")
    print(ascii_curve(pretrain_losses))
    pretrained = frozen(model)   # also the frozen reference for every KL below

    # --- stage 2: the reward model ---
    train_pairs = preference_pairs(names, RM_PAIRS)
    test_pairs = preference_pairs(heldout_names, HELDOUT_PAIRS)
    rm = init_reward_model()
    rm_losses = train_reward_model(rm, train_pairs, start)
    accuracy = pair_accuracy(rm, test_pairs)
    print("Reward-model loss per batch of 20 pairs (starts at ln 2 = 0.693):")
    print(ascii_curve(rm_losses))
    by_length = {}
    for name in names:
        if len(name) not in by_length:
            by_length[len(name)] = reward_forward(rm, name)[0]
    # The baseline: the same network untrained, its output weights random too (its own
    # generator, so the main run's random draws stay as they are).
    rng = random.Random(0)
    untrained = {"W1": [[rng.gauss(0.0, 0.3) for _ in LETTERS] for _ in range(RM_HIDDEN)],
                 "b1": [0.0] * RM_HIDDEN, "w2": [rng.gauss(0.0, 0.3) for _ in range(RM_HIDDEN)],
                 "b2": [0.0]}
    untrained_accuracy = pair_accuracy(untrained, test_pairs)
    print(f"held-out pairs ordered correctly: {accuracy:.3f} (untrained, random weights: "
          f"{untrained_accuracy:.3f}; a coin flip: 0.5)")
    print("score of a sample name of each length: " +
          ", ".join(f"{n}: {s:.2f}" for n, s in sorted(by_length.items()) if n <= 10))

    # --- stage 3: PPO, twice from the same start ---
    before = evaluate(pretrained, pretrained, rm, names)
    normalise_reward(rm, before["scores"])
    before["scores"] = [reward_forward(rm, n)[0] for n in before["names"]]
    before["reward"] = avg(before["scores"])
    print()
    moved = clip_demo(pretrained, rm, names)
    rng_state = random.getstate()
    tuned, history = run_ppo(pretrained, pretrained, rm, names, KL_COEF, start)
    random.setstate(rng_state)   # the same prompts and draws for the comparison run
    tuned_high, history_high = run_ppo(pretrained, pretrained, rm, names, KL_COEF_HIGH, start)
    after = evaluate(tuned, pretrained, rm, names)
    after_high = evaluate(tuned_high, pretrained, rm, names)

    print(f"\nMean reward per PPO step (KL coefficient {KL_COEF}):")
    print(ascii_curve(history["reward"]))
    print(f"KL(policy || reference) per name, per PPO step (KL coefficient {KL_COEF}):")
    print(ascii_curve(history["kl"]))
    print(f"KL per name, per PPO step (KL coefficient {KL_COEF_HIGH}):")
    print(ascii_curve(history_high["kl"]))

    window = KL_WINDOW
    kl_early, kl_final = avg(history["kl"][:window]), avg(history["kl"][-window:])
    kl_sampled, kl_exact = avg(history["kl"]), avg(history["kl_exact"])
    # Both have the same expectation at every step, so the step-by-step differences average
    # to 0 up to noise: their mean is measured in units of its standard error.
    kl_diffs = [s - e for s, e in zip(history["kl"], history["kl_exact"])]
    mean_diff = avg(kl_diffs)
    # standard error of the mean: sample standard deviation / sqrt(n)
    kl_diff_se = math.sqrt(sum((d - mean_diff) ** 2 for d in kl_diffs)
                           / (len(kl_diffs) * max(1, len(kl_diffs) - 1)))
    kl_gap_se = (abs(mean_diff) / kl_diff_se if kl_diff_se > 0
                 else 0.0 if mean_diff == 0 else math.inf)
    kl_final_high = avg(history_high["kl"][-window:])
    print(f"\n{'policy':<22} {'reward':>8} {'KL/name':>8} {'> 6 letters':>12} {'length':>7} "
          f"{'clip frac':>10}")
    rows = [("pretrained", before, None), (f"PPO, KL coef {KL_COEF}", after, history),
            (f"PPO, KL coef {KL_COEF_HIGH}", after_high, history_high)]
    for label, ev, hist in rows:
        clip = f"{avg(hist['clip_fraction']):10.3f}" if hist else f"{'-':>10}"
        print(f"{label:<22} {ev['reward']:8.3f} {ev['kl']:8.3f} {ev['long_share']:12.3f} "
              f"{ev['mean_length']:7.2f} {clip}")
    print(f"(each row: {NUM_EVAL_SAMPLES} fresh samples; KL per name during training, mean of "
          f"the first / last {window} steps: {kl_early:.3f} / {kl_final:.3f} at coef {KL_COEF},"
          f" {avg(history_high['kl'][:window]):.3f} / {kl_final_high:.3f} at {KL_COEF_HIGH})")

    print(f"KL per name over all {NUM_STEPS * BATCH_SIZE} names the main run sampled: the "
          f"estimate in the penalty {kl_sampled:.3f},\nthe exact KL at each sampled prefix, "
          f"summed, {kl_exact:.3f} (the difference is {kl_gap_se:.2f} standard errors).\n"
          f"Mean ratio * advantage after each update (0 before it): "
          f"{avg(history['surrogate_gain']):.4f}")

    show_names("\nSamples before PPO:", before["names"][:18])
    show_names(f"Samples after PPO (KL coef {KL_COEF}):", after["names"][:18])
    show_names(f"Samples after PPO (KL coef {KL_COEF_HIGH}):", after_high["names"][:18])

    results = {
        "reward_model_accuracy": accuracy,
        "untrained_reward_model_accuracy": untrained_accuracy,
        "preferred_share_gain": after["long_share"] - before["long_share"],
        "surrogate_improvement": avg(history["surrogate_improvement"]),
        "surrogate_gain": avg(history["surrogate_gain"]),
        "surrogate_gain_high_coef": avg(history_high["surrogate_gain"]),
        "kl_sampled_mean": kl_sampled,
        "kl_exact_mean": kl_exact,
        "kl_estimate_gap_se": kl_gap_se,
        "kl_early": kl_early,
        "kl_final": kl_final,
        "kl_final_high_coef": kl_final_high,
        "long_share_before": before["long_share"],
        "long_share_after": after["long_share"],
        "long_share_after_high_coef": after_high["long_share"],
        "reward_before": before["reward"],
        "reward_after": after["reward"],
        "reward_after_high_coef": after_high["reward"],
        "eval_kl_after": after["kl"],
        "eval_kl_after_high_coef": after_high["kl"],
        "clip_fraction": avg(history["clip_fraction"]),
        "final_pretrain_loss": avg(pretrain_losses[-100:]),
        "demo_max_ratio_clipped": moved["with the clip"][0],
        "demo_max_ratio_unclipped": moved["without it"][0],
        "demo_kl_clipped": moved["with the clip"][1],
        "demo_kl_unclipped": moved["without it"][1],
    }
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microppo.md")
    return results


if __name__ == "__main__":
    main()
