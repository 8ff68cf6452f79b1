"""microqlora: fine-tune a model whose frozen weights are stored in 4 bits (QLoRA), in plain Python.

LoRA (see alignment/microlora.py) makes the trainable part of fine-tuning tiny: the
base weights W0 are frozen and only a low-rank correction is learned,

    h = W0 x + B A x        A: r x k (projects down, starts Gaussian), B: d x r (starts at 0)

But the frozen W0 still has to sit in memory in full precision, and once the adapters are
small, that frozen copy is most of the memory fine-tuning needs. QLoRA (Dettmers et al., 2023,
"QLoRA: Efficient Finetuning of Quantized LLMs") stores W0 in 4 bits instead:

  1. NF4 (4-bit NormalFloat): 16 levels placed at quantiles of a normal distribution, so
     that bell-shaped weights spread over the levels far more evenly than over evenly spaced
     ones; each block of 64 weights is scaled by its own largest |w| (absmax);
  2. double quantisation: those per-block scales are themselves stored in 8 bits;
  3. the forward pass dequantises W0 on the fly, and gradients flow through it into the
     adapters only: the 4-bit codes are never trained, so they never need a gradient.

This file runs the whole story on baby names and measures each claim:

    pretrain a GPT on names a-m -> NF4 + double quantisation of its weights -> error vs INT4
    -> LoRA on the float base and QLoRA on the 4-bit base, same start, same names, n-z
    -> held-out losses -> bytes needed to fine-tune: full, LoRA, QLoRA

Run: python alignment/microqlora.py    (about 27 s on the 2-core CI machine)
"""
import bisect
import gc
import hashlib
import math
import operator
import os
import random
import shutil
import struct
import sys
import tempfile
import time
import urllib.request

# === HYPERPARAMETERS ===
# The base model is foundational/microgpt.py's (4,192 weights), pretrained here from scratch
# so that this file stands alone.
N_EMBD = 16        # width of every hidden vector
N_HEAD = 4         # attention heads; each looks at a 16 / 4 = 4-wide slice
N_LAYER = 1        # transformer blocks
BLOCK_SIZE = 16    # longest context; the longest name (15 letters) plus its start token fits
MLP_HIDDEN = 4 * N_EMBD   # the usual 4x expansion inside the MLP block
INIT_STD = 0.08    # small random weights keep the first logits near uniform (loss ~ ln 27)
BETA1, BETA2, ADAM_EPS = 0.85, 0.99, 1e-8   # Karpathy's microgpt values (PyTorch: 0.9, 0.999)
NUM_STEPS = 1000   # base pretraining on split A, one name per step, as in microgpt
LEARNING_RATE = 0.01
HELDOUT_FRACTION = 0.1   # of each split, never trained on
EVAL_NAMES = 500   # held-out names of each split that every loss below is measured on
# Adaptation: rank-2 adapters on the query and value projections, trained on split B
ADAPT_STEPS = 300  # adapter steps, one name per step, identical for LoRA and QLoRA
LORA_RANK = 2
LORA_TARGETS = ("wq", "wv")
LORA_LR = 0.03     # adapters start from B = 0 and must move far in 300 steps: 3x the base lr
A_INIT_STD = 1.0 / math.sqrt(N_EMBD)   # A x then has entries of size ~1 for a unit-RMS x
# Quantisation, with QLoRA's sizes
NF4_BLOCK = 64     # weights sharing one absmax scale
SCALE_BLOCK = 256  # first-level scales sharing one float32 constant (double quantisation)
NF4_OFFSET = 0.9677083   # probability of the outermost NF4 level (see NF4 below)
NUM_SAMPLES = 10   # names sampled from the base and from the QLoRA model
TEMPERATURE = 1.0  # 1.0 samples the model's own distribution, first letter included

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


# === TOKENIZER AND THE TWO SPLITS ===
# Character level, as in microgpt: 26 letters plus one BOS token that marks both the start
# and the end of a name ("emma" -> [BOS, e, m, m, a, BOS]). Split A (names starting a-m) is
# the pretraining data; split B (n-z) is the new task the adapters learn. How letters follow
# each other carries over between the splits; which letters a name starts with does not.


def build_vocab(names):
    # Sorting makes the letter -> id mapping the same on every run and every machine
    chars = sorted(set("".join(names)))
    return chars, len(chars)  # token ids 0..len-1 are letters; id len(chars) is BOS


def split_by_first_letter(names):
    return [n for n in names if n[0] <= "m"], [n for n in names if n[0] > "m"]


def hold_out(names, fraction):
    # The last `fraction` of the names is held out. names.txt lists some names more than once,
    # so a held-out name that also occurs among the training names is dropped: no held-out
    # name was ever trained on.
    cut = len(names) - int(len(names) * fraction)
    train, seen = names[:cut], set(names[:cut])
    return train, [n for n in names[cut:] if n not in seen]


# === AUTOGRAD: THE VALUE CLASS ===
# A Value wraps one float and remembers the Values it was computed from (`_children`) with
# the local derivative of its output with respect to each (`_local_grads`). backward() walks
# the graph from the loss down and applies the chain rule at every edge:
#     dL/d(child) += dL/d(node) * d(node)/d(child)
# Only pretraining and the adapters use it. A frozen weight, float or 4-bit, is a plain
# number: it never becomes a Value, so no gradient can ever be stored for it.


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
# On top of it this script adds these fused nodes, as plain functions (each checked against
# its naive form, or against finite differences, by tests/test_microqlora.py):
# - dot(): a whole dot product of two Value vectors as one node
# - const_dot(): a dot product of frozen plain floats with Values, as one node whose only
#   children are the Values (the frozen side gets no gradient: it is not in the graph)
# - softmax(): each output probability as one node over all the logits
# - cross_entropy(): log-softmax plus negative log-likelihood as one node
# - rms_scale(): the 1/RMS factor of RMSNorm as one node
# - a fused mean in name_loss(): the mean of a name's per-position losses as one node

# === FUSED NODES, AND FROZEN WEIGHTS AS PLAIN FLOATS ===
# A dot product built from + and * is 2n - 1 nodes; one node that stores the known local
# derivatives (dy/dw_i = x_i, dy/dx_i = w_i) computes the same numbers and gradients
# (foundational/microgpt.py measures what that buys: 11x for its training). The naive form is
# kept here; the tests check that both agree.
# Freezing needs one more node: when the weights are plain floats c_i, y = sum_i c_i x_i has
# dy/dx_i = c_i and nothing else to differentiate. The gradient still flows *through* the
# frozen weights to whatever computed x (that is how an adapter early in the network learns
# from the loss at the end), but it never lands *on* them. Every function below accepts
# Values, plain floats or one of each, and uses the cheapest form: with no Value at all
# (evaluation, sampling) it is ordinary float arithmetic and builds no graph.


