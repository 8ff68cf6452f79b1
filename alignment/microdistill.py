"""microdistill: knowledge distillation, a small GPT taught by a larger one.

A trained model knows more than its top answer. After "jo" this script's teacher gives "n"
17%, "r" 15% and "l" 8%; after "ell" it gives "i" 22%, "e" 18% and "a" 18%. Which letters
come second and third, and by how much, says which letters behave alike: what Hinton,
Vinyals and Dean (2015) called dark knowledge. A training name carries none of it: its next
letter is a hard label, probability 1 on one letter and 0 on the other 26. Distillation
trains a small student on the teacher's whole distribution instead, softened by a
temperature T so that the small probabilities weigh in too:

    teacher: microgpt's GPT (16 wide, 4,192 parameters), 1,000 steps on 1,000 names
    student: the same GPT at half the width (1,328 parameters), 300 steps on 200 of them
    hard:  loss = CE(student logits, next letter)
    soft:  loss = (1 - a) CE(...) + a T^2 KL(softmax(teacher / T) || softmax(student / T))
    seq:   loss = CE on names the teacher wrote itself (sequence-level distillation)

Every student starts from the same weights, reads its names in the same order and takes the
same number of steps; held-out names score them. In the run the soft-target student (T = 4,
a = 0.5) ends at a held-out loss of 2.405 against the hard-label student's 2.498, 13.8 paired
standard errors apart, closing 61% of the distance to the teacher's 2.345. The script also
sweeps T, trains a student on names the teacher wrote, and checks the hand-derived gradient
of the soft-target loss against its formula while it runs.

Papers: Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (2015), for
the softened targets and the T^2 factor; Kim and Rush, "Sequence-Level Knowledge Distillation"
(2016), for training on the teacher's own outputs. The model is foundational/microgpt.py's,
copied (with microdpo.py's float path, so one function runs on Values and on plain floats);
microgpt follows Karpathy's micrograd, makemore and microgpt.

Run: python alignment/microdistill.py    (about 35 s on the 2-core CI machine)
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
# Sizes chosen so that a teacher and six students train in pure Python within the budget:
# the teacher is microgpt as it is; each student has about a third of its weights.
HEAD_DIM = 4           # width of one attention head: 16 wide = 4 heads, 8 wide = 2 heads
N_LAYER = 1            # transformer blocks, teacher and student alike
BLOCK_SIZE = 16        # longest context: the longest name (15 letters) plus BOS
TEACHER_EMBD = 16      # the teacher is microgpt's model: 4,192 parameters
STUDENT_EMBD = 8       # the student is half as wide: 1,328 parameters
INIT_STD = 0.08        # small random weights: the first logits are near uniform
BETA1, BETA2, ADAM_EPS = 0.85, 0.99, 1e-8   # Adam, as in microgpt
LEARNING_RATE = 0.01   # every run, decayed linearly to 0
TEACHER_STEPS = 1000   # the teacher: one training name per step, 1,000 names in all
STUDENT_NAMES = 200    # the student's data: this many training names, no more
STUDENT_STEPS = 300    # every student takes this many steps (1.5 passes over its names)
TEMPERATURE = 4.0      # T of the main soft-target student
SOFT_WEIGHT = 0.5      # a: the soft term's share of the loss; 1 - a goes to the hard labels
TEMPERATURE_SWEEP = (1.0, 2.0, 4.0, 8.0)
HELDOUT_NAMES = 500    # held-out names (less any that occur in training) score every model
SAMPLE_TEMPERATURE = 1.0   # the teacher writes the sequence-level student's names at this T
DARK_CONTEXTS = ("", "jo", "mar", "ell", "ch")   # contexts whose next letter is shown
GRADIENT_CHECK_POSITIONS = 6   # positions of a held-out name where the gradient is checked

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
# name, so "emma" is [BOS, e, m, m, a, BOS]. Teacher and student share the vocabulary, which
# distillation of logits needs: the soft target is a distribution over the student's tokens.


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
# - cross_entropy(): log-softmax plus negative log-likelihood as one node
# - rms_scale(): the 1/RMS factor of RMSNorm as one node
# - soft_target_loss(): T^2 * KL(teacher at T || student at T) as one node, with its
#   hand-derived gradient T * (q - p) (see THE SOFT-TARGET LOSS)
# - weighted_sum(): sum_i c_i x_i with plain-number weights c_i, as one node (a name's loss:
#   the mean over its positions of the hard and soft terms, each with its weight)
# The model helpers also accept plain floats and then compute plain floats: the teacher's
# soft targets, sampling and evaluation need no gradients and run without any Value.

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
    # map(operator.mul, ...) multiplies two lists of floats in C, faster than a Python loop
    w_data, x_data = [w.data for w in weights], [x.data for x in inputs]
    return Value(sum(map(operator.mul, w_data, x_data)), (*weights, *inputs), (*x_data, *w_data))


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


def cross_entropy(logits, target):
    # L = -log softmax(z)[y] = logsumexp(z) - z_y    (z = logits, y = target)
    # dL/dz_j = p_j - [j == y]: the hard label pulls one logit up and pushes the rest down,
    # each by the probability it took. On plain floats it returns the plain loss.
    exps, top = shifted_exps([data_of(z) for z in logits])
    total = sum(exps)
    loss = top + math.log(total) - data_of(logits[target])
    if not isinstance(logits[0], Value):
        return loss
    return Value(loss, tuple(logits),
                 tuple(e / total - (j == target) for j, e in enumerate(exps)))


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


def weighted_sum(weights, terms):
    # y = sum_i c_i * t_i with plain numbers c_i,  dy/dt_i = c_i: one node for a whole sum
    return Value(sum(c * t.data for c, t in zip(weights, terms)), tuple(terms), tuple(weights))


# === MODEL: MICROGPT'S TRANSFORMER AT ANY WIDTH ===
# The same block as foundational/microgpt.py, with its departures from GPT-2 (RMSNorm
# without a gain instead of LayerNorm, a norm on the embeddings, ReLU, no biases, no final
# norm, no weight tying; its comments say why): causal attention through a growing
# key/value cache, an MLP, residual connections, one position at a time. The width is read
# from the model itself, so the 16-wide teacher and the 8-wide student share every line.
# It runs on a model of Values (training) or of plain floats (the teacher's soft targets,
# sampling, evaluation); the arithmetic is the same, and a test checks that the numbers are.


def matrix(rows, cols):
    # Gaussian init: random so that neurons differ, small so that nothing starts saturated
    return [[Value(random.gauss(0.0, INIT_STD)) for _ in range(cols)] for _ in range(rows)]


def init_model(vocab_size, n_embd):
    model = {"wte": matrix(vocab_size, n_embd), "wpe": matrix(BLOCK_SIZE, n_embd),
             "lm_head": matrix(vocab_size, n_embd)}
    for layer in range(N_LAYER):
        for name in ("wq", "wk", "wv", "wo"):
            model[f"layer{layer}.{name}"] = matrix(n_embd, n_embd)
        model[f"layer{layer}.fc1"] = matrix(4 * n_embd, n_embd)
        model[f"layer{layer}.fc2"] = matrix(n_embd, 4 * n_embd)
    # width 16: 27*16 + 16*16 + 27*16 + 4*16*16 + 2*64*16 = 4,192; width 8: 1,328
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
    n_embd = len(x)
    for layer in range(N_LAYER):
        residual = x
        x = rmsnorm(x)
        q = linear(x, model[f"layer{layer}.wq"])
        keys[layer].append(linear(x, model[f"layer{layer}.wk"]))
        values[layer].append(linear(x, model[f"layer{layer}.wv"]))
        attended = []
        for h in range(0, n_embd, HEAD_DIM):
            # weight_t = softmax_t(q . k_t / sqrt(head_dim)); output = sum_t weight_t * v_t
            scores = [dot(q[h:h + HEAD_DIM], k[h:h + HEAD_DIM]) * (1.0 / math.sqrt(HEAD_DIM))
                      for k in keys[layer]]
            weights = softmax(scores)
            for i in range(h, h + HEAD_DIM):
                attended.append(dot(weights, [v[i] for v in values[layer]]))
        x = [a + r for a, r in zip(linear(attended, model[f"layer{layer}.wo"]), residual)]
        residual = x
        hidden = [relu(h) for h in linear(rmsnorm(x), model[f"layer{layer}.fc1"])]
        x = [m + r for m, r in zip(linear(hidden, model[f"layer{layer}.fc2"]), residual)]
    return linear(x, model["lm_head"])


def all_logits(model, tokens):
    """The logits at every position of a name: position t predicts tokens[t + 1]."""
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    return [gpt_step(model, tokens[pos], pos, keys, values)
            for pos in range(min(BLOCK_SIZE, len(tokens) - 1))]


# === THE SOFT-TARGET LOSS ===
# A temperature T divides the logits before the softmax: p_T = softmax(z / T). At T = 1 this
# is the model's own distribution; as T grows it flattens toward uniform, and the small
# probabilities, the teacher's second and third choices, grow to a size a loss can feel.
# Hinton et al. match the student's softened distribution q = softmax(s / T) to the
# teacher's p = softmax(v / T) (s = student logits, v = teacher logits) with
#     L_soft = T^2 * KL(p || q) = T^2 * sum_j p_j * (log p_j - log q_j)
# Its gradient with respect to the student's logits, by the chain rule through s / T:
#     dKL/ds_j = (q_j - p_j) / T,   so   dL_soft/ds_j = T^2 * (q_j - p_j) / T = T * (q_j - p_j)
# Why T^2: at a high T, with logits of zero mean, q_j - p_j is about (s_j - v_j) / (N T)
# (N = 27 letters), and the chain rule's 1/T comes on top, so the gradient is about
# (s_j - v_j) / (N T^2): it shrinks like 1/T^2. Hinton et al.: "it is important to multiply
# them by T^2 when using both hard and soft targets", so that the two terms keep the same
# relative weight as T changes. (Adam divides every gradient by its own running scale, so a
# factor on the whole loss would change nothing; the factor matters because it sets the soft
# term against the hard one, and the run shows what leaving it out costs: see the entry's
# broken versions.) The same limit shows what a high T does: the T^2-scaled gradient tends
# to (s_j - v_j) / N, so matching softened distributions becomes matching logits.
# After training the student is used, and scored, at T = 1, as Hinton et al. do.
# The direction: KL(p || q), the teacher's distribution first, is the cross-entropy of the
# student against the teacher minus the teacher's entropy, which is a constant: the student
# is asked to cover everything the teacher finds plausible. The teacher's p is a constant
# (plain floats, computed once per name): no gradient reaches the teacher.
# Signpost: PyTorch's knowledge-distillation tutorial writes the same term for a batch as
# sum(p * (log p - log_softmax(s / T))) / batch_size * T**2. torch.nn.KLDivLoss takes the
# student's log-probabilities as its input and the teacher's probabilities as its target and
# computes KL(target || input), averaged over the batch only with reduction="batchmean"; the
# default "mean" also divides by the number of classes (the third broken version in the
# entry). Reverse KL, KL(q || p), with the student first, is a deliberate alternative for
# language models: MiniLLM (Gu et al., 2023) uses it to keep the student from
# overestimating the low-probability regions of the teacher's distribution.


def soft_targets(teacher_logits, temperature):
    """The teacher's softened distribution p = softmax(v / T), on plain floats."""
    exps, _ = shifted_exps([v / temperature for v in teacher_logits])
    total = sum(exps)
    return [e / total for e in exps]


