"""How meaning becomes geometry: contrastive embedding learning (InfoNCE) over character n-grams.

An embedding model turns a string into a unit vector so that "similar" strings point in similar
directions and unrelated strings point in unrelated ones. Nobody labels which names are
similar. Instead the model is shown two slightly damaged copies of the same name (a letter
dropped, added or changed, or two letters swapped) and is asked to pick its partner out of
a batch full of other names. The InfoNCE loss scores that multiple-choice test; minimising
it pulls the two copies together and pushes every other name away. The same recipe, with
bigger encoders and text or image pairs, trains SimCLR, CLIP and modern sentence-embedding
models.

The encoder here is as small as it can be: hashed character n-grams, one linear projection,
L2 normalisation. The normalisation is not linear, but the whole graph is small and fixed
(sum rows, normalise, compare, softmax), so the gradient of the loss is derived by hand on
plain floats below, with every step of the chain rule written next to the variable that holds
it. The run ends by checking it against finite differences of the loss written plainly from
its formula (the last row of its criteria table), and the tests check every entry of it.

Run: python foundational/microembedding.py    (about 14 s on the 2-core CI machine)
"""
import hashlib
import heapq
import math
import operator
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request

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


# === HYPERPARAMETERS ===
# main() reads these at call time, so a test can shrink a run by assigning new values.
NUM_BUCKETS = 4096     # rows of W for 6,692 distinct 1- to 3-grams: most rows are shared
EMBED_DIM = 32         # width of an embedding vector (see the note below)
NGRAM_SIZES = (1, 2, 3)
BATCH_SIZE = 64        # names per step; each name's partner competes with 63 negatives
TEMPERATURE = 0.1      # divides the cosines; small values make the softmax picky
LEARNING_RATE = 0.02   # Adam's step size; see the OPTIMISER section for how far entries move
NUM_STEPS = 250
INIT_STD = 0.2         # std of W's initial entries; the L2 normalisation divides scale out
HELD_OUT = 3000        # names never trained on; every measurement uses only these
NUM_EVAL_PAIRS = 500   # pairs for the positive and random cosine measurements
RETRIEVAL_POOL = 2000  # held-out names searched for nearest neighbours
NUM_QUERIES = 300      # held-out names whose nearest neighbour is looked up
LOG_EVERY = 50
ALPHABET = "abcdefghijklmnopqrstuvwxyz"  # letters an inserted or substituted typo draws from
EXAMPLE_NAMES = ("anna", "michael", "emma", "olivia", "christopher", "zoe")
# Why 32 dimensions: a random projection of the n-gram counts preserves their cosines only up
# to noise that shrinks as the width grows. At 64 dimensions even the untrained W meets the
# neighbour criterion in our runs; at 32 it does not, so training has something to prove.

# Adam constants (Kingma & Ba 2015 defaults).
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPS = 1e-8


# === FEATURES: HASHED CHARACTER N-GRAMS ===
# A name becomes a bag of its character n-grams: "^ann$" (with "^" and "$" marking the start
# and end) yields the 1-grams ^ a n n $, the 2-grams ^a an nn n$ and the 3-grams ^an ann nn$.
# The markers let "^an" (a name that starts with "an") differ from "an" in the middle.
# No tokenizer and no vocabulary: any string, even one never seen, has features. Two names
# that share many n-grams share many features, which is the raw material for similarity.
#
# The hashing trick: instead of building a dictionary of every n-gram, each n-gram is hashed
# to one of NUM_BUCKETS rows, and unrelated n-grams that land in the same row share it. With
# 4,096 buckets for the 6,692 n-grams of names.txt, sharing is the rule: only about 20% of
# the n-grams have a row to themselves. It costs little here: with 65,536 buckets (95% alone)
# the neighbour edit ratio below moved only from 0.457 to 0.467 in our runs.
# Signpost: fastText hashes character n-grams into ~2 million buckets the same way.

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193


