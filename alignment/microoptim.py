"""microoptim: one network, one set of batches, and every choice the optimiser makes for you.

Training a network means choosing more than a model: the optimiser, its learning rate, how
the rate changes over the run, what to do when a gradient is suddenly huge. This script
trains one small character-level MLP on names (Bengio et al. 2003, as in Karpathy's
makemore) many times, always from the same initial weights and on the same precomputed
batches in the same order, so that the only difference between two runs is the choice
being studied:

    optimisers   SGD, SGD with momentum, RMSProp (Hinton's lecture 6e), Adam (Kingma & Ba
                 2015) and AdamW (Loshchilov & Hutter 2019), each at the best learning rate
                 of a small grid, raced to a target loss
    decay        L2 added to the loss inside Adam beside AdamW's decoupled weight decay,
                 and what each does to the weight norm and the loss
    schedules    constant, step decay, cosine, and linear warmup then cosine, all at the same
                 peak rate, the rate curve drawn beside the loss curve
    clipping     plain SGD at a rate where it diverges, with and without clipping the
                 gradient by its global norm, and the gradient-norm trace

Every update rule follows the pseudocode in PyTorch's documentation for torch.optim.SGD,
RMSprop, Adam and AdamW and torch.nn.utils.clip_grad_norm_, and the run checks the
optimisers against a plain scalar transcription of that pseudocode. The gradient of the
network is derived by hand on plain floats (the tests check it against finite differences
of a loss written index by index): 21 training runs of 250 steps must fit in the budget,
and no autograd graph is needed for a graph this small and fixed.

Run: python alignment/microoptim.py    (about 31 s on the 2-core CI machine)
"""
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
# main() reads these when it runs, so a test can shorten a run by assigning new values.
SEED = 42            # every random draw (data split, initial weights, batches) follows it
CONTEXT = 3          # the model reads the previous 3 characters
EMBED = 6            # width of each character's embedding
HIDDEN = 24          # tanh units
BATCH_SIZE = 32      # predictions per step
NUM_STEPS = 250      # steps of every run
HELDOUT_NAMES = 1000  # names never trained on; every held-out loss uses them
SMOOTH = 20          # training losses are averaged over this many steps
TARGET_LOSS = 2.5    # the race: steps until the smoothed training loss is below this
# Each optimiser's learning-rate grid, spaced by about 3x (why the grids differ: see
# EXPERIMENT 1). The best rate of each is the one with the lowest held-out loss at the end.
LR_GRID = {
    "sgd": (0.3, 1.0, 3.0),
    "momentum": (0.03, 0.1, 0.3),
    "rmsprop": (0.003, 0.01, 0.03),
    "adam": (0.003, 0.01, 0.03),
    "adamw": (0.003, 0.01, 0.03),
}
MOMENTUM = 0.9       # SGD's momentum: the velocity averages about the last 10 gradients
RMS_ALPHA = 0.99     # RMSProp's smoothing of the squared gradient (PyTorch's default)
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8   # Adam's and AdamW's (PyTorch's defaults)
WEIGHT_DECAY = 0.1   # lambda for AdamW and for L2 in Adam (LLM recipes use 0.1 with AdamW)
PEAK_LR = 0.03       # Adam's peak rate for the four schedules: the top of its grid
WARMUP_STEPS = 25    # linear warmup, a tenth of the run
STEP_DECAY_EVERY = 100   # step decay multiplies the rate by STEP_DECAY_FACTOR this often
STEP_DECAY_FACTOR = 0.3
CLIP_LR = 4.0        # plain SGD's rate in the clipping experiment: 4x its best on the grid
CLIP_NORM = 0.25     # the global-norm threshold: no SGD step is longer than 4 x 0.25 = 1
BIAS_DEMO_STEPS = 50  # steps of Adam without bias correction, to compare the early losses


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


# === EXAMPLES: CONTEXTS AND NEXT CHARACTERS ===
# Characters are tokens: 26 letters plus a boundary token (written . here) that pads the
# context before a name starts and is the target after its last letter. A name of n letters
# gives n + 1 examples (the previous CONTEXT tokens, the next token): "ava" gives
#     (. . .) -> a    (. . a) -> v    (. a v) -> a    (a v a) -> .


def examples_of(names, stoi, boundary):
    pairs = []
    for name in names:
        context = [boundary] * CONTEXT
        for token in [stoi[c] for c in name] + [boundary]:
            pairs.append((tuple(context), token))
            context = context[1:] + [token]
    return pairs


def group_by_context(pairs):
    # Held-out evaluation needs one forward pass per distinct context, not per example.
    groups = {}
    for context, target in pairs:
        targets = groups.setdefault(context, {})
        targets[target] = targets.get(target, 0) + 1
    return list(groups.items()), len(pairs)


# === MODEL: A CHARACTER MLP ON PLAIN FLOATS ===
# Bengio et al. (2003), as in Karpathy's makemore: each of the 3 context characters is looked
# up in an embedding table, the 3 embeddings are concatenated into x, and
#     h = tanh(W1 x + b1)        z = W2 h + b2        L = -log softmax(z)[y]
# Every run trains this one network from the same start on the same batches, so the only
# difference between two runs is the optimiser, its learning rate, its schedule or clipping.
# The network is small and its graph fixed, so the gradient is derived by hand on plain
# floats (no autograd): about 5,300 training steps (21 runs of 250) must fit in 45 s.
# Parameters are tensors stored as lists of rows; a bias is a tensor with one row. Five
# tensors matter later: clipping "per parameter" means per tensor, as in PyTorch.

PARAM_NAMES = ("emb", "w1", "b1", "w2", "b2")


def gaussian_rows(rows, cols, std):
    return [[random.gauss(0.0, std) for _ in range(cols)] for _ in range(rows)]