def soft_target_loss(logits, targets, temperature):
    """T^2 * KL(p || softmax(logits / T)) as one node; p (targets) is plain floats."""
    scaled = [z.data / temperature for z in logits]
    exps, top = shifted_exps(scaled)
    total = sum(exps)
    log_total = top + math.log(total)         # log sum_j exp(s_j / T)
    q = [e / total for e in exps]
    # log q_j = s_j / T - log_total; a term with p_j = 0 contributes 0 (p log p -> 0)
    kl = sum(p * (math.log(p) - (s - log_total)) for p, s in zip(targets, scaled) if p > 0.0)
    return Value(temperature ** 2 * kl, tuple(logits),
                 tuple(temperature * (q_j - p_j) for q_j, p_j in zip(q, targets)))


def reference_soft_loss(student_logits, teacher_logits, temperature):
    """The same loss written plainly from its formula, for the gradient check (no Values)."""
    p_num = [math.exp(v / temperature) for v in teacher_logits]
    q_num = [math.exp(s / temperature) for s in student_logits]
    p = [x / sum(p_num) for x in p_num]
    q = [x / sum(q_num) for x in q_num]
    return temperature ** 2 * sum(pj * math.log(pj / qj) for pj, qj in zip(p, q))


def name_loss(model, tokens, targets, temperature, soft_weight):
    """One name's loss: the mean over positions of (1 - a) * CE + a * T^2 * KL."""
    logits = all_logits(model, tokens)
    n = len(logits)
    terms, weights = [], []
    if soft_weight < 1.0:   # the hard label: the letter that really came next
        terms += [cross_entropy(z, tokens[pos + 1]) for pos, z in enumerate(logits)]
        weights += [(1.0 - soft_weight) / n] * n
    if soft_weight > 0.0:   # the soft target: the teacher's whole distribution at T
        terms += [soft_target_loss(z, targets[pos], temperature) for pos, z in enumerate(logits)]
        weights += [soft_weight / n] * n
    return weighted_sum(weights, terms)