def fnv1a_32(text):
    """32-bit FNV-1a hash of the UTF-8 bytes of text.

    Why not Python's built-in hash()? For str it is salted with a random key chosen when the
    interpreter starts (PYTHONHASHSEED), so the same n-gram would land in a different bucket
    in every process: a saved W would be meaningless the next run. FNV-1a is a fixed
    arithmetic recipe, so "an" maps to the same bucket on every machine, every time.
    """
    h = FNV_OFFSET
    for byte in text.encode("utf-8"):
        h ^= byte                            # fold in one byte...
        h = (h * FNV_PRIME) & 0xFFFFFFFF     # ...then scramble, keeping 32 bits
    return h


def ngram_features(name, num_buckets, bucket_cache=None):
    """The bucket index of every 1-, 2- and 3-gram of ^name$ (repeats kept, so counts count)."""
    padded = "^" + name + "$"
    buckets = []
    for n in NGRAM_SIZES:
        for start in range(len(padded) - n + 1):
            gram = padded[start:start + n]
            # A memo dict saves rehashing the same few thousand n-grams every step.
            if bucket_cache is not None and gram in bucket_cache:
                buckets.append(bucket_cache[gram])
                continue
            bucket = fnv1a_32(gram) % num_buckets
            if bucket_cache is not None:
                bucket_cache[gram] = bucket
            buckets.append(bucket)
    return buckets


# === AUGMENTATION: MAKING POSITIVE PAIRS ===
# The only supervision is "these two strings came from the same name". A view is the name
# with one typo of the four kinds Damerau-Levenshtein distance counts: a letter deleted,
# inserted or substituted, or two neighbouring letters swapped. Whatever the augmentation
# changes, the model learns to ignore, so this choice *defines* what "similar" will mean.
# Deletion, insertion and substitution are exactly the edits the Levenshtein yardstick
# below counts. In our runs, training on deletions and swaps alone left the neighbour edit
# ratio near 0.49; adding insertions and substitutions brought it to about 0.45.
# Signpost: SimCLR augments images with crops, colour jitter and blur; sentence-embedding
# models pair a sentence with a paraphrase of it, or (SimCSE) with itself passed through the
# network under a different dropout mask.

def augment(name):
    """Return name with one random typo: delete, insert or substitute a letter, or swap two."""
    if len(name) < 2:
        return name
    edit = random.randrange(4)
    if edit == 0:
        cut = random.randrange(len(name))
        return name[:cut] + name[cut + 1:]
    if edit == 1:
        spot = random.randrange(len(name) + 1)
        return name[:spot] + random.choice(ALPHABET) + name[spot:]
    if edit == 2:
        spot = random.randrange(len(name))
        return name[:spot] + random.choice(ALPHABET) + name[spot + 1:]
    left = random.randrange(len(name) - 1)
    return name[:left] + name[left + 1] + name[left] + name[left + 2:]


# === ENCODER: LINEAR PROJECTION + L2 NORMALISATION ===
# Multiplying W by a sparse count vector x is the same as adding the rows of W that x
# switches on:  u = W^T x = sum_{k in features} W[k]   (u = raw, W = weights)
# Dividing by the length puts every name on the unit sphere:  e = u / ||u||   (e = embedding)
# On the sphere only direction matters, and the dot product of two embeddings is their
# cosine similarity. Signpost: sentence-embedding models replace the sum of rows with a
# transformer over subword tokens, but most of them still L2-normalise the output.

def encode_raw(W, buckets):
    """u = sum of the rows of W that the name's n-grams select."""
    return [sum(column) for column in zip(*[W[bucket] for bucket in buckets])]


def l2_normalize(raw):
    """Return (e, r) with r = ||u|| and e = u / r."""
    norm = math.sqrt(sum(x * x for x in raw)) or 1e-12  # an all-zero u would divide by zero
    return [x / norm for x in raw], norm


