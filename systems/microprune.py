"""microprune: make a trained model smaller by pruning and by quantisation-aware training.

A trained network has more weights than it needs. Two ways to shrink it are taught here on
one small character-level model of names, with its held-out loss as the yardstick:

    train a dense model -> prune: set weights to zero (which ones? how many? then retrain?)
                        -> quantise: keep each weight in 2 or 3 bits (after training, or
                           while training so the model learns to live with the rounding)

Pruning. Magnitude pruning zeroes the weights with the smallest |w| (Han et al. 2015,
"Learning both Weights and Connections for Efficient Neural Networks"); random pruning
zeroes as many weights chosen at random, the control that shows magnitude carries
information. A short fine-tune after pruning lets the surviving weights make up for the
lost ones, as long as the pruned ones stay at zero: the mask is re-applied after every
update. Structured pruning removes whole hidden units instead, which makes the matrices a
dense kernel multiplies smaller, at the price of a coarser choice.

Quantisation-aware training (QAT). Rounding every weight to 2 bits after training (PTQ,
post-training quantisation, as in systems/microquant.py) damages this model badly: its
held-out loss goes from 2.30 to 2.65, worse than a table of letter-pair counts (2.43). QAT
rounds the weights in the forward pass while training ("fake quantisation") and lets the
gradient pass through the rounding as if it were the identity (the straight-through
estimator of Bengio et al. 2013, used for QAT by Jacob et al. 2018), so the float weights
behind the rounding move to where their rounded versions work.

Everything runs on plain floats: the model is a makemore-style MLP (Bengio et al. 2003's
neural language model, as in Karpathy's makemore) whose gradients are derived by hand
below and checked against finite differences in tests/test_microprune.py. Weights are
zeroed and rounded in ordinary Python lists: nothing here gets faster or smaller in memory,
the script only measures what a sparse or low-bit kernel would have to store.

Run: python systems/microprune.py    (about 24 s on the 2-core CI machine)
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
# Sizes are chosen so that every pruning share below is a whole number of weights in each
# layer and a whole number of hidden units (40 units: 25% = 10, 50% = 20, 75% = 30, 90% = 36).
CONTEXT = 3        # characters the model sees before the one it predicts
EMBED = 10         # width of each character's embedding; the hidden layer reads 3 * 10 = 30
HIDDEN = 40        # tanh units in the one hidden layer
BATCH_SIZE = 32    # examples (context, next character) per training step
NUM_STEPS = 800    # training steps of the dense model
LEARNING_RATE = 0.01      # Adam's step size while training the dense model
BETA1, BETA2, ADAM_EPS = 0.9, 0.99, 1e-8
FINETUNE_STEPS = 100      # steps of every fine-tune: after pruning, for QAT, for the control
FINETUNE_LR = 0.003       # smaller than training's: the model only has to repair damage
SPARSITIES = (0.0, 0.25, 0.5, 0.75, 0.9)   # share of the linear layers' weights set to 0
RANDOM_MASKS = 3   # random pruning is averaged over this many masks per sparsity
QAT_BITS = (3, 2)  # widths for PTQ and QAT; the criteria are read at the lower one
EVAL_NAMES = 250   # held-out names; 206 never seen in training remain (1,477 characters)
LOG_EVERY = 300    # training steps between progress lines

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


# === TOKENIZER AND EXAMPLES ===
# Character level: 26 letters plus one boundary token "." (id 0) that pads the start of a
# name and marks its end. Each name becomes one example per predicted character: "emma"
# gives (...) -> e, (..e) -> m, (.em) -> m, (emm) -> a, (mma) -> ".". The model sees a
# fixed window of CONTEXT characters, the makemore MLP's design (no attention, no state).


def build_vocab(names):
    chars = ["."] + sorted(set("".join(names)))   # sorted: the same ids on every machine
    return {c: i for i, c in enumerate(chars)}, len(chars)


def make_examples(names, stoi):
    examples = []
    for name in names:
        context = [0] * CONTEXT
        for ch in name + ".":
            target = stoi[ch]
            examples.append((tuple(context), target))
            context = context[1:] + [target]
    return examples


# === MODEL: A MAKEMORE MLP ON PLAIN FLOATS ===
# Parameters (every one a list of rows, so one Adam loop and one mask format serve all):
#   C  [27][EMBED]            the embedding table: row c is character c's vector
#   W1 [HIDDEN][3 * EMBED]    row j holds hidden unit j's incoming weights
#   b1 [1][HIDDEN]
#   W2 [27][HIDDEN]           row k holds output k's weights, one per hidden unit
#   b2 [1][27]
# Forward for one example with context (c1, c2, c3) and target y:
#   x = C[c1] ++ C[c2] ++ C[c3]          (concatenation, 30 numbers)
#   h_j = tanh(b1_j + W1[j] . x)
#   z_k = b2_k + W2[k] . h               (logits)
#   L = -log softmax(z)[y]
# The linear layers W1 and W2 (2,280 weights) are what gets pruned and quantised. The
# embedding table is a lookup with no multiply-adds to save, and biases are few; both stay
# float, as in systems/microquant.py.
LINEAR = ("W1", "W2")


def dot(a, b):
    # C-speed inner product: map() multiplies pairwise without a Python-level loop
    return sum(map(operator.mul, a, b))


def gaussian_matrix(rows, cols, std):
    return [[random.gauss(0.0, std) for _ in range(cols)] for _ in range(rows)]


def init_model(vocab_size):
    fan_in = CONTEXT * EMBED
    return {
        "C": gaussian_matrix(vocab_size, EMBED, 1.0),
        # tanh's gain 5/3 over sqrt(fan_in) (Kaiming init for tanh) keeps the units out of
        # saturation at the start, so they all learn
        "W1": gaussian_matrix(HIDDEN, fan_in, (5 / 3) / math.sqrt(fan_in)),
        "b1": [[0.0] * HIDDEN],
        # small output weights make the first logits nearly equal: loss starts near ln 27
        "W2": gaussian_matrix(vocab_size, HIDDEN, 0.05),
        "b2": [[0.0] * vocab_size],
    }


def copy_model(model):
    return {name: [row[:] for row in rows] for name, rows in model.items()}


def forward(model, contexts):
    """Inputs, hidden activations and softmax probabilities for a batch of contexts."""
    table, b1, b2 = model["C"], model["b1"][0], model["b2"][0]
    xs = [[v for c in ctx for v in table[c]] for ctx in contexts]
    hs = [[math.tanh(b + dot(w, x)) for w, b in zip(model["W1"], b1)] for x in xs]
    probs = []
    for h in hs:
        logits = [b + dot(w, h) for w, b in zip(model["W2"], b2)]
        top = max(logits)   # subtracting the max keeps exp() from overflowing
        exps = [math.exp(z - top) for z in logits]
        total = sum(exps)
        probs.append([e / total for e in exps])
    return xs, hs, probs


def mean_loss(model, examples):
    """Mean cross-entropy per predicted character: the held-out loss everything reports."""
    _, _, probs = forward(model, [ctx for ctx, _ in examples])
    return -sum(math.log(p[y]) for p, (_, y) in zip(probs, examples)) / len(examples)


# === HAND-DERIVED GRADIENTS ===
# A scalar Value graph with a node per multiply and per add would build about 150,000 nodes
# for one batch of 32 here. Done by hand on whole matrices, the chain rule builds none, and
# every sum runs at C speed inside dot(). For a batch of B examples, with p = softmax(z)
# and L the mean loss:
#   dL/dz_k      = (p_k - [k == y]) / B                     (dz, one row per example)
#   dL/dW2[k][j] = sum over the batch of dz_k * h_j         dL/db2_k = sum of dz_k
#   dL/dh_j      = sum_k dz_k * W2[k][j]
#   dL/da_j      = dL/dh_j * (1 - h_j^2)                    (a = pre-activation; tanh' = 1 - tanh^2)
#   dL/dW1[j][i] = sum over the batch of da_j * x_i          dL/db1_j = sum of da_j
#   dL/dx_i      = sum_j da_j * W1[j][i]
#   dL/dC[c][d] += dL/dx at the slot where character c sat   (a character used twice collects twice)
# Every sum over the batch is a dot product of two columns, so the matrices are transposed
# with zip(*rows) and each gradient entry is one dot() call.


def loss_and_grads(model, batch):
    contexts = [ctx for ctx, _ in batch]
    xs, hs, probs = forward(model, contexts)
    n = len(batch)
    loss = -sum(math.log(p[y]) for p, (_, y) in zip(probs, batch)) / n
    dz = []
    for p, (_, y) in zip(probs, batch):
        row = [pk / n for pk in p]
        row[y] -= 1.0 / n
        dz.append(row)
    dz_cols, h_cols, x_cols = list(zip(*dz)), list(zip(*hs)), list(zip(*xs))
    grads = {"W2": [[dot(dzk, hj) for hj in h_cols] for dzk in dz_cols],
             "b2": [[sum(dzk) for dzk in dz_cols]]}
    w2_cols = list(zip(*model["W2"]))
    da = [[dot(d, w2j) * (1.0 - hj * hj) for w2j, hj in zip(w2_cols, h)]
          for d, h in zip(dz, hs)]
    da_cols = list(zip(*da))
    grads["W1"] = [[dot(daj, xi) for xi in x_cols] for daj in da_cols]
    grads["b1"] = [[sum(daj) for daj in da_cols]]
    w1_cols = list(zip(*model["W1"]))
    grad_table = [[0.0] * EMBED for _ in model["C"]]
    for ctx, a in zip(contexts, da):
        dx = [dot(a, w1i) for w1i in w1_cols]
        for slot, c in enumerate(ctx):
            row = grad_table[c]
            for d in range(EMBED):
                row[d] += dx[slot * EMBED + d]
    grads["C"] = grad_table
    return loss, grads


# === TRAINING: ADAM, WITH HOOKS FOR MASKS AND FAKE QUANTISATION ===
# One loop serves the dense training, every fine-tune after pruning and QAT:
#   masks:     after each update, w = w * mask, so a pruned weight is exactly 0 again
#   quantise:  the forward and backward passes see the fake-quantised weights w_hat, and
#              the gradient they produce for w_hat is handed to the float weights w behind
#              them (the straight-through estimator, in the QAT section)
# Adam: m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g^2 ; w -= lr * m_hat / (sqrt(v_hat) + eps)


class Adam:
    def __init__(self, model):
        self.t = 0
        self.m = {k: [[0.0] * len(r) for r in rows] for k, rows in model.items()}
        self.v = {k: [[0.0] * len(r) for r in rows] for k, rows in model.items()}

    def step(self, model, grads, lr):
        self.t += 1
        # bias corrections: m and v start at 0, so early averages are scaled back up
        cm, cv = 1.0 - BETA1 ** self.t, 1.0 - BETA2 ** self.t
        for name, rows in model.items():
            for i, (w, g, m, v) in enumerate(zip(rows, grads[name], self.m[name],
                                                 self.v[name])):
                m = [BETA1 * mi + (1.0 - BETA1) * gi for mi, gi in zip(m, g)]
                v = [BETA2 * vi + (1.0 - BETA2) * gi * gi for vi, gi in zip(v, g)]
                self.m[name][i], self.v[name][i] = m, v
                rows[i] = [wi - lr * (mi / cm) / (math.sqrt(vi / cv) + ADAM_EPS)
                           for wi, mi, vi in zip(w, m, v)]


def apply_masks(model, masks):
    for name, mask in masks.items():
        model[name] = [[w * keep for w, keep in zip(row, mrow)]
                       for row, mrow in zip(model[name], mask)]


def train(model, batches, lr, masks=None, bits=None, label="", start=None):
    """Adam over the given batches; returns the model (changed in place) and the losses."""
    optimizer, losses = Adam(model), []
    for step, batch in enumerate(batches):
        if bits is None:
            loss, grads = loss_and_grads(model, batch)
        else:
            loss, grads = qat_loss_and_grads(model, batch, bits)
        # a linear decay to 0 settles the weights at the end instead of leaving them jumping
        optimizer.step(model, grads, lr * (1.0 - step / len(batches)))
        # A pruned weight at 0 still has a gradient (the input it multiplies is not 0), and
        # Adam moves it by about lr on its first step; the mask puts it back. (Masking the
        # gradient instead also works with a fresh Adam state; torch's prune does the
        # equivalent by computing weight = weight_orig * weight_mask before every forward.)
        if masks:
            apply_masks(model, masks)   # re-apply: pruned weights go back to exactly 0
        losses.append(loss)
        if start is not None and ((step + 1) % LOG_EVERY == 0 or step == 0):
            recent = losses[-100:]
            print(f"  {label}step {step + 1:4d}/{len(batches)} | training loss "
                  f"{sum(recent) / len(recent):.4f} | {time.time() - start:.1f}s")
    return model, losses


def sample_batches(examples, count):
    return [[random.choice(examples) for _ in range(BATCH_SIZE)] for _ in range(count)]


# === PRUNING: WHICH WEIGHTS TO ZERO ===
# A mask has the shape of its layer: 1.0 keeps a weight, 0.0 prunes it. Unstructured
# pruning chooses single weights; it is done per layer (layer-wise), so each of W1 and W2
# loses the same share. Why per layer and not one global threshold: W1 and W2 have
# different scales (W2's weights are the smaller), so one threshold strips W2 first: at 50%
# overall it takes 36% of W1 and 66% of W2, at 90% it takes 99% of W2, and the run prints
# that the global variant does worse at every sparsity. Per layer, random and magnitude
# pruning also remove the same counts from the same layers: a clean comparison.
# Signpost: torch.nn.utils.prune.l1_unstructured zeroes the given share of one tensor by
# smallest |w| and keeps weight_orig and weight_mask, recomputing weight = weight_orig *
# weight_mask in a forward pre-hook; prune.global_unstructured pools several tensors;
# prune.random_unstructured is the random control; prune.ln_structured removes whole
# channels by their Ln norm.


def prune_count(rows, sparsity):
    return round(sparsity * sum(len(r) for r in rows))


def mask_from_pruned(rows, pruned):
    """A mask with 0.0 at the flat indices in `pruned` (row-major order), 1.0 elsewhere."""
    flat = [1.0] * sum(len(r) for r in rows)
    for i in pruned:
        flat[i] = 0.0
    width = len(rows[0])
    return [flat[r * width:(r + 1) * width] for r in range(len(rows))]


def magnitude_mask(rows, sparsity):
    # Han et al. 2015: a weight's magnitude is a cheap stand-in for its importance. Removing
    # w changes its unit's input by w times the input it multiplies, so a small weight moves
    # the output least. Magnitude ignores how large that input is and how much the loss cares;
    # Optimal Brain Damage (LeCun, Denker and Solla 1990) ranks by second derivatives instead.
    flat = [abs(w) for row in rows for w in row]
    order = sorted(range(len(flat)), key=flat.__getitem__)
    return mask_from_pruned(rows, order[:prune_count(rows, sparsity)])


def random_mask(rows, sparsity, rng):
    size = sum(len(r) for r in rows)
    return mask_from_pruned(rows, rng.sample(range(size), prune_count(rows, sparsity)))


def global_magnitude_masks(model, sparsity):
    # one threshold over both layers: the smallest |w| of W1 and W2 pooled together
    pool = [(abs(w), name, r, c) for name in LINEAR
            for r, row in enumerate(model[name]) for c, w in enumerate(row)]
    pool.sort()
    masks = {name: [[1.0] * len(row) for row in model[name]] for name in LINEAR}
    for _, name, r, c in pool[:round(sparsity * len(pool))]:
        masks[name][r][c] = 0.0
    return masks


def structured_masks(model, sparsity):
    """Masks that remove whole hidden units: unit j's row of W1 and column of W2 together.

    Each unit owns 3 * EMBED incoming and 27 outgoing weights, the same count for every unit,
    so removing a share s of the units removes exactly a share s of W1 and W2's weights.
    Units are ranked by the L2 norm of all their weights, incoming and outgoing: a unit whose
    outgoing weights are small barely moves the logits when it goes (|h_j| <= 1), and one
    whose incoming weights are small is nearly a constant that the biases can stand in for.
    """
    w1, w2 = model["W1"], model["W2"]
    norms = [math.sqrt(sum(w * w for w in w1[j]) + sum(row[j] ** 2 for row in w2))
             for j in range(HIDDEN)]
    removed = set(sorted(range(HIDDEN), key=norms.__getitem__)[:round(sparsity * HIDDEN)])
    return {"W1": [[0.0 if j in removed else 1.0] * len(w1[j]) for j in range(HIDDEN)],
            "W2": [[0.0 if j in removed else 1.0 for j in range(HIDDEN)] for _ in w2]}, removed


def measured_share_kept(mask):
    entries = [keep for row in mask for keep in row]
    return sum(entries) / len(entries)


def pruned_copy(model, masks):
    pruned = copy_model(model)
    apply_masks(pruned, masks)
    return pruned


def measured_sparsity(model):
    """Share of W1 and W2's weights that are exactly zero, counted on the weights themselves."""
    weights = [w for name in LINEAR for row in model[name] for w in row]
    return sum(w == 0.0 for w in weights) / len(weights)