def naive_dot(weights, inputs):
    total = weights[0] * inputs[0]
    for w, x in zip(weights[1:], inputs[1:]):
        total = total + w * x
    return total


def dot(weights, inputs, inputs_data=None):
    # y = sum_i w_i * x_i, one node with 2n children. linear() hands over the inputs' floats,
    # read once per layer instead of once per row.
    x_data = [x.data for x in inputs] if inputs_data is None else inputs_data
    w_data = [w.data for w in weights]
    return Value(sum(map(operator.mul, w_data, x_data)), (*weights, *inputs), (*x_data, *w_data))


def const_dot(constants, inputs, inputs_data=None):
    # y = sum_i c_i * x_i with plain-float c: one node with n children, dy/dx_i = c_i
    x_data = [x.data for x in inputs] if inputs_data is None else inputs_data
    return Value(sum(map(operator.mul, constants, x_data)), tuple(inputs), tuple(constants))


def any_dot(a, b):
    """a . b for two vectors, each of Values or of plain floats."""
    if isinstance(a[0], Value):
        return dot(a, b) if isinstance(b[0], Value) else const_dot(b, a)
    if isinstance(b[0], Value):
        return const_dot(a, b)
    return sum(map(operator.mul, a, b))   # map keeps the float loop in C


def linear(inputs, weight_rows):
    # y = W x: one dot product per output neuron (no bias, as in microgpt). Which node to
    # build is decided once per layer, and the inputs' floats are read once per layer.
    x_is_value = isinstance(inputs[0], Value)
    if not isinstance(weight_rows[0][0], Value):
        if not x_is_value:   # all floats: evaluation, sampling, the frozen base before an adapter
            return [sum(map(operator.mul, row, inputs)) for row in weight_rows]
        inputs = tuple(inputs)   # shared by every row's node as its children
        x_data = [x.data for x in inputs]
        return [const_dot(row, inputs, x_data) for row in weight_rows]
    if not x_is_value:
        inputs = tuple(inputs)
        return [const_dot(inputs, row) for row in weight_rows]
    x_data = [x.data for x in inputs]
    return [dot(row, inputs, x_data) for row in weight_rows]


def shifted_exps(numbers):
    # exp(z_i - m) with m = max(z), for plain floats: subtracting the max cancels in a
    # softmax but keeps exp() from overflowing. logsumexp(z) = m + log(sum_i exp(z_i - m)).
    top = max(numbers)
    return [math.exp(z - top) for z in numbers], top


def softmax(logits):
    # p_i = exp(z_i - m) / sum_j exp(z_j - m);   dp_i/dz_j = p_i * (delta_ij - p_j)
    is_value = isinstance(logits[0], Value)
    exps, _ = shifted_exps([z.data for z in logits] if is_value else logits)
    total = sum(exps)
    probs = [e / total for e in exps]
    if not is_value:
        return probs
    logits = tuple(logits)
    return [Value(p_i, logits, tuple(p_i * ((i == j) - p_j) for j, p_j in enumerate(probs)))
            for i, p_i in enumerate(probs)]


def cross_entropy(logits, target):
    # L = -log softmax(z)[y] = logsumexp(z) - z_y    (z = logits, y = target)
    # dL/dz_j = p_j - [j == y]: one node replaces an exp per logit, a sum, a divide and a log
    is_value = isinstance(logits[0], Value)
    exps, top = shifted_exps([z.data for z in logits] if is_value else logits)
    total = sum(exps)
    loss = top + math.log(total) - (logits[target].data if is_value else logits[target])
    if not is_value:
        return loss
    local_grads = tuple(e / total - (j == target) for j, e in enumerate(exps))
    return Value(loss, tuple(logits), local_grads)


def rms_scale(x):
    # RMSNorm: y_i = x_i * s with s = (mean_j x_j^2 + eps)^(-1/2),  ds/dx_j = -s^3 * x_j / n
    n = len(x)
    s = (sum(xi.data * xi.data for xi in x) / n + 1e-5) ** -0.5
    return Value(s, tuple(x), tuple(-s ** 3 * xi.data / n for xi in x))


def rmsnorm(x):
    # No learned gain, as in microgpt (real RMSNorm multiplies by one learned gain per channel)
    if not isinstance(x[0], Value):
        s = (sum(xi * xi for xi in x) / len(x) + 1e-5) ** -0.5
        return [xi * s for xi in x]
    s = rms_scale(x)
    return [xi * s for xi in x]


def relu(h):
    # A whole layer at once: Value.relu() for Values, max(0, x) for plain floats
    if isinstance(h[0], Value):
        return [v.relu() for v in h]
    return [v if v > 0.0 else 0.0 for v in h]


# === MODEL PARAMETERS ===
# A matrix is a list of rows; in y = W x a row holds one output neuron's weights. During
# pretraining the entries are Values; afterwards the base is frozen into plain floats
# (counted as float32, 4 bytes each, in the memory table), and then into 4-bit codes.


def matrix(rows, cols, std):
    # Gaussian init: random so that neurons differ, small so that nothing starts saturated
    return [[Value(random.gauss(0.0, std)) for _ in range(cols)] for _ in range(rows)]


def init_model(vocab_size):
    model = {
        "wte": matrix(vocab_size, N_EMBD, INIT_STD),       # token embedding
        "wpe": matrix(BLOCK_SIZE, N_EMBD, INIT_STD),       # position embedding
        "lm_head": matrix(vocab_size, N_EMBD, INIT_STD),   # hidden vector -> one logit a token
    }
    for layer in range(N_LAYER):
        for name in ("wq", "wk", "wv", "wo"):
            model[f"layer{layer}.{name}"] = matrix(N_EMBD, N_EMBD, INIT_STD)
        model[f"layer{layer}.fc1"] = matrix(MLP_HIDDEN, N_EMBD, INIT_STD)
        model[f"layer{layer}.fc2"] = matrix(N_EMBD, MLP_HIDDEN, INIT_STD)
    # 27*16 (wte) + 16*16 (wpe) + 27*16 (lm_head) + 4*16*16 (attention) + 2*64*16 (MLP) = 4,192
    return model