def init_params(vocab_size):
    # Kaiming-style init for the tanh layer (gain 5/3); the output layer starts small so the
    # first predictions are near uniform (loss near ln 27 = 3.30), as makemore does.
    fan_in = CONTEXT * EMBED
    return {
        "emb": gaussian_rows(vocab_size, EMBED, 1.0),
        "w1": gaussian_rows(HIDDEN, fan_in, (5 / 3) / math.sqrt(fan_in)),
        "b1": [[0.0] * HIDDEN],
        "w2": gaussian_rows(vocab_size, HIDDEN, 0.1 / math.sqrt(HIDDEN)),
        "b2": [[0.0] * vocab_size],
    }


def copy_params(params):
    return {name: [row[:] for row in rows] for name, rows in params.items()}


def count_params(params):
    return sum(len(row) for rows in params.values() for row in rows)


def loss_and_grads(params, batch):
    """Mean cross-entropy over the batch and its gradient for every parameter, by hand.

    Backward, from the loss to the inputs (B = batch size, one example's symbols):
        dL/dz_i  = (p_i - [i == y]) / B                       dz, the softmax's gradient
        dL/dW2   = sum over examples of dz h^T,  dL/db2 = sum of dz
        dL/dh_j  = sum_i dz_i W2[i][j]
        dL/da_j  = dL/dh_j (1 - h_j^2)                         da, through tanh
        dL/dW1   = sum over examples of da x^T,  dL/db1 = sum of da
        dL/dx_k  = sum_j da_j W1[j][k], added into the rows of emb that x was read from
    """
    emb, w1, b1, w2, b2 = (params[n] for n in PARAM_NAMES)
    b1, b2 = b1[0], b2[0]
    mul, exp, tanh = operator.mul, math.exp, math.tanh
    size = len(batch)
    xs, hs, dzs, das = [], [], [], []
    total = 0.0
    w2_cols = list(zip(*w2))     # column j of W2: what hidden unit j sends to every logit
    for context, target in batch:
        x = [v for c in context for v in emb[c]]
        h = [tanh(b + sum(map(mul, row, x))) for row, b in zip(w1, b1)]
        z = [b + sum(map(mul, row, h)) for row, b in zip(w2, b2)]
        top = max(z)             # stable softmax: exp of the largest logit is exp(0) = 1
        e = [exp(v - top) for v in z]
        s = sum(e)
        total += math.log(s) - (z[target] - top)
        dz = [v / (s * size) for v in e]
        dz[target] -= 1.0 / size
        da = [(1.0 - hj * hj) * sum(map(mul, col, dz)) for hj, col in zip(h, w2_cols)]
        xs.append(x)
        hs.append(h)
        dzs.append(dz)
        das.append(da)
    # The weight gradients sum an outer product over the batch: entry (i, j) of dL/dW2 is
    # the dot product of column i of the dz's with column j of the h's.
    dz_cols, h_cols = list(zip(*dzs)), list(zip(*hs))
    da_cols, x_cols = list(zip(*das)), list(zip(*xs))
    grads = {
        "w2": [[sum(map(mul, dcol, hcol)) for hcol in h_cols] for dcol in dz_cols],
        "b2": [[sum(dcol) for dcol in dz_cols]],
        "w1": [[sum(map(mul, dcol, xcol)) for xcol in x_cols] for dcol in da_cols],
        "b1": [[sum(dcol) for dcol in da_cols]],
        "emb": [[0.0] * EMBED for _ in emb],
    }
    # The embedding gradient: x is the three embeddings side by side, so the slice of
    # dL/dx for position pos belongs to the row of the character at that position. A
    # character met twice in one context, or in several examples, collects every share.
    g_emb = grads["emb"]
    w1_cols = list(zip(*w1))
    for (context, _), da in zip(batch, das):
        dx = [sum(map(mul, col, da)) for col in w1_cols]
        for pos, c in enumerate(context):
            g_emb[c] = list(map(operator.add, g_emb[c], dx[pos * EMBED:(pos + 1) * EMBED]))
    return total / size, grads


def reference_loss(params, batch):
    """The same loss written plainly, index by index, sharing no code with the fast path.

    The tests differentiate it by central finite differences to check loss_and_grads.
    """
    emb, w1, b1, w2, b2 = (params[n] for n in PARAM_NAMES)
    total = 0.0
    for context, target in batch:
        x = []
        for c in context:
            x.extend(emb[c])
        h = []
        for j in range(len(w1)):
            a = b1[0][j]
            for k in range(len(x)):
                a += w1[j][k] * x[k]
            h.append(math.tanh(a))
        z = []
        for i in range(len(w2)):
            a = b2[0][i]
            for j in range(len(h)):
                a += w2[i][j] * h[j]
            z.append(a)
        top = max(z)
        total += top + math.log(sum(math.exp(v - top) for v in z)) - z[target]
    return total / len(batch)


def heldout_loss(params, grouped):
    """Mean cross-entropy per held-out example, one forward pass per distinct context."""
    emb, w1, b1, w2, b2 = (params[n] for n in PARAM_NAMES)
    b1, b2 = b1[0], b2[0]
    mul, exp, tanh = operator.mul, math.exp, math.tanh
    groups, count = grouped
    total = 0.0
    for context, targets in groups:
        # The same forward pass as training; each distinct context's loss counts once per
        # example that has it: -log p(y) = logsumexp(z) - z_y for every target y seen.
        x = [v for c in context for v in emb[c]]
        h = [tanh(b + sum(map(mul, row, x))) for row, b in zip(w1, b1)]
        z = [b + sum(map(mul, row, h)) for row, b in zip(w2, b2)]
        top = max(z)
        log_total = top + math.log(sum(exp(v - top) for v in z))
        total += sum(n * (log_total - z[y]) for y, n in targets.items())
    return total / count