# === QUANTISATION: FAKE-QUANTISED WEIGHTS AND THE STRAIGHT-THROUGH ESTIMATOR ===
# Symmetric round-to-nearest with one scale per row (per output channel), as in
# systems/microquant.py: with b bits the codes are integers q in [-(2^(b-1)), 2^(b-1) - 1],
#   s = max|w_row| / (2^(b-1) - 1),   q = round(w / s),   w_hat = s * q
# At 3 bits a row keeps the 7 levels -3s..3s; at 2 bits only -s, 0 and s: every weight
# smaller than half the row's largest becomes 0, the rest become +-max. (Python's round()
# sends exact halves to the even integer; a trained float landing exactly on one is rare.)
# PTQ rounds the trained weights once. QAT keeps float "shadow" weights w and trains with
# w_hat = fake_quantise(w) in the forward pass. round() has derivative 0 almost everywhere,
# so the true gradient dL/dw would be 0 and nothing would learn; the straight-through
# estimator (STE) uses dL/dw := dL/dw_hat, as if w_hat = w. The scale s is treated as a
# constant (no gradient through max|w|); learned-scale methods such as LSQ (Esser et al.
# 2020) train it too.
# Signpost: torchao's QAT inserts fake quantisers into linear layers ("prepare"), trains,
# then swaps in real low-bit weights ("convert"); torch.ao.quantization's FakeQuantize
# modules do the same for the older eager and FX flows. Both store the codes as integers
# and run integer or dequantising kernels; here w_hat is just a float list.