def parameters(matrices):
    return [p for mat in matrices for row in mat for p in row]


def frozen_copy(model):
    # A frozen row is a tuple: a const_dot() node keeps it as its local derivatives as it is
    return {name: [tuple([w.data for w in row]) for row in mat] for name, mat in model.items()}


# === LORA: THE LOW-RANK ADAPTER ===
# For each adapted matrix W0 (d x k = 16 x 16) two small trainable matrices:
#     A (r x k): projects the input down to r numbers,  u = A x
#     B (d x r): projects them back up,                 h = W0 x + B u
# B A has rank at most r = 2, and costs r * (d + k) = 64 numbers instead of d * k = 256.
# B starts at 0, so the adapted model starts out exactly as the base; A starts Gaussian,
# because with A = 0 too, B's gradient (dL/dB = dL/dh u^T, u = A x) would be 0, and A's (it
# goes through B) as well, forever. This is the LoRA paper's initialisation (PEFT's default
# draws A from a Kaiming-uniform distribution instead; B = 0 in both).
# Signposts: PEFT multiplies B A x by lora_alpha / r (by default). This script takes
# lora_alpha = r, so the factor is 1 and is left out. The QLoRA paper puts adapters on every
# linear layer of the transformer blocks (it found that necessary to match 16-bit full
# fine-tuning); this script adapts only the query and value projections, the LoRA paper's
# choice.


def init_adapters(rank):
    adapters = {}
    for layer in range(N_LAYER):
        for name in LORA_TARGETS:
            down = matrix(rank, N_EMBD, A_INIT_STD)                          # A: r x k
            up = [[Value(0.0) for _ in range(rank)] for _ in range(N_EMBD)]  # B: d x r, zeros
            adapters[f"layer{layer}.{name}"] = (down, up)
    return adapters


def adapter_parameters(adapters):
    return parameters(m for pair in adapters.values() for m in pair)


def copy_adapters(adapters):
    # LoRA and QLoRA must start from the very same A (and B = 0): each trains its own copy
    return {name: tuple([[Value(w.data) for w in row] for row in m] for m in pair)
            for name, pair in adapters.items()}


def adapted_linear(x, weights, name, adapters):
    # h = W0 x + B (A x): the frozen path plus the low-rank path. B A is never formed as a
    # d x k matrix during training: two thin products are cheaper.
    out = linear(x, weights[name])
    if name not in adapters:
        return out
    down, up = adapters[name]
    return [o + b for o, b in zip(out, linear(linear(x, down), up))]


# === MODEL: FORWARD PASS FOR ONE POSITION ===
# microgpt's forward pass, one token at a time with a growing key/value cache, so attention at
# position t reads only positions 0..t (causal by construction). It takes any mix of Value
# and float weights: pretraining passes Values; LoRA and QLoRA pass a frozen float base (for
# QLoRA, just dequantised from its 4-bit codes) plus Value adapters; evaluation passes floats.


def gpt_step(weights, adapters, token_id, pos, keys, values):
    """Logits for the next token after `token_id` at position `pos` (keys/values: caches)."""
    x = rmsnorm([t + p for t, p in zip(weights["wte"][token_id], weights["wpe"][pos])])
    head_dim = N_EMBD // N_HEAD
    score_scale = 1.0 / math.sqrt(head_dim)
    for layer in range(N_LAYER):
        name = f"layer{layer}."
        residual = x
        x = rmsnorm(x)
        q = adapted_linear(x, weights, name + "wq", adapters)
        keys[layer].append(adapted_linear(x, weights, name + "wk", adapters))
        values[layer].append(adapted_linear(x, weights, name + "wv", adapters))
        attended = []
        for h in range(0, N_EMBD, head_dim):
            # score_t = q . k_t / sqrt(head_dim); output = sum_t softmax(score)_t * v_t
            q_head = q[h:h + head_dim]
            scores = [any_dot(q_head, k[h:h + head_dim]) * score_scale for k in keys[layer]]
            attention = softmax(scores)
            for i in range(h, h + head_dim):
                attended.append(any_dot(attention, [v[i] for v in values[layer]]))
        x = [a + r for a, r in zip(adapted_linear(attended, weights, name + "wo", adapters),
                                   residual)]
        residual = x
        hidden = relu(adapted_linear(rmsnorm(x), weights, name + "fc1", adapters))
        x = [m + r for m, r in zip(adapted_linear(hidden, weights, name + "fc2", adapters),
                                   residual)]
    return linear(x, weights["lm_head"])


# === TRAINING ===
# One Adam loop serves pretraining and both adaptations; only the parameters it is handed and
# the loss it is given differ. Loss = mean over a name's positions of -log p(next token).
# Adam keeps running averages of each parameter's gradient (m) and squared gradient (v) and
# steps by m / sqrt(v). Signpost: real fine-tuning averages the loss over a batch of many
# sequences per step; one name per step keeps each step cheap here.


def name_loss(weights, adapters, tokens):
    """Mean loss per position of one name: a Value if anything is trainable, else a float."""
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    n = min(BLOCK_SIZE, len(tokens) - 1)
    losses = [cross_entropy(gpt_step(weights, adapters, tokens[pos], pos, keys, values),
                            tokens[pos + 1]) for pos in range(n)]
    if not isinstance(losses[0], Value):
        return sum(losses) / n
    return Value(sum(l.data for l in losses) / n, tuple(losses), (1.0 / n,) * n)  # fused mean


def train(label, params, step_loss, num_steps, learning_rate, start):
    """Adam on `params`; step_loss(step) builds that step's loss.

    Returns the loss per step and the gradient of the first step (main() checks the
    adapters' against finite differences of the quantised model's loss).
    """
    adam_m, adam_v = [0.0] * len(params), [0.0] * len(params)
    losses, first_gradient = [], None
    for step in range(num_steps):
        loss = step_loss(step)
        loss.backward()
        lr = learning_rate * (1.0 - step / num_steps)   # linear decay to 0
        # Bias corrections: m and v start at 0, so early averages are scaled back up
        correct_m, correct_v = 1.0 - BETA1 ** (step + 1), 1.0 - BETA2 ** (step + 1)
        # m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g^2 ; p -= lr * m_hat / (sqrt(v_hat) + eps)
        grads = [p.grad for p in params]
        if step == 0:
            first_gradient = grads
        adam_m = [BETA1 * m + (1.0 - BETA1) * g for m, g in zip(adam_m, grads)]
        adam_v = [BETA2 * v + (1.0 - BETA2) * g * g for v, g in zip(adam_v, grads)]
        for p, m, v in zip(params, adam_m, adam_v):
            p.data -= lr * (m / correct_m) / (math.sqrt(v / correct_v) + ADAM_EPS)
            p.grad = 0.0   # backward() adds into .grad: reset it for the next step
        losses.append(loss.data)
        if (step + 1) % 100 == 0 or step == 0:
            recent = losses[-100:]
            print(f"{label} step {step + 1:5d}/{num_steps} | training loss "
                  f"{sum(recent) / len(recent):.4f} | {time.time() - start:.1f}s")
    return losses, first_gradient