# === OPTIMISERS ===
# Each optimiser turns a gradient g into a step for every parameter p. With lr the learning
# rate, t the step number counted from 1, and PyTorch's names in brackets:
#   SGD              p -= lr g                                        (torch.optim.SGD)
#   SGD + momentum   b = mu b + g  (b = g at t = 1);  p -= lr b       (SGD, momentum=0.9)
#   RMSProp          v = alpha v + (1 - alpha) g^2;  p -= lr g / (sqrt(v) + eps)
#                                                        (torch.optim.RMSprop, alpha=0.99)
#   Adam             m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
#                    m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t)
#                    p -= lr m_hat / (sqrt(v_hat) + eps)                  (torch.optim.Adam)
#   Adam + L2        the same, with g replaced by g + lambda p first   (Adam, weight_decay=)
#   AdamW            p *= 1 - lr lambda, then the Adam step on g alone   (torch.optim.AdamW)
# Momentum averages the gradient over about 1 / (1 - mu) = 10 steps, so noise cancels and a
# consistent direction builds speed. RMSProp divides each parameter's step by the root of
# its recent squared gradients, so every parameter moves at about lr per step whatever its
# gradient's scale. Adam does both. Its m and v start at 0, so early on they are too small
# by the factors 1 - b1^t and 1 - b2^t; dividing those out (bias correction, Kingma & Ba
# 2015, section 3) makes the first step lr in size for every parameter (up to eps). Without
# it the first step is (1 - b1) / sqrt(1 - b2) = 0.1 / 0.0316 = 3.16 times too large; the
# ratio (1 - b1^t) / sqrt(1 - b2^t) peaks at 6.6 near step 12 and is still 1.26 at step
# 1,000. The run prints what that does to the first 50 steps' losses.
# PyTorch's RMSprop has no bias correction: its first step is 1 / sqrt(1 - alpha) = 10
# times lr, and the factor fades over the next few hundred steps.
#
# Weight decay two ways (Loshchilov and Hutter, "Decoupled Weight Decay Regularization",
# 2019). L2 adds lambda p to the gradient, and Adam then divides it by sqrt(v_hat) like
# every other gradient: a weight whose loss gradients are small has a small sqrt(v_hat), so
# its decay is magnified, while a weight with large gradients decays less. AdamW takes the
# decay out of the gradient and multiplies every weight by the same 1 - lr lambda per step,
# whatever its gradient history. PyTorch's Adam(weight_decay=) is the L2 form; AdamW's
# default weight_decay is 0.01. Here both are applied to every tensor, biases included, as
# torch.optim does when given all of a model's parameters.


def zeros_like(params):
    return {name: [[0.0] * len(row) for row in rows] for name, rows in params.items()}


def make_optimizer(kind, weight_decay=0.0, bias_correction=True):
    """An optimiser as a function step(params, grads, lr) that updates params in place.

    Its state (the step count t and the running averages m and v) lives in the closure and
    is also returned, so a run can read v afterwards.
    """
    state = {"t": 0, "m": None, "v": None}
    sqrt = math.sqrt

    def step(params, grads, lr):
        state["t"] += 1
        t = state["t"]
        if state["m"] is None:
            state["m"], state["v"] = zeros_like(params), zeros_like(params)
        # Adam's bias corrections for this step (1 when switched off).
        c1 = 1 - BETA1 ** t if bias_correction else 1.0
        c2 = 1 - BETA2 ** t if bias_correction else 1.0
        for name in PARAM_NAMES:
            for p, g, m, v in zip(params[name], grads[name], state["m"][name],
                                  state["v"][name]):
                if kind == "sgd":
                    p[:] = [pi - lr * gi for pi, gi in zip(p, g)]
                elif kind == "momentum":
                    m[:] = [MOMENTUM * mi + gi for mi, gi in zip(m, g)] if t > 1 else g
                    p[:] = [pi - lr * mi for pi, mi in zip(p, m)]
                elif kind == "rmsprop":
                    v[:] = [RMS_ALPHA * vi + (1 - RMS_ALPHA) * gi * gi for vi, gi in zip(v, g)]
                    p[:] = [pi - lr * gi / (sqrt(vi) + EPS) for pi, gi, vi in zip(p, g, v)]
                else:  # "adam" or "adamw"
                    if kind == "adam" and weight_decay:      # L2: the decay joins the gradient
                        g = [gi + weight_decay * pi for gi, pi in zip(g, p)]
                    if kind == "adamw" and weight_decay:     # decoupled: shrink, then step
                        p[:] = [pi * (1 - lr * weight_decay) for pi in p]
                    m[:] = [BETA1 * mi + (1 - BETA1) * gi for mi, gi in zip(m, g)]
                    v[:] = [BETA2 * vi + (1 - BETA2) * gi * gi for vi, gi in zip(v, g)]
                    p[:] = [pi - lr * (mi / c1) / (sqrt(vi / c2) + EPS)
                            for pi, mi, vi in zip(p, m, v)]
    return step, state


def reference_optimizer_steps(kind, p0, gradient_of, lrs, weight_decay=0.0):
    """One scalar parameter updated by PyTorch's documented pseudocode, line by line.

    Written apart from make_optimizer (scalars, explicit branches) so that the run can check
    the vectorised optimisers against it. gradient_of(p) gives the loss gradient at p.
    """
    p, b, m, v = p0, 0.0, 0.0, 0.0
    path = []
    for t, lr in enumerate(lrs, start=1):
        g = gradient_of(p)
        if kind == "sgd":
            p = p - lr * g
        elif kind == "momentum":
            b = g if t == 1 else MOMENTUM * b + g
            p = p - lr * b
        elif kind == "rmsprop":
            v = RMS_ALPHA * v + (1 - RMS_ALPHA) * g ** 2
            p = p - lr * g / (v ** 0.5 + EPS)
        else:
            if kind == "adam":
                g = g + weight_decay * p
            else:
                p = p - lr * weight_decay * p
            m = BETA1 * m + (1 - BETA1) * g
            v = BETA2 * v + (1 - BETA2) * g ** 2
            m_hat = m / (1 - BETA1 ** t)
            v_hat = v / (1 - BETA2 ** t)
            p = p - lr * m_hat / (v_hat ** 0.5 + EPS)
        path.append(p)
    return path