def quantise_row(row, bits):
    qmax = 2 ** (bits - 1) - 1
    scale = max(abs(w) for w in row) / qmax
    if scale == 0.0:
        return row[:]
    return [scale * max(-qmax - 1, min(qmax, round(w / scale))) for w in row]


def quantised_copy(model, bits):
    quantised = copy_model(model)
    for name in LINEAR:
        quantised[name] = [quantise_row(row, bits) for row in model[name]]
    return quantised


def straight_through(grad_rows):
    # d w_hat / d w taken as 1: the gradient for the rounded weights goes to the float ones.
    # With an absmax scale no weight lies outside the grid, so nothing is cut off here.
    # PyTorch's fake quantisers (fake_quantize_per_tensor_affine_cachemask) keep a mask of
    # which values fell inside [quant_min, quant_max] and pass the gradient only there.
    return [row[:] for row in grad_rows]


def qat_loss_and_grads(model, batch, bits):
    loss, grads = loss_and_grads(quantised_copy(model, bits), batch)
    for name in LINEAR:
        grads[name] = straight_through(grads[name])
    return loss, grads


# === PICTURES ===


def ascii_chart(curves, sparsities, height=16, col=11):
    """Held-out loss (rows, top = worst) against sparsity (columns), one letter per curve."""
    values = [v for _, _, ys in curves for v in ys if math.isfinite(v)]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    grid = [[" "] * (col * len(sparsities)) for _ in range(height)]
    for letter, _, ys in curves:
        for i, y in enumerate(ys):
            if not math.isfinite(y):
                continue
            r = height - 1 - round((y - low) / span * (height - 1))
            c = i * col + col // 2
            grid[r][c] = letter if grid[r][c] in (" ", letter) else "*"
    lines = []
    for r, cells in enumerate(grid):
        level = high - r * span / (height - 1)
        lines.append(f"  {level:6.3f} |" + "".join(cells).rstrip())
    lines.append("         +" + "-" * (col * len(sparsities)))
    lines.append("          " + "".join(f"{s:^{col}.0%}" for s in sparsities))
    lines.append("          sparsity (share of W1 and W2's weights set to 0)")
    legend = [f"{letter} = {name}" for letter, name, _ in curves] + ["* = several"]
    for first in range(0, len(legend), 3):
        lines.append("          " + "   ".join(legend[first:first + 3]))
    return "\n".join(lines)