# === NF4: SIXTEEN LEVELS FROM THE NORMAL DISTRIBUTION ===
# 4 bits give 16 codes; a quantiser maps each code to one level, and each weight to its
# nearest level. Evenly spaced levels (INT4) suit evenly spread numbers, but trained weights
# are bell-shaped: most sit near 0, a few far out. NF4's idea: put the levels at *quantiles*
# of a normal distribution, so that each level stands for about the same share of normally
# distributed weights. Levels crowd together near 0, where the weights are, and spread out in
# the tails, where they are rare.
# The construction (the QLoRA paper's; bitsandbytes' create_normal_map with the default
# offset 0.9677083 and use_extra_value=True computes the same):
#   - an exact 0 is one of the levels, so that a weight of exactly 0 comes back exactly 0;
#   - 16 codes minus that zero leave 15, an odd number: the positive side gets 8 levels, the
#     negative side 7;
#   - positive side: the quantiles Q(p) at 9 probabilities evenly spaced from 0.5 to
#     NF4_OFFSET, the first (p = 0.5, Q = 0) dropped as it is the shared zero;
#     negative side: -Q(p) at 8 evenly spaced probabilities from 0.5 to NF4_OFFSET, the first
#     dropped the same way;
#   - divide all by the largest, so the levels run exactly from -1 to 1.
# Why the offset: Q(1) is infinite, so the outermost level needs a probability below 1.
# 0.9677083 is, to 7 digits, the mean of 1 - 1/32 and 1 - 1/30, the centres of the last of 16
# and of the last of 15 equal slices of probability; Q(0.9677083) = 1.848 standard deviations.
# tests/test_microqlora.py checks the 16 levels derived here against bitsandbytes' own table
# (its get_4bit_type("nf4"), as shipped in bitsandbytes 0.50.2): they agree to float32
# precision.


def normal_cdf(x):
    # Phi(x) = P(Z <= x) for a standard normal Z = (1 + erf(x / sqrt 2)) / 2
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def normal_quantile(p):
    """Q(p) = Phi^-1(p), the x with P(Z <= x) = p, found by bisection on Phi."""
    # Phi is increasing, so halving an interval that brackets the answer converges on it;
    # 100 halvings of [-10, 10] shrink the bracket far below a float's resolution.
    low, high = -10.0, 10.0
    for _ in range(100):
        mid = 0.5 * (low + high)
        if normal_cdf(mid) < p:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def nf4_levels(offset=NF4_OFFSET):
    """The 16 NF4 levels in increasing order: 7 negative, an exact 0, 8 positive."""
    positive = [normal_quantile(offset + (0.5 - offset) * i / 8) for i in range(8)]
    negative = [-normal_quantile(offset + (0.5 - offset) * i / 7) for i in range(7)]
    levels = sorted(negative + [0.0] + positive)
    top = max(levels)
    return [level / top for level in levels]


def int4_levels():
    # Uniform absmax INT4 for comparison (as in systems/microquant.py): w ~ s * q with
    # q in -8..7 and s = absmax / 7, i.e. levels q / 7 of the block's absmax. The largest
    # weight maps to 7, so -8 is never the nearest level: 15 levels are in use.
    return [q / 7 for q in range(-8, 8)]


def uniform16_levels():
    # A broken "NF4": 16 evenly spaced levels from -1 to 1 (no exact zero), for comparison
    return [-1.0 + 2.0 * i / 15 for i in range(16)]


# === BLOCK-WISE QUANTISATION ===
# A matrix is flattened row by row and cut into blocks of NF4_BLOCK = 64 weights. Each block
# keeps its absmax c = max|w| (first-level scale) and every weight becomes the code of the
# level nearest to w / c:
#     code = argmin_i |levels[i] - w / c|,       w_hat = levels[code] * c
# A weight of 0 maps to the zero level and comes back exactly 0. Small blocks matter: one
# outlier only coarsens the grid of its own 64 neighbours.
# Codes are 0..15, packed two to a byte: the stored model really is half a byte per weight.


def to_float32(x):
    # Scales and constants are stored as float32 (4 bytes), as in a real file: round to it
    return struct.unpack("<f", struct.pack("<f", x))[0]


def level_midpoints(levels):
    # Nearest level by bisection: w belongs to level i if it lies between the midpoints on
    # either side of it, so sorted midpoints turn "nearest" into one binary search.
    return [(a + b) / 2 for a, b in zip(levels, levels[1:])]


def quantize_blocks(flat, levels):
    """(codes, absmax per block) for a flat list of weights."""
    midpoints = level_midpoints(levels)
    codes, absmax = [], []
    for start in range(0, len(flat), NF4_BLOCK):
        block = flat[start:start + NF4_BLOCK]
        scale = to_float32(max(abs(w) for w in block)) or 1.0   # an all-zero block: any scale
        absmax.append(scale)
        codes.extend(bisect.bisect_left(midpoints, w / scale) for w in block)
    return codes, absmax


def pack_nibbles(codes):
    """Two 4-bit codes per byte: the first in the low half, the second in the high half."""
    padded = codes + [0] * (len(codes) % 2)
    return bytes(lo | (hi << 4) for lo, hi in zip(padded[0::2], padded[1::2]))


def unpack_nibbles(blob, count):
    codes = []
    for byte in blob:
        codes.extend((byte & 15, byte >> 4))
    return codes[:count]


