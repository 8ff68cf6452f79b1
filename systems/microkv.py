"""microkv: the key/value cache, the trick that makes generating text affordable.

A GPT writes one token at a time, and every new token attends to every earlier one. Each
attention layer needs, for every earlier position, a key vector (what that position offers to
be matched against) and a value vector (what it hands over when matched). Those two vectors
depend only on the tokens up to that position, so once computed they never change. Without a
cache, each generation step runs the whole sequence through the model again and recomputes
all of them; with a cache, each step computes the keys and values of the one new position,
appends them to a list, and reads the rest. This file measures exactly that difference:

    train a tiny GPT (Value autograd) -> copy its weights to plain floats
      -> generate without a cache (re-run every position each step)
      -> generate with a cache (prefill the prompt once, then decode one position a step)
      -> same logits to the last bit, but multiplications grow as about n^2 versus n
      -> the cache's memory grows linearly -> allocate it in fixed-size blocks (paging)

Every multiplication of the float forward pass is counted, so the saving is shown as numbers
rather than as wall time, which Python would blur. The last part simulates paged allocation
in the manner of vLLM's PagedAttention: the cache lives in fixed-size blocks found through
a block table, instead of one slab reserved for the longest possible sequence.

Run: python systems/microkv.py    (about 6 s on the 2-core CI machine)
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
# The model is microgpt's shape with a longer context, so generation can run to 32 positions.
N_EMBD = 16        # width of every hidden vector
N_HEAD = 4         # attention heads; each looks at a 16 / 4 = 4-wide slice
N_LAYER = 1        # transformer blocks
BLOCK_SIZE = 32    # longest context: the largest position the model has an embedding for
MLP_HIDDEN = 4 * N_EMBD   # the usual 4x expansion inside the MLP block
LEARNING_RATE = 0.01
BETA1, BETA2, ADAM_EPS = 0.85, 0.99, 1e-8   # Karpathy's microgpt values (PyTorch: 0.9, 0.999)
INIT_STD = 0.08    # small random weights keep the first logits near uniform (loss ~ ln 27)
NUM_STEPS = 300    # brief: the cache lesson needs a trained model, not a great one
TEMPERATURE = 0.5  # < 1 sharpens the sampling distribution
PROMPT = "ma"      # the prompt every generation starts from (after the BOS token)
GROWTH_LENGTHS = (8, 32)  # total positions per generation for the growth measurement
NUM_SAMPLES = 8    # names generated with the cache (end token allowed) to show the model works
KV_BLOCK = 4       # positions per paged block (vLLM's CacheConfig defaults to 16 tokens)
NUM_REQUESTS = 20  # simulated requests in the paging experiment, one arriving per tick

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
# Character level, as in microgpt: 26 letters plus one BOS token that marks both the start
# and the end of a name, so "emma" becomes [BOS, e, m, m, a, BOS].


def build_vocab(names):
    # Sorting makes the letter -> id mapping the same on every run and every machine
    chars = sorted(set("".join(names)))
    return chars, len(chars)  # token ids 0..len-1 are letters; id len(chars) is BOS


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
# This Value class follows the canonical interface (docs/autograd-interface.md) exactly; it is
# microgpt's, copied, because autograd is needed only for the brief training run. On top of it
# this script adds the fused nodes below, as plain functions:
# - dot(): a whole dot product (one neuron of a linear layer) as one node
# - softmax(): each output probability as one node over all the logits
# - cross_entropy(): log-softmax plus negative log-likelihood as one node
# - rms_scale(): the 1/RMS factor of RMSNorm as one node
# - mean(): the average of a name's per-position losses as one node
# Generation, the subject of this script, uses no Value at all: it runs on plain floats.

# === FUSED NODES: THE SAME MATH, FEWER NODES ===
# Built only from + and *, the dot product of two 16-wide vectors is 16 multiplications and
# 15 additions: 31 nodes, each with its own Python object and its own trip through
# backward(). But the derivatives of the whole sum are known in closed form:
#     y = sum_i w_i * x_i   =>   dy/dw_i = x_i,   dy/dx_i = w_i
# so one node with 32 children and those 32 local derivatives computes exactly the same
# numbers and the same gradients with 30 fewer nodes per neuron (microgpt measured its
# training 11x faster fused than built from + and *). A fused node is any function whose local
# derivatives we can write down in the forward pass. The naive dot product is kept here once;
# the tests check every fused node against its naive form, on values and on gradients.


def naive_dot(weights, inputs):
    total = weights[0] * inputs[0]
    for w, x in zip(weights[1:], inputs[1:]):
        total = total + w * x
    return total


def dot(weights, inputs):
    return Value(sum(w.data * x.data for w, x in zip(weights, inputs)),
                 (*weights, *inputs),
                 (*[x.data for x in inputs], *[w.data for w in weights]))


def linear(inputs, weight_rows):
    # y = W x: one fused dot node per output neuron (no bias, as in the GPT-2 variant here)
    return [dot(row, inputs) for row in weight_rows]


def shifted_exps(numbers):
    # exp(z_i - m) with m = max(z), for plain floats. Subtracting the max changes nothing in a
    # softmax (it cancels between numerator and denominator) but the largest term becomes
    # exp(0) = 1, so exp() cannot overflow on large logits. Returns m too, because
    # logsumexp(z) = m + log(sum_i exp(z_i - m)).
    top = max(numbers)
    return [math.exp(z - top) for z in numbers], top


def softmax(logits):
    # p_i = exp(z_i - m) / sum_j exp(z_j - m)
    # Local derivatives of each output: dp_i/dz_j = p_i * (delta_ij - p_j).
    exps, _ = shifted_exps([z.data for z in logits])
    total = sum(exps)
    probs = [e / total for e in exps]
    logits = tuple(logits)
    return [Value(p_i, logits, tuple(p_i * ((i == j) - p_j) for j, p_j in enumerate(probs)))
            for i, p_i in enumerate(probs)]


def cross_entropy(logits, target):
    # L = -log softmax(z)[y] = logsumexp(z) - z_y    (z = logits, y = target)
    # dL/dz_j = p_j - [j == y]: push up the right answer, push down the rest by how much
    # probability they took. One node with len(z) children replaces exp, sum, divide and log.
    exps, top = shifted_exps([z.data for z in logits])
    total = sum(exps)
    loss = top + math.log(total) - logits[target].data
    local_grads = tuple(e / total - (j == target) for j, e in enumerate(exps))
    return Value(loss, tuple(logits), local_grads)


def rms_scale(x):
    # RMSNorm rescales a vector to unit root-mean-square: y_i = x_i * s, with
    #     s = (mean_j x_j^2 + eps)^(-1/2),   ds/dx_j = -s^3 * x_j / n
    # s is one fused node; the n products x_i * s stay ordinary multiplications.
    n = len(x)
    s = (sum(xi.data * xi.data for xi in x) / n + 1e-5) ** -0.5
    return Value(s, tuple(x), tuple(-s ** 3 * xi.data / n for xi in x))


def rmsnorm(x):
    # Signpost: real RMSNorm also multiplies by a learned gain per channel; with one block and
    # 16 channels we leave it out, as Karpathy's microgpt does.
    s = rms_scale(x)
    return [xi * s for xi in x]


def mean(xs):
    # y = (1/n) sum_i x_i, dy/dx_i = 1/n: one node instead of n - 1 additions and a product
    n = len(xs)
    return Value(sum(x.data for x in xs) / n, tuple(xs), (1.0 / n,) * n)


# === MODEL PARAMETERS ===
# A parameter matrix is a list of rows, each row a list of Values. Everything the optimiser
# updates is collected in one flat list.


def matrix(rows, cols):
    # Gaussian init: random so that neurons differ, small so that nothing starts saturated
    return [[Value(random.gauss(0.0, INIT_STD)) for _ in range(cols)] for _ in range(rows)]


def init_model(vocab_size):
    model = {
        "wte": matrix(vocab_size, N_EMBD),       # token embedding: one row per token
        "wpe": matrix(BLOCK_SIZE, N_EMBD),       # position embedding: one row per position
        "lm_head": matrix(vocab_size, N_EMBD),   # hidden vector -> one logit per token
    }
    for layer in range(N_LAYER):
        for name in ("wq", "wk", "wv", "wo"):
            model[f"layer{layer}.{name}"] = matrix(N_EMBD, N_EMBD)
        model[f"layer{layer}.fc1"] = matrix(MLP_HIDDEN, N_EMBD)
        model[f"layer{layer}.fc2"] = matrix(N_EMBD, MLP_HIDDEN)
    # 27*16 (wte) + 32*16 (wpe) + 27*16 (lm_head) + 4*16*16 (attention) + 2*64*16 (MLP) = 4,448
    params = [p for mat in model.values() for row in mat for p in row]
    return model, params


# === TRAINING FORWARD PASS (VALUE AUTOGRAD) ===
# microgpt's forward pass, one position at a time. It already uses a key/value cache: training
# a name processes positions 0, 1, 2, ... in order and each one appends its key and value to
# `keys` and `values`, so attention at position t reads entries 0..t and nothing later (causal
# masking by construction). The float version further down computes the same numbers; it is
# the one that counts multiplications and that generation uses.


def gpt_step(model, token_id, pos, keys, values):
    """Logits for the next token after `token_id` at position `pos` (keys/values: caches)."""
    tok_emb, pos_emb = model["wte"][token_id], model["wpe"][pos]
    x = rmsnorm([t + p for t, p in zip(tok_emb, pos_emb)])
    head_dim = N_EMBD // N_HEAD
    for layer in range(N_LAYER):
        # --- attention: the new position's query against every cached key ---
        residual = x
        x = rmsnorm(x)
        q = linear(x, model[f"layer{layer}.wq"])
        keys[layer].append(linear(x, model[f"layer{layer}.wk"]))
        values[layer].append(linear(x, model[f"layer{layer}.wv"]))
        attended = []
        for h in range(0, N_EMBD, head_dim):
            # score_t = q . k_t / sqrt(head_dim); weights = softmax(scores)
            q_head = q[h:h + head_dim]
            scores = [dot(q_head, k[h:h + head_dim]) * (1.0 / math.sqrt(head_dim))
                      for k in keys[layer]]
            weights = softmax(scores)
            # output_i = sum_t weight_t * v_t[i]: a weighted average of the value vectors
            for i in range(h, h + head_dim):
                attended.append(dot(weights, [v[i] for v in values[layer]]))
        x = [a + r for a, r in zip(linear(attended, model[f"layer{layer}.wo"]), residual)]
        # --- MLP: each position on its own; nothing here needs other positions or a cache ---
        residual = x
        hidden = [h.relu() for h in linear(rmsnorm(x), model[f"layer{layer}.fc1"])]
        x = [m + r for m, r in zip(linear(hidden, model[f"layer{layer}.fc2"]), residual)]
    return linear(x, model["lm_head"])


# === TRAINING ===
# One name per step, Adam with a linearly decaying learning rate, exactly as in microgpt
# (which explains each line). Loss of a name = mean over its positions of -log p(next token).


def name_loss(model, tokens):
    # Fresh caches per name: attention must not see the previous name's positions.
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    # A name of length L gives L + 1 predictions: each letter, then the closing BOS.
    n = min(BLOCK_SIZE, len(tokens) - 1)
    return mean([cross_entropy(gpt_step(model, tokens[pos], pos, keys, values), tokens[pos + 1])
                 for pos in range(n)])


def train(model, params, docs, encode):
    adam_m, adam_v = [0.0] * len(params), [0.0] * len(params)
    losses = []
    start = time.time()
    for step in range(NUM_STEPS):
        loss = name_loss(model, encode(docs[step % len(docs)]))
        loss.backward()
        # Linear decay to 0 over training: big steps early, fine adjustments at the end.
        lr = LEARNING_RATE * (1.0 - step / NUM_STEPS)
        t = step + 1
        for i, p in enumerate(params):
            # m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g^2 ; p -= lr * m_hat / (sqrt(v_hat) + eps)
            adam_m[i] = BETA1 * adam_m[i] + (1.0 - BETA1) * p.grad
            adam_v[i] = BETA2 * adam_v[i] + (1.0 - BETA2) * p.grad * p.grad
            m_hat = adam_m[i] / (1.0 - BETA1 ** t)   # bias correction: m and v start at 0,
            v_hat = adam_v[i] / (1.0 - BETA2 ** t)   # so early averages are scaled back up
            p.data -= lr * m_hat / (math.sqrt(v_hat) + ADAM_EPS)
            # backward() adds into .grad, so it must be reset before the next step
            p.grad = 0.0
        losses.append(loss.data)
        if (step + 1) % 100 == 0 or step == 0:
            recent = losses[-100:]
            print(f"step {step + 1:5d}/{NUM_STEPS} | loss {sum(recent) / len(recent):.4f} "
                  f"| {time.time() - start:.1f}s")
    return losses


# === INFERENCE ON PLAIN FLOATS, WITH EVERY MULTIPLICATION COUNTED ===
# Generation needs no gradients, so the trained weights are copied out of their Values into
# plain floats: no graph is built and every operation is an ordinary float operation. Each
# helper below adds the multiplications it performs to a counter (a division counts as one
# multiplication; additions, powers, exp and max are not counted), and a test replays the
# forward pass with a float type that counts its own `*` and `/` to check the tallies.
# The order of every sum and product matches the Value version above, so the float logits
# equal the Value logits to the last bit (a test checks that too).


class OpCounter:
    """Running totals for one generation: multiplications, and floats read from memory."""

    def __init__(self):
        self.mults = 0
        self.floats_read = 0


def to_floats(model):
    # The same matrices, each Value replaced by its .data: a frozen model for inference
    return {name: [[p.data for p in row] for row in mat] for name, mat in model.items()}


def matvec(rows, x, counter):
    # y_i = sum_j W_ij x_j: len(rows) * len(x) multiplications
    counter.mults += len(rows) * len(x)
    return [sum(w * xi for w, xi in zip(row, x)) for row in rows]


def rmsnorm_floats(x, counter):
    # y_i = x_i * s, s = (mean_j x_j^2 + eps)^(-1/2): n squares, one division by n, n scalings
    n = len(x)
    counter.mults += 2 * n + 1
    s = (sum(xi * xi for xi in x) / n + 1e-5) ** -0.5
    return [xi * s for xi in x]


def softmax_floats(z, counter):
    exps, _ = shifted_exps(z)
    total = sum(exps)
    counter.mults += len(z)
    return [e / total for e in exps]


def layer_floats_read(weights):
    # The weights one pass loads. A well-tiled matrix multiply on a GPU loads each weight from
    # memory about once per pass, however many positions the pass covers; we count exactly
    # once. (The embedding rows, two per position, are added by forward_pass.)
    names = [f"layer{layer}.{n}" for layer in range(N_LAYER)
             for n in ("wq", "wk", "wv", "wo", "fc1", "fc2")] + ["lm_head"]
    return sum(len(weights[n]) * len(weights[n][0]) for n in names)


# === THE KEY/VALUE CACHE ===
# Per layer, two append-only lists: keys[layer][t] and values[layer][t] are the key and value
# vectors of position t. Appending is the only write. Entries never change after they are
# written, because position t's key and value depend only on tokens 0..t (causal attention),
# and later tokens cannot alter them. That immutability is the whole justification for
# caching. Memory: 2 (keys and values) * n_layer * n_embd floats per position.
# Signpost: PyTorch implementations (Hugging Face transformers, for one) keep one tensor per
# layer of shape [batch, heads, positions, head_dim] and concatenate or write into it; a
# Python list of vectors is the same data with the structure in plain view.


class ContiguousCache:
    def __init__(self):
        self.keys = [[] for _ in range(N_LAYER)]
        self.values = [[] for _ in range(N_LAYER)]

    def append(self, layer, key, value):
        self.keys[layer].append(key)
        self.values[layer].append(value)

    def read(self, layer):
        """Every cached key and value of this layer, oldest position first."""
        return self.keys[layer], self.values[layer]

    def num_floats(self):
        return sum(len(vec) for lists in (self.keys, self.values)
                   for layer in lists for vec in layer)


# === ONE FORWARD PASS: PREFILL, DECODE, OR NO CACHE AT ALL ===
# forward_pass() runs the model on `tokens`, which sit at positions start_pos, start_pos+1, ...
# Every new position appends its key and value to `cache`, then attends to everything the
# cache holds up to itself. The same function covers the three ways a model gets called:
#   prefill:  the whole prompt, start_pos = 0, into an empty cache that is kept afterwards
#   decode:   one new token, start_pos = positions so far, into that kept cache
#   no cache: the whole sequence so far, start_pos = 0, into a fresh cache thrown away after
# so the only difference between cached and uncached generation is whether the cache
# survives between steps. Only the last position's logits are computed: generation needs the
# next token's distribution and nothing else (`every_position` asks for all of them, for the
# check against the reference below; it is not counted as generation work).
# Signpost: on a GPU, a prefill handles all prompt positions as one matrix-matrix product per
# weight matrix; here the positions go through one after another, which gives the same
# numbers and the same multiplication count but none of the parallel speed.


def forward_pass(weights, tokens, start_pos, cache, counter, every_position=False):
    head_dim = N_EMBD // N_HEAD
    scale = 1.0 / math.sqrt(head_dim)
    counter.floats_read += layer_floats_read(weights) + 2 * N_EMBD * len(tokens)
    xs = [rmsnorm_floats([t + p for t, p in zip(weights["wte"][tok], weights["wpe"][pos])],
                         counter)
          for pos, tok in enumerate(tokens, start_pos)]
    for layer in range(N_LAYER):
        normed = [rmsnorm_floats(x, counter) for x in xs]
        queries = [matvec(weights[f"layer{layer}.wq"], x, counter) for x in normed]
        for x in normed:
            cache.append(layer, matvec(weights[f"layer{layer}.wk"], x, counter),
                         matvec(weights[f"layer{layer}.wv"], x, counter))
        keys, values = cache.read(layer)
        counter.floats_read += 2 * N_EMBD * len(keys)   # the cache is read once per pass
        first = len(keys) - len(tokens)   # how many cached positions came before this pass
        new_xs = []
        for i, (q, residual) in enumerate(zip(queries, xs)):
            # Causal mask: the new position first + i sees cache entries 0..first + i only
            seen_keys, seen_values = keys[:first + i + 1], values[:first + i + 1]
            attended = []
            for h in range(0, N_EMBD, head_dim):
                # score_t = q . k_t / sqrt(head_dim): head_dim + 1 multiplications per key
                counter.mults += (head_dim + 1) * len(seen_keys)
                scores = [sum(qi * ki for qi, ki in zip(q[h:h + head_dim], k[h:h + head_dim]))
                          * scale for k in seen_keys]
                probs = softmax_floats(scores, counter)
                # output_i = sum_t p_t * v_t[i]: one multiplication per key per output
                counter.mults += head_dim * len(seen_values)
                attended.extend(sum(p * v[i] for p, v in zip(probs, seen_values))
                                for i in range(h, h + head_dim))
            x = [a + r for a, r in zip(matvec(weights[f"layer{layer}.wo"], attended, counter),
                                       residual)]
            hidden = [max(0.0, u) for u in   # ReLU
                      matvec(weights[f"layer{layer}.fc1"], rmsnorm_floats(x, counter), counter)]
            new_xs.append([m + r for m, r in
                           zip(matvec(weights[f"layer{layer}.fc2"], hidden, counter), x)])
        xs = new_xs
    if every_position:
        return [matvec(weights["lm_head"], x, counter) for x in xs]
    return matvec(weights["lm_head"], xs[-1], counter)


# === GENERATION WITH AND WITHOUT THE CACHE ===
# Both runs draw tokens from the same seeded random stream, so as long as their logits agree
# they pick the same tokens and stay on the same sequence; the comparison covers every step.
# `ban_token` (the end token BOS, for the growth runs) gets probability 0, so a run always
# reaches its target length instead of stopping where a name would end.


def sample_token(logits, rng, ban_token=None):
    # p_i proportional to exp(z_i / T): unnormalised weights are enough for rng.choices
    weights, _ = shifted_exps([z / TEMPERATURE for z in logits])
    if ban_token is not None:
        weights[ban_token] = 0.0
    return rng.choices(range(len(weights)), weights=weights)[0]


def generate(weights, prompt, length, use_cache, seed, ban_token=None, stop_token=None,
             cache=None):
    """Run until `length` positions are processed (or `stop_token` is drawn); report each step.

    A step is one call of the model: the prefill (or the first uncached pass) covers the
    whole prompt, every later step adds one position."""
    rng = random.Random(seed)
    counter = OpCounter()
    cache = ContiguousCache() if cache is None else cache
    tokens, new_tokens = list(prompt), list(prompt)
    steps = []
    while True:
        mults_before, reads_before = counter.mults, counter.floats_read
        if use_cache:
            logits = forward_pass(weights, new_tokens, len(tokens) - len(new_tokens), cache,
                                  counter)
        else:
            # No cache: the whole sequence again, from position 0, into a throwaway cache
            logits = forward_pass(weights, tokens, 0, ContiguousCache(), counter)
        # One record per model call: what it cost and what the cache held afterwards
        steps.append({"positions": len(tokens), "logits": logits,
                      "mults": counter.mults - mults_before,
                      "floats_read": counter.floats_read - reads_before,
                      "cache_floats": cache.num_floats() if use_cache else 0})
        if len(tokens) >= length:
            break
        token = sample_token(logits, rng, ban_token)
        if token == stop_token:
            break
        tokens.append(token)
        new_tokens = [token]
    return tokens, steps


def nan_aware_max(numbers):
    """max(), but NaN if any number is NaN. Python's max() skips a NaN that is not first
    (max(0.0, nan) is 0.0: every comparison with NaN is False), so a NaN logit would vanish
    from a largest difference and the run would report a small one; the criteria table
    fails NaN. Infinity needs no special case: max() keeps it."""
    numbers = list(numbers)
    return math.nan if any(math.isnan(x) for x in numbers) else max(numbers)


def max_logit_difference(steps_a, steps_b):
    # Largest |z_a - z_b| over every logit of every step both runs made; a run that ended
    # early or took a different path shows up as a step count mismatch, which counts as inf.
    if len(steps_a) != len(steps_b):
        return math.inf
    return nan_aware_max(abs(a - b) for sa, sb in zip(steps_a, steps_b)
                         for a, b in zip(sa["logits"], sb["logits"]))


# === A PLAIN REFERENCE FORWARD PASS, FOR THE CHECK ===
# Cached and uncached generation share forward_pass(), so comparing them cannot catch a bug
# inside it. Worse, they compare only the last position's logits, and with one layer the
# last position's logits do not depend on the mask at all (the last position may see every
# position anyway, and the keys and values of a one-layer model come from the embeddings),
# so even attention with no causal mask would pass. The reference below is written
# separately, straight from the formulas, the way a training pass computes a sequence: all
# positions at once, the full matrix of scores with -inf above the diagonal, and logits at
# every position. main() compares it, position by position, with forward_pass() run over
# the whole sequence and with every step of the cached run.


def reference_logits(weights, tokens):
    """Logits at every position of `tokens` (position 0 first), from the formulas."""
    d, n = N_EMBD // N_HEAD, len(tokens)

    def rms(vector):    # x / sqrt(mean(x^2) + eps)
        factor = (sum(a * a for a in vector) / len(vector) + 1e-5) ** -0.5
        return [a * factor for a in vector]

    def times(matrix, vector):
        return [sum(w * a for w, a in zip(row, vector)) for row in matrix]

    x = [rms([a + b for a, b in zip(weights["wte"][t], weights["wpe"][p])])
         for p, t in enumerate(tokens)]
    for layer in range(N_LAYER):
        w = {name: weights[f"layer{layer}.{name}"] for name in ("wq", "wk", "wv", "wo",
                                                                "fc1", "fc2")}
        normed = [rms(x_i) for x_i in x]
        q, k, v = ([times(w[name], h) for h in normed] for name in ("wq", "wk", "wv"))
        heads = [[] for _ in range(n)]
        for c0 in range(0, N_EMBD, d):          # head columns c0 .. c0 + d - 1
            for i in range(n):
                # causal mask: score -inf for every key after position i
                scores = [sum(q[i][c] * k[j][c] for c in range(c0, c0 + d)) / math.sqrt(d)
                          if j <= i else -math.inf for j in range(n)]
                top = max(scores)
                e = [math.exp(score - top) for score in scores]
                heads[i] += [sum(e[j] * v[j][c] for j in range(n)) / sum(e)
                             for c in range(c0, c0 + d)]
        x = [[a + r for a, r in zip(times(w["wo"], heads[i]), x[i])] for i in range(n)]
        x = [[m + r for m, r in zip(times(w["fc2"], [max(0.0, u) for u in
                                                     times(w["fc1"], rms(x_i))]), x_i)]
             for x_i in x]
    return [times(weights["lm_head"], x_i) for x_i in x]


class StaleCache(ContiguousCache):
    """A deliberately broken cache: it stops appending once it holds `capacity` positions.

    With capacity = the prompt length, decode steps attend to the prompt only, never to the
    tokens generated since (nor to themselves). main() prints what this bug does to the
    logits, as a yardstick for the 1e-9 criterion."""

    def __init__(self, capacity):
        super().__init__()
        self.capacity = capacity

    def append(self, layer, key, value):
        if len(self.keys[layer]) < self.capacity:
            super().append(layer, key, value)


def linear_fit_r2(xs, ys):
    # Least squares y = a + b x; R^2 = 1 - SS_residual / SS_total
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    ss_res = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return 1.0 - ss_res / ss_tot, slope


# === PAGED ALLOCATION (SIMULATED, AS IN vLLM's PAGEDATTENTION) ===
# A server holds many caches at once, one per request, and does not know in advance how long
# each request will run. Reserving room for the longest possible sequence (BLOCK_SIZE
# positions) per request wastes most of it: a 6-letter name uses 7 of 32 slots. vLLM's
# PagedAttention borrows the operating system's answer to the same problem, virtual memory
# pages: the cache lives in fixed-size physical blocks of KV_BLOCK positions, a request gets
# a new block only when its last one is full, and a per-request block table maps its logical
# block 0, 1, 2, ... to whichever physical blocks were free. At most KV_BLOCK - 1 slots per
# request sit unused, and a finished request's blocks go straight back to the free list.
# Here one block table per request serves every layer: block b holds positions
# b*KV_BLOCK.. of that request in each layer's cache.
#
# This is a simulation of memory management, not a speed-up. Here every "block" is a Python
# list and reading through the block table is a slower gather than reading a plain list;
# the gain in a real server is that GPU memory is not reserved and left idle, so more
# requests fit in a batch at once. vLLM's attention kernel takes the block tables as an
# input and reads each block where it lies; here read() gathers the entries into position
# order and attention runs as before.


class BlockPool:
    """The physical memory: num_blocks blocks of KV_BLOCK key and value slots per layer."""

    def __init__(self, num_blocks):
        self.keys = [[[None] * KV_BLOCK for _ in range(N_LAYER)] for _ in range(num_blocks)]
        self.values = [[[None] * KV_BLOCK for _ in range(N_LAYER)] for _ in range(num_blocks)]
        self.free = list(range(num_blocks))
        self.owner = [None] * num_blocks   # which request holds each block (for the picture)

    def allocate(self, request_id):
        block = min(self.free)   # lowest free id first, so the run is easy to follow
        self.free.remove(block)
        self.owner[block] = request_id
        return block

    def release(self, blocks):
        for block in blocks:
            self.owner[block] = None
            self.free.append(block)


class PagedCache:
    """One request's view of the pool: its block table and how many positions it holds."""

    def __init__(self, pool, request_id):
        self.pool, self.request_id = pool, request_id
        self.block_table = []               # logical block i -> physical block id
        self.lengths = [0] * N_LAYER        # positions written, per layer

    def append(self, layer, key, value):
        pos = self.lengths[layer]
        if pos == len(self.block_table) * KV_BLOCK:   # the last block is full (or none yet)
            self.block_table.append(self.pool.allocate(self.request_id))
        # position -> (physical block, slot): the address translation the block table does
        block, slot = self.block_table[pos // KV_BLOCK], pos % KV_BLOCK
        self.pool.keys[block][layer][slot] = key
        self.pool.values[block][layer][slot] = value
        self.lengths[layer] += 1

    def read(self, layer):
        # Logical position p lives in logical block p // KV_BLOCK at slot p % KV_BLOCK; the
        # block table turns the logical block into a physical one, wherever it happens to be.
        places = [(self.block_table[p // KV_BLOCK], p % KV_BLOCK)
                  for p in range(self.lengths[layer])]
        return ([self.pool.keys[b][layer][s] for b, s in places],
                [self.pool.values[b][layer][s] for b, s in places])

    def num_floats(self):
        # floats written; the slots reserved are len(block_table) * KV_BLOCK per layer
        return 2 * N_EMBD * sum(self.lengths)


def serve_requests(weights, requests):
    """Run the requests through one shared block pool, one position per request per tick.

    Request i arrives at tick i and feeds its tokens one per tick (the tokens are fixed in
    advance: this experiment is about memory, so no sampling is needed). Each request's
    logits are checked against a private contiguous cache fed the same tokens."""
    # The pool is as big as reserving BLOCK_SIZE positions for every request would need
    pool = BlockPool(len(requests) * BLOCK_SIZE // KV_BLOCK)
    caches, done = {}, {}
    max_difference, peak_blocks, peak_requests, snapshot = 0.0, 0, 0, None
    tick = 0
    while len(done) < len(requests):
        if tick < len(requests):
            caches[tick] = (PagedCache(pool, tick), ContiguousCache())
        finished = []
        # Every active request advances by one position per tick, as a continuously batched
        # server decodes one token for each running request per step.
        for rid, (paged, reference) in caches.items():
            tokens = requests[rid]
            pos = paged.lengths[0]
            counter = OpCounter()
            paged_logits = forward_pass(weights, [tokens[pos]], pos, paged, counter)
            reference_logits = forward_pass(weights, [tokens[pos]], pos, reference, counter)
            max_difference = nan_aware_max([max_difference, *(
                abs(a - b) for a, b in zip(paged_logits, reference_logits))])
            if pos + 1 == len(tokens):
                finished.append(rid)
        # Measure before the finished requests hand their blocks back: this is the peak
        peak_blocks = max(peak_blocks, len(pool.owner) - len(pool.free))
        peak_requests = max(peak_requests, len(caches))
        if tick == len(requests) - 1:
            # The picture for main(): the last arrival, when the first requests have long
            # finished and their blocks have been handed out again
            snapshot = (tick, {rid: (list(p.block_table), p.lengths[0])
                               for rid, (p, _) in caches.items()}, list(pool.owner))
        for rid in finished:
            paged = caches.pop(rid)[0]
            done[rid] = (paged.lengths[0], len(paged.block_table))
            pool.release(paged.block_table)
        tick += 1
    return done, max_difference, peak_blocks, peak_requests, snapshot


# === PICTURES ===


def bar(value, largest, width=40):
    return "#" * max(1, round(width * value / largest)) if value else ""


def ascii_line(xs, ys, width=48, height=8):
    """Plot points y(x) as a grid of text, x to the right and y upwards."""
    # Each point lands in the nearest cell; the y axis starts at 0 so a line through the
    # origin (memory proportional to positions) looks like one.
    x_lo, x_hi, y_hi = min(xs), max(xs), max(ys)
    grid = [[" "] * width for _ in range(height)]
    for x, y in zip(xs, ys):
        col = round((x - x_lo) / (x_hi - x_lo) * (width - 1))
        row = round(y / y_hi * (height - 1))
        grid[height - 1 - row][col] = "*"
    rows = [f"{y_hi * (height - 1 - r) / (height - 1):7.0f} |" + "".join(g)
            for r, g in enumerate(grid)]
    rows.append("        +" + "-" * width)
    rows.append(f"         position {x_lo}" + " " * (width - 22) + f"position {x_hi}")
    return "\n".join(rows)


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("max |logit difference|, cached vs uncached", "max_logit_difference", "<", 1e-9),
    ("max |logit diff.|, every position vs plain reference", "reference_logit_difference", "<",
     1e-9),
    ("uncached: log-log slope of mults, length 8 -> 32", "uncached_growth_exponent", ">", 1.8),
    ("cached: log-log slope of mults, length 8 -> 32", "cached_growth_exponent", "<", 1.3),
    ("R^2 of cache size (floats) against position", "cache_growth_r2", ">", 0.999),
    ("steps where cache != 2 * layers * width * positions", "cache_formula_mismatches", "==", 0),
    ("max |logit difference|, paged vs contiguous cache", "paged_logit_difference", "<", 1e-9),
    ("share of reserved slots unused, paged (vs contiguous)", "paged_waste_fraction", "<",
     "contiguous_waste_fraction"),
]
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
           "==": operator.eq}


def print_criteria(results):
    print(f"\n{'criterion':<54} {'measured':>12} {'threshold':>14}  result")
    for description, key, op, target in CRITERIA:
        value = results[key]
        threshold = results[target] if isinstance(target, str) else target
        # A non-finite value fails every row: NaN compares False with anything, but
        # inf would pass a ">" row, so finiteness is checked explicitly.
        finite = math.isfinite(value) and math.isfinite(threshold)
        verdict = "PASS" if finite and COMPARE[op](value, threshold) else "FAIL"
        print(f"{description:<54} {value:>12.6g} {op:>2} {threshold:<11.6g}  {verdict}")


# === MAIN ===


def main():
    random.seed(42)  # every random draw below (init, data order, sampling) follows from this
    # Speed: the graph has no reference cycles (a node points only at the older nodes it was
    # computed from), so reference counting frees each step's graph the moment the step
    # ends. Python's cycle collector would keep rescanning the live nodes as millions are
    # created and find nothing to free, so it is switched off (no number changes).
    gc.disable()
    start = time.time()
    names = load_names()
    random.shuffle(names)   # the file is sorted by popularity; shuffle before training
    chars, bos = build_vocab(names)
    stoi = {c: i for i, c in enumerate(chars)}

    def encode(name):
        return [bos] + [stoi[c] for c in name] + [bos]

    def decode(tokens):
        return "".join(chars[t] for t in tokens if t != bos)

    # Training is the slow part of this run (Value autograd); everything after it is floats.
    model, params = init_model(vocab_size=len(chars) + 1)
    print(f"{len(names)} names, vocabulary {len(chars) + 1} tokens, {len(params)} parameters")
    print(f"\n--- 1. A brief training run (Value autograd), so there is a model to serve ---")
    losses = train(model, params, names, encode)
    # From here on no Value is built: the trained weights are frozen and copied to floats.
    weights = to_floats(model)
    prompt = [bos] + [stoi[c] for c in PROMPT]

    # --- 2. The same generation with and without the cache ---
    print(f"\n--- 2. Generating with and without the cache (prompt '{PROMPT}', "
          f"{time.time() - start:.1f}s) ---")
    # Each pair of runs shares a seed: identical logits mean identical draws, so the two
    # runs walk the same sequence and every one of their steps can be compared.
    runs, differences = {}, []
    for length in GROWTH_LENGTHS:
        seed = random.randrange(1 << 30)
        for use_cache in (False, True):
            runs[length, use_cache] = generate(weights, prompt, length, use_cache, seed,
                                               ban_token=bos)
        differences.append(max_logit_difference(runs[length, False][1],
                                                 runs[length, True][1]))
        print(f"length {length:2d}: '{decode(runs[length, True][0])}' | max |logit difference| "
              f"{differences[-1]:.1e} | {time.time() - start:.1f}s")
    samples = []
    for _ in range(NUM_SAMPLES):   # ordinary names: the end token is allowed and stops a run
        seed = random.randrange(1 << 30)
        cached = generate(weights, prompt, BLOCK_SIZE, True, seed, stop_token=bos)
        uncached = generate(weights, prompt, BLOCK_SIZE, False, seed, stop_token=bos)
        differences.append(max_logit_difference(cached[1], uncached[1]))
        samples.append(decode(cached[0]) + ("" if cached[0] == uncached[0] else "(!)"))
    # "(!)" would mark a name on which the two runs parted ways; none should appear
    print(f"names from the prompt, cached = uncached: {', '.join(samples)}")
    max_difference = nan_aware_max(differences)
    # The yardstick: a cache that stops appending after the prompt
    longest = max(GROWTH_LENGTHS)
    _, stale_steps = generate(weights, prompt, longest, True, seed, ban_token=bos,
                              cache=StaleCache(len(prompt)))
    _, honest_steps = generate(weights, prompt, longest, False, seed, ban_token=bos)
    broken_difference = max_logit_difference(stale_steps, honest_steps)
    print(f"max |logit difference| over {sum(len(runs[k][1]) for k in runs) // 2} steps of "
          f"the growth runs and {NUM_SAMPLES} names: {max_difference:.1e} (the same floats, "
          f"in the same order);\na cache that stops appending after the prompt: "
          f"{broken_difference:.3f}")

    # Both runs above share forward_pass(), so their agreement says nothing about a bug
    # inside it. The plain reference does: every position of the length-32 sequence, once
    # from forward_pass() over the whole sequence in one pass (prefill-style, every
    # position's logits) and once from each step of the cached run.
    sequence, cached_run = runs[longest, True]
    expected = reference_logits(weights, sequence)
    one_pass = forward_pass(weights, sequence, 0, ContiguousCache(), OpCounter(),
                            every_position=True)
    reference_difference = nan_aware_max(
        [abs(a - b) for got, want in zip(one_pass, expected) for a, b in zip(got, want)]
        + [abs(a - b) for step in cached_run
           for a, b in zip(step["logits"], expected[step["positions"] - 1])])
    print(f"max |logit difference| from a plain reference forward pass, at all {longest} "
          f"positions\n(one pass) and at every cached step: {reference_difference:.1e}")

    # --- 3. Multiplications: n^2 against n ---
    # Step k without the cache re-runs all k positions, so the total over n steps is about
    # n^2 / 2 position-passes; with the cache each step runs one position: n in total.
    uncached_steps, cached_steps = runs[longest, False][1], runs[longest, True][1]
    top = max(s["mults"] for s in uncached_steps)
    print(f"\n--- 3. The work: multiplications per model call ---")
    print(f"Multiplications per step, length {longest} (one # = {top / 40:,.0f}):")
    print(f"  len | {'without cache (len = positions in the sequence)':<49} | with cache")
    for u, c in zip(uncached_steps, cached_steps):
        print(f"  {u['positions']:3d} | {bar(u['mults'], top):<40} {u['mults']:>8,} | "
              f"{bar(c['mults'], top):<3} {c['mults']:>6,}")
    totals = {key: sum(s["mults"] for s in steps) for key, (_, steps) in runs.items()}
    short = min(GROWTH_LENGTHS)

    def growth_exponent(use_cache):
        # slope of log(total) against log(length): 2 means quadratic growth, 1 linear
        return (math.log(totals[longest, use_cache] / totals[short, use_cache])
                / math.log(longest / short))

    uncached_exponent, cached_exponent = growth_exponent(False), growth_exponent(True)
    print(f"total multiplications: length {short}: {totals[short, False]:,} without the cache, "
          f"{totals[short, True]:,} with it; length {longest}: {totals[longest, False]:,} vs "
          f"{totals[longest, True]:,} ({totals[longest, False] / totals[longest, True]:.1f}x)")
    print(f"log-log growth exponent, length {short} -> {longest}: without the cache "
          f"{uncached_exponent:.2f}, with it {cached_exponent:.2f}")
    # Why the cached exponent is not exactly 1: each decode step still attends to every
    # cached position, so attention alone is O(n) per step and O(n^2) in total. At 32
    # positions that term is small beside the fixed cost of the projections and the MLP
    # (the per-step bars above grow by 40 multiplications per position); at long contexts
    # reading the cache becomes a large part of every decode step.

    # --- 4. Cache memory grows linearly ---
    # The price of the saving: every position leaves its keys and values behind, in every
    # layer, for as long as the sequence lives. Memory, not arithmetic, is what limits how
    # many sequences a server can decode at once.
    positions = [s["positions"] for s in cached_steps]
    cache_floats = [s["cache_floats"] for s in cached_steps]
    r2, slope = linear_fit_r2(positions, cache_floats)
    per_position = 2 * N_LAYER * N_EMBD
    mismatches = sum(f != per_position * p for p, f in zip(positions, cache_floats))
    print(f"\n--- 4. The memory: cache size ---")
    print(f"Cache size (floats) after each step of the length-{longest} run:")
    print(ascii_line(positions, cache_floats))
    print(f"straight-line fit: {slope:.2f} floats per position, R^2 = {r2:.6f}; "
          f"formula 2 * n_layer * n_embd = {per_position}; mismatching steps: {mismatches}")
    # The same formula at production sizes, in 16-bit floats (2 bytes each). GPT-2 small
    # and Llama 2 7B use standard multi-head attention, so every head stores its own keys.
    print("cache memory = 2 (K and V) * n_layer * n_embd * positions * bytes per float:")
    for label, layers, width, context in (("this model, float64", N_LAYER, N_EMBD, BLOCK_SIZE),
                                          ("GPT-2 small, fp16", 12, 768, 1024),
                                          ("Llama 2 7B, fp16", 32, 4096, 4096)):
        size = 8 if "float64" in label else 2
        per_token = 2 * layers * width * size
        print(f"  {label:<20} {layers:2d} layers x {width:4d} wide: {per_token:>9,} bytes per "
              f"position, {per_token * context / 2 ** 20:9.3f} MiB at {context} positions")

    # --- 5. Prefill versus decode ---
    # Multiplications per float loaded is what decides speed on real hardware: a GPU can do
    # far more arithmetic per second than it can load floats, so a pass that does few
    # multiplications per float (decode) waits on memory and one that does many (prefill)
    # keeps the arithmetic units busy. Python runs every multiplication at the same speed,
    # so this table is a model of the hardware, not a timing.
    print(f"\n--- 5. Prefill versus decode ---")
    print(f"Multiplications per float read (floats read = weights once per pass + the cache):")
    print(f"  {'pass':<34} {'positions':>9} {'mults':>9} {'floats read':>12} {'mults/float':>12}")
    prefill_step, first_decode, last_decode = cached_steps[0], cached_steps[1], cached_steps[-1]
    for label, step, covered in (
            (f"prefill (BOS + '{PROMPT}', one pass)", prefill_step, len(prompt)),
            (f"decode at position {first_decode['positions'] - 1}", first_decode, 1),
            (f"decode at position {last_decode['positions'] - 1}", last_decode, 1),
            (f"no cache, last step (all positions)", uncached_steps[-1],
             uncached_steps[-1]["positions"])):
        print(f"  {label:<34} {covered:>9} {step['mults']:>9,} {step['floats_read']:>12,} "
              f"{step['mults'] / step['floats_read']:>12.2f}")
    # The prefill's ratio grows with the prompt length (every weight loaded once serves each
    # prompt position); a decode step's stays near 1 however long the sequence gets.
    prefill_intensity = prefill_step["mults"] / prefill_step["floats_read"]
    decode_intensity = last_decode["mults"] / last_decode["floats_read"]
    print(f"A decode step does about one multiplication per float it loads, so on a GPU it "
          f"waits on memory.\nThe prefill does {prefill_intensity:.1f} per float with a "
          f"{len(prompt)}-position prompt, and more with longer prompts.\nWithout a cache "
          f"the ratio is high too, but only because the same work is done over again.")

    # --- 6. Paged allocation ---
    # Requests are random names, so their lengths vary as real requests' do; none knows its
    # length in advance, which is why a contiguous allocator must reserve BLOCK_SIZE.
    request_names = random.sample(names, NUM_REQUESTS)
    requests = [encode(n)[:-1] for n in request_names]   # BOS + letters: one position each
    print(f"\n--- 6. Paged allocation: {NUM_REQUESTS} requests, blocks of {KV_BLOCK} positions "
          f"({time.time() - start:.1f}s) ---")
    done, paged_difference, peak_blocks, peak_requests, snapshot = serve_requests(weights,
                                                                                  requests)
    used = sum(n for n, _ in done.values())
    paged_slots = sum(blocks * KV_BLOCK for _, blocks in done.values())
    contiguous_slots = NUM_REQUESTS * BLOCK_SIZE
    # waste = reserved slots never written / reserved slots. Paged: only the tail of each
    # request's last block; contiguous: everything past the request's own length.
    paged_waste = (paged_slots - used) / paged_slots
    contiguous_waste = (contiguous_slots - used) / contiguous_slots
    tick, tables, owners = snapshot
    print(f"Block tables at tick {tick}, when the last request arrives "
          f"(logical block i -> physical block id):")
    for rid, (table, filled) in sorted(tables.items()):
        print(f"  request {rid:2d} {request_names[rid]:<15} {filled:2d}/{len(requests[rid]):2d} "
              f"positions  blocks {table}")
    print("Physical pool at that tick (the request holding each block, '.' = free). Blocks "
          "of finished\nrequests went to later ones, so a request's blocks are scattered "
          "and only its table finds them:")
    shown = max(i for i, o in enumerate(owners) if o is not None) + 4   # the rest is free
    print("  block   " + " ".join(f"{b:>2}" for b in range(shown)))
    print("  request " + " ".join(" ." if o is None else f"{o:>2}" for o in owners[:shown])
          + f"  ... and {len(owners) - shown} more free blocks")
    print(f"positions used {used} | slots reserved: paged {paged_slots}, "
          f"contiguous {contiguous_slots} ({NUM_REQUESTS} x {BLOCK_SIZE})")
    print(f"unused share of reserved slots: paged {paged_waste:.1%}, contiguous "
          f"{contiguous_waste:.1%}\npeak memory: paged {peak_blocks * KV_BLOCK} slots, "
          f"contiguous {peak_requests * BLOCK_SIZE} slots ({peak_requests} requests at once)")
    print(f"max |logit difference| through the block tables vs a contiguous cache: "
          f"{paged_difference:.1e}")

    results = {
        "max_logit_difference": max_difference,
        "reference_logit_difference": reference_difference,
        "broken_cache_logit_difference": broken_difference,
        "uncached_growth_exponent": uncached_exponent,
        "cached_growth_exponent": cached_exponent,
        "uncached_mults_longest": totals[longest, False],
        "cached_mults_longest": totals[longest, True],
        "cache_growth_r2": r2,
        "cache_floats_per_position": slope,
        "cache_formula_mismatches": mismatches,
        "prefill_mults_per_float": prefill_intensity,
        "decode_mults_per_float": decode_intensity,
        "paged_logit_difference": paged_difference,
        "paged_waste_fraction": paged_waste,
        "contiguous_waste_fraction": contiguous_waste,
        "paged_peak_slots": peak_blocks * KV_BLOCK,
        "contiguous_peak_slots": peak_requests * BLOCK_SIZE,
        "final_train_loss": sum(losses[-100:]) / len(losses[-100:]),
    }
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microkv.md")
    return results


if __name__ == "__main__":
    main()