def bigram_loss(train_examples, eval_examples, vocab_size):
    """Held-out loss of a count table of (previous character -> next), add-one smoothed."""
    counts = [[1] * vocab_size for _ in range(vocab_size)]
    for ctx, y in train_examples:
        counts[ctx[-1]][y] += 1
    totals = [sum(row) for row in counts]
    return -sum(math.log(counts[ctx[-1]][y] / totals[ctx[-1]])
                for ctx, y in eval_examples) / len(eval_examples)


# === EXPERIMENT 1: UNSTRUCTURED PRUNING, MAGNITUDE AGAINST RANDOM ===
# Prune without retraining and look at the damage. If magnitude carried no information,
# magnitude pruning would do as badly as random pruning of the same share; it does far
# better, because most of the function lives in a minority of large weights. Random
# pruning is averaged over RANDOM_MASKS masks, since one mask can be lucky or unlucky.


def magnitude_vs_random(model, heldout, rng):
    magnitude, random_avg, global_mag, masks_by_sparsity = [], [], [], {}
    for s in SPARSITIES:
        masks = {name: magnitude_mask(model[name], s) for name in LINEAR}
        masks_by_sparsity[s] = masks
        if s == 0.0:   # nothing pruned: every method is the dense model itself
            dense = mean_loss(model, heldout)
            magnitude.append(dense), random_avg.append(dense), global_mag.append(dense)
            continue
        magnitude.append(mean_loss(pruned_copy(model, masks), heldout))
        global_masks = global_magnitude_masks(model, s)
        global_mag.append(mean_loss(pruned_copy(model, global_masks), heldout))
        # how the one global threshold splits the pruning between the two layers
        global_split = [1.0 - measured_share_kept(global_masks[name]) for name in LINEAR]
        trials = [mean_loss(pruned_copy(model, {name: random_mask(model[name], s, rng)
                                                for name in LINEAR}), heldout)
                  for _ in range(RANDOM_MASKS)]
        random_avg.append(sum(trials) / len(trials))
        print(f"  {s:4.0%} sparsity | magnitude {magnitude[-1]:.4f} | random (mean of "
              f"{RANDOM_MASKS}) {random_avg[-1]:.4f} | global magnitude {global_mag[-1]:.4f} "
              f"(prunes {global_split[0]:.0%} of W1, {global_split[1]:.0%} of W2)")
    return magnitude, random_avg, global_mag, masks_by_sparsity