# === DOUBLE QUANTISATION: QUANTISE THE SCALES TOO ===
# One float32 absmax per 64 weights costs 32 / 64 = 0.5 bits per weight on top of the 4 bits
# of the code. Double quantisation stores the absmax values themselves in 8 bits: subtract
# their mean (so they are centred on 0), cut them into blocks of SCALE_BLOCK = 256, and store
# each block as signed 8-bit absmax codes with one float32 constant per block:
#     c ~ offset + k * z,    z in -127..127,   k = max|c - offset| / 127 over the block
# Cost per weight: 8 / 64 + 32 / (64 * 256) = 0.127 bits instead of 0.5, a saving of 0.373
# bits per weight: tiny here, about 3 GB on a model of 65 billion weights (65e9 * 0.373 / 8).
# Signpost: bitsandbytes (quantize_4bit with compress_statistics=True) also subtracts the
# mean and uses blocks of 256, but its 8-bit codes index its "dynamic" 8-bit map
# (create_dynamic_map), not evenly spaced integers. Evenly spaced 8-bit codes are the
# simplest version of the same idea.


def quantize_scales(absmax):
    offset = to_float32(sum(absmax) / len(absmax))
    centred = [c - offset for c in absmax]
    codes, constants = [], []
    for start in range(0, len(centred), SCALE_BLOCK):
        block = centred[start:start + SCALE_BLOCK]
        constant = to_float32(max(abs(c) for c in block) / 127) or 1.0
        constants.append(constant)
        codes.extend(round(c / constant) for c in block)
    return {"offset": offset, "codes": codes, "constants": constants}