def l2_normalize_backward(unit, norm, grad_unit):
    """Chain rule through e = u / ||u||.

    The Jacobian is  de/du = (I - e e^T) / ||u||,  so
        dL/du = (g - (g . e) e) / ||u||      (g = grad_unit = dL/de, e = unit, ||u|| = norm)
    Intuition: stretching u along its own direction e does not move e at all, so the part of
    g along e is removed; only the sideways part, shrunk by the length, reaches u.
    """
    along = sum(map(operator.mul, grad_unit, unit))
    return [(g - along * e) / norm for g, e in zip(grad_unit, unit)]


def embed(W, name, bucket_cache=None):
    return l2_normalize(encode_raw(W, ngram_features(name, len(W), bucket_cache)))[0]


def cosine(a, b):
    """cos(a, b) = a . b / (||a|| ||b||); our embeddings are unit vectors, so a . b is enough."""
    return sum(map(operator.mul, a, b))


# === INFONCE LOSS AND ITS HAND-DERIVED GRADIENT ===
# A batch holds B names; view a_i and view b_i come from name i. Score every pair:
#     S[i][j] = cos(a_i, b_j) / tau            (S = logits, tau = temperature)
# Row i of S is a B-way multiple-choice question "which b is a_i's partner?"; the answer is
# j = i. InfoNCE is the cross-entropy of that question:
#     L_row = (1/B) sum_i [ logsumexp_j S[i][j] - S[i][i] ]
# We ask it in both directions (the columns ask "which a is b_j's partner?") and average:
#     L = (L_row + L_col) / 2                  -- symmetric InfoNCE, as CLIP uses
# The other B - 1 names in the batch serve as negatives for free ("in-batch negatives").
# Signpost: SimCLR's NT-Xent also treats the other views on the anchor's own side as
# negatives, so each anchor has 2B - 2 of them in all (B - 1 on each side, where we use only
# the B - 1 on the other side); CLIP uses this symmetric form with a learned temperature and
# batches of 32,768; sentence-embedding models add "hard negatives" that look similar but mean
# something else: supervised SimCSE takes them from labelled NLI contradictions, E5 mines
# them. In-batch negatives have a known cost: about a third of our
# batches of 64 hold a pair of names one edit apart (anna, anne), and that pair is pushed
# apart as if the names were unrelated.
#
# Temperature: cosines live in [-1, 1]; dividing by tau = 0.1 stretches them to [-10, 10]
# so the softmax can become confident. A smaller tau punishes near-misses harder.

def log_softmax(logits):
    """Numerically stable log softmax:  log softmax(z)[k] = z[k] - logsumexp(z).

    exp(1000) overflows a float, but logsumexp(z) = c + log sum_k exp(z[k] - c) for any
    constant c. With c = max(z) every exponent is <= 0, so exp() stays in (0, 1] and the sum
    is at least 1 (the largest term is exp(0)): no overflow, and no log(0) either.
    """
    top = max(logits)
    log_total = top + math.log(sum(math.exp(z - top) for z in logits))
    return [z - log_total for z in logits]


def softmax(logits):
    return [math.exp(x) for x in log_softmax(logits)]