# === EXPERIMENT 2: FINE-TUNING AFTER PRUNING ===
# The surviving weights were trained alongside the pruned ones; a short fine-tune lets them
# take over the pruned ones' work. The mask is re-applied after every update, so a pruned
# weight that the gradient would move is put back to 0 at once (Han et al. 2015 retrain the
# same way, with pruned connections kept at zero). Every fine-tune runs the same
# FINETUNE_STEPS batches in the same order, so two fine-tuned models differ only in what was
# pruned. The yardstick is the dense model fine-tuned on those same batches: the pruned
# model gets no training the dense one did not get.
# Signpost: iterative pruning (prune a little, retrain, repeat) reaches higher sparsity than
# one shot, as Han et al. do; the lottery ticket hypothesis (Frankle and Carbin 2019) goes
# further and retrains the surviving weights from their values at initialisation.


def finetune_pruned(model, masks, batches):
    tuned = pruned_copy(model, masks)
    train(tuned, batches, FINETUNE_LR, masks=masks)
    return tuned


def finetune_after_pruning(model, masks_by_sparsity, magnitude, dense_tuned_loss, heldout,
                           batches, rng, start):
    tuned_losses, tuned_sparsity = [dense_tuned_loss], [0.0]
    for s in SPARSITIES[1:]:
        tuned = finetune_pruned(model, masks_by_sparsity[s], batches)
        tuned_losses.append(mean_loss(tuned, heldout))
        # counted on the weights themselves, not read off the mask: a weight that grew
        # back during the fine-tune shows up here
        tuned_sparsity.append(measured_sparsity(tuned))
        print(f"  {s:4.0%} magnitude + fine-tune {tuned_losses[-1]:.4f} (before "
              f"{magnitude[SPARSITIES.index(s)]:.4f}); zero weights after: "
              f"{tuned_sparsity[-1]:.1%} | {time.time() - start:.1f}s")
    # For contrast, the same fine-tune after random pruning: can training repair that too?
    masks = {name: random_mask(model[name], 0.5, rng) for name in LINEAR}
    random_tuned = mean_loss(finetune_pruned(model, masks, batches), heldout)
    print(f"  50% random + fine-tune {random_tuned:.4f} (one mask)")
    return tuned_losses, tuned_sparsity, random_tuned