def dequantize_scales(quantized):
    return [quantized["offset"] + quantized["constants"][i // SCALE_BLOCK] * z
            for i, z in enumerate(quantized["codes"])]


# === THE QUANTISED BASE MODEL ===
# Every matrix of the frozen base is stored as packed 4-bit codes plus its double-quantised
# scales. Nothing else of the base is needed: the float weights can be thrown away. (The
# store below also keeps the float32 block scales, but only so that main() can compare with
# single-level storage; stored_bytes() does not count them for QLoRA.)
# Dequantising rebuilds, block by block, a 16-entry table levels[i] * scale and looks every
# code up in it: one table lookup per weight.
# Signposts: bitsandbytes keeps only the packed codes and their constants in memory and
# dequantises them to the compute dtype (bfloat16, say) inside its 4-bit matrix multiply
# each time a layer runs, so no float copy of the weights outlives the layer's call. Its
# backward pass dequantises the weight once more, to compute the gradient for the layer's
# input only: a gradient for the 4-bit weight itself is never computed. Hugging Face's
# load_in_4bit swaps the linear layers for these 4-bit ones; embedding tables are not linear
# layers and stay unquantised, and so, by default, does the output layer (lm_head). Here
# every matrix is quantised, so that all 4,192 weights are counted in the same format.


def quantize_matrix(rows, levels):
    codes, absmax = quantize_blocks([w for row in rows for w in row], levels)
    return {"shape": (len(rows), len(rows[0])), "codes": pack_nibbles(codes),
            "absmax": absmax, "scales": quantize_scales(absmax)}


def dequantize_matrix(quantized, levels, double_quantized=True):
    rows, cols = quantized["shape"]
    codes = unpack_nibbles(quantized["codes"], rows * cols)
    scales = (dequantize_scales(quantized["scales"]) if double_quantized
              else quantized["absmax"])
    flat = []
    for block, scale in enumerate(scales):
        table = [level * scale for level in levels]
        flat.extend(table[c] for c in codes[block * NF4_BLOCK:(block + 1) * NF4_BLOCK])
    return [tuple(flat[r * cols:(r + 1) * cols]) for r in range(rows)]


def quantize_model(weights, levels):
    return {name: quantize_matrix(rows, levels) for name, rows in weights.items()}


def dequantize_model(store, levels):
    return {name: dequantize_matrix(q, levels) for name, q in store.items()}


def stored_bytes(store, double_quantized=True):
    """Bytes the quantised base occupies: packed codes plus scales."""
    total = 0
    for q in store.values():
        total += len(q["codes"])                           # 4 bits per weight
        if double_quantized:
            s = q["scales"]
            total += len(s["codes"]) + 4 * len(s["constants"]) + 4   # 8-bit scales, k's, offset
        else:
            total += 4 * len(q["absmax"])                  # one float32 per block
    # The 16 levels are fixed by the format (like the meaning of a float's bits), not data
    return total


# === EVALUATION: HELD-OUT LOSS ===
# Every loss below is measured on names no training step read: EVAL_NAMES held-out names of
# each split. A loss is the mean per-token cross-entropy (the total over all predictions
# divided by their number, so each token counts equally). Evaluation needs no gradient, so
# it runs on plain floats and builds no graph.


def frozen_adapter_floats(adapters):
    # The trained adapters as plain floats, so that evaluation builds no graph
    return {name: tuple([[w.data if isinstance(w, Value) else w for w in row] for row in m]
                        for m in pair) for name, pair in adapters.items()}


def heldout_loss(weights, adapters, token_lists):
    adapters = frozen_adapter_floats(adapters)
    total, count = 0.0, 0
    for tokens in token_lists:
        n = min(BLOCK_SIZE, len(tokens) - 1)
        total += name_loss(weights, adapters, tokens) * n
        count += n
    return total / count


def finite_difference_gradient(weights, adapters, tokens, h=1e-6):
    """dL/d(each adapter number), in adapter_parameters() order, by central differences.

    The independent reference for the gradient QLoRA trains with: it uses no autograd at
    all, only the float loss of one name on the given base, nudged one adapter number at a
    time: (L(w + h) - L(w - h)) / 2h.
    """
    gradient = []
    for pair in adapters.values():
        for m in pair:
            for row in m:
                for j, original in enumerate(row):
                    row[j] = original + h
                    up = name_loss(weights, adapters, tokens)
                    row[j] = original - h
                    down = name_loss(weights, adapters, tokens)
                    row[j] = original
                    gradient.append((up - down) / (2 * h))
    return gradient


def relative_gradient_error(gradient, reference):
    # Largest difference over the largest reference entry. max() is blind to NaN, so a
    # non-finite difference is returned as inf: it must fail the row, never vanish.
    # A reference of all zeros (adapters that cannot learn) is met only by a zero gradient.
    differences = [abs(g - r) for g, r in zip(gradient, reference)]
    if not all(math.isfinite(d) for d in differences):
        return math.inf
    size = max(abs(r) for r in reference)
    if size == 0.0:
        return 0.0 if max(differences) == 0.0 else math.inf
    return max(differences) / size


def mean_squared_error(weights, restored):
    pairs = [(w, r) for name in weights for row, row_hat in zip(weights[name], restored[name])
             for w, r in zip(row, row_hat)]
    return sum((w - r) ** 2 for w, r in pairs) / len(pairs)


# === MEMORY: WHAT FINE-TUNING HAS TO HOLD ===
# Bytes, counting float32 (4 bytes) for every float a real system would keep in 32 bits:
#   full fine-tuning: every weight, its gradient and Adam's two moments: 16 bytes a weight;
#   LoRA:  the frozen base in float32 (4 bytes a weight, no gradient, no moments), plus
#          16 bytes for every adapter number;
#   QLoRA: the frozen base in 4 bits with double-quantised scales, plus the same adapters.
# LoRA can never reach a 4x saving: its frozen base alone costs 4 of full fine-tuning's 16
# bytes per weight. Only shrinking the base itself gets past 4x.
# (This script computes in Python floats, which are 64-bit; the table counts what a float32
# system would store.)
# Signposts: real training also holds the activations saved for the backward pass, which
# grow with batch size and sequence length; they are left out here. QLoRA's third
# ingredient, paged optimisers, is explained and not simulated: bitsandbytes' paged
# optimisers (PagedAdamW, for one) keep their state in NVIDIA unified memory, which is moved
# page by page to CPU RAM when the GPU runs short (during a memory spike from a long
# sequence, say) and back when the optimiser step needs it. Our Adam state is 1 KB.


def memory_rows(num_base, num_adapter, base_bytes_fp32, base_bytes_q4):
    # (method, frozen base bytes, trainable weights, gradients, Adam moments)
    return [("full fine-tuning", 0, 4 * num_base, 4 * num_base, 8 * num_base),
            ("LoRA (float32 base)", base_bytes_fp32, 4 * num_adapter, 4 * num_adapter,
             8 * num_adapter),
            ("QLoRA (NF4 base)", base_bytes_q4, 4 * num_adapter, 4 * num_adapter,
             8 * num_adapter)]


# === INFERENCE: SAMPLING NAMES ===
# Start from BOS, draw each next letter from softmax(logits / TEMPERATURE), stop at BOS.


def sample_name(weights, adapters, bos, itos):
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    token, out = bos, []
    for pos in range(BLOCK_SIZE):
        logits = [z / TEMPERATURE for z in gpt_step(weights, adapters, token, pos, keys, values)]
        exps, _ = shifted_exps(logits)
        token = random.choices(range(len(exps)), weights=exps)[0]
        if token == bos:
            break
        out.append(itos[token])
    return "".join(out)


# === PICTURES ===


def ascii_bars(labelled, width=40, fmt="{:.4f}"):
    top = max(v for _, v in labelled) or 1.0
    return "\n".join(f"  {label:<26} {'#' * round(v / top * width):<{width}} {fmt.format(v)}"
                     for label, v in labelled)


def bucket_means(series, width):
    bucket = len(series) / width
    return [sum(series[int(i * bucket):int((i + 1) * bucket)]) /
            max(1, int((i + 1) * bucket) - int(i * bucket)) for i in range(width)]


def ascii_curves(named_series, width=60, height=8):
    """Loss curves on one chart, one symbol each, each averaged into `width` buckets."""
    # Averaging matters: one name's loss is noisy (short common names score far better than
    # long rare ones), which would hide the trend.
    width = min(width, min(len(s) for s in named_series.values()))
    curves = {symbol: bucket_means(series, width) for symbol, series in named_series.items()}
    low = min(min(c) for c in curves.values())
    high = max(max(c) for c in curves.values())
    step = (high - low) / max(1, height - 1)
    grid = [[" "] * width for _ in range(height)]
    for symbol, points in curves.items():
        for col, p in enumerate(points):
            row = round((high - p) / step) if step else 0
            grid[row][col] = "#" if grid[row][col] not in (" ", symbol) else symbol
    rows = [f"{high - step * r:6.2f} |{''.join(line)}" for r, line in enumerate(grid)]
    rows.append("       +" + "-" * width)
    return "\n".join(rows)


def code_usage(store, count):
    usage = [0] * 16
    for q in store.values():
        rows, cols = q["shape"]
        for c in unpack_nibbles(q["codes"], rows * cols):
            usage[c] += 1
    # Entropy in bits: 4.0 would mean all 16 codes used equally often
    entropy = -sum(u / count * math.log2(u / count) for u in usage if u)
    return usage, entropy


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("weight MSE: NF4 < uniform INT4 (same blocks)", "nf4_mse", "<", "int4_mse"),
    ("weight MSE: NF4 < 16 evenly spaced levels", "nf4_mse", "<", "uniform16_mse"),
    ("share of LoRA's B gain that QLoRA reaches", "qlora_gain_recovered", ">=", 0.8),
    ("QLoRA's gradient vs finite differences, NF4 base", "qlora_gradient_error", "<", 1e-5),
    ("float32 base bytes / NF4 base bytes", "base_compression_ratio", ">", 7.2),
    ("fine-tuning bytes: full / QLoRA", "training_memory_ratio", ">", 4),
]
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
           "==": operator.eq}


def print_criteria(results):
    print(f"\n{'criterion':<48} {'measured':>12} {'threshold':>14}  result")
    for description, key, op, target in CRITERIA:
        value = results[key]
        threshold = results[target] if isinstance(target, str) else target
        # A non-finite value fails every row: NaN compares False with anything, but
        # inf would pass a ">" row, so finiteness is checked explicitly.
        finite = math.isfinite(value) and math.isfinite(threshold)
        verdict = "PASS" if finite and COMPARE[op](value, threshold) else "FAIL"
        print(f"{description:<48} {value:>12.6g} {op:>2} {threshold:<11.6g}  {verdict}")


# === MAIN ===


def adapt(label, base_weights, adapters, token_lists, start):
    """Train `adapters` on top of a frozen base; base_weights() gives the floats each step."""
    def step_loss(step):
        return name_loss(base_weights(), adapters, token_lists[step % len(token_lists)])
    return train(label, adapter_parameters(adapters), step_loss, ADAPT_STEPS, LORA_LR, start)