def optimizer_reference_error():
    """Largest relative gap between make_optimizer and the reference, over every optimiser.

    The problem: 4 parameters in one tensor, each with its own quadratic loss
    0.5 c (p - 1)^2 whose curvature c spans two orders of magnitude (so RMSProp and Adam's
    per-parameter scaling matters), for 30 steps on a schedule that changes every step.
    """
    curvatures = (0.05, 0.5, 2.0, 5.0)
    starts = (3.0, -2.0, 0.5, 4.0)
    lrs = [0.05 * (1 + math.sin(t)) + 0.01 for t in range(30)]
    worst = 0.0
    for kind, decay in (("sgd", 0.0), ("momentum", 0.0), ("rmsprop", 0.0), ("adam", 0.0),
                        ("adam", 0.1), ("adamw", 0.1)):
        step, _ = make_optimizer(kind, weight_decay=decay)
        params = {name: [[0.0]] for name in PARAM_NAMES}
        params["w1"] = [list(starts)]
        for lr in lrs:
            grads = {name: [[0.0]] for name in PARAM_NAMES}
            grads["w1"] = [[c * (p - 1.0) for c, p in zip(curvatures, params["w1"][0])]]
            step(params, grads, lr)
        for c, p0, p in zip(curvatures, starts, params["w1"][0]):
            expected = reference_optimizer_steps(kind, p0, lambda q: c * (q - 1.0), lrs,
                                                 decay)[-1]
            gap = abs(p - expected) / max(abs(expected), 1e-12)
            worst = gap if math.isnan(gap) or gap > worst else worst   # a NaN stays
    return worst


# === LEARNING-RATE SCHEDULES ===
# The same peak learning rate, four shapes over NUM_STEPS steps (step counts from 0):
#   constant        lr(s) = peak
#   step decay      lr(s) = peak * 0.3^(s // 100)                 (torch's StepLR)
#   cosine          lr(s) = peak * (1 + cos(pi s / N)) / 2        (CosineAnnealingLR to 0)
#   warmup+cosine   lr(s) = peak * (s + 1) / W for s < W, then cosine from peak to 0 over
#                   the remaining N - W steps
# Why decay: a stochastic gradient is the true gradient plus batch noise, and at a fixed lr
# the weights keep bouncing around the minimum in a cloud whose size grows with lr. Lowering
# lr at the end shrinks the cloud, so the loss ends lower than at the constant peak rate.
# Why warm up: in the first steps Adam's v rests on a handful of gradients, so its step
# sizes are poorly estimated, and large early steps can push a network somewhere it leaves
# only slowly; a short linear ramp lets the statistics settle first. On this one-layer
# network warmup changes little: the run prints cosine with and without it. Signpost: LLM
# pretraining recipes (GPT-3, Llama) warm up over a few hundred to a few thousand steps and
# decay by cosine to about a tenth of the peak; Hugging Face's
# get_cosine_schedule_with_warmup decays to 0 as here.