def infonce_loss_and_grad(W, buckets_a, buckets_b, temperature):
    """Symmetric InfoNCE loss of a batch and its gradient with respect to W.

    buckets_a[i] and buckets_b[i] are the n-gram buckets of the two views of name i.
    Returns (loss, grad_rows) where grad_rows maps a row index of W to dL/dW[row]; rows that
    no view touched have zero gradient and are absent. The encoder is linear, so the whole
    backward pass is four short steps, each written with the equation it implements.
    """
    B = len(buckets_a)
    dim = len(W[0])
    # Forward:  u = sum of selected rows;  e = u / ||u||.
    unit_a, norm_a = zip(*[l2_normalize(encode_raw(W, buckets)) for buckets in buckets_a])
    unit_b, norm_b = zip(*[l2_normalize(encode_raw(W, buckets)) for buckets in buckets_b])
    # S[i][j] = a_i . b_j / tau      (cosine() written out inline: this is the hot loop)
    logits = [[sum(map(operator.mul, ai, bj)) / temperature for bj in unit_b] for ai in unit_a]
    row_logp = [log_softmax(row) for row in logits]                # log P[i][j]
    col_logp = [log_softmax(list(col)) for col in zip(*logits)]    # col_logp[j][i] = log Q[i][j]
    # L = (L_row + L_col) / 2,  L_row = -(1/B) sum_i log P[i][i],  L_col likewise with Q.
    loss = -sum(row_logp[i][i] + col_logp[i][i] for i in range(B)) / (2 * B)

    # Backward step 1, into the cosines. For cross-entropy, dL/dz = softmax(z) - onehot(y).
    # Row i contributes (P[i][j] - [i == j]) / B, column j contributes (Q[i][j] - [i == j]) / B,
    # and the 1/2 of the average halves both:
    #     G[i][j] = dL/dS[i][j] = (P[i][j] + Q[i][j] - 2 [i == j]) / (2B)
    # (P = softmax along a row of S, Q = softmax down a column.) S = cos / tau, so
    #     dL/dcos[i][j] = G[i][j] / tau                            (grad_cos)
    scale = 1.0 / (2 * B * temperature)
    grad_cos = [[(math.exp(row_logp[i][j]) + math.exp(col_logp[j][i]) - 2.0 * (i == j)) * scale
                 for j in range(B)] for i in range(B)]

    # Backward step 2, into the unit vectors. cos[i][j] = a_i . b_j, so
    #     dL/da_i = sum_j grad_cos[i][j] b_j        dL/db_j = sum_i grad_cos[i][j] a_i
    # Intuition: a_i is pulled toward its partner b_i (grad_cos[i][i] < 0) and pushed away
    # from every other b_j in proportion to how strongly the softmax confused it with b_j.
    b_by_dim = list(zip(*unit_b))                               # b_by_dim[d][j] = b_j[d]
    a_by_dim = list(zip(*unit_a))
    grad_cos_t = list(zip(*grad_cos))                           # grad_cos_t[j][i] = grad_cos[i][j]
    grad_unit_a = [[sum(map(operator.mul, grad_cos[i], b_by_dim[d])) for d in range(dim)]
                   for i in range(B)]
    grad_unit_b = [[sum(map(operator.mul, grad_cos_t[j], a_by_dim[d])) for d in range(dim)]
                   for j in range(B)]

    # Step 3, through the normalisation: dL/du = (g - (g . e) e) / ||u||.
    # Step 4, into W: u = sum_k W[k], so every row a view used receives that view's dL/du,
    # once per occurrence (a name with two "n"s adds the gradient to the "n" row twice).
    grad_rows = {}
    views = zip(buckets_a + buckets_b, unit_a + unit_b, norm_a + norm_b,
                grad_unit_a + grad_unit_b)
    for buckets, unit, norm, grad_unit in views:
        grad_raw = l2_normalize_backward(unit, norm, grad_unit)
        for bucket in buckets:
            if bucket in grad_rows:
                grad_rows[bucket] = list(map(operator.add, grad_rows[bucket], grad_raw))
            else:
                grad_rows[bucket] = grad_raw
    return loss, grad_rows


# === GRADIENT CHECK: THE HAND DERIVATION AGAINST THE FORMULA ===
# A hand-derived backward pass can be wrong and still train. In our runs, a version that
# treats the normalisation as the identity (dL/du = dL/de, step 3 skipped) still reached a
# positive cosine of 0.90 and a random cosine of 0.025: Adam rescales every entry's step, so
# a gradient that merely points roughly downhill makes progress. The training numbers alone
# cannot tell a right derivation from a nearly right one, so the run checks it directly.
# reference_loss() is InfoNCE written plainly from its definition, sharing no code with the
# training path; a central difference of it estimates each derivative:
#     dL/dW[k][d] ~ (L(W[k][d] + h) - L(W[k][d] - h)) / (2h)      error O(h^2)
# and the check reports the largest gap between that estimate and the hand-derived value,
# divided by the largest estimate, on a small batch of held-out names.
GRADCHECK_NAMES = 8      # names in the check's batch
GRADCHECK_ENTRIES = 24   # entries of W whose derivative is estimated (two losses each)
GRADCHECK_H = 1e-5       # step of the central difference