def main():
    random.seed(42)  # every draw below (split order, init, adapters, samples) follows from it
    # Speed: the graph has no reference cycles (a node points only at the older nodes it was
    # computed from), so reference counting frees each step's graph the moment the step
    # ends. Python's cycle collector would keep rescanning the live nodes as millions are
    # created and find nothing to free, so it is switched off.
    gc.disable()
    start = time.time()
    names = load_names()
    # The file is sorted by popularity: shuffling first makes every split a fair sample
    random.shuffle(names)
    split_a, split_b = split_by_first_letter(names)
    train_a, heldout_a = hold_out(split_a, HELDOUT_FRACTION)
    train_b, heldout_b = hold_out(split_b, HELDOUT_FRACTION)
    chars, bos = build_vocab(names)
    stoi = {c: i for i, c in enumerate(chars)}
    itos = {i: c for c, i in stoi.items()}

    def encode(name):
        return [bos] + [stoi[c] for c in name] + [bos]

    eval_a = [encode(n) for n in heldout_a[:EVAL_NAMES]]
    eval_b = [encode(n) for n in heldout_b[:EVAL_NAMES]]
    adapt_tokens = [encode(n) for n in train_b[:ADAPT_STEPS]]   # LoRA and QLoRA read these
    print(f"split A (a-m): {len(train_a)} training names, {len(heldout_a)} held out; "
          f"split B (n-z): {len(train_b)} training names ({ADAPT_STEPS} used), "
          f"{len(heldout_b)} held out; losses on {len(eval_a)} + {len(eval_b)} held-out names")

    # --- 1. pretrain the base model on split A, then freeze it ---
    model = init_model(vocab_size=bos + 1)
    base_params = parameters(model.values())
    untrained = frozen_copy(model)
    train_a_tokens = [encode(n) for n in train_a]
    print(f"\nPretraining the base model ({len(base_params)} weights) on split A")
    train("base", base_params,
          lambda step: name_loss(model, {}, train_a_tokens[step % len(train_a_tokens)]),
          NUM_STEPS, LEARNING_RATE, start)
    base = frozen_copy(model)   # W0 as plain floats from here on
    base_a, base_b = heldout_loss(base, {}, eval_a), heldout_loss(base, {}, eval_b)
    print(f"float base, held-out loss per token: A {base_a:.4f}, B {base_b:.4f} "
          f"(untrained: {heldout_loss(untrained, {}, eval_b):.4f} on B) "
          f"| {time.time() - start:.1f}s")

    # --- 2. NF4: the levels, and what they cost the weights ---
    nf4 = nf4_levels()
    print(f"\nNF4 levels (normal quantiles, offset {NF4_OFFSET}, scaled to [-1, 1]):")
    for row in range(0, 16, 8):
        print("  " + " ".join(f"{v:+.4f}" for v in nf4[row:row + 8]))
    codebooks = {"NF4": nf4, "uniform INT4 (absmax)": int4_levels(),
                 "16 evenly spaced levels": uniform16_levels()}
    stores = {label: quantize_model(base, levels) for label, levels in codebooks.items()}
    restored = {label: dequantize_model(stores[label], codebooks[label]) for label in stores}
    mse = {label: mean_squared_error(base, restored[label]) for label in stores}
    untrained_mse = {label: mean_squared_error(untrained, dequantize_model(
        quantize_model(untrained, levels), levels)) for label, levels in codebooks.items()}
    num_weights = len(base_params)
    print(f"\nMean squared dequantisation error over all {num_weights} weights (blocks of "
          f"{NF4_BLOCK}, the same double-quantised scales; only the 16 levels differ):")
    print(f"  {'levels':<26} {'trained base':>13} {'untrained init':>15}  code entropy")
    for label in stores:
        _, entropy = code_usage(stores[label], num_weights)
        print(f"  {label:<26} {mse[label]:>13.3e} {untrained_mse[label]:>15.3e}  "
              f"{entropy:.2f} bits of 4")
    usage, _ = code_usage(stores["NF4"], num_weights)
    int4_usage, _ = code_usage(stores["uniform INT4 (absmax)"], num_weights)
    print("\nHow often each code is used on the trained base: NF4 (left) spreads the weights "
          "over its\nlevels far more evenly than evenly spaced INT4 (right), which crowds "
          "most of them onto\nthe few codes near 0.")
    for code in range(16):
        int4_label = f"{int4_levels()[code]:+.3f}" if code else " (unused)"
        print(f"  {nf4[code]:+.3f} {'#' * round(60 * usage[code] / num_weights):<20} "
              f"{usage[code]:>5}   |  {int4_label:>9} "
              f"{'#' * round(60 * int4_usage[code] / num_weights):<20} {int4_usage[code]:>5}")

    # --- 3. double quantisation and the bytes of the base ---
    nf4_store = stores["NF4"]
    fp32_bytes = 4 * num_weights
    single_bytes = stored_bytes(nf4_store, double_quantized=False)
    double_bytes = stored_bytes(nf4_store)
    code_bytes = sum(len(q["codes"]) for q in nf4_store.values())
    num_blocks = sum(len(q["absmax"]) for q in nf4_store.values())
    scale_error = max(abs(a - b) / a for q in nf4_store.values()
                      for a, b in zip(q["absmax"], dequantize_scales(q["scales"])))
    print(f"\nStoring the base ({num_weights} weights, {num_blocks} blocks of up to "
          f"{NF4_BLOCK}, {len(nf4_store)} matrices):")
    print(f"  float32                               {fp32_bytes:>6} bytes")
    print(f"  NF4 codes + float32 scale per block   {single_bytes:>6} bytes "
          f"({code_bytes} + {single_bytes - code_bytes}): {fp32_bytes / single_bytes:.2f}x")
    print(f"  NF4 codes + double-quantised scales   {double_bytes:>6} bytes "
          f"({code_bytes} + {double_bytes - code_bytes}): {fp32_bytes / double_bytes:.2f}x")
    print(f"  (largest relative error of a double-quantised scale: {scale_error:.2%}; "
          f"the scales of each matrix share one block of {SCALE_BLOCK})")
    nf4_base = dequantize_model(nf4_store, nf4)
    nf4_base_a, nf4_base_b = heldout_loss(nf4_base, {}, eval_a), heldout_loss(
        nf4_base, {}, eval_b)
    int4_base = restored["uniform INT4 (absmax)"]
    int4_base_b = heldout_loss(int4_base, {}, eval_b)
    print(f"\nThe quantised base before adaptation, held-out loss per token: NF4 A "
          f"{nf4_base_a:.4f}, B {nf4_base_b:.4f} (float base: A {base_a:.4f}, B {base_b:.4f}; "
          f"INT4 base: B {int4_base_b:.4f}) | {time.time() - start:.1f}s")

    # --- 4. LoRA on the float base, QLoRA on the NF4 base: same start, same names ---
    lora = init_adapters(LORA_RANK)
    qlora = copy_adapters(lora)
    start_adapters = frozen_adapter_floats(lora)   # both start here; kept for the check below
    print(f"\nLoRA: rank-{LORA_RANK} adapters on {', '.join(LORA_TARGETS)} "
          f"({len(adapter_parameters(lora))} numbers), float base")
    lora_losses, lora_gradient = adapt("LoRA ", lambda: base, lora, adapt_tokens, start)
    # QLoRA dequantises the 4-bit base afresh for every step and drops it after the step's
    # forward and backward pass: between steps only the codes exist.
    print(f"\nQLoRA: the same adapters from the same start, NF4 base dequantised every step")
    qlora_losses, qlora_gradient = adapt("QLoRA", lambda: dequantize_model(nf4_store, nf4),
                                         qlora, adapt_tokens, start)

    # Does QLoRA train through the 4-bit base? Its held-out loss cannot say: adapters trained
    # on the float base and only evaluated on the NF4 base score almost as well, because
    # 4 bits barely move this base. Its gradient can: the gradient of QLoRA's first step must
    # be the gradient of the NF4 model's loss, which finite differences measure without any
    # autograd. LoRA's first gradient (the float base) is the contrast: it differs by what
    # quantisation does to the gradient.
    reference = finite_difference_gradient(nf4_base, start_adapters, adapt_tokens[0])
    qlora_gradient_error = relative_gradient_error(qlora_gradient, reference)
    float_gradient_gap = relative_gradient_error(lora_gradient, reference)
    print(f"\nFirst step's adapter gradient against finite differences of the NF4 model's loss "
          f"(largest difference / largest entry):\n  QLoRA {qlora_gradient_error:.2e}; LoRA "
          f"on the float base {float_gradient_gap:.2e}")

    lora_a, lora_b = heldout_loss(base, lora, eval_a), heldout_loss(base, lora, eval_b)
    qlora_a = heldout_loss(nf4_base, qlora, eval_a)
    qlora_b = heldout_loss(nf4_base, qlora, eval_b)
    lora_gain, qlora_gain = base_b - lora_b, base_b - qlora_b
    # A share of no gain is undefined: NaN, which fails its row (adapters that cannot learn)
    recovered = qlora_gain / lora_gain if lora_gain > 0 else math.nan
    print(f"\nTraining loss on B, the same {ADAPT_STEPS} names in the same order "
          f"(L = LoRA, Q = QLoRA, # = both):")
    print(ascii_curves({"L": lora_losses, "Q": qlora_losses}))
    print(f"\nHeld-out loss per token (B: the new task, A: the pretraining task):")
    print(f"  {'model':<28} {'B loss':>8} {'A loss':>8}   B gain over the float base")
    for label, a, b in (("float base", base_a, base_b), ("NF4 base, no adapters", nf4_base_a,
                                                         nf4_base_b),
                        ("LoRA on the float base", lora_a, lora_b),
                        ("QLoRA on the NF4 base", qlora_a, qlora_b)):
        print(f"  {label:<28} {b:>8.4f} {a:>8.4f}   {base_b - b:+.4f}")
    print(f"QLoRA reaches {recovered:.1%} of LoRA's gain on B ({lora_gain:.4f}); the NF4 "
          f"base without adapters gains {base_b - nf4_base_b:+.4f}.")

    # --- 5. memory: what each way of fine-tuning must hold ---
    num_adapter = len(adapter_parameters(qlora))
    rows = memory_rows(num_weights, num_adapter, fp32_bytes, double_bytes)
    full_total = sum(rows[0][1:])
    print(f"\nBytes to fine-tune ({num_weights} base weights, {num_adapter} adapter numbers; "
          f"activations not counted):")
    print(f"  {'method':<22} {'frozen base':>11} {'trainable':>10} {'gradients':>10} "
          f"{'Adam m, v':>10} {'total':>8} {'full / this':>12}")
    for label, frozen, weights, grads, moments in rows:
        total = frozen + weights + grads + moments
        print(f"  {label:<22} {frozen:>11} {weights:>10} {grads:>10} {moments:>10} "
              f"{total:>8} {full_total / total:>12.2f}")
    lora_total, qlora_total = sum(rows[1][1:]), sum(rows[2][1:])
    print(f"With LoRA the frozen float32 base is {fp32_bytes / lora_total:.0%} of the memory; "
          f"4 bits shrink it to {double_bytes / qlora_total:.0%} of QLoRA's.")
    print(ascii_bars([(label, sum(r)) for label, *r in rows], fmt="{:,} bytes"))

    # --- 6. samples ---
    qlora_floats = frozen_adapter_floats(qlora)
    print(f"\nSamples (temperature {TEMPERATURE}):")
    print("  float base:  " + " ".join(sample_name(base, {}, bos, itos)
                                       for _ in range(NUM_SAMPLES)))
    print("  QLoRA model: " + " ".join(sample_name(nf4_base, qlora_floats, bos, itos)
                                       for _ in range(NUM_SAMPLES)))

    results = {
        "nf4_mse": mse["NF4"],
        "int4_mse": mse["uniform INT4 (absmax)"],
        "uniform16_mse": mse["16 evenly spaced levels"],
        "qlora_gain_recovered": recovered,
        "base_compression_ratio": fp32_bytes / double_bytes,
        "single_level_compression_ratio": fp32_bytes / single_bytes,
        "training_memory_ratio": full_total / qlora_total,
        "lora_memory_ratio": full_total / lora_total,
        "base_a_loss": base_a, "base_b_loss": base_b,
        "nf4_base_a_loss": nf4_base_a, "nf4_base_b_loss": nf4_base_b,
        "int4_base_b_loss": int4_base_b,
        "lora_a_loss": lora_a, "lora_b_loss": lora_b,
        "qlora_a_loss": qlora_a, "qlora_b_loss": qlora_b,
        "lora_b_gain": lora_gain, "qlora_b_gain": qlora_gain,
        "qlora_gradient_error": qlora_gradient_error,
        "float_base_gradient_gap": float_gradient_gap,
    }
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microqlora.md")
    return results


if __name__ == "__main__":
    main()