def schedule(kind, peak, num_steps):
    def lr_at(step):
        if kind == "constant":
            return peak
        if kind == "step":
            return peak * STEP_DECAY_FACTOR ** (step // STEP_DECAY_EVERY)
        if kind == "cosine":
            return peak * 0.5 * (1 + math.cos(math.pi * step / num_steps))
        if kind == "warmup_cosine":
            if step < WARMUP_STEPS:
                return peak * (step + 1) / WARMUP_STEPS
            progress = (step - WARMUP_STEPS) / (num_steps - WARMUP_STEPS)
            return peak * 0.5 * (1 + math.cos(math.pi * progress))
        raise ValueError(f"unknown schedule {kind}")
    return lr_at


# === GRADIENT CLIPPING BY GLOBAL NORM ===
# Treat every gradient of the model as one long vector g and measure its length
# ||g|| = sqrt(sum of every entry squared). When it is above max_norm, scale every entry by
# max_norm / (||g|| + 1e-6), as torch.nn.utils.clip_grad_norm_ does. The step keeps its
# direction and only gets shorter, so with plain SGD no step is ever longer than
# lr * max_norm: a rare huge gradient (a spike) cannot throw the weights far. Clipping each
# tensor separately would also shorten steps, but by a different factor per tensor, which
# turns the step away from the gradient and lets the whole step reach sqrt(5) * max_norm
# for five tensors.


def global_norm(grads):
    return math.sqrt(sum(g * g for rows in grads.values() for row in rows for g in row))


def clip_by_global_norm(grads, max_norm):
    """Scale grads in place so their global norm is at most max_norm; return the raw norm."""
    total = global_norm(grads)
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for rows in grads.values():
            for row in rows:
                row[:] = [g * scale for g in row]
    return total


# === TRAINING: ONE RUN ===


def train(start, batches, optimizer, lr_at, clip_norm=None, watch_clipping=False):
    """Train a copy of start on batches; record each step's loss, gradient norm and lr.

    With watch_clipping, each clipped gradient is also measured against the raw one: its
    global norm (at most clip_norm) and the cosine between the two (1: same direction).
    """
    step_fn, state = optimizer
    # Every run trains its own copy of the one shared start, so runs cannot leak into each
    # other, and each sees batches[0], batches[1], ... in the same order.
    params = copy_params(start)
    losses, norms, lrs = [], [], []
    clipped_norms, cosines = [], []
    for step, batch in enumerate(batches):
        loss, grads = loss_and_grads(params, batch)
        losses.append(loss)
        if not math.isfinite(loss):   # a diverged run stops here; its loss stays non-finite
            break
        raw = copy_params(grads) if watch_clipping else None
        if clip_norm is None:
            norms.append(global_norm(grads))
        else:
            norms.append(clip_by_global_norm(grads, clip_norm))
        if watch_clipping:
            flat_raw = [g for rows in raw.values() for row in rows for g in row]
            flat_new = [g for rows in grads.values() for row in rows for g in row]
            after = math.sqrt(sum(g * g for g in flat_new))
            clipped_norms.append(after)
            cosines.append(sum(map(operator.mul, flat_raw, flat_new)) / (norms[-1] * after))
        lr = lr_at(step)
        lrs.append(lr)
        step_fn(params, grads, lr)
    return {"params": params, "losses": losses, "norms": norms, "lrs": lrs, "state": state,
            "clipped_norms": clipped_norms, "cosines": cosines}


def smoothed(losses, window):
    """Mean of the last `window` losses at every step (fewer at the start)."""
    out, running = [], 0.0
    for i, value in enumerate(losses):
        running += value
        if i >= window:
            running -= losses[i - window]
        out.append(running / min(i + 1, window))
    return out


def steps_to_target(losses, target, num_steps):
    """First step count at which the mean of the last SMOOTH losses is below target.

    A run that never gets there scores num_steps + 1. A single batch's loss jumps by about
    0.1 from batch to batch, hence the mean. Every run sees the same batches in the same
    order, so a stretch of easy batches helps every run alike: the comparison is fair, and
    different runs often cross the target at the very same step, at the start of such a
    stretch.
    """
    curve = smoothed(losses, SMOOTH)
    for i in range(SMOOTH - 1, len(curve)):
        if curve[i] < target:
            return i + 1
    return num_steps + 1


def final_loss(run, grouped):
    """Held-out loss at the end of a run; a run that diverged to a non-finite loss is inf."""
    if not all(math.isfinite(v) for v in run["losses"]):
        return math.inf
    return heldout_loss(run["params"], grouped)


# === PICTURES ===


def ascii_chart(series, height, width, low=None, high=None, hline=None, log=False,
                reduce="mean"):
    """Curves on one text grid: series is a list of (symbol, values); returns the lines.

    Each curve is squeezed into `width` columns: the values that land in one column are
    drawn as their mean (reduce="mean") or their largest (reduce="max", so that a spike
    stays visible). hline draws a horizontal line of '-' at a value; log puts the vertical
    axis on a log scale. A later curve's symbol covers an earlier one where they meet.
    """
    scale = (lambda v: math.log10(v)) if log else (lambda v: v)
    finite = [v for _, values in series for v in values if math.isfinite(v)]
    low = min(finite) if low is None else low
    high = max(finite) if high is None else high
    lo, hi = scale(low), scale(high)
    span = (hi - lo) or 1.0
    grid = [[" "] * width for _ in range(height)]

    def row_of(value):
        value = min(max(value, low), high)
        return round((hi - scale(value)) / span * (height - 1))

    if hline is not None:
        grid[row_of(hline)] = ["-"] * width
    for symbol, values in series:
        buckets = [[] for _ in range(width)]
        for i, v in enumerate(values):
            buckets[min(i * width // len(values), width - 1)].append(v)
        for col, bucket in enumerate(buckets):
            if not bucket:
                continue
            if not all(math.isfinite(v) for v in bucket):
                continue     # a diverged run's non-finite values have no place on the grid
            value = max(bucket) if reduce == "max" else sum(bucket) / len(bucket)
            grid[row_of(value)][col] = symbol
    labels = [high * (low / high) ** (r / (height - 1)) if log
              else high - (high - low) * r / (height - 1) for r in range(height)]
    labels = [0.0 if abs(label) < 1e-12 else label for label in labels]
    return [f"{label:7.3g} |{''.join(cells)}" for label, cells in zip(labels, grid)]


def side_by_side(left, right, gap=4):
    width = max(len(line) for line in left)
    return "\n".join(f"{a:<{width}}{' ' * gap}{b}" for a, b in zip(left, right))


# === EXPERIMENT 1: FIVE OPTIMISERS, EACH AT ITS BEST LEARNING RATE ===
# The grid spaces learning rates by about 3x, the usual coarse sweep. The best rate of each
# optimiser is the one with the lowest held-out loss at the end, and "steps to target" is
# read off that run's training curve. The grids differ because the optimisers' lrs mean
# different things: SGD's step is lr times the gradient (whose global norm stays below
# about 1 here), while RMSProp's and Adam's step is about lr per parameter whatever the
# gradient's size.

OPTIMISERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")


def compare_optimisers(start, batches, heldout, clock):
    runs, best = {}, {}
    print(f"{'optimiser':<10} {'lr':>7} {'held-out':>9} {'steps to ' + str(TARGET_LOSS):>14}")
    for kind in OPTIMISERS:
        # AdamW is raced with its decay switched on: it is the optimiser LLMs train with,
        # and its decay is part of what it does.
        decay = WEIGHT_DECAY if kind == "adamw" else 0.0
        for lr in LR_GRID[kind]:
            run = train(start, batches, make_optimizer(kind, weight_decay=decay),
                        schedule("constant", lr, NUM_STEPS))
            run["heldout"] = final_loss(run, heldout)
            run["steps"] = steps_to_target(run["losses"], TARGET_LOSS, NUM_STEPS)
            runs[kind, lr] = run
            print(f"{kind:<10} {lr:>7g} {run['heldout']:>9.4f} {run['steps']:>14} | "
                  f"{clock():.1f}s")
        # NaN-safe choice: a run whose held-out loss is not finite never wins.
        scores = [(runs[kind, lr]["heldout"], lr) for lr in LR_GRID[kind]
                  if math.isfinite(runs[kind, lr]["heldout"])]
        best[kind] = min(scores)[1] if scores else LR_GRID[kind][0]
    print("\nBest learning rate of each (lowest held-out loss), and its steps to target:")
    for kind in OPTIMISERS:
        run = runs[kind, best[kind]]
        edge = " (at the edge of its grid)" if best[kind] in (LR_GRID[kind][0],
                                                                LR_GRID[kind][-1]) else ""
        print(f"  {kind:<9} lr {best[kind]:<6g} held-out {run['heldout']:.4f}, "
              f"target at step {run['steps']}{edge}")
    symbols = dict(zip(OPTIMISERS, "SMRAW"))
    print(f"\nTraining loss, mean of the last {SMOOTH} steps, at each best lr; S SGD, M momentum,"
          f" R RMSProp,\nA Adam, W AdamW (a later letter covers an earlier one); - the target:")
    series = [(symbols[k], smoothed(runs[k, best[k]]["losses"], SMOOTH)[SMOOTH - 1:])
              for k in OPTIMISERS]
    print("\n".join(ascii_chart(series, 12, 60, high=3.0, hline=TARGET_LOSS)))
    print(f"        step {SMOOTH} to {NUM_STEPS}")
    return runs, best


def bias_correction_effect(start, batches, lr, corrected_run):
    """Adam's first step with and without bias correction, and how long the gap lasts.

    Returns the largest |step| / lr - 1 over parameters at step 1 (bias-corrected Adam moves
    every parameter whose gradient is well above eps by lr, to within eps), and prints the early
    losses of an uncorrected run beside the corrected one.
    """
    # Both optimisers take their first step from the shared start on the first batch, so
    # the only difference between the two steps is the bias correction.
    batch = batches[0]
    _, grads = loss_and_grads(start, batch)
    errors = {}
    for corrected in (True, False):
        params = copy_params(start)
        step, _ = make_optimizer("adam", bias_correction=corrected)
        step(params, copy_params(grads), lr)
        worst = 0.0
        for name in PARAM_NAMES:
            for row0, row1, grow in zip(start[name], params[name], grads[name]):
                for a, b, g in zip(row0, row1, grow):
                    if abs(g) > 1e-4:     # far above eps = 1e-8, so eps cannot matter
                        error = abs(abs(b - a) / lr - 1.0)
                        worst = error if math.isnan(error) or error > worst else worst
        errors[corrected] = worst
    # A short uncorrected run beside the grid's corrected one: the gap between the two is
    # largest in the first tens of steps, where 1 - b2^t is still far from 1.
    early = batches[:BIAS_DEMO_STEPS]
    uncorrected = train(start, early, make_optimizer("adam", bias_correction=False),
                        schedule("constant", lr, NUM_STEPS))
    print(f"\nAdam's first step at lr {lr:g}: the largest |step / lr - 1| over the parameters "
          f"is {errors[True]:.1e};\nwithout bias correction it is {errors[False]:.2f} (steps of "
          f"up to {1 + errors[False]:.2f} lr).")
    print(" step   Adam loss   without bias correction   (each the mean of 10 steps)")
    for s in range(10, BIAS_DEMO_STEPS + 1, 10):
        a = sum(corrected_run["losses"][s - 10:s]) / 10
        b = sum(uncorrected["losses"][s - 10:s]) / 10
        print(f" {s:>4}   {a:9.4f}   {b:9.4f}")
    return errors[True], errors[False], uncorrected


# === EXPERIMENT 2: L2 IN THE LOSS AGAINST ADAMW'S DECOUPLED WEIGHT DECAY ===
# Same lr (Adam's best), same lambda = WEIGHT_DECAY, from the same start on the same
# batches: Adam with no decay, Adam with lambda p added to the gradient (L2), and AdamW.
# The OPTIMISERS section predicts the difference. AdamW multiplies each weight by
# 1 - lr lambda per step, whatever its gradient. L2's pull lambda p is divided by sqrt(v_hat)
# like the rest of the gradient, and sqrt(v_hat) is the size of a typical gradient entry,
# far below 1 here (its median over the weights is printed), so at the same lambda L2's
# decay is many times stronger than AdamW's: it drags the weights toward zero until the
# loss gradient grows large enough to hold them, and the loss pays for it. To make L2 in
# Adam behave like AdamW one would have to shrink lambda by about that median, and even then
# only on average: each weight's pull would still depend on its own gradient history.

MATRICES = ("emb", "w1", "w2")


def weight_norm(params):
    """Euclidean norm of the three weight matrices (the biases are left out)."""
    return math.sqrt(sum(w * w for name in MATRICES for row in params[name] for w in row))


def median_gradient_scale(run):
    """Median over the matrices' weights of sqrt(v_hat) at the end of a run."""
    t, v_state = run["state"]["t"], run["state"]["v"]
    scales = sorted(math.sqrt(v / (1 - BETA2 ** t))
                    for name in MATRICES for row in v_state[name] for v in row)
    return scales[len(scales) // 2]


def compare_weight_decay(start, batches, heldout, lr, plain_run, adamw_run):
    l2_run = train(start, batches, make_optimizer("adam", weight_decay=WEIGHT_DECAY),
                   schedule("constant", lr, NUM_STEPS))
    l2_run["heldout"] = final_loss(l2_run, heldout)
    # sqrt(v_hat) is what Adam divides every gradient entry by, L2's lambda p included;
    # its median is the factor by which L2's pull on a typical weight exceeds AdamW's.
    typical = median_gradient_scale(plain_run)
    print(f"\nWeight decay at lr {lr:g}, lambda {WEIGHT_DECAY:g}. In the no-decay run the "
          f"median sqrt(v_hat) is {typical:.2g},\nso L2's pull on a typical weight is about "
          f"{1 / typical:.0f} times AdamW's. Weight norm of the three matrices at the start: "
          f"{weight_norm(start):.2f}")
    print(f"  {'run':<24} {'weight norm':>11} {'held-out':>9}")
    for label, run in (("Adam, no decay", plain_run), ("Adam + L2 in the loss", l2_run),
                       ("AdamW (decoupled decay)", adamw_run)):
        print(f"  {label:<24} {weight_norm(run['params']):>11.3f} {run['heldout']:>9.4f}")
    return l2_run, typical


# === EXPERIMENT 3: FOUR SCHEDULES AT THE SAME PEAK LEARNING RATE ===


SCHEDULES = ("constant", "step", "cosine", "warmup_cosine")


def compare_schedules(start, batches, heldout, constant_run, clock):
    # Same optimiser (Adam), same peak, same batches: only the rate's shape over time differs.
    runs = {"constant": constant_run}
    for kind in SCHEDULES[1:]:
        runs[kind] = train(start, batches, make_optimizer("adam"),
                           schedule(kind, PEAK_LR, NUM_STEPS))
        runs[kind]["heldout"] = final_loss(runs[kind], heldout)
    print(f"\nAdam with peak lr {PEAK_LR:g}: held-out loss at the end | {clock():.1f}s")
    for kind in SCHEDULES:
        print(f"  {kind:<14} {runs[kind]['heldout']:.4f}")
    symbols = dict(zip(SCHEDULES, "CSKW"))
    print("\nLearning rate (left) and training loss, mean of 20 steps (right); C constant,"
          " S step decay, K cosine, W warmup + cosine:")
    left = ascii_chart([(symbols[k], runs[k]["lrs"]) for k in SCHEDULES], 12, 40,
                       low=0.0, high=PEAK_LR)
    right = ascii_chart([(symbols[k], smoothed(runs[k]["losses"], SMOOTH)[SMOOTH - 1:])
                         for k in SCHEDULES], 12, 40, high=2.8)
    print(side_by_side(left, right))
    print(f"{'':9}step 0 to {NUM_STEPS}{'':34}step {SMOOTH} to {NUM_STEPS}")
    return runs


# === EXPERIMENT 4: GRADIENT CLIPPING AT A LEARNING RATE THAT DIVERGES ===
# Plain SGD at CLIP_LR, four times SGD's best rate on the grid. Unclipped, each step is
# CLIP_LR * ||g|| long, several units, and the run ends with its loss above where it began
# (the run prints both). Clipped to CLIP_NORM, no step is longer than
# CLIP_LR * CLIP_NORM = 1. At this rate the raw gradient norm stays above the threshold at
# every step (the run prints the share: 100% at seed 42), so clipping here works as
# normalised gradient descent: the direction from the gradient, the length fixed. Signpost: LLM
# pretraining runs clip at a global norm of 1.0 (GPT-3, Llama) beside a well-tuned rate,
# where only the rare spike is cut; the mechanism is the same.


def compare_clipping(start, batches, heldout, clock):
    plain = train(start, batches, make_optimizer("sgd"), schedule("constant", CLIP_LR,
                                                                   NUM_STEPS))
    clipped = train(start, batches, make_optimizer("sgd"),
                    schedule("constant", CLIP_LR, NUM_STEPS), clip_norm=CLIP_NORM,
                    watch_clipping=True)
    for run in (plain, clipped):
        run["heldout"] = final_loss(run, heldout)
        run["final"] = sum(run["losses"][-SMOOTH:]) / len(run["losses"][-SMOOTH:])
    # The share of steps whose raw gradient norm was above the threshold: the steps where
    # clipping changed anything.
    share = sum(n > CLIP_NORM for n in clipped["norms"]) / len(clipped["norms"])
    print(f"\nSGD at lr {CLIP_LR:g} | {clock():.1f}s")
    for label, run in (("unclipped", plain), (f"clipped to {CLIP_NORM:g}", clipped)):
        print(f"  {label:<16} first loss {run['losses'][0]:.3f}, last 20 steps "
              f"{run['final']:.3f}, highest {max(run['losses']):.3f}, held-out "
              f"{run['heldout']:.4f}, largest gradient norm {max(run['norms']):.2f}")
    print(f"  the clipped run cut the gradient at {share:.0%} of its steps")
    print(f"\nGradient norm before clipping, largest of every few steps, log scale (U "
          f"unclipped run, C clipped run;\n- the threshold {CLIP_NORM:g}: everything above it "
          f"is what clipping cut):")
    high = max(max(plain["norms"]), max(clipped["norms"]))
    low = min(min(plain["norms"]), min(clipped["norms"]), CLIP_NORM)
    print("\n".join(ascii_chart([("U", plain["norms"]), ("C", clipped["norms"])], 12, 60,
                                low=low, high=high, hline=CLIP_NORM, log=True,
                                reduce="max")))
    print(f"        step 1 to {NUM_STEPS}")
    return plain, clipped


# === SUCCESS CRITERIA ===
# What each row proves, in the order of the table:
# - the race: at their best rates Adam gets the training loss under 2.5 sooner than SGD;
# - Adam's bias correction: its first step moves every parameter by lr (to within eps);
# - every update rule matches PyTorch's pseudocode, transcribed separately, to rounding;
# - schedules: warming up and then decaying beats holding the peak rate;
# - clipping: SGD at lr 4 diverges without it and converges with it, and the clipping is
#   global (the clipped gradient is never longer than the threshold, never turned);
# - weight decay: AdamW shrinks the weights; L2 in Adam at the same lambda shrinks them far
#   more, and loses on held-out loss.
# The entry in docs/implementation.md gives each threshold's margin and the other seeds.
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("steps to target loss: Adam vs SGD (best lrs)", "adam_steps_to_target", "<",
     "sgd_steps_to_target"),
    ("Adam's first step: worst |step / lr - 1|", "adam_first_step_error", "<", 0.01),
    ("optimisers vs PyTorch's pseudocode: rel. gap", "optimizer_reference_error", "<", 1e-12),
    ("held-out loss: warmup+cosine vs constant", "warmup_cosine_heldout_loss", "<",
     "constant_heldout_loss"),
    ("unclipped SGD at the high lr diverged (1 = yes)", "unclipped_diverged", "==", 1),
    ("held-out loss of the clipped run", "clipped_heldout_loss", "<", 2.8),
    ("clipping: largest norm after / max_norm", "clip_norm_ratio", "<", 1.000001),
    ("clipping: smallest cosine(clipped, raw)", "clip_min_cosine", ">", 0.999999),
    ("weight norm: AdamW vs Adam without decay", "adamw_weight_norm", "<", "adam_weight_norm"),
    ("weight norm: L2 in Adam vs AdamW, same lambda", "l2_weight_norm", "<", "adamw_weight_norm"),
    ("held-out loss: AdamW vs L2 in Adam", "adamw_same_lr_heldout_loss", "<", "l2_heldout_loss"),
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


def run_at(runs, kind, lr, start, batches, heldout):
    """The grid's run of kind at lr, or a fresh one if the grid does not hold that lr."""
    if (kind, lr) not in runs:
        decay = WEIGHT_DECAY if kind == "adamw" else 0.0
        run = train(start, batches, make_optimizer(kind, weight_decay=decay),
                    schedule("constant", lr, NUM_STEPS))
        run["heldout"] = final_loss(run, heldout)
        runs[kind, lr] = run
    return runs[kind, lr]


def main():
    random.seed(42)   # every random draw below (split, init, batches) follows from this
    if SEED != 42:    # the entry's seed study: the same script with SEED set to 1, 2, ...
        random.seed(SEED)
    began = time.time()

    def clock():
        return time.time() - began

    names = load_names()
    random.shuffle(names)
    chars = sorted(set("".join(names)))
    stoi = {c: i for i, c in enumerate(chars)}
    boundary, vocab_size = len(chars), len(chars) + 1
    train_names = names[:-HELDOUT_NAMES]
    seen = set(train_names)   # names.txt repeats a few names: none may be on both sides
    heldout_names = [n for n in names[-HELDOUT_NAMES:] if n not in seen]
    train_pairs = examples_of(train_names, stoi, boundary)
    heldout = group_by_context(examples_of(heldout_names, stoi, boundary))

    # One start and one list of batches for every run in the script.
    start = init_params(vocab_size)
    batches = [[train_pairs[random.randrange(len(train_pairs))] for _ in range(BATCH_SIZE)]
               for _ in range(NUM_STEPS)]
    untrained = heldout_loss(start, heldout)
    print(f"{len(train_pairs)} training predictions, {len(heldout_names)} held-out names "
          f"({heldout[1]} predictions); {count_params(start)} parameters; {NUM_STEPS} steps "
          f"of {BATCH_SIZE} per run.\nUntrained held-out loss {untrained:.4f} "
          f"(ln 27 = {math.log(27):.4f})\n")

    # First the optimisers themselves, on a toy problem where the answer is known: if an
    # update rule were wrong, every comparison below would compare the wrong algorithms.
    reference_error = optimizer_reference_error()
    print(f"Every optimiser against PyTorch's pseudocode on a toy problem: largest relative "
          f"gap {reference_error:.1e}\n")

    # Experiment 1: 15 runs, five optimisers times three rates. Every later experiment
    # reuses runs from this grid where it can (Adam at its best rate, AdamW at that rate,
    # Adam at the schedules' peak), so no run is trained twice.
    runs, best = compare_optimisers(start, batches, heldout, clock)
    adam_lr = best["adam"]
    adam_run = runs["adam", adam_lr]
    first_error, first_error_uncorrected, _ = bias_correction_effect(start, batches, adam_lr,
                                                                      adam_run)

    adamw_run = run_at(runs, "adamw", adam_lr, start, batches, heldout)
    l2_run, typical_scale = compare_weight_decay(start, batches, heldout, adam_lr, adam_run,
                                                 adamw_run)

    # Experiment 3: the constant-rate run at PEAK_LR is the grid's Adam run at that rate.
    constant = run_at(runs, "adam", PEAK_LR, start, batches, heldout)
    schedules = compare_schedules(start, batches, heldout, constant, clock)

    # Experiment 4. "Diverged" means worse than where it started: a held-out loss above the
    # untrained network's, or no finite loss at all.
    plain, clipped = compare_clipping(start, batches, heldout, clock)
    diverged = (not math.isfinite(plain["heldout"])) or plain["heldout"] > untrained
    # NaN-safe extremes of the clipping measurements: a NaN anywhere is kept.
    norm_ratio = max(clipped["clipped_norms"]) / CLIP_NORM
    min_cosine = min(clipped["cosines"])
    if not all(math.isfinite(v) for v in clipped["clipped_norms"] + clipped["cosines"]):
        norm_ratio = min_cosine = math.nan

    results = {
        "untrained_heldout_loss": untrained,
        "optimizer_reference_error": reference_error,
        "adam_first_step_error": first_error,
        "adam_first_step_error_uncorrected": first_error_uncorrected,
        "adam_weight_norm": weight_norm(adam_run["params"]),
        "l2_weight_norm": weight_norm(l2_run["params"]),
        "adamw_weight_norm": weight_norm(adamw_run["params"]),
        "l2_heldout_loss": l2_run["heldout"],
        "adamw_same_lr_heldout_loss": adamw_run["heldout"],
        "median_gradient_scale": typical_scale,
        "unclipped_heldout_loss": plain["heldout"],
        "unclipped_diverged": int(diverged),
        "clipped_heldout_loss": clipped["heldout"],
        "clip_norm_ratio": norm_ratio,
        "clip_min_cosine": min_cosine,
        "clipped_share": sum(n > CLIP_NORM for n in clipped["norms"]) / len(clipped["norms"]),
    }
    for kind in OPTIMISERS:
        results[f"{kind}_best_lr"] = best[kind]
        results[f"{kind}_steps_to_target"] = runs[kind, best[kind]]["steps"]
        results[f"{kind}_heldout_loss"] = runs[kind, best[kind]]["heldout"]
    for kind in SCHEDULES:
        results[f"{kind}_heldout_loss"] = schedules[kind]["heldout"]
    print_criteria(results)
    print(f"\nTotal {clock():.1f}s")
    print("\nNext: predict what a change will do, then run it: docs/challenges/microoptim.md")
    return results


if __name__ == "__main__":
    main()