# === EXPERIMENT 3: STRUCTURED PRUNING OF WHOLE HIDDEN UNITS ===
# Unstructured sparsity leaves W1 and W2 the same shape with zeros scattered through them;
# a dense matrix multiply does the same work for a zero as for any weight, so the speed-up
# needs sparse kernels and high sparsity. Removing whole hidden units instead makes both
# matrices genuinely smaller (40 units -> 20 is a 30x20 and a 20x27 matrix), which any
# hardware runs faster. The price: a unit goes with all its weights, important or not.
# Signpost: GPUs sit between the two: NVIDIA's Ampere sparse tensor cores run a "2:4"
# pattern (two zeros in every four consecutive weights) at up to twice the dense speed.


def structured_pruning(model, dense_loss, dense_tuned_loss, heldout, batches, start):
    structured, structured_tuned = [], [dense_tuned_loss]
    for s in SPARSITIES:
        masks, removed = structured_masks(model, s)
        structured.append(mean_loss(pruned_copy(model, masks), heldout) if s > 0
                          else dense_loss)
        line = (f"  {s:4.0%} of weights = {len(removed):2d} of {HIDDEN} units removed | "
                f"held-out {structured[-1]:.4f}")
        if s > 0:
            structured_tuned.append(mean_loss(finetune_pruned(model, masks, batches),
                                              heldout))
            line += f" | after fine-tune {structured_tuned[-1]:.4f}"
        print(line + f" | {time.time() - start:.1f}s")
    return structured, structured_tuned