# === TRAINING ===
# One name per step, Adam with a learning rate decaying linearly to 0, as in microgpt.
# Signpost: production distillation trains on large batches, and DistilBERT (Sanh et al.,
# 2019) initialises its student from the teacher, one layer out of two; here every student
# starts from the same random weights, so the training signal is the only difference.


def adam_step(params, state, lr):
    # m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g^2 ; p -= lr * m_hat / (sqrt(v_hat) + eps),
    # with m_hat = m / (1 - b1^t) and v_hat = v / (1 - b2^t) (bias correction). The moments
    # are updated as whole lists, as in microgpt: comprehensions over plain floats are
    # faster than an indexed loop, and this runs for every parameter at every step.
    state["t"] += 1
    t = state["t"]
    grads = [p.grad for p in params]
    state["m"] = [BETA1 * m + (1.0 - BETA1) * g for m, g in zip(state["m"], grads)]
    state["v"] = [BETA2 * v + (1.0 - BETA2) * g * g for v, g in zip(state["v"], grads)]
    m_scale, v_scale = 1.0 - BETA1 ** t, 1.0 - BETA2 ** t
    for p, m, v in zip(params, state["m"], state["v"]):
        p.data -= lr * (m / m_scale) / (math.sqrt(v / v_scale) + ADAM_EPS)
        p.grad = 0.0   # backward() adds into .grad, so it must be emptied after every step