def reference_loss(W, buckets_a, buckets_b, temperature):
    """Symmetric InfoNCE straight from the formula: mean of the row and column cross-entropies."""
    def unit(buckets):
        raw = [sum(W[k][d] for k in buckets) for d in range(len(W[0]))]
        length = math.sqrt(sum(x * x for x in raw))
        return [x / length for x in raw]

    a = [unit(buckets) for buckets in buckets_a]
    b = [unit(buckets) for buckets in buckets_b]
    n = len(a)
    S = [[sum(x * y for x, y in zip(a[i], b[j])) / temperature for j in range(n)]
         for i in range(n)]
    rows = sum(math.log(sum(math.exp(S[i][j]) for j in range(n))) - S[i][i] for i in range(n))
    cols = sum(math.log(sum(math.exp(S[i][j]) for i in range(n))) - S[j][j] for j in range(n))
    return (rows + cols) / (2 * n)


def gradient_check(W, names, bucket_cache):
    """Largest |hand - finite difference| / largest |finite difference| over sampled entries."""
    batch = random.sample(names, GRADCHECK_NAMES)
    buckets_a = [ngram_features(augment(n), len(W), bucket_cache) for n in batch]
    buckets_b = [ngram_features(augment(n), len(W), bucket_cache) for n in batch]
    _, grad_rows = infonce_loss_and_grad(W, buckets_a, buckets_b, TEMPERATURE)
    touched = [(row, d) for row in sorted({k for bk in buckets_a + buckets_b for k in bk})
               for d in range(len(W[0]))]
    gaps, sizes = [], []
    for row, d in random.sample(touched, GRADCHECK_ENTRIES):
        saved = W[row][d]
        W[row][d] = saved + GRADCHECK_H
        up = reference_loss(W, buckets_a, buckets_b, TEMPERATURE)
        W[row][d] = saved - GRADCHECK_H
        down = reference_loss(W, buckets_a, buckets_b, TEMPERATURE)
        W[row][d] = saved
        numeric = (up - down) / (2 * GRADCHECK_H)
        hand = grad_rows[row][d] if row in grad_rows else 0.0
        gaps.append(abs(hand - numeric))
        sizes.append(abs(numeric))
    # max() would skip a NaN that is not first (max(0.0, nan) is 0.0): a non-finite gradient
    # or loss must make the check NaN, which fails its row, not vanish inside the maximum.
    if not all(math.isfinite(x) for x in gaps + sizes):
        return math.nan
    return max(gaps) / max(sizes)


# === OPTIMISER: SPARSE ADAM ===
# A batch touches several hundred of the 4,096 rows; the rest have zero gradient. Updating only
# the touched rows (and only their moment estimates) is "lazy" or sparse Adam, which is what
# torch.optim.SparseAdam does for embedding tables; it is far cheaper than visiting every row.
# Per touched entry, with g = gradient, t = global step:
#     m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
#     W -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
# How far an entry moves: lr * m_hat / (sqrt(v_hat) + eps). At step 1 that is lr (m_hat and
# sqrt(v_hat) are both |g|); once gradients are noisy, m_hat averages out to well below
# sqrt(v_hat), and in our run the mean step is about a quarter of lr from step 100 on. Rows
# first touched late move more, up to about 2.4 lr in our run: the bias correction divides by
# 1 - b2^t with the global step t (as torch.optim.SparseAdam does), which overcorrects a v that
# started filling only recently. That is the difference from dense Adam: there, every row's
# m and v decay every step and a row keeps drifting on its momentum when it gets no gradient;
# lazy Adam keeps no momentum for untouched rows and leaves them exactly where they are.
# Why Adam and not plain SGD: a row's gradient adds up one contribution per occurrence of
# its n-gram in the batch, so within one batch the touched rows' gradient norms span about
# 100x (the letter "a" at the top, one-off trigrams at the bottom). Adam divides each entry's
# step by a running estimate of that entry's own gradient size, so a rare trigram's row moves
# at a pace similar to the row of "a"; a single SGD learning rate would be too large for
# one or too small for the other.