# === EXPERIMENT 4: QUANTISATION-AWARE TRAINING AGAINST POST-TRAINING ROUNDING ===
# Three 2-bit (and 3-bit) models from the same trained weights:
#   PTQ:          round the trained weights                       (no training)
#   PTQ after FT: fine-tune in float on the fine-tuning batches, then round (the control:
#                 the same extra training as QAT, without seeing the rounding)
#   QAT:          fine-tune on the same batches with fake-quantised weights, then round
# QAT is scored against the better of the two PTQ models.


def quantisation_experiment(model, dense_tuned, heldout, batches, start):
    quant = {}
    for bits in QAT_BITS:
        ptq = mean_loss(quantised_copy(model, bits), heldout)
        ptq_tuned = mean_loss(quantised_copy(dense_tuned, bits), heldout)
        qat_model = train(copy_model(model), batches, FINETUNE_LR, bits=bits)[0]
        qat = mean_loss(quantised_copy(qat_model, bits), heldout)
        quant[bits] = (ptq, ptq_tuned, qat)
        print(f"  {bits} bits | PTQ {ptq:.4f} | PTQ after a float fine-tune {ptq_tuned:.4f} | "
              f"QAT ({len(batches)} steps) {qat:.4f} | {time.time() - start:.1f}s")
    return quant


def share(part, whole):
    # a repaired share; with no damage to repair there is no share (NaN fails the table)
    return part / whole if whole else math.nan


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("held-out loss, dense MLP vs a bigram count table", "dense_loss", "<", "bigram_loss"),
    ("50% sparsity: random minus magnitude held-out loss", "magnitude_margin_50", ">", 0.1),
    ("50% magnitude + fine-tune minus dense + same fine-tune", "finetuned_gap_50", "<", 0.05),
    ("50%: share of the pruning damage the fine-tune repairs", "finetune_recovered_50", ">",
     0.25),
    ("share of zero weights after the 50% fine-tune", "finetuned_sparsity_50", ">=", 0.5),
    ("lowest width tried: better PTQ minus QAT loss", "qat_margin", ">", 0.1),
    ("lowest width tried: share of PTQ's damage QAT repairs", "qat_recovered_share", ">", 0.3),
]
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
           "==": operator.eq}


def print_criteria(results):
    print(f"\n{'criterion':<56} {'measured':>12} {'threshold':>14}  result")
    for description, key, op, target in CRITERIA:
        value = results[key]
        threshold = results[target] if isinstance(target, str) else target
        # A non-finite value fails every row: NaN compares False with anything, but
        # inf would pass a ">" row, so finiteness is checked explicitly.
        finite = math.isfinite(value) and math.isfinite(threshold)
        verdict = "PASS" if finite and COMPARE[op](value, threshold) else "FAIL"
        print(f"{description:<56} {value:>12.6g} {op:>2} {threshold:<11.6g}  {verdict}")


# === MAIN ===