def train(start_floats, examples, steps, temperature, soft_weight, label, clock):
    """Train a copy of start_floats for `steps` steps; examples[i] = (tokens, soft targets)."""
    model = trainable_copy(start_floats)
    params = parameters(model)
    state = {"m": [0.0] * len(params), "v": [0.0] * len(params), "t": 0}
    losses = []
    for step in range(steps):
        tokens, targets = examples[step % len(examples)]
        loss = name_loss(model, tokens, targets, temperature, soft_weight)
        loss.backward()
        adam_step(params, state, LEARNING_RATE * (1.0 - step / steps))
        losses.append(loss.data)
        half = max(1, steps // 2)   # two progress lines per run
        if (step + 1) % half == 0:
            recent = losses[-half:]
            print(f"  {label:<26} step {step + 1:5d}/{steps} | loss "
                  f"{sum(recent) / len(recent):.4f} | {time.time() - clock:.1f}s")
    return frozen_copy(model)


# === SEQUENCE-LEVEL DISTILLATION: NAMES THE TEACHER WROTE ===
# Kim and Rush (2016) distil a translation model by training the student, with the ordinary
# hard-label loss, on the teacher's own outputs (its beam-search translations) in place of
# the reference translations. Here the teacher writes names from scratch, sampled at
# SAMPLE_TEMPERATURE; each step the student reads a fresh one. The teacher is then a data
# source the student can draw on without limit, but each name again carries one hard label
# per position. Signpost: Kim and Rush take the beam-search output, the teacher's most likely
# sequence for each source sentence; names have no source sentence, and the single most
# likely name would be the same name every time, so the teacher samples instead.


def sample_name(model, bos):
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    tokens = [bos]
    for pos in range(BLOCK_SIZE):
        weights, _ = shifted_exps([z / SAMPLE_TEMPERATURE
                                   for z in gpt_step(model, tokens[-1], pos, keys, values)])
        token = random.choices(range(len(weights)), weights=weights)[0]
        tokens.append(token)
        if token == bos:
            break
    if tokens[-1] != bos:
        tokens.append(bos)   # a name cut at BLOCK_SIZE letters still ends with BOS
    return tokens


# === EVALUATION: HELD-OUT LOSS AND ITS STANDARD ERROR ===
# Every model is scored on the same held-out names by its mean cross-entropy per token (each
# token counts equally, as in microgpt). Two students are compared name by name: for name i
# with n_i predictions, d_i = (summed loss of student A) - (summed loss of student B), and the
# difference of their per-token losses is sum_i d_i / sum_i n_i. Its standard error comes
# from the spread of the d_i:  SE = sd(d) * sqrt(N) / sum_i n_i  (N names). Pairing removes
# what the two students share, how hard each name is, which an unpaired error would count
# as noise.


def name_losses(model, token_lists):
    """Each held-out name's summed cross-entropy under a float model."""
    losses = []
    for tokens in token_lists:
        logits = all_logits(model, tokens)
        losses.append(sum(cross_entropy(z, tokens[pos + 1]) for pos, z in enumerate(logits)))
    return losses


def paired_difference(losses_a, losses_b, counts):
    """(per-token loss of A minus B, its paired standard error, their ratio z)."""
    diffs = [a - b for a, b in zip(losses_a, losses_b)]
    mean = sum(diffs) / len(diffs)
    spread = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    difference, error = sum(diffs) / sum(counts), spread * math.sqrt(len(diffs)) / sum(counts)
    # Two identical students differ by exactly 0 on every name: no difference to measure and
    # no noise to measure it against, so z is NaN (which fails its row), not a crash.
    return difference, error, difference / error if error > 0.0 else float("nan")


# === DARK KNOWLEDGE: WHAT A HARD LABEL LEAVES OUT ===
# For a few contexts, the teacher's three likeliest next letters at T = 1 and at the
# distillation temperature, beside the hard label one training name gives. The hard label
# says only "this letter"; the teacher also says which letters come next in line, and by how
# much. The higher temperature lifts those second and third choices toward the first.


def top_choices(probs, chars, bos, count=3):
    ranked = sorted(range(len(probs)), key=lambda j: -probs[j])[:count]
    return "  ".join(f"{'<end>' if j == bos else chars[j]} {probs[j]:.2f}" for j in ranked)


def show_dark_knowledge(teacher, student_names, train_names, chars, bos, encode):
    print(f"\nDark knowledge: the teacher's three likeliest next letters after a context, at "
          f"T = 1 and T = {TEMPERATURE:g},\nbeside the hard label of one training name "
          f"(probability 1 on one letter, 0 on the other {bos}):")
    print(f"{'context':<9} {'training name':<14} {'hard label':<11} {'teacher on it':<14}"
          f"{'teacher, T = 1':<27} teacher, T = {TEMPERATURE:g}")
    for context in DARK_CONTEXTS:
        # a name from the student's own data if one fits the context, else any training name
        example = next(n for n in student_names + train_names
                       if n.startswith(context) and len(n) > len(context))
        next_letter = example[len(context)]
        # encode(context) is [BOS, letters..., BOS]: its last position reads the context's last
        # letter (or BOS for the empty context) and predicts the letter after the context
        logits = all_logits(teacher, encode(context))[-1]
        probs = soft_targets(logits, 1.0)
        print(f"{context or '<start>':<9} {example:<14} {next_letter + ' 1.00':<11} "
              f"{probs[chars.index(next_letter)]:<14.2f}{top_choices(probs, chars, bos):<27} "
              f"{top_choices(soft_targets(logits, TEMPERATURE), chars, bos)}")


# === THE GRADIENT, CHECKED DURING THE RUN ===
# The soft-target node's gradient T * (q - p) is derived by hand, and a wrong derivation can
# still train (a wrong scale or a teacher distribution at the wrong temperature bends the
# student without stopping it). So the run checks the node, fed exactly as training feeds
# it, against central finite differences of reference_soft_loss(), which computes
# T^2 * KL(softmax(v / T) || softmax(s / T)) straight from the teacher's and the student's
# logits and shares no code with the training path. The result is the largest gap over the
# largest derivative, at every temperature of the sweep.


def soft_gradient_error(student, teacher, tokens, temperatures):
    gaps, scale = [], 0.0
    student_logits = all_logits(student, tokens)[:GRADIENT_CHECK_POSITIONS]
    teacher_logits = all_logits(teacher, tokens)[:GRADIENT_CHECK_POSITIONS]
    for temperature in temperatures:
        # The loss sees the logits only through s / T, so the step is 1e-5 in units of T.
        # A fixed step would let rounding grow with T: the plain formula multiplies a KL of
        # about 1/T^2 by T^2, so its rounding error is T^2 times a float's, and at T = 50 a
        # step of 1e-5 measured 2.8e-7 (TEMPERATURE = 50, the second challenge) where this
        # one measures 5.8e-9.
        step = 1e-5 * temperature
        for s, v in zip(student_logits, teacher_logits):
            leaves = [Value(x) for x in s]
            soft_target_loss(leaves, soft_targets(v, temperature), temperature).backward()
            for j in range(len(s)):
                up, down = list(s), list(s)
                up[j] += step
                down[j] -= step
                numeric = (reference_soft_loss(up, v, temperature)
                           - reference_soft_loss(down, v, temperature)) / (2 * step)
                gaps.append(abs(leaves[j].grad - numeric))
                scale = max(scale, abs(numeric))
    # A NaN gap must not vanish inside max(): any non-finite gap makes the result NaN
    if not all(math.isfinite(g) for g in gaps) or scale == 0.0:
        return float("nan")
    return max(gaps) / scale


# === ASCII PICTURE ===


def bar_chart(rows, floor, width=36):
    """Horizontal bars of held-out loss, starting at `floor` so that differences show."""
    top = max(loss for _, loss in rows)
    lines = []
    for label, loss in rows:
        length = round(width * (loss - floor) / (top - floor)) if top > floor else 0
        lines.append(f"  {label:<30} {loss:.4f} |{'#' * max(0, length)}")
    return "\n".join(lines)


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("held-out loss, hard minus soft, in paired SEs", "soft_vs_hard_z", ">", 2.0),
    ("share of the hard student-to-teacher gap closed", "gap_closed", ">", 0.25),
    ("teacher's held-out loss below the soft student's", "teacher_heldout_loss", "<",
     "soft_heldout_loss"),
    ("soft-target gradient vs finite differences", "soft_gradient_error", "<", 1e-6),
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
    random.seed(42)   # every random draw below (split, inits, sampling) follows from this
    # Speed: the graph has no reference cycles (a node points only at the older nodes it was
    # computed from), so reference counting frees each step's graph the moment the step
    # ends. Python's cycle collector would keep rescanning the live nodes as millions are
    # created and find nothing to free, so it is switched off (no number changes).
    gc.disable()
    clock = time.time()
    names = load_names()
    random.shuffle(names)
    # names.txt lists some names twice: a held-out name that also occurs among the training
    # names is dropped, so no held-out name was ever trained on by any model.
    train_names = names[:-HELDOUT_NAMES]
    seen = set(train_names)
    heldout_names = [n for n in names[-HELDOUT_NAMES:] if n not in seen]
    student_names = train_names[:STUDENT_NAMES]
    chars, bos = build_vocab(names)
    stoi = {c: i for i, c in enumerate(chars)}

    def encode(name):
        return [bos] + [stoi[c] for c in name] + [bos]

    # --- 1. the teacher: the larger model, trained longer, on five times as many names ---
    teacher_start = frozen_copy(init_model(bos + 1, TEACHER_EMBD))
    student_start = frozen_copy(init_model(bos + 1, STUDENT_EMBD))
    print(f"{len(train_names)} training names, {len(heldout_names)} held out; teacher "
          f"{len(parameters(teacher_start))} parameters, {TEACHER_STEPS} steps, one training "
          f"name each;\nstudent {len(parameters(student_start))} parameters, "
          f"{STUDENT_STEPS} steps over {STUDENT_NAMES} names")
    teacher = train(teacher_start, [(encode(n), None) for n in train_names[:TEACHER_STEPS]],
                    TEACHER_STEPS, 1.0, 0.0, "teacher", clock)

    # --- 2. what the teacher knows that a hard label does not say ---
    show_dark_knowledge(teacher, student_names, train_names, chars, bos, encode)

    # --- 3. the students: same start, same names in the same order, same steps ---
    # The teacher's logits on the student's names are computed once, on plain floats; each
    # temperature's soft targets are made from them.
    student_tokens = [encode(n) for n in student_names]
    teacher_logits = [all_logits(teacher, tokens) for tokens in student_tokens]
    temperatures = sorted(set(TEMPERATURE_SWEEP) | {TEMPERATURE})
    # How much a hard label leaves out, over every position of the student's names: the
    # probability the teacher (at T = 1) puts on letters other than the one that came next
    positions = [(soft_targets(v, 1.0), tokens[pos + 1])
                 for tokens, logits in zip(student_tokens, teacher_logits)
                 for pos, v in enumerate(logits)]
    off_label = sum(1.0 - probs[label] for probs, label in positions) / len(positions)
    off_top = sum(1.0 - max(probs) for probs, _ in positions) / len(positions)
    print(f"Over the {len(positions)} positions of the student's {len(student_tokens)} names, "
          f"the teacher puts {off_label:.1%} of its probability\non letters other than the "
          f"hard label ({off_top:.1%} outside its own first choice); a hard label puts 0% there.")
    print(f"\nStudents ({STUDENT_STEPS} steps each, from the same initial weights; soft "
          f"weight a = {SOFT_WEIGHT:g}):")
    hard = train(student_start, [(t, None) for t in student_tokens], STUDENT_STEPS, 1.0, 0.0,
                 "hard labels", clock)
    soft = {}
    for temperature in temperatures:
        examples = [(tokens, [soft_targets(v, temperature) for v in logits])
                    for tokens, logits in zip(student_tokens, teacher_logits)]
        soft[temperature] = train(student_start, examples, STUDENT_STEPS, temperature,
                                  SOFT_WEIGHT, f"soft targets, T = {temperature:g}", clock)
    teacher_written = [sample_name(teacher, bos) for _ in range(STUDENT_STEPS)]
    sequence = train(student_start, [(t, None) for t in teacher_written], STUDENT_STEPS, 1.0,
                     0.0, "teacher-written names", clock)

    # --- 4. held-out scores ---
    heldout_tokens = [encode(n) for n in heldout_names]
    counts = [min(BLOCK_SIZE, len(t) - 1) for t in heldout_tokens]
    total = sum(counts)
    scored = {"teacher": name_losses(teacher, heldout_tokens),
              "hard": name_losses(hard, heldout_tokens),
              "sequence": name_losses(sequence, heldout_tokens)}
    for temperature in temperatures:
        scored[temperature] = name_losses(soft[temperature], heldout_tokens)
    loss = {key: sum(values) / total for key, values in scored.items()}
    gap, gap_error, gap_z = paired_difference(scored["hard"], scored[TEMPERATURE], counts)
    # The share of the distance from the hard-label student down to the teacher that the soft
    # targets close. With no distance to close (a teacher no better than the hard-label
    # student) the share is undefined: NaN, which fails its row.
    reach = loss["hard"] - loss["teacher"]
    gap_closed = gap / reach if reach > 0.0 else float("nan")
    print(f"\nHeld-out loss per token on {len(heldout_names)} names ({total} predictions); "
          f"the teacher is the floor:")
    rows = [(f"teacher ({TEACHER_EMBD} wide, {TEACHER_STEPS} names)", loss["teacher"]),
            ("student, hard labels", loss["hard"])]
    rows += [(f"student, soft targets T = {t:g}", loss[t]) for t in temperatures]
    rows += [("student, teacher-written names", loss["sequence"])]
    print(bar_chart(rows, floor=min(l for _, l in rows) - 0.05))

    print(f"\nTemperature sweep (a = {SOFT_WEIGHT:g}), each against the hard-label student, "
          f"paired over the held-out names:")
    print(f"{'T':>5} {'held-out loss':>14} {'hard minus soft':>16} {'SE':>7} {'z':>6}")
    sweep = {}
    for temperature in temperatures:
        g, e, z = paired_difference(scored["hard"], scored[temperature], counts)
        sweep[temperature] = z
        print(f"{temperature:>5g} {loss[temperature]:>14.4f} {g:>16.4f} {e:>7.4f} {z:>6.1f}")
    seq_gap, seq_error, seq_z = paired_difference(scored["hard"], scored["sequence"], counts)
    print(f"teacher-written names: held-out loss {loss['sequence']:.4f}, hard minus it "
          f"{seq_gap:.4f} +- {seq_error:.4f}")

    gradient_error = soft_gradient_error(soft[TEMPERATURE], teacher, heldout_tokens[0],
                                         temperatures)
    print(f"\nsoft-target gradient against finite differences of the plain formula: largest "
          f"gap / largest derivative = {gradient_error:.2e}")

    results = {
        "soft_vs_hard_z": gap_z,
        "gap_closed": gap_closed,
        "teacher_heldout_loss": loss["teacher"],
        "soft_heldout_loss": loss[TEMPERATURE],
        "hard_heldout_loss": loss["hard"],
        "sequence_heldout_loss": loss["sequence"],
        "soft_minus_hard": -gap,
        "soft_minus_hard_error": gap_error,
        "soft_gradient_error": gradient_error,
        "teacher_off_label_probability": off_label,
        "teacher_off_top_probability": off_top,
    }
    for temperature in temperatures:
        results[f"soft_heldout_loss_T{temperature:g}"] = loss[temperature]
        results[f"soft_vs_hard_z_T{temperature:g}"] = sweep[temperature]
    results["sequence_vs_hard_z"] = seq_z
    print_criteria(results)
    print(f"total {time.time() - clock:.1f}s")
    print("\nNext: predict what a change will do, then run it: docs/challenges/microdistill.md")
    return results


if __name__ == "__main__":
    main()
