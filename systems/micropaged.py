"""micropaged: serving many requests on one model, the way vLLM does, in plain Python.

A server does not generate one name at a time. Requests arrive in a stream, each with its own
prompt, its own output length and, here, its own LoRA adapter on the one shared base model.
Five ideas decide how many of them one model can serve:

    continuous batching   a finished request's place in the batch is refilled at the next
                          model step, instead of the batch waiting for its longest member
    a paged cache         keys and values live in fixed-size blocks found through a block
                          table, drawn from one shared pool (systems/microkv.py built one)
    preemption            when the pool runs dry, the newest request gives its blocks back
                          and is recomputed later, when there is room again
    prefix sharing        requests with a common prompt prefix map the same blocks;
                          reference counts say who still reads a block, and a shared block
                          is copied only when one of them writes to it (copy-on-write)
    multi-adapter LoRA    one batched forward pass applies each request's own adapter

    train a tiny GPT and three rank-2 adapters (Value autograd) -> plain floats
      -> serve a trace of 24 requests alone (a plain reference, no cache, merged adapter)
      -> serve it with static and with continuous batching on a pool of 10 blocks
      -> every token identical to serving it alone; continuous batching does more per step
      -> prefix sharing: blocks saved and blocks copied, against the counts derived by hand

Everything is simulated on one CPU: a "model step" is one call of the batched forward pass
and is the clock; memory is counted in blocks of 4 positions; there is no GPU, no kernel and
no real concurrency (the rows of a batch are computed one after another). What production
systems do instead is said in signposts where it differs.

Attribution: continuous batching follows Orca (Yu et al., OSDI 2022, "iteration-level
scheduling"); the paged cache, reference counts, copy-on-write and recompute preemption follow
vLLM's PagedAttention paper (Kwon et al., SOSP 2023); serving many LoRA adapters (Hu et al.,
2021) in one batch follows Punica (Chen et al., 2023) and S-LoRA (Sheng et al., 2023). The
model is Karpathy's microgpt shape (foundational/microgpt.py).

Run: python systems/micropaged.py    (about 6 s on the 2-core CI machine)
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
# The model is microgpt's shape; training is brief, because the lesson is how a trained model
# is served, not how good it is.
N_EMBD = 16        # width of every hidden vector
N_HEAD = 4         # attention heads; each looks at a 16 / 4 = 4-wide slice
N_LAYER = 1        # transformer blocks
BLOCK_SIZE = 16    # longest context: positions 0..15 have an embedding
MLP_HIDDEN = 4 * N_EMBD
LEARNING_RATE = 0.01
BETA1, BETA2, ADAM_EPS = 0.85, 0.99, 1e-8   # Karpathy's microgpt values
INIT_STD = 0.08    # small random weights keep the first logits near uniform (loss ~ ln 27)
NUM_STEPS = 300    # base model training steps, one name each
# LoRA adapters on the query and value projections, as the LoRA paper's main experiments
LORA_RANK = 2
LORA_ALPHA = 2.0   # the update is scaled by alpha / r = 1
LORA_TARGETS = ("wq", "wv")
LORA_A_STD = 0.2   # A starts Gaussian, B at zero: an untrained adapter is the base model
LORA_LR = 0.1
ADAPTER_STEPS = 40              # training steps per adapter, one name each
ADAPTER_ENDINGS = ("a", "n", "y")   # adapter k is fine-tuned on names ending in this letter
# The request trace
NUM_REQUESTS = 24  # in all, including the groups below
NUM_GROUPS = 3     # groups of requests whose prompts share a prefix ("system prompt")
GROUP_SIZE = 3     # requests per group
SHARED_LETTERS = 4 # letters in a group's shared prefix: BOS + 4 letters = 5 positions
# Each request has its own limits on generated tokens, as vLLM's SamplingParams do
# (min_tokens, max_tokens): it ends at the end token once it has min_new tokens, or at
# max_new. Both are drawn at random, max_new from MIN_NEW..MAX_NEW, min_new from
# MIN_NEW..max_new, so the output lengths vary as much as real requests' do.
MIN_NEW, MAX_NEW = 2, 12
# The server
KV_BLOCK = 4       # positions per block (vLLM's default block is 16 tokens)
NUM_BLOCKS = 10    # the shared pool: small, so that preemption happens in this run
MAX_BATCH = 6      # sequences in one model step (vLLM calls its limit max_num_seqs)

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
# and the end of a name. A request's prompt is BOS + its first letters; generation stops when
# the model emits BOS (the end of the name) or at the request's own limit.


def build_vocab(names):
    # Sorting makes the letter -> id mapping the same on every run and every machine
    chars = sorted(set("".join(names)))
    return chars, len(chars)  # token ids 0..len-1 are letters; id len(chars) is BOS


# === AUTOGRAD: THE VALUE CLASS ===
# A Value wraps one float and remembers the inputs it was computed from (`_children`) and the
# local derivative of itself with respect to each (`_local_grads`). backward() walks the graph
# from the loss back to the leaves and applies the chain rule:
#     dL/d(child) += dL/d(node) * d(node)/d(child)
# Training needs it; serving, the subject of this script, runs on plain floats.


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
# microgpt's, copied, because autograd is needed only for the brief training runs. On top of
# it this script adds the fused nodes below, as plain functions:
# - dot(): a whole dot product (one neuron of a linear layer) as one node
# - softmax(): each output probability as one node over all the logits
# - cross_entropy(): log-softmax plus negative log-likelihood as one node
# - rms_scale(): the 1/RMS factor of RMSNorm as one node
# - mean(): the average of a name's per-position losses as one node

# === FUSED NODES: THE SAME MATH, FEWER NODES ===
# A dot product of two 16-wide vectors built from + and * is 31 nodes; its derivatives are
# known in closed form (dy/dw_i = x_i, dy/dx_i = w_i), so one node with 32 children computes
# the same numbers and gradients (foundational/microgpt.py measures what that buys). The
# naive form is kept once; the tests check every fused node against its naive form.


def naive_dot(weights, inputs):
    total = weights[0] * inputs[0]
    for w, x in zip(weights[1:], inputs[1:]):
        total = total + w * x
    return total


def dot(weights, inputs):
    w_data, x_data = [w.data for w in weights], [x.data for x in inputs]
    return Value(sum(map(operator.mul, w_data, x_data)), (*weights, *inputs), (*x_data, *w_data))


def linear(inputs, weight_rows):
    # y = W x: one fused dot node per output neuron (no bias, as in the GPT-2 variant here)
    return [dot(row, inputs) for row in weight_rows]


def shifted_exps(numbers):
    # exp(z_i - m) with m = max(z): the max cancels in a softmax, and exp() cannot overflow
    top = max(numbers)
    return [math.exp(z - top) for z in numbers], top


def softmax(logits):
    # p_i = exp(z_i - m) / sum_j exp(z_j - m);  dp_i/dz_j = p_i * (delta_ij - p_j)
    exps, _ = shifted_exps([z.data for z in logits])
    total = sum(exps)
    probs = [e / total for e in exps]
    logits = tuple(logits)
    return [Value(p_i, logits, tuple(p_i * ((i == j) - p_j) for j, p_j in enumerate(probs)))
            for i, p_i in enumerate(probs)]


def cross_entropy(logits, target):
    # L = logsumexp(z) - z_y;  dL/dz_j = p_j - [j == y]
    exps, top = shifted_exps([z.data for z in logits])
    total = sum(exps)
    loss = top + math.log(total) - logits[target].data
    local_grads = tuple(e / total - (j == target) for j, e in enumerate(exps))
    return Value(loss, tuple(logits), local_grads)


def rms_scale(x):
    # s = (mean_j x_j^2 + eps)^(-1/2),   ds/dx_j = -s^3 * x_j / n
    n = len(x)
    s = (sum(xi.data * xi.data for xi in x) / n + 1e-5) ** -0.5
    return Value(s, tuple(x), tuple(-s ** 3 * xi.data / n for xi in x))


def rmsnorm(x):
    # y_i = x_i * s. Signpost: real RMSNorm also has a learned gain per channel; left out,
    # as in Karpathy's microgpt.
    s = rms_scale(x)
    return [xi * s for xi in x]


def mean(xs):
    # y = (1/n) sum_i x_i, dy/dx_i = 1/n: one node instead of n - 1 additions and a product
    n = len(xs)
    return Value(sum(x.data for x in xs) / n, tuple(xs), (1.0 / n,) * n)


# === MODEL PARAMETERS AND LORA ADAPTERS ===
# A matrix is a list of rows of Values. An adapter holds, for each target matrix W0 (16 x 16),
# two thin matrices: A (r x 16) projects the input down to r numbers, B (16 x r) projects them
# back up, and the adapted layer computes
#     h = W0 x + (alpha / r) * B (A x)
# B starts at zero, so an untrained adapter is exactly the base model; A starts random, since
# with A = 0 too neither matrix would ever get a gradient (dL/dB = dL/dh (A x)^T = 0, and
# A's gradient passes through B = 0). Three adapters on one base cost 3 * 128 numbers beside
# the base's 4,192: that is why one server can hold many of them.


def matrix(rows, cols, std=INIT_STD):
    # Gaussian init: random so that neurons differ, small so that nothing starts saturated
    return [[Value(random.gauss(0.0, std)) for _ in range(cols)] for _ in range(rows)]


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
    params = [p for mat in model.values() for row in mat for p in row]
    return model, params


def init_adapter():
    adapter = {}
    for layer in range(N_LAYER):
        for name in LORA_TARGETS:
            down = matrix(LORA_RANK, N_EMBD, LORA_A_STD)                         # A: Gaussian
            up = [[Value(0.0) for _ in range(LORA_RANK)] for _ in range(N_EMBD)]  # B: zeros
            adapter[f"layer{layer}.{name}"] = (down, up)
    params = [p for down, up in adapter.values() for mat in (down, up) for row in mat
              for p in row]
    return adapter, params


def adapted(x, model, name, adapter):
    # h = W0 x + (alpha / r) * B (A x), without ever forming the 16 x 16 matrix B A
    out = linear(x, model[name])
    if adapter is None or name not in adapter:
        return out
    down, up = adapter[name]
    scale = LORA_ALPHA / LORA_RANK
    return [o + u * scale for o, u in zip(out, linear(linear(x, down), up))]


# === TRAINING FORWARD PASS (VALUE AUTOGRAD) ===
# microgpt's forward pass, one position at a time, with an optional adapter. Training a name
# appends each position's key and value to `keys` and `values`, so position t attends to
# positions 0..t only (causal by construction).


def gpt_step(model, token_id, pos, keys, values, adapter=None):
    """Logits for the next token after `token_id` at position `pos`."""
    x = rmsnorm([t + p for t, p in zip(model["wte"][token_id], model["wpe"][pos])])
    head_dim = N_EMBD // N_HEAD
    for layer in range(N_LAYER):
        residual = x
        x = rmsnorm(x)
        q = adapted(x, model, f"layer{layer}.wq", adapter)
        keys[layer].append(linear(x, model[f"layer{layer}.wk"]))
        values[layer].append(adapted(x, model, f"layer{layer}.wv", adapter))
        attended = []
        for h in range(0, N_EMBD, head_dim):
            # score_t = q . k_t / sqrt(head_dim); weights = softmax(scores)
            q_head = q[h:h + head_dim]
            scores = [dot(q_head, k[h:h + head_dim]) * (1.0 / math.sqrt(head_dim))
                      for k in keys[layer]]
            weights = softmax(scores)
            for i in range(h, h + head_dim):
                attended.append(dot(weights, [v[i] for v in values[layer]]))
        x = [a + r for a, r in zip(linear(attended, model[f"layer{layer}.wo"]), residual)]
        residual = x
        hidden = [h.relu() for h in linear(rmsnorm(x), model[f"layer{layer}.fc1"])]
        x = [m + r for m, r in zip(linear(hidden, model[f"layer{layer}.fc2"]), residual)]
    return linear(x, model["lm_head"])


def name_loss(model, tokens, adapter=None):
    # Mean over the name's positions of -log p(next token); fresh caches for every name
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    n = min(BLOCK_SIZE, len(tokens) - 1)
    return mean([cross_entropy(gpt_step(model, tokens[pos], pos, keys, values, adapter),
                               tokens[pos + 1]) for pos in range(n)])


# === TRAINING ===
# One name per step, Adam with a linearly decaying learning rate, as in microgpt. The same
# loop trains the base (all its weights) and then each adapter (only A and B: the base is
# frozen, so its weights get gradients that nothing reads).


def train(params, loss_of, docs, steps, lr, label):
    adam_m, adam_v = [0.0] * len(params), [0.0] * len(params)
    losses, start = [], time.time()
    for step in range(steps):
        loss = loss_of(docs[step % len(docs)])
        loss.backward()
        step_lr = lr * (1.0 - step / steps)
        t = step + 1
        for i, p in enumerate(params):
            # m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g^2 ; p -= lr * m_hat / (sqrt(v_hat) + eps)
            adam_m[i] = BETA1 * adam_m[i] + (1.0 - BETA1) * p.grad
            adam_v[i] = BETA2 * adam_v[i] + (1.0 - BETA2) * p.grad * p.grad
            m_hat = adam_m[i] / (1.0 - BETA1 ** t)   # bias correction: m and v start at 0
            v_hat = adam_v[i] / (1.0 - BETA2 ** t)
            p.data -= step_lr * m_hat / (math.sqrt(v_hat) + ADAM_EPS)
            p.grad = 0.0
        losses.append(loss.data)
        if (step + 1) % 100 == 0 or step + 1 == steps:
            recent = losses[-100:]
            print(f"{label} step {step + 1:4d}/{steps} | loss {sum(recent) / len(recent):.4f} "
                  f"| {time.time() - start:.1f}s")
    return losses


# === INFERENCE ON PLAIN FLOATS ===
# Serving needs no gradients: the trained weights are copied out of their Values into plain
# floats, and every operation below is an ordinary float operation.


def to_floats(model):
    return {name: [[p.data for p in row] for row in mat] for name, mat in model.items()}


def adapter_to_floats(adapter):
    return {name: ([[p.data for p in row] for row in down], [[p.data for p in row] for row in up])
            for name, (down, up) in adapter.items()}


def matvec(rows, x):
    # y_i = sum_j W_ij x_j
    return [sum(map(operator.mul, row, x)) for row in rows]


def rmsnorm_floats(x):
    s = (sum(xi * xi for xi in x) / len(x) + 1e-5) ** -0.5
    return [xi * s for xi in x]


def lora_delta(down_up, x):
    # (alpha / r) * B (A x): r multiplications per input channel, r per output channel
    down, up = down_up
    low = matvec(down, x)
    scale = LORA_ALPHA / LORA_RANK
    return [sum(map(operator.mul, row, low)) * scale for row in up]


def next_token(logits, generated_so_far, request, bos):
    # Greedy decoding: the most likely token (a tie goes to the lowest id). The end token is
    # not allowed before the request's min_new tokens, as vLLM's min_tokens setting does.
    # The logits themselves are kept as they are, for the comparisons.
    allowed = [t for t in range(len(logits))
               if t != bos or generated_so_far >= request.min_new]
    return max(allowed, key=logits.__getitem__)


# === THE REFERENCE: EACH REQUEST SERVED ALONE, FROM THE FORMULAS ===
# The yardstick every batched run is compared with, written separately from the server: no
# cache, no blocks, no batch. At every step the whole sequence goes through the model again
# (all positions at once, scores above the diagonal set to -inf), and the adapter is merged
# into the weights first, W = W0 + (alpha / r) B A, as the LoRA paper does for deployment.
# The server never merges (it cannot: each row of a batch needs a different W), so the two
# compute the same function by different arithmetic and agree to rounding (about 1e-15).


def merged_weights(weights, adapter):
    if adapter is None:
        return weights
    merged = dict(weights)
    scale = LORA_ALPHA / LORA_RANK
    for name, (down, up) in adapter.items():
        base = weights[name]
        merged[name] = [[base[i][j] + scale * sum(up[i][k] * down[k][j] for k in range(LORA_RANK))
                         for j in range(len(base[0]))] for i in range(len(base))]
    return merged


def reference_logits(weights, tokens, last_only=False):
    """Logits at every position of `tokens` (or, with last_only, at the last one), from the
    formulas (no cache)."""
    d, n = N_EMBD // N_HEAD, len(tokens)

    def rms(vector):    # x / sqrt(mean(x^2) + eps)
        factor = (sum(a * a for a in vector) / len(vector) + 1e-5) ** -0.5
        return [a * factor for a in vector]

    def times(mat, vector):
        return [math.fsum(map(operator.mul, row, vector)) for row in mat]

    x = [rms([a + b for a, b in zip(weights["wte"][t], weights["wpe"][p])])
         for p, t in enumerate(tokens)]
    for layer in range(N_LAYER):
        w = {name: weights[f"layer{layer}.{name}"] for name in ("wq", "wk", "wv", "wo",
                                                                "fc1", "fc2")}
        normed = [rms(x_i) for x_i in x]
        q, k, v = ([times(w[name], h) for h in normed] for name in ("wq", "wk", "wv"))
        # Every position's keys and values are needed; the outputs only where something
        # reads them: every position below the last layer, the last one in the last layer
        # when only the next token's logits are asked for (serving alone needs no more).
        rows = [n - 1] if last_only and layer == N_LAYER - 1 else list(range(n))
        heads = {i: [] for i in rows}
        for c0 in range(0, N_EMBD, d):
            for i in rows:
                scores = [sum(q[i][c] * k[j][c] for c in range(c0, c0 + d)) / math.sqrt(d)
                          if j <= i else -math.inf for j in range(n)]
                top = max(scores)
                e = [math.exp(score - top) for score in scores]
                heads[i] += [sum(e[j] * v[j][c] for j in range(n)) / sum(e)
                             for c in range(c0, c0 + d)]
        x = [[a + r for a, r in zip(times(w["wo"], heads[i]), x[i])] for i in rows]
        x = [[m + r for m, r in zip(times(w["fc2"], [max(0.0, u) for u in
                                                     times(w["fc1"], rms(x_i))]), x_i)]
             for x_i in x]
    return [times(weights["lm_head"], x_i) for x_i in x]


def serve_alone(weights, request, bos):
    """Greedy generation for one request: (generated tokens, logits of each step)."""
    tokens, generated, logits_seen = list(request.prompt), [], []
    while True:
        logits = reference_logits(weights, tokens, last_only=True)[0]
        # The same rule as next_token(), written separately: the best token by logit (ties
        # to the lowest id), skipping the end token until min_new tokens are out
        ranked = sorted(range(len(logits)), key=lambda t: (-logits[t], t))
        token = next(t for t in ranked if t != bos or len(generated) >= request.min_new)
        generated.append(token)
        logits_seen.append(logits)
        if token == bos or len(generated) == request.max_new:
            return generated, logits_seen
        tokens.append(token)


# === THE REQUEST TRACE ===
# A stream of requests made from the seed. Each has a prompt (BOS and the first letters of a
# real name), an adapter (0 is the base model alone), a limit on generated tokens, and the
# clock tick at which it arrives. NUM_GROUPS groups share a prompt prefix (BOS + the first
# SHARED_LETTERS letters of a name, 5 positions): each member adds one letter of its own, and
# a group's members use one adapter. A group's first member arrives one tick before the rest,
# as a popular prompt's first user would, so its prefix is computed by the time the others
# come (a block can be shared only once it holds computed entries).


class Request:
    def __init__(self, rid, prompt, adapter, min_new, max_new, arrival, group=None,
                 shared_len=0):
        self.rid, self.prompt, self.adapter = rid, prompt, adapter
        self.min_new, self.max_new, self.arrival = min_new, max_new, arrival
        self.group, self.shared_len = group, shared_len   # shared_len: prefix positions
        self.label = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[rid % 26]


def make_trace(names, stoi, bos, rng):
    # Requests arrive faster than one batch of MAX_BATCH can finish them, so a queue builds
    # up and the scheduler always has someone to admit: the regime where the batching
    # policy matters. With a trickle of requests both policies would sit half idle.
    stems = [n for n in names if len(n) > SHARED_LETTERS]
    letters = "abcdefghijklmnopqrstuvwxyz"
    # The order of arrival: singles (None) and groups (their index), shuffled
    singles = NUM_REQUESTS - NUM_GROUPS * GROUP_SIZE
    order = [None] * singles + list(range(NUM_GROUPS))
    rng.shuffle(order)
    specs, clock = [], 0
    for group in order:
        if group is None:
            name = rng.choice(names)
            prompt = [bos] + [stoi[c] for c in name[:rng.randint(1, 3)]]
            specs.append((prompt, rng.randrange(len(ADAPTER_ENDINGS) + 1), clock, None, 0))
        else:
            stem = rng.choice(stems)[:SHARED_LETTERS]
            prefix = [bos] + [stoi[c] for c in stem]
            adapter = rng.randrange(len(ADAPTER_ENDINGS) + 1)
            # distinct extra letters, so the members share exactly the prefix and no more
            for member, extra in enumerate(rng.sample(letters, GROUP_SIZE)):
                specs.append((prefix + [stoi[extra]], adapter, clock + (member > 0), group,
                              len(prefix)))
        clock += rng.choice((0, 1))   # the next arrival 0 or 1 tick later: 2 per tick on average
    requests = []
    for rid, (prompt, adapter, arrival, group, shared_len) in enumerate(specs):
        # prompt + generated tokens must fit the BLOCK_SIZE positions the model knows (the
        # last generated token is never fed back, so it needs no position)
        max_new = min(rng.randint(MIN_NEW, MAX_NEW), BLOCK_SIZE - len(prompt) + 1)
        min_new = rng.randint(MIN_NEW, max_new)
        requests.append(Request(rid, prompt, adapter, min_new, max_new, arrival, group,
                                shared_len))
    return requests


# === THE BLOCK POOL: REFERENCE COUNTS AND COPY-ON-WRITE ===
# The physical memory: NUM_BLOCKS blocks of KV_BLOCK key slots and value slots per layer. A
# sequence finds its positions through its block table (logical block i -> physical block),
# as in systems/microkv.py. New here: a block can appear in several block tables at once (a
# shared prompt prefix), so each block carries a reference count, the number of tables that
# hold it. Freeing a sequence decrements the counts of its blocks, and only a block whose
# count reaches 0 goes back to the free list; the others are still read by someone.
# Freed blocks are handed out again last-in, first-out: the block freed most recently is
# the next one allocated, so a block returned too early is overwritten at once.
# Signpost: vLLM keeps the same count per block (ref_cnt in its block pool); its blocks are
# GPU tensors and its attention kernel reads them through the block tables directly.


class BlockPool:
    def __init__(self, num_blocks):
        self.keys = [[[None] * KV_BLOCK for _ in range(N_LAYER)] for _ in range(num_blocks)]
        self.values = [[[None] * KV_BLOCK for _ in range(N_LAYER)] for _ in range(num_blocks)]
        self.ref_count = [0] * num_blocks
        self.free = list(range(num_blocks - 1, -1, -1))   # pop() hands out block 0 first

    def allocate(self):
        block = self.free.pop()
        self.ref_count[block] = 1
        return block

    def share(self, block):
        self.ref_count[block] += 1

    def release(self, block):
        self.ref_count[block] -= 1
        if self.ref_count[block] == 0:
            self.free.append(block)

    def copy(self, source, target):
        # copy-on-write's copy: every slot of every layer, keys and values
        for layer in range(N_LAYER):
            self.keys[target][layer] = list(self.keys[source][layer])
            self.values[target][layer] = list(self.values[source][layer])

    # The check behind the accounting row: a block freed twice (its count ignored) appears
    # twice in the free list and would later be handed to two requests at once; a block
    # never freed is a leak that shrinks the pool for good.

    def accounting_errors(self):
        # With every sequence finished, each block must be in the free list exactly once with
        # a count of 0. Counts the blocks for which that is not so.
        return sum(self.free.count(b) != 1 or self.ref_count[b] != 0
                   for b in range(len(self.ref_count)))


# === ONE SEQUENCE IN THE SERVER ===


class Sequence:
    # The server's record of one request. A preempted sequence keeps its tokens and its
    # logits (they were already returned to the user, token by token) and loses its blocks:
    # num_cached drops to 0 and the next prefill rebuilds the cache from self.tokens.

    def __init__(self, request):
        self.request = request
        self.tokens = list(request.prompt)   # prompt + every token generated so far
        self.generated, self.logits = [], []
        self.block_table = []                # logical block i -> physical block
        self.num_cached = 0                  # positions whose key and value are in the cache
        self.slot = None                     # row of the batch picture
        self.preemptions = 0


def positions_to_hold(seq, end):
    # The positions a sequence must have room for after this step: exactly those it will have
    # written, so a request never holds more than the unused tail of its last block.
    return end


def blocks_to_take(pool, seq, n_new):
    """Free blocks the next n_new positions of `seq` need: new blocks at the end of its
    table, plus one copy if the first position falls in a block it shares with others."""
    end = positions_to_hold(seq, seq.num_cached + n_new)
    need = max(0, -(-end // KV_BLOCK) - len(seq.block_table))
    first = seq.num_cached // KV_BLOCK
    if first < len(seq.block_table) and pool.ref_count[seq.block_table[first]] > 1:
        need += 1
    return need


class Engine:
    """A scheduler, a block pool and a batched forward pass. One step() = one model step."""

    def __init__(self, weights, adapters, bos, num_blocks, max_batch, refill=True,
                 share=True):
        self.weights, self.adapters, self.bos = weights, adapters, bos
        self.pool = BlockPool(num_blocks)
        self.max_batch, self.refill, self.share = max_batch, refill, share
        self.waiting, self.running, self.finished = [], [], []
        self.slots = [None] * max_batch
        self.model_steps = self.tokens_out = self.cow_copies = self.shared_blocks = 0
        self.preempted = set()
        self.timeline = []        # per tick: the character shown in each slot
        self.blocks_in_use = []   # per tick
        self.worst_waste = 0.0    # the largest unused slots per running request, in blocks
        self.busiest = None       # (blocks in use, shared blocks, tick, owners of each block)
        self.preemption_log = []  # (tick, label) of every preemption

    # --- memory: reserving the slots a step will write ---

    # Signpost: vLLM's older (V0) scheduler does the same bookkeeping on the CPU and hands
    # the workers a list of block copies to make on the GPU before the step
    # (blocks_to_copy); here the copy is made at once, in BlockPool.copy().

    def reserve(self, seq, n_new):
        # Copy-on-write: the first position to be written falls in a block others also hold,
        # so the sequence takes a private copy of it (the entries before its position come
        # along) and lets go of the shared one; the other holders keep reading the original.
        first = seq.num_cached // KV_BLOCK
        if first < len(seq.block_table):
            shared = seq.block_table[first]
            if self.pool.ref_count[shared] > 1:
                private = self.pool.allocate()
                self.pool.copy(shared, private)
                self.pool.release(shared)
                seq.block_table[first] = private
                self.cow_copies += 1
        end = positions_to_hold(seq, seq.num_cached + n_new)
        while len(seq.block_table) * KV_BLOCK < end:
            seq.block_table.append(self.pool.allocate())

    def release(self, seq):
        for block in seq.block_table:
            self.pool.release(block)
        seq.block_table, seq.num_cached = [], 0
        self.running.remove(seq)
        self.slots[seq.slot] = None

    def preempt(self, seq):
        # Recompute preemption: the sequence gives back every block and returns to the head
        # of the queue with its tokens so far; on readmission its prompt and generated tokens
        # are prefilled again as one longer prompt. Greedy decoding then continues exactly
        # where it stopped. (Swapping would copy the blocks to CPU memory and back instead.)
        self.release(seq)
        seq.preemptions += 1
        self.preempted.add(seq.request.rid)
        self.preemption_log.append((len(self.timeline), seq.request.label))
        self.waiting.insert(0, seq)

    # --- prefix sharing ---

    # Signpost: vLLM finds shared prefixes by itself ("automatic prefix caching"): it hashes
    # every full block together with the tokens before it and any extras such as the LoRA
    # id, and maps a new request's blocks through that hash table. It caches full blocks
    # only, so it never shares a partly filled block and needs no copy for it, and a finished
    # request's blocks stay cached (count 0, in a free queue in eviction order) until their
    # memory is given to someone else. This server shares with
    # running requests only, partly filled blocks included (as vLLM's paper does for the
    # samples of one prompt), which is what makes copy-on-write necessary here.

    def find_prefix(self, seq):
        # A running member of the same group, with the same adapter (the values, and so the
        # cache, depend on the adapter), that has already computed the shared prefix.
        request = seq.request
        if not self.share or request.group is None:
            return None
        for other in self.running:
            if (other.request.group == request.group and other.request.adapter ==
                    request.adapter and other.num_cached >= request.shared_len):
                return other
        return None

    def admission_blocks(self, seq, shared_len):
        # Blocks an admitted sequence takes from the free list: all it needs for its tokens,
        # less the full blocks of a shared prefix (a partly filled shared block is copied
        # at its first write, so it costs one block all the same).
        end = positions_to_hold(seq, len(seq.tokens))
        return -(-end // KV_BLOCK) - shared_len // KV_BLOCK

    def admit(self):
        # Waiting requests, oldest first (a preempted request goes back to the head of the
        # queue), join while the batch has a free place and the pool has the blocks their
        # prompt needs. A prefill row brings every uncached position of its prompt at once.
        # Signpost: vLLM also caps the tokens of one step (max_num_batched_tokens) and can
        # split a long prompt over several steps (chunked prefill); prompts here are short.
        scheduled = []
        while self.waiting and len(self.running) < self.max_batch:
            seq = self.waiting[0]
            mate = self.find_prefix(seq)
            shared_len = seq.request.shared_len if mate else 0
            needed = self.admission_blocks(seq, shared_len)
            if needed > len(self.pool.ref_count):
                # It could never run, and waiting would loop forever: say so and stop
                sys.exit(f"request {seq.request.label} needs {needed} blocks; the pool has "
                         f"only {len(self.pool.ref_count)} (raise NUM_BLOCKS)")
            if needed > len(self.pool.free):
                break   # first come, first served: nobody overtakes the head of the queue
            self.waiting.pop(0)
            if mate:
                # Map the blocks that hold the prefix; the count of each goes up by one
                seq.block_table = mate.block_table[:-(-shared_len // KV_BLOCK)]
                for block in seq.block_table:
                    self.pool.share(block)
                seq.num_cached = shared_len
                self.shared_blocks += len(seq.block_table)
            self.reserve(seq, len(seq.tokens) - seq.num_cached)
            seq.slot = self.slots.index(None)
            self.slots[seq.slot] = seq
            self.running.append(seq)
            scheduled.append((seq, seq.tokens[seq.num_cached:]))
        return scheduled

    # --- one iteration of the scheduler ---

    def step(self):
        # The order follows vLLM's V1 scheduler: requests already running are served first (a
        # decode step costs them one position each), and only the blocks left after that go
        # to new requests. Admitting first would let a new prompt take the block a running
        # request needs for its next token, and preempt it at once.
        # 1. Every running sequence writes one more position (the token it generated last).
        # If the pool cannot hold it, the newest running sequence is preempted, possibly this
        # one, until it can. vLLM's V1 scheduler does the same under its first-come,
        # first-served policy: it preempts the last request of its running list.
        scheduled = []
        for seq in list(self.running):
            if seq not in self.running:
                continue   # preempted a moment ago, for an older sequence
            while blocks_to_take(self.pool, seq, 1) > len(self.pool.free):
                self.preempt(self.running[-1])
                if seq not in self.running:
                    break
            if seq in self.running:
                self.reserve(seq, 1)
                scheduled.append((seq, [seq.tokens[-1]]))
        # 2. Free places in the batch go to waiting requests (prefill). Static batching
        # admits only into an empty batch: a finished request's place stays idle until the
        # whole batch is done.
        if self.refill or not self.running:
            scheduled += self.admit()
        if not scheduled:
            self.timeline.append(None)
            self.blocks_in_use.append(0)
            return
        # 3. One model step for the whole batch, then one new token per sequence
        prefilled = {id(seq) for seq, new in scheduled if len(new) > 1 or not seq.generated}
        logits_rows = batched_forward(self.weights, self.adapters, self.pool, scheduled)
        self.model_steps += 1
        row_chars = ["." if s is None else (s.request.label if id(s) in prefilled
                                            else s.request.label.lower()) for s in self.slots]
        # Each row's logits give its next token; the token is kept, and on the next step it
        # is the one position the sequence feeds in (its key and value are written then).
        for (seq, new), logits in zip(scheduled, logits_rows):
            seq.num_cached += len(new)
            token = next_token(logits, len(seq.generated), seq.request, self.bos)
            seq.generated.append(token)
            seq.tokens.append(token)
            seq.logits.append(logits)
            self.tokens_out += 1
        self.measure_memory()
        for seq, _ in scheduled:
            request = seq.request
            if seq.generated[-1] == self.bos or len(seq.generated) == request.max_new:
                self.release(seq)
                self.finished.append(seq)
        self.timeline.append(row_chars)

    def measure_memory(self):
        # Called once per model step, after the writes and before finished requests leave:
        # the moment the pool holds the most for this step.
        # Waste = reserved slots that hold no entry any running sequence reads. Each
        # sequence reads positions 0..num_cached-1 through its table; a shared slot counts
        # once. Measured after the step's writes, per running request, in blocks.
        pool = self.pool
        in_use = len(pool.ref_count) - len(pool.free)
        read = {(seq.block_table[p // KV_BLOCK], p % KV_BLOCK)
                for seq in self.running for p in range(seq.num_cached)}
        unused = in_use * KV_BLOCK - len(read)
        self.worst_waste = max(self.worst_waste,
                               unused / KV_BLOCK / max(1, len(self.running)))
        self.blocks_in_use.append(in_use)
        # For the picture: the step with the most blocks in use, and among those the one
        # with the most shared blocks
        shared = sum(count > 1 for count in pool.ref_count)
        if self.busiest is None or (in_use, shared) > self.busiest[:2]:
            owners = [[s.request.label for s in self.running if b in s.block_table]
                      for b in range(len(pool.ref_count))]
            self.busiest = (in_use, shared, len(self.timeline), owners)


# === THE BATCHED FORWARD PASS, WITH ONE ADAPTER PER ROW ===
# Every new position of every scheduled sequence is one row of the batch: a prefill brings
# all its uncached positions, a decode step one. The base weights multiply every row (on a
# GPU: one matrix product for the whole batch, the part that batching makes cheap); then each
# row gets its own adapter's low-rank term, looked up by the row's adapter id:
#     Y = X W0 + [(alpha / r) B_a(i) A_a(i) x_i  for each row i]
# This gather of per-row adapters is what Punica's kernels (SGMV and BGMV) and S-LoRA's do on
# the GPU; vLLM's multi-LoRA support started from Punica's BGMV kernel, and its LoRA layers
# still call their kernels through a "punica_wrapper". Here it is a loop over rows.
# Attention then reads, for each row, its own sequence's keys and values through its block
# table, up to its own position (causal), exactly the entries a sequence served alone sees.
# Signpost: Orca batches the non-attention operations of all rows and runs attention per
# request ("selective batching"); vLLM's PagedAttention kernel takes the block tables as an
# input and reads each block where it lies.


def batched_forward(weights, adapters, pool, scheduled):
    head_dim = N_EMBD // N_HEAD
    scale = 1.0 / math.sqrt(head_dim)
    rows = [(seq, tok, pos) for seq, new in scheduled
            for pos, tok in enumerate(new, seq.num_cached)]
    xs = [rmsnorm_floats([t + p for t, p in zip(weights["wte"][tok], weights["wpe"][pos])])
          for _, tok, pos in rows]
    for layer in range(N_LAYER):
        w = {name: weights[f"layer{layer}.{name}"] for name in ("wq", "wk", "wv", "wo",
                                                                "fc1", "fc2")}
        normed = [rmsnorm_floats(x) for x in xs]
        queries = [matvec(w["wq"], h) for h in normed]
        keys = [matvec(w["wk"], h) for h in normed]
        values = [matvec(w["wv"], h) for h in normed]
        # Each row's adapter id; 0 is the base model alone
        adapter_ids = [seq.request.adapter for seq, _, _ in rows]
        for i, a in enumerate(adapter_ids):
            if a:
                lora = adapters[a]
                queries[i] = [q + d for q, d in zip(queries[i],
                                                    lora_delta(lora[f"layer{layer}.wq"],
                                                               normed[i]))]
                values[i] = [v + d for v, d in zip(values[i],
                                                   lora_delta(lora[f"layer{layer}.wv"],
                                                              normed[i]))]
        # Write every row's key and value into its own blocks: position -> (block, slot)
        for (seq, _, pos), k, v in zip(rows, keys, values):
            block, slot = seq.block_table[pos // KV_BLOCK], pos % KV_BLOCK
            pool.keys[block][layer][slot] = k
            pool.values[block][layer][slot] = v
        # Attention, row by row: each row reads its own sequence's cache through the block
        # table, positions 0..pos (causal). A prefill row's earlier positions were written
        # just above, in this same step, so the whole prompt is visible to its last row.
        #     score_t = q . k_t / sqrt(head_dim),  out = sum_t softmax(score)_t v_t
        new_xs = []
        for (seq, _, pos), q, residual in zip(rows, queries, xs):
            places = [(seq.block_table[p // KV_BLOCK], p % KV_BLOCK) for p in range(pos + 1)]
            seen_keys = [pool.keys[b][layer][s] for b, s in places]
            seen_values = [pool.values[b][layer][s] for b, s in places]
            attended = []
            for h in range(0, N_EMBD, head_dim):
                scores = [sum(map(operator.mul, q[h:h + head_dim], k[h:h + head_dim])) * scale
                          for k in seen_keys]
                exps, _ = shifted_exps(scores)
                total = sum(exps)
                attended.extend(sum(e * v[i] for e, v in zip(exps, seen_values)) / total
                                for i in range(h, h + head_dim))
            # The output projection and the MLP are the same for every row: on a GPU they are
            # batched matrix products, like the projections above
            x = [a + r for a, r in zip(matvec(w["wo"], attended), residual)]
            hidden = [max(0.0, u) for u in matvec(w["fc1"], rmsnorm_floats(x))]
            new_xs.append([m + r for m, r in zip(matvec(w["fc2"], hidden), x)])
        xs = new_xs
    # Logits only at each sequence's last new position: the next token is all it needs
    last, logits = 0, []
    for seq, new in scheduled:
        last += len(new)
        logits.append(matvec(weights["lm_head"], xs[last - 1]))
    return logits


def serve(weights, adapters, requests, bos, num_blocks, max_batch, refill=True, share=True):
    """Run the trace to the end; returns the engine with everything it recorded."""
    # The clock: one tick per loop, one model step per tick whenever anything is scheduled.
    # Throughput counts model steps only (the ticks where the model ran), since a tick on
    # which nobody has arrived yet costs a server nothing. A real server's clock is wall
    # time, and a step's time grows with its batch (prefills cost more than decodes); the
    # step count is the simplest clock that still shows what batching buys.
    engine = Engine(weights, adapters, bos, num_blocks, max_batch, refill, share)
    pending = sorted(requests, key=lambda r: (r.arrival, r.rid))
    tick = 0
    while pending or engine.waiting or engine.running:
        while pending and pending[0].arrival <= tick:
            engine.waiting.append(Sequence(pending.pop(0)))
        engine.step()
        tick += 1
    return engine


# === COMPARING WITH SERVING ALONE ===


def nan_aware_max(numbers):
    """max(), but NaN if any number is NaN: Python's max(0.0, nan) is 0.0, which would hide a
    NaN logit; the criteria table fails NaN."""
    numbers = list(numbers)
    if any(math.isnan(x) for x in numbers):
        return math.nan
    return max(numbers) if numbers else 0.0


# Greedy decoding makes the claim exact: if every logit a batched request sees equals the
# logit it would see alone, it picks the same token at every step, however the server
# interleaved, preempted or shared it. A bug that moves a logit by 1e-3 may leave every
# token unchanged (the largest logit still wins), so the logits are compared too.


def compare_with_alone(engine, alone, rids):
    """(tokens that differ, largest |logit difference|) over the requests `rids` served.

    Tokens are compared position by position; a request that stopped early or ran long
    counts every missing or extra token as a difference, and a request that never finished
    counts all of its tokens. Logits are compared at every step both made."""
    finished = {seq.request.rid for seq in engine.finished}
    differing = sum(len(alone[rid][0]) for rid in rids if rid not in finished)
    gaps = []
    for seq in engine.finished:
        expected_tokens, expected_logits = alone[seq.request.rid]
        differing += sum(a != b for a, b in zip(seq.generated, expected_tokens))
        differing += abs(len(seq.generated) - len(expected_tokens))
        gaps.extend(abs(a - b) for got, want in zip(seq.logits, expected_logits)
                    for a, b in zip(got, want))
    return differing, nan_aware_max(gaps)


# === PICTURES ===


def timeline_picture(engine, title):
    # One row per batch slot, one column per clock tick. A capital letter is the model step
    # in which that request is prefilled (admitted, or recomputed after a preemption), a small
    # letter a decode step, "." an idle slot; a blank column is a tick with nothing to run.
    lines = [title]
    for slot in range(engine.max_batch):
        cells = [" " if tick is None else tick[slot] for tick in engine.timeline]
        lines.append(f"  slot {slot} |" + "".join(cells))
    if engine.preemption_log:
        lines.append("  preempted (tick: request): " + ", ".join(
            f"{tick}: {label}" for tick, label in engine.preemption_log))
    return "\n".join(lines)


def pool_picture(engine):
    # One column per physical block, with the labels of the requests whose tables hold it;
    # two labels in one column are a shared block. Blocks of one request are scattered: only
    # its block table knows where they are. After a copy-on-write, the request that wrote
    # first holds the new copy and the others keep the original, so a block that a later
    # request started with may show only that request's label.
    blocks, _, tick, owners = engine.busiest
    cells = ["".join(o) if o else "." for o in owners]
    width = max(3, max(len(c) for c in cells) + 1)
    return (f"Block pool at its busiest (tick {tick}, {blocks} of {len(owners)} blocks in use; "
            f"the requests holding each block):\n"
            f"  block   " + "".join(f"{b:>{width}}" for b in range(len(owners))) + "\n"
            f"  held by " + "".join(f"{c:>{width}}" for c in cells))


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("tokens differing from each request served alone", "token_mismatches", "==", 0),
    ("max |logit difference| from serving alone", "max_logit_difference", "<", 1e-9),
    ("tokens per step, continuous / static batching", "throughput_ratio", ">", 1.2),
    ("requests preempted in the continuous run", "preempted_requests", ">", 0),
    ("worst unused slots per running request, in blocks", "max_waste_blocks", "<", 1),
    ("blocks saved by prefix sharing (vs derived)", "prefix_saved_blocks", "==",
     "prefix_saved_formula"),
    ("copy-on-write copies (vs derived)", "cow_copies", "==", "cow_copies_formula"),
    ("blocks not back in the free list once at the end", "pool_accounting_errors", "==", 0),
    ("adapter requests whose output differs from the base's", "adapter_effect_requests", ">=",
     3),
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
    random.seed(42)  # every random draw below (init, data order, the trace) follows from this
    # Speed: a Value graph has no reference cycles, so reference counting frees each step's
    # graph; the cycle collector would only rescan live nodes for nothing.
    gc.disable()
    start = time.time()
    names = load_names()
    random.shuffle(names)   # the file is sorted by popularity
    chars, bos = build_vocab(names)
    stoi = {c: i for i, c in enumerate(chars)}

    def encode(name):
        return [bos] + [stoi[c] for c in name] + [bos]

    def show(tokens):
        return "".join("." if t == bos else chars[t] for t in tokens)

    # --- 1. A base model and three adapters ---
    # Each adapter is fine-tuned on the names that end in one letter, so it pulls the
    # model's names towards that ending: a visible difference, which is what the serving
    # checks need (applying the wrong adapter must change tokens).
    print(f"--- 1. Training a base model and {len(ADAPTER_ENDINGS)} LoRA adapters "
          f"(Value autograd) ---")
    model, params = init_model(vocab_size=bos + 1)
    train(params, lambda name: name_loss(model, encode(name)), names, NUM_STEPS,
          LEARNING_RATE, "base")
    adapters = {}
    for a, ending in enumerate(ADAPTER_ENDINGS, start=1):
        adapter, adapter_params = init_adapter()
        subset = [n for n in names if n.endswith(ending)]
        train(adapter_params, lambda name: name_loss(model, encode(name), adapter), subset,
              ADAPTER_STEPS, LORA_LR, f"adapter {a} (names ending in '{ending}')")
        adapters[a] = adapter_to_floats(adapter)
    weights = to_floats(model)
    print(f"base: {len(params):,} numbers; each adapter: {len(adapter_params)} "
          f"(rank {LORA_RANK} on {' and '.join(LORA_TARGETS)}) | {time.time() - start:.1f}s")

    # --- 2. The trace, and every request served alone (the reference) ---
    # The trace has its own random stream, drawn from the main one, so a change to how the
    # trace is made does not move the training draws above it (and the other way round).
    trace_rng = random.Random(random.randrange(1 << 30))
    requests = make_trace(names, stoi, bos, trace_rng)
    merged = {a: merged_weights(weights, adapters.get(a)) for a in range(len(adapters) + 1)}
    alone = {r.rid: serve_alone(merged[r.adapter], r, bos) for r in requests}
    base_alone = {r.rid: serve_alone(weights, r, bos)[0] for r in requests if r.adapter}
    adapter_effect = sum(base_alone[rid] != alone[rid][0] for rid in base_alone)
    print(f"\n--- 2. {len(requests)} requests, each served alone by the plain reference "
          f"({time.time() - start:.1f}s) ---")
    print("  req arrives adapter  limit  prompt      alone (with its adapter)  base model alone")
    for r in requests:
        group = f" group {r.group}" if r.group is not None else ""
        print(f"  {r.label:>3} {r.arrival:7d} {r.adapter:7d} {r.max_new:6d}  "
              f"{show(r.prompt):<10}  {show(alone[r.rid][0]):<24}  "
              f"{show(base_alone[r.rid]) if r.adapter else '(same)':<11}{group}")
    print(f"({'.'} is BOS: the start of a prompt, or the end of a name.) "
          f"{adapter_effect} of {len(base_alone)} requests with an adapter get another output "
          f"from the base model.")

    # --- 3. Static against continuous batching, on a small pool ---
    # The same trace, pool and batch limit for both; only the admission rule differs. In
    # the timelines, a static batch's finished slots stay "." until its longest member ends;
    # continuous batching fills them at the next step. A request that disappears and comes
    # back with a capital letter was preempted and recomputed.
    print(f"\n--- 3. Serving the trace: {MAX_BATCH} slots, a pool of {NUM_BLOCKS} blocks of "
          f"{KV_BLOCK} positions ({time.time() - start:.1f}s) ---")
    runs = {}
    for label, refill in (("static", False), ("continuous", True)):
        runs[label] = serve(weights, adapters, requests, bos, NUM_BLOCKS, MAX_BATCH, refill)
    for label, engine in runs.items():
        print(timeline_picture(engine, f"{label} batching (a column is a clock tick):"))
    for label, engine in runs.items():
        print(f"{label:>10}: {engine.tokens_out} tokens in {engine.model_steps} model steps = "
              f"{engine.tokens_out / engine.model_steps:.3f} tokens per step | preempted "
              f"requests {len(engine.preempted)} | blocks shared at admission "
              f"{engine.shared_blocks}, copied on write {engine.cow_copies}")
    continuous, static = runs["continuous"], runs["static"]
    # The ratio of tokens per step: both runs generate the same tokens, so it is also the
    # ratio of model steps, static over continuous. Recomputing a preempted request costs
    # steps too, which is part of the price continuous batching pays for its fuller batches.
    throughput_ratio = ((continuous.tokens_out / continuous.model_steps)
                        / (static.tokens_out / static.model_steps))
    print(pool_picture(continuous))

    # --- 4. Prefix sharing, counted ---
    # The groups alone, in a pool large enough that nothing is preempted: each group's first
    # member at tick 0, the others at tick 1. After tick 1 every member holds its prompt.
    group_requests = [Request(r.rid, r.prompt, r.adapter, r.min_new, r.max_new,
                              int(any(o.group == r.group and o.rid < r.rid for o in requests)),
                              r.group, r.shared_len) for r in requests if r.group is not None]
    ample = len(group_requests) * -(-BLOCK_SIZE // KV_BLOCK)
    shared_run = serve(weights, adapters, group_requests, bos, ample, len(group_requests))
    unshared_run = serve(weights, adapters, group_requests, bos, ample, len(group_requests),
                         share=False)
    saved = unshared_run.blocks_in_use[1] - shared_run.blocks_in_use[1]
    # The count by hand: in a group of n whose prefix has L positions, each of the n - 1
    # later members maps the prefix's ceil(L / B) blocks instead of filling its own. The
    # floor(L / B) full ones stay shared; a partly filled last one is copied when the member
    # writes its first own position into it. So per group:
    #     saved = (n - 1) * floor(L / B)      copies = (n - 1) * [L mod B != 0]
    saved_formula = sum((GROUP_SIZE - 1) * (SHARED_LETTERS + 1) // KV_BLOCK
                        for _ in range(NUM_GROUPS))
    copies_formula = NUM_GROUPS * (GROUP_SIZE - 1) * ((SHARED_LETTERS + 1) % KV_BLOCK != 0)
    print(f"\n--- 4. Prefix sharing: {NUM_GROUPS} groups of {GROUP_SIZE}, prefixes of "
          f"{SHARED_LETTERS + 1} positions, blocks of {KV_BLOCK} ---")
    print(f"blocks in use after tick 1: {unshared_run.blocks_in_use[1]} without sharing, "
          f"{shared_run.blocks_in_use[1]} with it: {saved} saved (derived: {saved_formula}); "
          f"copies on write {shared_run.cow_copies} (derived: {copies_formula})")

    # --- 5. Every run against serving alone ---
    # Four runs, one yardstick: each finished request's tokens and logits against the same
    # request served alone by the reference. A request preempted twice, one whose blocks
    # were shared and copied, one batched beside three other adapters: all must agree.
    token_mismatches, gaps = 0, []
    for engine, served in ((static, requests), (continuous, requests),
                           (shared_run, group_requests), (unshared_run, group_requests)):
        differing, gap = compare_with_alone(engine, alone, [r.rid for r in served])
        token_mismatches += differing
        gaps.append(gap)
    max_difference = nan_aware_max(gaps)
    accounting = sum(e.pool.accounting_errors() for e in (static, continuous, shared_run,
                                                          unshared_run))
    worst_waste = max(static.worst_waste, continuous.worst_waste)
    print(f"\n--- 5. Against serving alone ({time.time() - start:.1f}s) ---")
    print(f"tokens differing: {token_mismatches} | largest |logit difference|: "
          f"{max_difference:.1e} | worst unused slots per running request: "
          f"{worst_waste:.2f} blocks | pool accounting errors: {accounting}")

    results = {
        "token_mismatches": token_mismatches,
        "max_logit_difference": max_difference,
        "throughput_ratio": throughput_ratio,
        "static_tokens_per_step": static.tokens_out / static.model_steps,
        "continuous_tokens_per_step": continuous.tokens_out / continuous.model_steps,
        "preempted_requests": len(continuous.preempted),
        "static_preempted_requests": len(static.preempted),
        "max_waste_blocks": worst_waste,
        "prefix_saved_blocks": saved,
        "prefix_saved_formula": saved_formula,
        "cow_copies": shared_run.cow_copies,
        "cow_copies_formula": copies_formula,
        "pool_accounting_errors": accounting,
        "adapter_effect_requests": adapter_effect,
    }
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/micropaged.md")
    return results


if __name__ == "__main__":
    main()