def adam_update(W, grad_rows, m, v, step, lr):
    # Folding both bias corrections into two scalars keeps the per-entry work to the three
    # lines below: W -= step_size * m / (sqrt(v) * inv_root_c2 + eps) is the formula above.
    step_size = lr / (1.0 - ADAM_BETA1 ** step)
    inv_root_c2 = 1.0 / math.sqrt(1.0 - ADAM_BETA2 ** step)
    # Local names for everything the inner loops read: this runs for about 770 rows of 32
    # entries per step, and a local lookup is cheaper than a global or an attribute one.
    b1, b2, one_minus_b1, one_minus_b2 = ADAM_BETA1, ADAM_BETA2, 1.0 - ADAM_BETA1, 1.0 - ADAM_BETA2
    sqrt, eps = math.sqrt, ADAM_EPS
    for row, grad in grad_rows.items():
        m[row] = m_row = [b1 * mi + one_minus_b1 * g for mi, g in zip(m[row], grad)]
        v[row] = v_row = [b2 * vi + one_minus_b2 * g * g for vi, g in zip(v[row], grad)]
        W[row] = [w - step_size * mi / (sqrt(vi) * inv_root_c2 + eps)
                  for w, mi, vi in zip(W[row], m_row, v_row)]


# === MEASUREMENT: COSINES, EDIT DISTANCE, NEAREST NEIGHBOURS ===
# Three questions, all on names the model never trained on:
#   1. Does a name stay close to a typo'd copy of itself?       (positive_cosine, high)
#   2. Do two unrelated names point in different directions?     (random_cosine, low)
#   3. Is the nearest neighbour in embedding space also a near neighbour in spelling?
# For 3 we need a yardstick for spelling: the Levenshtein edit distance.

def levenshtein(s, t):
    """Fewest single-character insertions, deletions or substitutions turning s into t.

    Dynamic programming over prefixes: prev[j] holds the distance between the first i - 1
    characters of s and the first j characters of t; only two rows are ever kept.
    """
    prev = list(range(len(t) + 1))
    for i, cs in enumerate(s, 1):
        cur = [i]
        for j, ct in enumerate(t, 1):
            cur.append(min(prev[j] + 1,                # delete cs
                           cur[j - 1] + 1,             # insert ct
                           prev[j - 1] + (cs != ct)))  # substitute (free if equal)
        prev = cur
    return prev[-1]


def nearest_neighbours(query_vec, pool_vecs, pool_names, exclude, k):
    """The k pool names with the highest cosine to query_vec, skipping the name `exclude`."""
    # cosine() written out inline: this loop scores every pool name for every query
    scored = [(sum(map(operator.mul, query_vec, vec)), name)
              for vec, name in zip(pool_vecs, pool_names) if name != exclude]
    return heapq.nlargest(k, scored)   # the same as sorted(scored, reverse=True)[:k], faster


def make_eval_sets(held_out):
    """Draw every random choice the measurements need once, so that the untrained and the
    trained model are scored on exactly the same pairs and queries."""
    positive_names = random.sample(held_out, min(NUM_EVAL_PAIRS, len(held_out)))
    positive_pairs = [(name, augment(name)) for name in positive_names]
    random_pairs = [tuple(random.sample(held_out, 2)) for _ in range(NUM_EVAL_PAIRS)]
    pool = held_out[:RETRIEVAL_POOL]
    queries = random.sample(pool, min(NUM_QUERIES, len(pool)))
    # The spelling yardstick: how far apart are two names picked at random from the pool?
    random_edit_pairs = [tuple(random.sample(pool, 2)) for _ in range(NUM_EVAL_PAIRS)]
    return positive_pairs, random_pairs, pool, queries, random_edit_pairs