def main():
    random.seed(42)  # every random draw below (init, data order, masks) follows from this
    start = time.time()
    names = load_names()
    # The file is sorted by popularity; shuffling mixes common and rare names everywhere.
    random.shuffle(names)
    # The last EVAL_NAMES shuffled names are held out; a held-out name that also occurs
    # among the training names (names.txt repeats a few) is dropped.
    train_names = names[:-EVAL_NAMES]
    seen = set(train_names)
    heldout_names = [n for n in names[-EVAL_NAMES:] if n not in seen]
    stoi, vocab_size = build_vocab(names)
    train_examples = make_examples(train_names, stoi)
    heldout = make_examples(heldout_names, stoi)

    print("=== TRAINING THE DENSE MODEL ===")
    model = init_model(vocab_size)
    n_linear = sum(len(r) for name in LINEAR for r in model[name])
    print(f"{len(train_examples)} training examples, {len(heldout)} held-out "
          f"({len(heldout_names)} names); {n_linear} weights in W1 and W2 (the prunable "
          f"ones), {sum(len(r) for rows in model.values() for r in rows)} parameters in all")
    train(model, sample_batches(train_examples, NUM_STEPS), LEARNING_RATE, label="dense ",
          start=start)
    dense_loss = mean_loss(model, heldout)
    bigram = bigram_loss(train_examples, heldout, vocab_size)
    print(f"held-out loss: dense MLP {dense_loss:.4f}, bigram table {bigram:.4f}, "
          f"uniform ln 27 = {math.log(27):.4f}")
    # One list of fine-tuning batches, shared by every fine-tune below.
    finetune_batches = sample_batches(train_examples, FINETUNE_STEPS)
    dense_tuned = train(copy_model(model), finetune_batches, FINETUNE_LR)[0]
    dense_tuned_loss = mean_loss(dense_tuned, heldout)
    print(f"dense model fine-tuned {FINETUNE_STEPS} more steps (the yardstick for every "
          f"fine-tune): {dense_tuned_loss:.4f} | {time.time() - start:.1f}s")

    print("\n=== UNSTRUCTURED PRUNING: MAGNITUDE VS RANDOM (no fine-tune) ===")
    rng = random.Random(random.random())   # the random masks' own stream, seeded from 42
    magnitude, random_avg, global_mag, masks_by_sparsity = magnitude_vs_random(
        model, heldout, rng)

    print(f"\n=== FINE-TUNING AFTER PRUNING ({FINETUNE_STEPS} steps, mask re-applied after "
          f"every update) ===")
    magnitude_tuned, sparsity_tuned, random_tuned_50 = finetune_after_pruning(
        model, masks_by_sparsity, magnitude, dense_tuned_loss, heldout, finetune_batches,
        rng, start)

    print("\n=== STRUCTURED PRUNING: WHOLE HIDDEN UNITS, SMALLEST NORM FIRST ===")
    structured, structured_tuned = structured_pruning(model, dense_loss, dense_tuned_loss,
                                                      heldout, finetune_batches, start)

    print("\nHeld-out loss against sparsity (fine-tuned columns: 0% is the dense model "
          "fine-tuned the same steps):")
    print(f"  {'sparsity':>8} {'magnitude':>10} {'+ tune':>8} {'random':>8} "
          f"{'global':>8} {'units':>8} {'+ tune':>8}")
    for i, s in enumerate(SPARSITIES):
        print(f"  {s:8.0%} {magnitude[i]:10.4f} {magnitude_tuned[i]:8.4f} "
              f"{random_avg[i]:8.4f} {global_mag[i]:8.4f} {structured[i]:8.4f} "
              f"{structured_tuned[i]:8.4f}")
    print()
    print(ascii_chart([("M", "magnitude", magnitude),
                       ("F", "magnitude + fine-tune", magnitude_tuned),
                       ("R", "random", random_avg), ("U", "units", structured),
                       ("T", "units + fine-tune", structured_tuned)], SPARSITIES))

    print("\n=== QUANTISATION: POST-TRAINING ROUNDING VS QUANTISATION-AWARE TRAINING ===")
    quant = quantisation_experiment(model, dense_tuned, heldout, finetune_batches, start)
    ptq, ptq_tuned, qat = quant[min(QAT_BITS)]
    # QAT is compared with the better of the two PTQ models, so its margin cannot come from
    # the extra steps alone (min() would hide a NaN, so a NaN is passed on explicitly)
    best_ptq = math.nan if math.isnan(ptq + ptq_tuned) else min(ptq, ptq_tuned)

    i50 = SPARSITIES.index(0.5)
    results = {
        "dense_loss": dense_loss,
        "bigram_loss": bigram,
        "dense_finetuned_loss": dense_tuned_loss,
        "magnitude_loss_50": magnitude[i50],
        "random_loss_50": random_avg[i50],
        "global_magnitude_loss_50": global_mag[i50],
        "magnitude_margin_50": random_avg[i50] - magnitude[i50],
        "finetuned_loss_50": magnitude_tuned[i50],
        "finetuned_gap_50": magnitude_tuned[i50] - dense_tuned_loss,
        # share of the pruning damage (loss above the equally fine-tuned dense model) that the
        # fine-tune repairs: 0 for a fine-tune that changes nothing
        "finetune_recovered_50": share(magnitude[i50] - magnitude_tuned[i50],
                                       magnitude[i50] - dense_tuned_loss),
        "finetuned_sparsity_50": sparsity_tuned[i50],
        "random_finetuned_loss_50": random_tuned_50,
        "structured_loss_50": structured[i50],
        "structured_finetuned_loss_50": structured_tuned[i50],
        "ptq_loss": ptq,
        "ptq_finetuned_loss": ptq_tuned,
        "qat_loss": qat,
        "qat_margin": best_ptq - qat,
        # share of the damage done by low-bit rounding (the better PTQ loss above the dense
        # model's) that QAT repairs: 1 would be a 2-bit model as good as the float one
        "qat_recovered_share": share(best_ptq - qat, best_ptq - dense_loss),
    }
    for bits in QAT_BITS:
        for label, value in zip(("ptq", "ptq_finetuned", "qat"), quant[bits]):
            results[f"{label}_loss_{bits}bit"] = value
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microprune.md")
    return results


if __name__ == "__main__":
    main()
