"""microlora: adapt a trained GPT to new data by training a few new weights (low-rank adaptation).

Fine-tuning in its plain form updates every weight of a model. Each weight then needs a
gradient and two Adam moments (three more copies of the model in memory), and every new task
stores a whole new copy of the model. LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of
Large Language Models") freezes the trained matrix W0 and learns only a low-rank correction
beside it:

    h = W0 x + (alpha / r) * B (A x)      A: r x k (projects down), B: d x r (projects up)

with the rank r much smaller than d and k. B starts at zero, so the adapted model starts out
exactly as the base model; after training, W0 + (alpha / r) B A is one ordinary matrix again,
so a merged adapter costs nothing at inference.

This file runs the whole story on baby names, and measures it:
  1. pretrain a microgpt-shaped model on names starting with a-m (split A);
  2. adapt it to names starting with n-z (split B) with rank-2 adapters on the query and value
     projections: 128 new trainable numbers (3% as many) beside 4,192 frozen ones;
  3. from the same base, on the same names, for the same number of steps, fine-tune every
     weight instead (full fine-tuning), at the learning rate that suits it best;
  4. on held-out names, compare what each gained on B with what each forgot of A;
  5. sweep the rank (1, 2, 4, 8), merge the adapter into W0 and check that the logits agree.

What the default run shows. LoRA's 128 numbers cut the held-out B loss from 2.840 to 2.343
per token (a gain of 0.497) and raise the A loss by 0.448. Full fine-tuning of all 4,192
weights, at the rate that suits it best, gains more (0.586) and forgets more (0.487): the
trade in the title of Biderman et al. (2024), "LoRA Learns Less and Forgets Less". Here the
run reports that order and does not assert it. Other draws of A move LoRA's forgetting
(0.414 to 0.462 over six draws on this base), and the order hangs on full fine-tuning's
rate: the search scored it at 0.01 and 0.003 almost level, and at 0.003 (set FULL_FT_LR to
see it) it gains 0.591 and forgets 0.371, less than LoRA. At the rate whose gain came closest
to LoRA's (0.03, above its best), full fine-tuning gains 0.505 and forgets 0.558. So
forgetting here follows the learning rate at least as much as the rank. Most forgetting is
the first letter, which any model that learns B must move away from a-m. What the criteria
assert instead is what makes LoRA LoRA: it starts exactly at the base, its adapters are a
small share of the model, the base stays bit for bit unchanged, and the merged matrix gives
the adapter's logits at every rank.

Run: python alignment/microlora.py    (about 35 s on the 2-core CI machine)
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
# The base model is foundational/microgpt.py's, unchanged: tiny enough that scalar autograd
# in pure Python pretrains it in seconds.
N_EMBD = 16        # width of every hidden vector
N_HEAD = 4         # attention heads, 4 channels each
N_LAYER = 1        # transformer blocks
BLOCK_SIZE = 16    # longest context: the longest name (15 letters) plus its start token
MLP_HIDDEN = 4 * N_EMBD
INIT_STD = 0.08    # base weights start small: first logits near uniform (loss ~ ln 27)
BETA1, BETA2, ADAM_EPS = 0.85, 0.99, 1e-8   # Adam, as in microgpt (PyTorch: 0.9, 0.999)
NUM_STEPS = 1000   # base pretraining on split A, one name per step
LEARNING_RATE = 0.01   # base pretraining, as in microgpt
LOSS_WINDOW = 100  # base_final_loss averages the last 100 steps

# Adaptation. Both learning rates were chosen the same way, so that the comparison is fair:
# the best B gain over one grid (0.001, 0.003, 0.01, 0.03, 0.1, 0.3), each method run once
# per rate for ADAPT_STEPS steps and scored on HELDOUT_NAMES (200) names from B's training
# part that adaptation never reads. Measured B gains (LoRA rank 2 / full fine-tuning):
#   lr 0.001: 0.029 / 0.395   0.003: 0.236 / 0.551   0.01: 0.378 / 0.561
#   lr 0.03:  0.439 / 0.487   0.1:   0.483 / 0.351   0.3:  0.414 / -1.639
# The best rates differ by a factor of 10 (0.1 for LoRA, 0.01 for full fine-tuning; 0.003
# is a near tie for it): an honest comparison cannot give both the same rate. Set LR_GRID
# below to re-run the search (it trains two extra models per rate before the main run).
ADAPT_STEPS = 200        # adaptation steps on split B, one name per step, for every method
LORA_RANK = 2            # r of the main run
LORA_ALPHA = 2.0         # the update is scaled by alpha / r (PEFT's lora_alpha)
# The query and value projections: the pair the LoRA paper adapts in most of its experiments.
# It is not the clear winner there: in its Table 5 (GPT-3, the same number of trainable
# parameters) adapting all four attention matrices at rank 2 ties or beats it.
LORA_TARGETS = ("wq", "wv")
LORA_LR = 0.1
A_INIT_STD = 1.0 / math.sqrt(N_EMBD)   # A x then has entries of size ~1 for a unit-RMS x
FULL_FT_LR = 0.01
# A second full fine-tuning run, for a comparison at equal learning: the grid rate whose B
# gain (0.487) came closest to LoRA's best (0.483).
FULL_FT_MATCHED_LR = 0.03
SWEEP_RANKS = (1, 2, 4, 8)
LR_GRID = ()             # e.g. (0.003, 0.01, 0.03, 0.1): search it before the main run

HELDOUT_NAMES = 200      # names held out of each split to measure every loss below
MERGE_CHECK_NAMES = 20   # names (from each split) whose logits compare adapter vs merged
NUM_SAMPLES = 15         # names sampled from the base and from the adapted model
CHART_COLUMNS = 20       # the training chart averages ADAPT_STEPS / 20 = 10 names per column
TEMPERATURE = 1.0        # 1.0 samples the model's own distribution, first letter included

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
# Character level, as in microgpt: 26 letters plus one BOS token that marks both the start and
# the end of a name ("emma" -> [BOS, e, m, m, a, BOS]). The split is by first letter, so the
# two tasks differ in a way we can see: split A (a-m) is the "pretraining data", split B (n-z)
# the "new task". Most of what the model knows (how letters follow each other, how long names
# are) carries over; the first letter does not, and that makes forgetting unavoidable there:
# a model that has learned B must give a-m first letters little probability.


def build_vocab(names):
    chars = sorted(set("".join(names)))
    return chars, len(chars)  # token ids 0..25 are letters; id 26 is BOS


def split_by_first_letter(names):
    split_a = [n for n in names if n[0] <= "m"]
    split_b = [n for n in names if n[0] > "m"]
    return split_a, split_b


def hold_out(names, count):
    # The last `count` names are held out; a held-out name that also occurs among the
    # training names (names.txt repeats some) is dropped, so no held-out name was trained on.
    train = names[:-count]
    seen = set(train)
    return train, [n for n in names[-count:] if n not in seen]


# === AUTOGRAD: THE VALUE CLASS ===
# A Value wraps one float. Every operation creates a new Value that records its inputs
# (`_children`) and the local derivative of its output with respect to each input
# (`_local_grads`), computed right away in the forward pass. backward() then walks the
# graph from the loss back to the leaves and applies the chain rule:
#     dL/d(child) += dL/d(node) * d(node)/d(child)
# The += matters: a value used in several places collects gradient from each use.


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
# On top of it this script adds the fused nodes below, as plain functions:
# - dot(): a dot product of two Value vectors as one node
# - const_dot(): a dot product of a plain-float vector with a Value vector as one node
#   (a frozen weight row times a trainable activation, or the reverse)
# - softmax(): each output probability as one node over all the logits
# - cross_entropy(): log-softmax plus negative log-likelihood as one node
# - rms_scale(): the 1/RMS factor of RMSNorm as one node
# - lora_add(): the adapter's output added to the frozen output, W0x + (alpha / r) * u,
#   as one node
# - a fused mean in name_loss(): the mean of a name's per-position losses as one node
# linear(), softmax(), cross_entropy(), rmsnorm(), lora_add() and name_loss() also accept
# plain floats and then return plain floats (no graph at all).

# === FUSED NODES, AND FROZEN WEIGHTS AS PLAIN FLOATS ===
# A dot product built from + and * costs 2n - 1 nodes; one fused node with the known local
# derivatives (dy/dw_i = x_i, dy/dx_i = w_i) computes the same numbers with one node
# (foundational/microgpt.py measures what that buys). This script adds a second idea:
#
#   A frozen weight is a plain float. It needs no gradient and no optimiser state, so it
#   never enters the graph: a frozen row times a Value input is a node whose children are
#   only the inputs. Where neither side is a Value (every layer before the first adapter,
#   and all of evaluation and sampling) the arithmetic is plain Python floats.
#
# That is freezing in its strongest form, and it is why LoRA is also cheap here: an adapted
# step builds a graph only from the first adapted matrix onwards. (PyTorch does the same
# with requires_grad=False: no .grad and no optimiser state for frozen tensors, and autograd
# records only operations that involve a tensor that requires a gradient.)


def naive_dot(weights, inputs):
    # The unfused form, kept to show what dot() replaces; the tests check they agree.
    total = weights[0] * inputs[0]
    for w, x in zip(weights[1:], inputs[1:]):
        total = total + w * x
    return total


def dot(weights, inputs, inputs_data=None):
    # y = sum_i w_i * x_i with dy/dw_i = x_i and dy/dx_i = w_i: one node, 2n children.
    # linear() hands over the inputs' floats, read once per layer instead of once per row.
    x_data = [x.data for x in inputs] if inputs_data is None else inputs_data
    w_data = [w.data for w in weights]
    return Value(sum(map(operator.mul, w_data, x_data)), (*weights, *inputs), (*x_data, *w_data))


def const_dot(constants, inputs, inputs_data=None):
    # y = sum_i c_i * x_i with plain-float c: dy/dx_i = c_i; the constants get no gradient
    x_data = [x.data for x in inputs] if inputs_data is None else inputs_data
    return Value(sum(map(operator.mul, constants, x_data)), tuple(inputs), tuple(constants))


def any_dot(a, b):
    """Dot product of two vectors, each of Values or of plain floats, with the cheapest node."""
    if isinstance(a[0], Value):
        return dot(a, b) if isinstance(b[0], Value) else const_dot(b, a)
    if isinstance(b[0], Value):
        return const_dot(a, b)
    return sum(map(operator.mul, a, b))


def linear(inputs, weight_rows):
    # y = W x: one dot product per output (no bias, as in microgpt). Which node to build is
    # decided once per layer, and the inputs' floats are read once per layer. All-float
    # layers (all of evaluation and sampling) are plain Python arithmetic.
    x_is_value = isinstance(inputs[0], Value)
    if not isinstance(weight_rows[0][0], Value):
        if not x_is_value:
            return [sum(map(operator.mul, row, inputs)) for row in weight_rows]
        inputs = tuple(inputs)   # shared by every row's node as its children
        x_data = [x.data for x in inputs]
        return [const_dot(row, inputs, x_data) for row in weight_rows]
    if not x_is_value:
        inputs = tuple(inputs)
        return [const_dot(inputs, row) for row in weight_rows]
    x_data = [x.data for x in inputs]
    return [dot(row, inputs, x_data) for row in weight_rows]


def lora_add(frozen_out, low_rank, scale):
    # h = W0x + scale * u as one node: dh/du = scale, dh/d(W0x) = 1 (W0x is a child only
    # when it is a Value, i.e. when the layer's input depends on a trainable weight)
    if not isinstance(low_rank, Value):
        return frozen_out + scale * low_rank
    if isinstance(frozen_out, Value):
        return Value(frozen_out.data + scale * low_rank.data, (frozen_out, low_rank),
                     (1.0, scale))
    return Value(frozen_out + scale * low_rank.data, (low_rank,), (scale,))


def shifted_exps(numbers):
    # exp(z_i - m), m = max(z): the shift cancels in a softmax but keeps exp() from overflowing
    top = max(numbers)
    return [math.exp(z - top) for z in numbers], top


def softmax(logits):
    # p_i = exp(z_i - m) / sum_j exp(z_j - m),   dp_i/dz_j = p_i * (delta_ij - p_j)
    if not isinstance(logits[0], Value):
        exps, _ = shifted_exps(logits)
        total = sum(exps)
        return [e / total for e in exps]
    exps, _ = shifted_exps([z.data for z in logits])
    total = sum(exps)
    probs = [e / total for e in exps]
    logits = tuple(logits)
    return [Value(p_i, logits, tuple(p_i * ((i == j) - p_j) for j, p_j in enumerate(probs)))
            for i, p_i in enumerate(probs)]


def cross_entropy(logits, target):
    # L = -log softmax(z)[y] = logsumexp(z) - z_y,   dL/dz_j = p_j - [j == y]
    is_value = isinstance(logits[0], Value)
    exps, top = shifted_exps([z.data for z in logits] if is_value else logits)
    total = sum(exps)
    loss = top + math.log(total) - (logits[target].data if is_value else logits[target])
    if not is_value:
        return loss
    local_grads = tuple(e / total - (j == target) for j, e in enumerate(exps))
    return Value(loss, tuple(logits), local_grads)


def rms_scale(x):
    # s = (mean_j x_j^2 + eps)^(-1/2),   ds/dx_j = -s^3 * x_j / n
    n = len(x)
    s = (sum(xi.data * xi.data for xi in x) / n + 1e-5) ** -0.5
    return Value(s, tuple(x), tuple(-s ** 3 * xi.data / n for xi in x))


def rmsnorm(x):
    # y_i = x_i * s. Signpost: real RMSNorm also has a learned gain per channel (left out,
    # as in microgpt).
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
# A matrix is a list of rows. Trainable matrices hold Values; a frozen copy of the same
# model holds plain floats (frozen_copy), and a trainable copy can be made from it again
# (trainable_copy) for full fine-tuning. A frozen row is a tuple: a const_dot() node keeps
# it as its local derivatives as it is, with no copy per node.


def matrix(rows, cols, std):
    return [[Value(random.gauss(0.0, std)) for _ in range(cols)] for _ in range(rows)]


def init_model(vocab_size):
    model = {"wte": matrix(vocab_size, N_EMBD, INIT_STD),     # token embedding
             "wpe": matrix(BLOCK_SIZE, N_EMBD, INIT_STD),     # position embedding
             "lm_head": matrix(vocab_size, N_EMBD, INIT_STD)}  # hidden vector -> logits
    for layer in range(N_LAYER):
        for name in ("wq", "wk", "wv", "wo"):
            model[f"layer{layer}.{name}"] = matrix(N_EMBD, N_EMBD, INIT_STD)
        model[f"layer{layer}.fc1"] = matrix(MLP_HIDDEN, N_EMBD, INIT_STD)
        model[f"layer{layer}.fc2"] = matrix(N_EMBD, MLP_HIDDEN, INIT_STD)
    # 27*16 + 16*16 + 27*16 + 4*16*16 + 2*64*16 = 4,192 parameters
    return model


def parameters(matrices):
    return [p for mat in matrices for row in mat for p in row]


def frozen_copy(model):
    return {name: [tuple([w.data for w in row]) for row in mat] for name, mat in model.items()}


def trainable_copy(frozen):
    return {name: [[Value(w) for w in row] for row in mat] for name, mat in frozen.items()}


# === LORA: THE LOW-RANK ADAPTER ===
# For each target matrix W0 (d x k; here 16 x 16), two small trainable matrices:
#     A (r x k): projects the input down to r numbers,  u = A x
#     B (d x r): projects them back up,                 h = W0 x + (alpha / r) * B u
# B A is a d x k matrix of rank at most r (its columns are mixes of B's r columns), set by
# r * (d + k) numbers instead of d * k: at rank 2, 2 * 32 = 64 instead of 256 per matrix.
# The bet behind it is the paper's hypothesis: the change that fine-tuning makes to a
# weight matrix has a low "intrinsic rank", so a rank-r update loses little. The rank sweep
# in main() tests that bet here: rank 1 already gets most of rank 8's gain on B.
#
# Why B = 0 and A random, not both random or both zero: with B = 0 the product B A is
# exactly zero, so step 0 of the adapted model is the base model, bit for bit (main()
# checks this). A must not be zero as well: dL/dB = (dL/dh) u^T with u = A x, so with A = 0
# too, B's gradient would be zero, and A's gradient (through B) as well, forever.
# alpha / r: the LoRA paper scales the update this way and sets alpha to the first r it
# tries, without tuning it: with Adam, tuning alpha is roughly the same as tuning the
# learning rate, and the 1/r factor reduces the need to retune when r changes. The sweep
# below keeps alpha = 2 and one learning rate for every rank (scale 1 at rank 2).
# Signpost: PEFT configures all of this with LoraConfig(r=..., lora_alpha=...,
# target_modules=[...], lora_dropout=...). Its default initialisation draws A from
# Kaiming-uniform (init_lora_weights="gaussian" gives a Gaussian A) and B = 0, and
# lora_dropout (dropout on x before A) is left at 0 here.


def init_adapters(rank):
    adapters = {}
    for layer in range(N_LAYER):
        for name in LORA_TARGETS:
            down = matrix(rank, N_EMBD, A_INIT_STD)                      # A: r x k, Gaussian
            up = [[Value(0.0) for _ in range(rank)] for _ in range(N_EMBD)]  # B: d x r, zeros
            adapters[f"layer{layer}.{name}"] = (down, up, LORA_ALPHA / rank)
    return adapters


def adapter_parameters(adapters):
    return parameters(m for down, up, _ in adapters.values() for m in (down, up))


def frozen_adapters(adapters):
    return {name: ([[w.data for w in row] for row in down], [[w.data for w in row] for row in up],
                   scale) for name, (down, up, scale) in adapters.items()}


def adapted_linear(x, model, name, adapters):
    # h = W0 x + (alpha / r) * B (A x): the frozen path plus the low-rank path, never
    # forming the d x k matrix B A during training (two thin products are cheaper).
    out = linear(x, model[name])
    if name not in adapters:
        return out
    down, up, scale = adapters[name]
    low_rank = linear(linear(x, down), up)
    return [lora_add(o, u, scale) for o, u in zip(out, low_rank)]


def merge(frozen, adapters):
    # W = W0 + (alpha / r) * B A, entry by entry: after this the adapter is gone and the
    # model is exactly the base architecture again. Signpost: PEFT's merge_and_unload() does
    # this and returns the plain model. A new dict is built: W0 itself stays untouched, so
    # other adapters (the rank sweep) can still start from it.
    merged = dict(frozen)
    for name, (down, up, scale) in frozen_adapters(adapters).items():
        merged[name] = [tuple([w0 + scale * sum(up[i][j] * down[j][k] for j in range(len(down)))
                               for k, w0 in enumerate(row)]) for i, row in enumerate(frozen[name])]
    return merged


# === MODEL: FORWARD PASS FOR ONE POSITION ===
# microgpt's forward pass, with an adapter hook on each linear layer. It works on any mix of
# trainable (Value) and frozen (float) weights: pretraining and full fine-tuning pass Value
# weights; LoRA passes frozen float weights plus Value adapters; evaluation passes floats.


def gpt_step(model, adapters, token_id, pos, keys, values):
    """Logits for the token after `token_id` at `pos` (keys/values: per-layer caches)."""
    x = rmsnorm([t + p for t, p in zip(model["wte"][token_id], model["wpe"][pos])])
    head_dim = N_EMBD // N_HEAD
    score_scale = 1.0 / math.sqrt(head_dim)
    for layer in range(N_LAYER):
        residual = x
        x = rmsnorm(x)
        q = adapted_linear(x, model, f"layer{layer}.wq", adapters)
        keys[layer].append(adapted_linear(x, model, f"layer{layer}.wk", adapters))
        values[layer].append(adapted_linear(x, model, f"layer{layer}.wv", adapters))
        attended = []
        for h in range(0, N_EMBD, head_dim):
            # score_t = q . k_t / sqrt(head_dim); weights = softmax(scores); out = sum w_t v_t
            q_head = q[h:h + head_dim]
            scores = [any_dot(q_head, k[h:h + head_dim]) * score_scale for k in keys[layer]]
            weights = softmax(scores)
            for i in range(h, h + head_dim):
                attended.append(any_dot(weights, [v[i] for v in values[layer]]))
        x = [a + r for a, r in zip(adapted_linear(attended, model, f"layer{layer}.wo", adapters),
                                   residual)]
        residual = x
        hidden = relu(adapted_linear(rmsnorm(x), model, f"layer{layer}.fc1", adapters))
        x = [m + r for m, r in zip(adapted_linear(hidden, model, f"layer{layer}.fc2", adapters),
                                   residual)]
    return linear(x, model["lm_head"])


# === TRAINING ===
# One loop for all three trainings (pretraining, LoRA, full fine-tuning); only the list of
# parameters handed to Adam differs. Loss = mean over a name's positions of
# -log p(correct next token). Adam keeps a running mean of each parameter's gradient (m) and
# of its square (v), and steps by m / sqrt(v). Signpost: production fine-tuning averages the
# loss over a batch of many sequences per step; one name per step keeps each step cheap.


def name_loss(model, adapters, tokens):
    """Mean loss per position of one name: a Value if anything is trainable, else a float."""
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    n = min(BLOCK_SIZE, len(tokens) - 1)
    losses = [cross_entropy(gpt_step(model, adapters, tokens[pos], pos, keys, values),
                            tokens[pos + 1]) for pos in range(n)]
    if not isinstance(losses[0], Value):
        return sum(losses) / n
    return Value(sum(l.data for l in losses) / n, tuple(losses), (1.0 / n,) * n)  # fused mean


def train(label, model, adapters, params, token_lists, num_steps, learning_rate):
    adam_m, adam_v = [0.0] * len(params), [0.0] * len(params)
    losses = []
    start = time.time()
    for step in range(num_steps):
        loss = name_loss(model, adapters, token_lists[step % len(token_lists)])
        loss.backward()
        lr = learning_rate * (1.0 - step / num_steps)   # linear decay to 0
        # Bias corrections: m and v start at 0, so early averages are scaled back up
        correct_m, correct_v = 1.0 - BETA1 ** (step + 1), 1.0 - BETA2 ** (step + 1)
        # m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g^2 ; p -= lr * m_hat / (sqrt(v_hat) + eps)
        grads = [p.grad for p in params]
        adam_m = [BETA1 * m + (1.0 - BETA1) * g for m, g in zip(adam_m, grads)]
        adam_v = [BETA2 * v + (1.0 - BETA2) * g * g for v, g in zip(adam_v, grads)]
        for p, m, v in zip(params, adam_m, adam_v):
            p.data -= lr * (m / correct_m) / (math.sqrt(v / correct_v) + ADAM_EPS)
            p.grad = 0.0   # backward() adds into .grad: reset it for the next step
        losses.append(loss.data)
        if (step + 1) % 100 == 0 or step + 1 == num_steps:
            recent = losses[-100:]
            print(f"{label} step {step + 1:5d}/{num_steps} | loss {sum(recent) / len(recent):.4f}"
                  f" | {time.time() - start:.1f}s")
    return losses


# === EVALUATION: HELD-OUT LOSS ON EACH SPLIT ===
# Everything is measured on names no training step ever read: HELDOUT_NAMES from each split.
# A loss is the mean per-token cross-entropy (total loss over all predictions / number of
# predictions, so each token counts equally). "Gain on B" is the base model's B loss minus
# the adapted model's; "forgetting" (increase on A) is the adapted model's A loss minus the
# base model's. The first prediction of a name (its first letter, from BOS) is also scored
# on its own, because that is where the two splits differ by construction.


def heldout_losses(model, adapters, token_lists):
    """(loss per token, loss on first letters, loss on every later token) over the names."""
    first, rest, rest_count = 0.0, 0.0, 0
    for tokens in token_lists:
        keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
        for pos in range(min(BLOCK_SIZE, len(tokens) - 1)):
            loss = cross_entropy(gpt_step(model, adapters, tokens[pos], pos, keys, values),
                                 tokens[pos + 1])
            if pos == 0:
                first += loss
            else:
                rest += loss
                rest_count += 1
    total = (first + rest) / (len(token_lists) + rest_count)
    return total, first / len(token_lists), rest / rest_count


def first_letter_probs(model, bos):
    # The exact distribution of the first letter: softmax of the logits after BOS at
    # position 0 (no sampling noise). Index 26 (BOS itself, an empty name) is dropped.
    return softmax(gpt_step(model, {}, bos, 0, [[]], [[]]))[:bos]


def largest(differences):
    # max() is blind to NaN (max(0.0, nan) is 0.0), so a non-finite difference is returned
    # as inf: it must fail the check it feeds, never vanish inside a maximum.
    worst = 0.0
    for d in differences:
        if not math.isfinite(d):
            return math.inf
        worst = max(worst, d)
    return worst


def max_logit_difference(model_a, adapters_a, model_b, adapters_b, token_lists):
    def differences():
        for tokens in token_lists:
            caches = [([[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]) for _ in "ab"]
            for pos in range(min(BLOCK_SIZE, len(tokens) - 1)):
                logits_a = gpt_step(model_a, adapters_a, tokens[pos], pos, *caches[0])
                logits_b = gpt_step(model_b, adapters_b, tokens[pos], pos, *caches[1])
                yield from (abs(a - b) for a, b in zip(logits_a, logits_b))
    return largest(differences())


# === INFERENCE: SAMPLING NAMES ===
# Start from BOS, draw each next letter from softmax(logits / TEMPERATURE), stop at BOS.
# All in plain floats: a frozen or merged model needs no graph.


def sample_name(model, bos, itos):
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    token, out = bos, []
    for pos in range(BLOCK_SIZE):
        logits = [z / TEMPERATURE for z in gpt_step(model, {}, token, pos, keys, values)]
        weights, _ = shifted_exps(logits)
        token = random.choices(range(len(weights)), weights=weights)[0]
        if token == bos:
            break
        out.append(itos[token])
    return "".join(out)


# === PICTURES ===


def bucket_means(series, width):
    # Split the series into `width` equal runs of steps and average each run
    bucket = len(series) / width
    return [sum(series[int(i * bucket):int((i + 1) * bucket)]) /
            max(1, int((i + 1) * bucket) - int(i * bucket)) for i in range(width)]


def ascii_curves(named_series, width=CHART_COLUMNS, height=10):
    """Several loss curves on one chart, one symbol each, averaged into `width` buckets."""
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


def first_letter_chart(columns, itos, width=24):
    """One bar per letter for each named distribution, side by side."""
    top = max(max(p) for p in columns.values())
    lines = ["      " + "".join(f"{name:<{width + 9}}" for name in columns)]
    for letter in range(len(next(iter(columns.values())))):
        cells = [f"{p[letter]:6.1%} {'#' * round(p[letter] / top * width):<{width}}  "
                 for p in columns.values()]
        lines.append(f"   {itos[letter]}  " + "".join(cells))
    return "\n".join(lines)


def ratio(forgot, gain):
    return f"{forgot / gain:.2f}" if gain > 0 else "-"


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("base model: training loss on A, last 100 steps", "base_final_loss", "<", 2.5),
    ("LoRA: held-out B loss gain (base - adapted)", "b_loss_gain", ">", 0.1),
    ("LoRA: forgetting on A, smaller than its B gain", "a_loss_increase", "<", "b_loss_gain"),
    ("fresh adapters (B = 0): logit difference from base", "adapter_start_error", "==", 0.0),
    (f"trainable share of all parameters (rank {LORA_RANK})", "trainable_fraction", "<", 0.1),
    ("largest change of a frozen base weight", "frozen_weight_drift", "==", 0.0),
    ("logit difference, adapter vs merged, every rank", "merge_max_error", "<", 1e-9),
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
# The two ways to adapt W0, written side by side. They share everything that could tilt the
# comparison: the starting weights, the names and their order, the number of steps, Adam and
# its schedule. They differ in what is trainable (128 adapter numbers, or all 4,192 weights)
# and in the learning rate, which each gets from the same search.


def adapt_with_lora(frozen, rank, token_lists, learning_rate, label):
    adapters = init_adapters(rank)
    losses = train(label, frozen, adapters, adapter_parameters(adapters), token_lists,
                   ADAPT_STEPS, learning_rate)
    return adapters, losses


def fine_tune_fully(frozen, token_lists, learning_rate, label):
    model = trainable_copy(frozen)   # a fresh copy: the frozen base itself is never touched
    losses = train(label, model, {}, parameters(model.values()), token_lists, ADAPT_STEPS,
                   learning_rate)
    return frozen_copy(model), losses


def search_learning_rates(frozen, adapt_tokens, validation_tokens, base_b_loss):
    # Both methods on the same grid; each is scored by its B gain on names from B's training
    # part that adaptation never reads (not the held-out names the results use, so the
    # choice of rate cannot be fitted to them; a name that names.txt repeats may still
    # occur both here and among the adaptation names).
    print(f"\nLearning-rate search: B gain on {len(validation_tokens)} validation names")
    for lr in LR_GRID:
        adapters, _ = adapt_with_lora(frozen, LORA_RANK, adapt_tokens, lr, f"lora lr {lr}")
        lora_gain = base_b_loss - heldout_losses(merge(frozen, adapters), {},
                                                 validation_tokens)[0]
        tuned, _ = fine_tune_fully(frozen, adapt_tokens, lr, f"full lr {lr}")
        full_gain = base_b_loss - heldout_losses(tuned, {}, validation_tokens)[0]
        print(f"lr {lr:<8g} LoRA B gain {lora_gain:.4f}   full fine-tuning B gain {full_gain:.4f}")


def main():
    random.seed(42)  # every draw below (split order, init, adapters, samples) follows from it
    # Speed: the graph has no reference cycles (a node points only at the older nodes it was
    # computed from), so reference counting frees each step's graph the moment the step
    # ends. Python's cycle collector would keep rescanning the live nodes as millions are
    # created and find nothing to free, so it is switched off.
    gc.disable()
    start = time.time()
    names = load_names()
    # The file is sorted by popularity; shuffling spreads common and rare names over both the
    # training and the held-out parts of each split.
    random.shuffle(names)
    split_a, split_b = split_by_first_letter(names)
    train_a, heldout_a = hold_out(split_a, HELDOUT_NAMES)
    train_b, heldout_b = hold_out(split_b, HELDOUT_NAMES)
    chars, bos = build_vocab(names)
    stoi = {c: i for i, c in enumerate(chars)}
    itos = {i: c for c, i in stoi.items()}

    def encode(name):
        return [bos] + [stoi[c] for c in name] + [bos]

    heldout_a_tokens = [encode(n) for n in heldout_a]
    heldout_b_tokens = [encode(n) for n in heldout_b]
    # Every adaptation (each rank, and full fine-tuning) reads these names in this order.
    adapt_tokens = [encode(n) for n in train_b[:ADAPT_STEPS]]
    print(f"split A (a-m): {len(train_a)} training names, {len(heldout_a)} held out; "
          f"split B (n-z): {len(train_b)} training names ({ADAPT_STEPS} used), "
          f"{len(heldout_b)} held out")

    # --- 1. pretrain the base model on split A ---
    # This stands in for the expensive pretrained model that LoRA exists to reuse. From here
    # on its weights are W0: frozen_copy() turns them into plain floats, and every
    # adaptation below starts from exactly these numbers.
    base = init_model(vocab_size=bos + 1)
    base_params = parameters(base.values())
    print(f"\nPretraining the base model ({len(base_params)} parameters) on split A")
    base_losses = train("base", base, {}, base_params, [encode(n) for n in train_a],
                        NUM_STEPS, LEARNING_RATE)
    base_final_loss = sum(base_losses[-LOSS_WINDOW:]) / len(base_losses[-LOSS_WINDOW:])
    frozen = frozen_copy(base)             # W0: plain floats from here on
    snapshot = frozen_copy(trainable_copy(frozen))   # an independent copy to compare against
    base_a = heldout_losses(frozen, {}, heldout_a_tokens)
    base_b = heldout_losses(frozen, {}, heldout_b_tokens)
    print(f"base model held-out loss per token: A {base_a[0]:.4f}, B {base_b[0]:.4f} "
          f"(B first letters {base_b[1]:.2f}: it has hardly seen a name start with n-z) "
          f"| {time.time() - start:.1f}s")

    if LR_GRID:
        validation = [encode(n) for n in train_b[ADAPT_STEPS:ADAPT_STEPS + HELDOUT_NAMES]]
        search_learning_rates(frozen, adapt_tokens, validation,
                              heldout_losses(frozen, {}, validation)[0])

    # --- 2. LoRA: B = 0 at the start reproduces the base model exactly ---
    # Not "almost": W0 x + scale * B (A x) with B = 0 adds exactly 0.0 to every output, so
    # every logit is the same float. A largest difference of 0 is what main() prints.
    fresh = init_adapters(LORA_RANK)
    check_tokens = heldout_a_tokens[:MERGE_CHECK_NAMES] + heldout_b_tokens[:MERGE_CHECK_NAMES]
    start_error = max_logit_difference(frozen, {}, frozen, frozen_adapters(fresh), check_tokens)
    print(f"\nFresh rank-{LORA_RANK} adapters (B = 0): largest logit difference from the base "
          f"model {start_error:g}")

    # --- 3. LoRA at every rank of the sweep (the main rank among them), then full FT ---
    # Each rank draws its own A; all of them see the same names in the same order. The
    # adapted models are evaluated merged: the same numbers (checked below), no graph.
    sweep = {}
    for rank in SWEEP_RANKS:
        print(f"\nLoRA rank {rank} on {', '.join(LORA_TARGETS)} (scale alpha/r = "
              f"{LORA_ALPHA / rank:g}), lr {LORA_LR}")
        began = time.time()
        adapters, losses = adapt_with_lora(frozen, rank, adapt_tokens, LORA_LR, f"lora r={rank}")
        step_ms = (time.time() - began) / ADAPT_STEPS * 1000
        merged = merge(frozen, adapters)
        sweep[rank] = {"adapters": adapters, "losses": losses, "merged": merged, "ms": step_ms,
                       "a": heldout_losses(merged, {}, heldout_a_tokens),
                       "b": heldout_losses(merged, {}, heldout_b_tokens)}
    print(f"\nFull fine-tuning: all {len(base_params)} weights, lr {FULL_FT_LR}")
    began = time.time()
    full_model, full_losses = fine_tune_fully(frozen, adapt_tokens, FULL_FT_LR, "full FT")
    full_ms = (time.time() - began) / ADAPT_STEPS * 1000
    full_a = heldout_losses(full_model, {}, heldout_a_tokens)
    full_b = heldout_losses(full_model, {}, heldout_b_tokens)
    print(f"\nFull fine-tuning again, at lr {FULL_FT_MATCHED_LR} (B gain close to LoRA's)")
    began = time.time()
    matched_model, _ = fine_tune_fully(frozen, adapt_tokens, FULL_FT_MATCHED_LR, "full FT")
    matched_ms = (time.time() - began) / ADAPT_STEPS * 1000
    matched_a = heldout_losses(matched_model, {}, heldout_a_tokens)
    matched_b = heldout_losses(matched_model, {}, heldout_b_tokens)
    print(f"adaptations done | {time.time() - start:.1f}s")

    # The merge check compares two ways of computing the adapted model on the same names:
    # W0 x + scale * B (A x) (the training path) and (W0 + scale * B A) x (the merged matrix),
    # at every rank of the sweep: the scale alpha / r is 1 at rank 2, so only the other ranks
    # can tell a merge that drops or doubles it. They differ only by floating-point rounding
    # (about 1e-15 here). The drift check compares W0 after everything (four LoRA runs, four
    # merges, full fine-tuning of a copy) with the copy taken right after pretraining:
    # freezing must be exact, not approximate.
    main_run = sweep[LORA_RANK]
    merge_error = largest(max_logit_difference(frozen, frozen_adapters(run["adapters"]),
                                               run["merged"], {}, check_tokens)
                          for run in sweep.values())
    drift = largest(abs(w - s) for name in frozen
                    for row, srow in zip(frozen[name], snapshot[name]) for w, s in zip(row, srow))

    # --- 4. what the runs show ---
    # A training name's loss depends mostly on the name (short common names score far better
    # than long rare ones), so a chart of raw training losses would show the names, not the
    # learning. Both methods read the same names, and the base model's loss on each name
    # takes that out: the chart shows, for each name, how far below the base model's loss
    # the method scored it just before its step on it (its gain so far, on a name not yet
    # trained on). In the default run both rise, from 0.14 (F) and 0.21 (L) on the first 10
    # names to between 0.41 and 0.74 in the chart's columns for the last 50.
    base_on_adapt = [name_loss(frozen, {}, tokens) for tokens in adapt_tokens]
    print(f"\nTraining names of B: base model's loss minus the adapted model's, before each "
          f"step,\n{ADAPT_STEPS / CHART_COLUMNS:g} names per column (L = LoRA rank {LORA_RANK}, "
          f"F = full fine-tuning, # = both):")
    print(ascii_curves({"L": [b - l for b, l in zip(base_on_adapt, main_run["losses"])],
                        "F": [b - l for b, l in zip(base_on_adapt, full_losses)]}))

    # The rank sweep and the comparison in one table. "share" is trainable / all parameters
    # (PEFT's print_trainable_parameters() reports the same ratio, adapters counted in all).
    # "ratio" is forgetting per unit of gain (A forgot / B gain); ms/step is the wall time of
    # one adaptation step in this run.
    print(f"\nHeld-out loss per token (all tokens / first letter / later letters):")
    print(f"{'model':<18} {'trainable':>9} {'share':>6}   {'B loss':>20}   {'A loss':>20}"
          f"   {'B gain':>7} {'A forgot':>8} {'ratio':>6} {'ms/step':>8}")
    rows = [("base", 0, base_b, base_a, 0.0)]
    rows += [(f"LoRA rank {r}", len(adapter_parameters(run["adapters"])), run["b"], run["a"],
              run["ms"]) for r, run in sweep.items()]
    rows.append((f"full FT, lr {FULL_FT_LR:g}", len(base_params), full_b, full_a, full_ms))
    rows.append((f"full FT, lr {FULL_FT_MATCHED_LR:g}", len(base_params), matched_b, matched_a,
                 matched_ms))
    for label, count, b, a, ms in rows:
        share = count / (len(base_params) + (count if label.startswith("LoRA") else 0))
        print(f"{label:<18} {count:>9} {share:>6.1%}   {b[0]:6.3f} {b[1]:6.3f} {b[2]:6.3f}   "
              f"{a[0]:6.3f} {a[1]:6.3f} {a[2]:6.3f}   {base_b[0] - b[0]:7.4f} "
              f"{a[0] - base_a[0]:8.4f} {ratio(a[0] - base_a[0], base_b[0] - b[0]):>6} "
              f"{ms:8.1f}")
    # Reading the default run's table: the B gain rises from rank 1 to rank 4 (0.449, 0.497,
    # 0.527) and levels off at rank 8 (0.522), while the forgetting stays between 0.35 and
    # 0.45; full fine-tuning at its best rate gains most (0.586) and forgets most (0.487).
    # At lr 0.03 full fine-tuning matches LoRA's gain (0.505) and forgets 0.558, more than
    # LoRA; at lr 0.003 (not run here) it gains 0.591 and forgets 0.371, less. The rate moves
    # the forgetting as much as the rank, and so does the draw of A (see the docstring): the
    # run reports which forgets more, it does not assert it. In every row most of the A
    # increase is the first letter.
    # What training has to hold beyond the weights themselves: a gradient and Adam's two
    # moments for every trainable number. And what each new task adds to storage.
    lora_count = len(adapter_parameters(main_run["adapters"]))
    print(f"Training state (gradient + 2 Adam moments): full fine-tuning "
          f"{3 * len(base_params):,} numbers, LoRA rank {LORA_RANK} {3 * lora_count:,}. "
          f"Stored per task: {len(base_params):,} vs {lora_count:,}.")

    # The first letter is where the two splits differ by construction, and the clearest
    # picture of what each adaptation learned and what it gave up.
    print("\nFirst-letter distribution (exact probabilities after BOS):")
    columns = {"base": first_letter_probs(frozen, bos),
               f"LoRA rank {LORA_RANK}": first_letter_probs(main_run["merged"], bos),
               "full fine-tuning": first_letter_probs(full_model, bos)}
    print(first_letter_chart(columns, itos))
    for label, probs in columns.items():
        print(f"  {label}: {sum(probs[13:]) / sum(probs):.1%} of first-letter probability on n-z")

    # Samples are drawn from the merged matrices: after merging, the adapted model is an
    # ordinary model of the base's shape, and sampling costs exactly what the base's does.
    for label, model in (("base", frozen), (f"LoRA rank {LORA_RANK}, merged", main_run["merged"]),
                         ("full fine-tuning", full_model)):
        samples = [sample_name(model, bos, itos) for _ in range(NUM_SAMPLES)]
        # An empty name (BOS drawn first) is shown as "-"
        print(f"\nSamples from the {label} model:\n  " + " ".join(s or "-" for s in samples))

    trainable = lora_count
    results = {
        "base_final_loss": base_final_loss,
        "b_loss_gain": base_b[0] - main_run["b"][0],
        "a_loss_increase": main_run["a"][0] - base_a[0],
        "full_ft_b_loss_gain": base_b[0] - full_b[0],
        "full_ft_a_loss_increase": full_a[0] - base_a[0],
        "full_ft_matched_b_loss_gain": base_b[0] - matched_b[0],
        "full_ft_matched_a_loss_increase": matched_a[0] - base_a[0],
        "trainable_fraction": trainable / (trainable + len(base_params)),
        "frozen_weight_drift": drift,
        "merge_max_error": merge_error,
        "adapter_start_error": start_error,
        "base_a_loss": base_a[0],
        "base_b_loss": base_b[0],
        "trainable_params": trainable,
        "base_params": len(base_params),
    }
    for rank, run in sweep.items():
        results[f"rank{rank}_b_loss_gain"] = base_b[0] - run["b"][0]
        results[f"rank{rank}_a_loss_increase"] = run["a"][0] - base_a[0]
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microlora.md")
    print(f"total {time.time() - start:.1f}s")
    return results


if __name__ == "__main__":
    main()