def measure(W, eval_sets, bucket_cache):
    positive_pairs, random_pairs, pool, queries, random_edit_pairs = eval_sets
    vec = {}

    def embedding_of(name):
        if name not in vec:
            vec[name] = embed(W, name, bucket_cache)
        return vec[name]

    positive = [cosine(embedding_of(a), embedding_of(b)) for a, b in positive_pairs]
    unrelated = [cosine(embedding_of(a), embedding_of(b)) for a, b in random_pairs]
    pool_vecs = [embedding_of(name) for name in pool]
    neighbour_dists = []
    for query in queries:
        (_, neighbour), = nearest_neighbours(embedding_of(query), pool_vecs, pool, query, 1)
        neighbour_dists.append(levenshtein(query, neighbour))
    random_dists = [levenshtein(a, b) for a, b in random_edit_pairs]
    neighbour_edit = sum(neighbour_dists) / len(neighbour_dists)
    random_edit = sum(random_dists) / len(random_dists)
    return {
        "positive_cosine": sum(positive) / len(positive),
        "random_cosine": sum(unrelated) / len(unrelated),
        "neighbor_edit_distance": neighbour_edit,
        "random_edit_distance": random_edit,
        "neighbor_edit_ratio": neighbour_edit / random_edit,
    }


def ascii_chart(values, width=60, height=10):
    """Plot values as a block chart: each column is the mean of a run of consecutive values."""
    per_col = max(1, math.ceil(len(values) / width))
    cols = [sum(values[i:i + per_col]) / len(values[i:i + per_col])
            for i in range(0, len(values), per_col)]
    low, high = min(cols), max(cols)
    span = (high - low) or 1.0
    lines = []
    for level in range(height, 0, -1):
        cutoff = low + span * (level - 0.5) / height
        label = f"{low + span * level / height:7.3f} |" if level in (height, 1) else "        |"
        lines.append(label + "".join("#" if c >= cutoff else " " for c in cols))
    lines.append("        +" + "-" * len(cols))
    return "\n".join(lines)


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("cosine: held-out name vs augmented copy", "positive_cosine", ">", 0.8),
    ("cosine: two random held-out names", "random_cosine", "<", 0.1),
    ("edit dist to nearest neighbour / random pair", "neighbor_edit_ratio", "<", 0.5),
    ("hand gradient vs finite differences (rel. gap)", "gradient_check_error", "<", 1e-4),
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


# === MAIN: TRAIN, THEN MEASURE ON HELD-OUT NAMES ===

def print_measurements(title, m):
    print(f"{title}: positive cos {m['positive_cosine']:.3f} | random cos "
          f"{m['random_cosine']:.3f} | neighbour edit {m['neighbor_edit_distance']:.2f} "
          f"vs random {m['random_edit_distance']:.2f} (ratio {m['neighbor_edit_ratio']:.3f})")


def print_neighbours(title, W, pool, train_set, bucket_cache, k):
    print(f"\n{title}")
    pool_vecs = [embed(W, name, bucket_cache) for name in pool]
    for name in EXAMPLE_NAMES:
        seen = "trained on" if name in train_set else "held out"
        found = nearest_neighbours(embed(W, name, bucket_cache), pool_vecs, pool, name, k)
        listing = ", ".join(f"{other} {score:.2f}" for score, other in found)
        print(f"  {name:<12} ({seen:>10}) -> {listing}")


def main():
    random.seed(42)
    start = time.time()
    # names.txt repeats ~2,500 names; drop repeats (keeping file order) so that no held-out
    # name secretly appears in the training set too.
    names = list(dict.fromkeys(load_names()))
    random.shuffle(names)
    held_out, train_names = names[:HELD_OUT], names[HELD_OUT:]
    train_set = set(train_names)
    print(f"{len(train_names)} training names, {len(held_out)} held-out names, "
          f"{NUM_BUCKETS} n-gram buckets -> {EMBED_DIM}-dim embeddings")
    bucket_cache = {}
    eval_sets = make_eval_sets(held_out)

    # Before training, an embedding is a random projection of the n-gram counts, so names
    # that share n-grams already point somewhat alike. Two random names share some n-grams
    # too (their exact count-vector cosine averages about 0.24), so untrained random cosines
    # sit around 0.16 to 0.32 depending on the draw of W; training drives them near 0.
    # Scoring this untrained W on the same pairs shows what training adds.
    W = [[random.gauss(0.0, INIT_STD) for _ in range(EMBED_DIM)] for _ in range(NUM_BUCKETS)]
    W_untrained = [row[:] for row in W]
    m = [[0.0] * EMBED_DIM for _ in range(NUM_BUCKETS)]   # Adam's first moments
    v = [[0.0] * EMBED_DIM for _ in range(NUM_BUCKETS)]   # Adam's second moments
    baseline = measure(W, eval_sets, bucket_cache)
    print_measurements("untrained", baseline)
    # A model that cannot tell the candidates apart spreads the softmax evenly and pays
    # ln(B). The untrained W starts below that: augmented copies already share most n-grams.
    print(f"chance-level loss for a batch of {BATCH_SIZE}: ln({BATCH_SIZE}) = "
          f"{math.log(BATCH_SIZE):.4f}   ({time.time() - start:.1f}s)\n")

    losses = []
    for step in range(1, NUM_STEPS + 1):
        batch = random.sample(train_names, BATCH_SIZE)
        buckets_a = [ngram_features(augment(n), NUM_BUCKETS, bucket_cache) for n in batch]
        buckets_b = [ngram_features(augment(n), NUM_BUCKETS, bucket_cache) for n in batch]
        loss, grad_rows = infonce_loss_and_grad(W, buckets_a, buckets_b, TEMPERATURE)
        adam_update(W, grad_rows, m, v, step, LEARNING_RATE)
        losses.append(loss)
        if step == 1 or step % LOG_EVERY == 0 or step == NUM_STEPS:
            recent = losses[-LOG_EVERY:]
            print(f"step {step:4d}/{NUM_STEPS} | loss {sum(recent) / len(recent):.4f} | "
                  f"{time.time() - start:.1f}s")

    print(f"\nInfoNCE loss per step (column = mean of {math.ceil(len(losses) / 60)} steps):")
    print(ascii_chart(losses))

    trained = measure(W, eval_sets, bucket_cache)
    print()
    print_measurements("untrained", baseline)
    print_measurements("trained  ", trained)
    # Say plainly which criteria a random, untrained W already meets: those alone prove
    # nothing about learning, so the reader should look at the change in the other numbers.
    free_passes = [key for _, key, op, target in CRITERIA
                   if key in baseline and COMPARE[op](baseline[key], target)]
    if free_passes:
        print(f"note: the untrained W already passes {', '.join(free_passes)}; "
              f"the lines above show what training changed")

    pool = eval_sets[2]
    print_neighbours("nearest neighbours in the held-out pool, untrained W (cosine):",
                     W_untrained, pool, train_set, bucket_cache, 3)
    print_neighbours("nearest neighbours in the held-out pool, trained W (cosine):",
                     W, pool, train_set, bucket_cache, 5)

    # Last, so that its random draws change none of the numbers above.
    check_error = gradient_check(W, held_out, bucket_cache)
    print(f"\ngradient check ({GRADCHECK_NAMES} held-out names, {GRADCHECK_ENTRIES} entries of "
          f"W): hand-derived gradient vs finite differences of the plain formula,\n"
          f"largest gap {check_error:.2e} of the largest derivative")
    print(f"done in {time.time() - start:.1f}s")

    results = {key: round(value, 6) for key, value in trained.items()}
    results["gradient_check_error"] = check_error
    results["final_loss"] = round(sum(losses[-LOG_EVERY:]) / len(losses[-LOG_EVERY:]), 6)
    for key in ("positive_cosine", "random_cosine", "neighbor_edit_ratio"):
        results["untrained_" + key] = round(baseline[key], 6)
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microembedding.md")
    return results


if __name__ == "__main__":
    main()
