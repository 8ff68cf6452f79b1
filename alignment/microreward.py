"""microreward: a reward model learned from preferences, and how optimising it too hard breaks it.

Every RLHF pipeline learns its reward from comparisons: people (or a stronger model) say which
of two outputs they prefer, a reward model is fitted to those choices with the Bradley-Terry
loss, and the policy is then pushed to score high under it. The reward model is only a proxy
for what the people wanted, fitted on a limited number of comparisons, and pushing hard on a
proxy finds the places where it is wrong. Gao, Schulman and Hilton (2022, "Scaling laws for
reward model overoptimization") measured this with a "gold" reward standing in for the people:
as the policy optimises the proxy harder, the proxy's score keeps rising while the gold score
rises, peaks and falls. This file builds the whole experiment small enough to read:

    base model   a character trigram model counted on half of names.txt writes names
    gold reward  a stated function of a name: how name-like it is under a trigram model
                 counted on the other half, minus a penalty for straying from 14 letters
    labels       pairs of base samples, the winner drawn from Bradley-Terry on the gold
                 reward at temperature T: noisy, like real preference data
    proxy        a small network on letter counts and length, trained on 1,000 such pairs
    best-of-n    draw n names, keep the one the proxy likes best, for n = 1, 2, 4, ..., 1024

In the run the proxy orders 92.9% of held-out pairs as their labels do, against a ceiling of
95.6% that no model can beat (the labels are noisy). Best-of-n against it raises the gold
reward from -9.94 (n = 1) to -3.86 (n = 16), and then the gold reward falls, to -5.83 at
n = 1024, while the proxy's score rises at every step. What produces the fall is the data,
not a faulty proxy: the base model writes names far shorter than 14 letters, so in almost
every training pair the longer name wins and the proxy learns "longer is better". Only 13 of
the 1,000 pairs hold two names of more than 10 letters, the pairs that could show that length
stops paying, so past 14 letters the proxy extrapolates what it learned. Best-of-n at large n
is a search for exactly those rare long strings (4.8% of the base samples are longer than 14
letters). A small audit, gold labels for 64 outputs per n, flags the turn one doubling late.

Run: python alignment/microreward.py    (about 3 s on the 2-core CI machine)
"""
import bisect
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
MAX_LETTERS = 20        # a sampled name is cut at 20 letters (the longest in names.txt is 15)
BASE_SMOOTHING = 0.05   # add-k counts of the base model: it can write letters it never saw
GOLD_SMOOTHING = 0.1    # add-k counts of the gold judge's trigram model
GOLD_LENGTH = 14        # the gold reward's favourite length (L0)
LENGTH_WEIGHT = 0.1     # lambda of the gold reward's length penalty lambda * (len - L0)^2
TEMPERATURE = 0.5       # Bradley-Terry temperature T of the labels
NUM_PAIRS = 1000        # training preference pairs: the limited data the proxy learns from
HELDOUT_PAIRS = 2000    # held-out pairs for the proxy's accuracy and the ceiling
HIDDEN = 8              # hidden ReLU units of the proxy
INIT_STD = 0.3          # the proxy's first-layer weights start at N(0, 0.3^2)
NUM_EPOCHS = 12         # passes over the training pairs
BATCH_SIZE = 20         # pairs per Adam step
LEARNING_RATE = 0.01
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
POOL_SIZE = 40000       # base samples drawn once and scored once for the best-of-n curve
POOL_PARTS = 10         # the pool is split in parts to get standard errors
BON_NS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
AUDIT_GROUPS = 64       # the detector's gold labels per n
LONG_PAIR = 10          # a pair of two names longer than this is reported (see the results)

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


# === CHARACTER TRIGRAM MODELS ===
# Both the base model and the gold judge are trigram tables: P(c | the two characters before
# it), counted on names and smoothed by adding k to every count, so that no string has
# probability 0. "." pads the start (twice) and marks the end, so "ava" is counted as the
# trigrams "..a", ".av", "ava", "va.". They are counted on different halves of names.txt: the
# judge has read other names than the model it judges. A trigram table cannot count letters,
# so the base model runs on where real names stop (names.txt has none longer than 15 letters):
# 4.8% of its samples in the run are longer than 14 letters, and about 1% reach the cut at
# MAX_LETTERS. Those rare long strings are where best-of-n will go.
# Signpost: in real RLHF the base model is a pretrained LLM and the gold standard is people;
# Gao et al. used a 6B reward model as the gold and smaller ones as proxies.
END = "."
LETTERS = "abcdefghijklmnopqrstuvwxyz"
SYMBOLS = LETTERS + END   # 27 outcomes of every draw; END has id 26
SYMBOL_ID = {c: i for i, c in enumerate(SYMBOLS)}


def count_trigrams(names, smoothing):
    """{two-character context: [count + k for each of the 27 next symbols]}."""
    table = {}
    for name in names:
        padded = END + END + name + END
        for a, b, c in zip(padded, padded[1:], padded[2:]):
            table.setdefault(a + b, [smoothing] * len(SYMBOLS))[SYMBOL_ID[c]] += 1.0
    return table


def cumulative(table):
    # Running totals of each row, so that one uniform draw and a binary search (bisect)
    # pick the next symbol with probability count / row total.
    rows = {}
    for context, row in table.items():
        total, running = 0.0, []
        for count in row:
            total += count
            running.append(total)
        rows[context] = running
    return rows


def sample_name(cumulative_rows, rng):
    """One name from the base model, drawn one character at a time until END."""
    # A context the table never saw (only reachable through a smoothed count) falls back to
    # a uniform draw, which is what add-k smoothing gives an empty row.
    uniform = [float(i + 1) for i in range(len(SYMBOLS))]
    letters, context = [], END + END
    while len(letters) < MAX_LETTERS:
        row = cumulative_rows.get(context, uniform)
        symbol = SYMBOLS[bisect.bisect(row, rng.random() * row[-1])]
        if symbol == END:
            break
        letters.append(symbol)
        context = context[1] + symbol
    return "".join(letters)


def draw_samples(cumulative_rows, count, rng):
    return [sample_name(cumulative_rows, rng) for _ in range(count)]


# === THE GOLD REWARD ===
# The gold reward is what the preferences are really about. It is a fixed function that a
# reader can compute by hand:
#     gold(y) = namelike(y) - LENGTH_WEIGHT * (len(y) - GOLD_LENGTH)^2
#     namelike(y) = (1 / (len(y) + 1)) * sum_t log P_judge(y_t | y_{t-2} y_{t-1})
# namelike is the mean log-probability per symbol (END included) under the judge's trigram
# model: -2.26 on average over real names the judge never read, -4.38 for "xqzt". The length
# term prefers names of GOLD_LENGTH letters and costs more the further a name strays, on both
# sides: 3.6 at 20 letters, 6.4 at 6. The judge here likes long, elaborate names; what it
# likes matters less than that it is fixed, stated and checkable.


def make_gold(judge_table):
    row_totals = {context: sum(row) for context, row in judge_table.items()}
    unseen = math.log(GOLD_SMOOTHING / (GOLD_SMOOTHING * len(SYMBOLS)))   # log(1/27)

    def namelike(name):
        padded = END + END + name + END
        total = 0.0
        for a, b, c in zip(padded, padded[1:], padded[2:]):
            row = judge_table.get(a + b)
            total += (math.log(row[SYMBOL_ID[c]] / row_totals[a + b]) if row is not None
                      else unseen)
        return total / (len(name) + 1)

    def gold(name):
        return namelike(name) - LENGTH_WEIGHT * (len(name) - GOLD_LENGTH) ** 2

    return gold


# === PREFERENCE DATA: BRADLEY-TERRY LABELS ===
# A judge compares two names a and b and prefers a with probability
#     P(a > b) = sigmoid((gold(a) - gold(b)) / T)          (T = TEMPERATURE)
# the Bradley-Terry model, the same one the reward model assumes. T sets the noise: two
# names whose gold rewards differ by T are ordered "right" 73% of the time, not always.
# Because of the noise, no model can order every held-out pair as its label does. The best
# possible guess for a pair is the gold order, which agrees with the label with probability
# sigmoid(|gold(a) - gold(b)| / T) (the larger of P and 1 - P), so the Bayes-optimal accuracy
# on a set of pairs is the mean of that: the ceiling the run prints.


def sigmoid(z):
    return 0.5 * (1.0 + math.tanh(0.5 * z))   # = 1 / (1 + e^-z), with no overflow


def label_pairs(samples, gold, rng):
    """Consecutive samples made into pairs, ordered (chosen, rejected) by a Bradley-Terry draw."""
    pairs = []
    for a, b in zip(samples[0::2], samples[1::2]):
        p_a_wins = sigmoid((gold(a) - gold(b)) / TEMPERATURE)
        pairs.append((a, b) if rng.random() < p_a_wins else (b, a))
    return pairs


def bayes_ceiling(pairs, gold):
    """Expected accuracy of the best possible model (the gold order) against noisy labels."""
    return sum(sigmoid(abs(gold(a) - gold(b)) / TEMPERATURE) for a, b in pairs) / len(pairs)


def label_check_z(pairs, gold):
    """How far the labels' agreement with the gold order is from the ceiling, in standard errors.

    Each label agrees with the gold order with probability p_i = sigmoid(|gold gap| / T), so
    the share that agrees has mean ceiling = mean(p_i) and standard error
    sqrt(sum p_i (1 - p_i)) / N. Labels drawn as Bradley-Terry says land within about 3 of
    these units; labels with the wrong noise (none at all, or a coin) land far outside."""
    probs = [sigmoid(abs(gold(a) - gold(b)) / TEMPERATURE) for a, b in pairs]
    # a tie in gold (p = 1/2) counts as half an agreement, so the mean is exactly the ceiling
    agree = sum((gold(c) > gold(r)) + 0.5 * (gold(c) == gold(r)) for c, r in pairs) / len(pairs)
    spread = math.sqrt(sum(p * (1.0 - p) for p in probs)) / len(pairs)
    return abs(agree - sum(probs) / len(probs)) / spread if spread > 0.0 else float("nan")


# === THE PROXY REWARD MODEL ===
# A small network with a scalar head, on plain floats with hand-derived gradients:
#     x = [count of each letter (26), length / 5]       (a sparse list of (index, value))
#     h = relu(W1 x + b1)        (HIDDEN units)
#     r = w2 . h + b2
# It sees which letters a name has and how long it is, not their order. 27 * 8 + 8 + 8 + 1
# = 233 parameters. A ReLU network is piecewise linear: past the last bend it has learned, it
# goes on in a straight line, so if longer names scored higher wherever it was trained, the
# longest strings tend to score highest of all; it takes data beyond the bend to bend it.
# Signpost: production reward models are language models with the output layer replaced by
# a scalar head (InstructGPT's was a 6B GPT), trained with this same loss.


def features(name):
    counts = [0.0] * (len(LETTERS) + 1)
    for c in name:
        counts[SYMBOL_ID[c]] += 1.0
    counts[-1] = len(name) / 5.0
    # Only the non-zero entries: a six-letter name touches at most 7 of the 27 inputs, so the
    # forward pass and the gradient skip most of the dense ones.
    return [(k, v) for k, v in enumerate(counts) if v]


def init_proxy(rng):
    # Random W1 so the hidden units differ; w2 = 0, so every name first scores 0 and the first
    # Bradley-Terry loss is exactly ln 2 per pair.
    n_in = len(LETTERS) + 1
    return {"W1": [[rng.gauss(0.0, INIT_STD) for _ in range(n_in)] for _ in range(HIDDEN)],
            "b1": [0.0] * HIDDEN, "w2": [0.0] * HIDDEN, "b2": [0.0]}


def proxy_forward(proxy, x):
    """The proxy's score r of a feature list x, and the hidden activations h."""
    h = [max(0.0, sum(row[k] * v for k, v in x) + b) for row, b in zip(proxy["W1"], proxy["b1"])]
    return sum(map(operator.mul, proxy["w2"], h)) + proxy["b2"][0], h


def add_proxy_gradient(proxy, grads, x, h, scale):
    # Chain rule by hand, for r = w2 . h + b2 with h = relu(W1 x + b1), times scale = dL/dr:
    #     dr/db2 = 1,   dr/dw2_j = h_j,
    #     dr/db1_j = w2_j [h_j > 0],   dr/dW1_jk = w2_j [h_j > 0] x_k
    # (relu passes gradient only where its input was positive)
    grads["b2"][0] += scale
    for j, hj in enumerate(h):
        grads["w2"][j] += scale * hj
        if hj > 0.0:
            pre = scale * proxy["w2"][j]
            grads["b1"][j] += pre
            row = grads["W1"][j]
            for k, v in x:
                row[k] += pre * v


# === THE BRADLEY-TERRY LOSS ===
# The proxy models the same choice as the labels: P(chosen > rejected) = sigmoid(m), with the
# margin m = r(chosen) - r(rejected). Maximising the likelihood of the observed choices means
# minimising, per pair,
#     L = -log sigmoid(m) = softplus(-m) = log(1 + e^-m)
#     dL/dm = sigmoid(m) - 1 = -sigmoid(-m),   dm/dr(chosen) = +1,  dm/dr(rejected) = -1
# A pair already ordered by a wide margin (sigmoid(m) near 1) pulls little; a wrongly ordered
# pair pulls with a weight near 1. Only differences of r enter the loss, so a proxy that could
# represent gold exactly would learn r = gold / T plus any constant: its zero point is free.
# Signpost: TRL's RewardTrainer computes this same loss, -logsigmoid(r_chosen - r_rejected),
# on a sequence-classification model with one output; it can also subtract a per-pair margin
# inside the sigmoid and, with center_rewards_coefficient, add a penalty on the scores' mean
# square that pins the free zero point near 0.


def softplus(z):
    # log(1 + e^z), written so that exp() never overflows: max(z, 0) + log(1 + e^-|z|)
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def bradley_terry_loss_and_grads(proxy, batch):
    """Mean Bradley-Terry loss over a batch of (chosen features, rejected features)."""
    grads = {"W1": [[0.0] * len(row) for row in proxy["W1"]], "b1": [0.0] * HIDDEN,
             "w2": [0.0] * HIDDEN, "b2": [0.0]}
    total = 0.0
    for x_chosen, x_rejected in batch:
        r_chosen, h_chosen = proxy_forward(proxy, x_chosen)
        r_rejected, h_rejected = proxy_forward(proxy, x_rejected)
        margin = r_chosen - r_rejected
        total += softplus(-margin)
        dl_dm = (sigmoid(margin) - 1.0) / len(batch)
        add_proxy_gradient(proxy, grads, x_chosen, h_chosen, dl_dm)
        add_proxy_gradient(proxy, grads, x_rejected, h_rejected, -dl_dm)
    return total / len(batch), grads


def slots(tree):
    # Every weight as (list, index), in a fixed order, for Adam
    out = []
    for rows in tree.values():
        for row in (rows if isinstance(rows[0], list) else [rows]):
            out.extend((row, i) for i in range(len(row)))
    return out


def train_proxy(proxy, pairs, rng, start):
    """Adam on mini-batches of BATCH_SIZE pairs, NUM_EPOCHS passes; returns the batch losses."""
    data = [(features(chosen), features(rejected)) for chosen, rejected in pairs]
    params = slots(proxy)
    m, v, t, losses = [0.0] * len(params), [0.0] * len(params), 0, []
    for epoch in range(NUM_EPOCHS):
        rng.shuffle(data)
        for b in range(0, len(data), BATCH_SIZE):
            loss, grads = bradley_terry_loss_and_grads(proxy, data[b:b + BATCH_SIZE])
            t += 1
            # m = b1 m + (1 - b1) g ; v = b2 v + (1 - b2) g^2 ; p -= lr m_hat / (sqrt(v_hat) + eps)
            for i, ((row, j), (grow, gj)) in enumerate(zip(params, slots(grads))):
                g = grow[gj]
                m[i] = BETA1 * m[i] + (1.0 - BETA1) * g
                v[i] = BETA2 * v[i] + (1.0 - BETA2) * g * g
                row[j] -= LEARNING_RATE * (m[i] / (1.0 - BETA1 ** t)) / (
                    math.sqrt(v[i] / (1.0 - BETA2 ** t)) + ADAM_EPS)
            losses.append(loss)
        if (epoch + 1) % 4 == 0 or epoch + 1 == NUM_EPOCHS:
            recent = losses[-(len(data) // BATCH_SIZE):]
            print(f"proxy epoch {epoch + 1:3d}/{NUM_EPOCHS} | Bradley-Terry loss "
                  f"{sum(recent) / len(recent):.4f} (ln 2 = 0.6931 at the start) | "
                  f"{time.time() - start:.1f}s")
    return losses


def pair_accuracy(score, pairs):
    """Share of pairs whose label (chosen first) the score orders the same way."""
    return sum(score(chosen) > score(rejected) for chosen, rejected in pairs) / len(pairs)


# === BEST-OF-N, EXACTLY, BY ORDER STATISTICS ===
# Best-of-n draws n names from the base model and keeps the one the proxy scores highest. Its
# expected gold reward could be estimated by running it many times, but there is an exact
# shortcut over a fixed pool of N samples: sort the pool by proxy score, ranks 0..N-1 from the
# lowest. n draws with replacement all land at or below rank i with probability
# ((i + 1) / N)^n, so the best of them is exactly rank i with probability
#     w_i = ((i + 1) / N)^n - (i / N)^n
# and E[gold of best-of-n] = sum_i w_i gold_i, over the pool, with no sampling noise beyond
# the pool's own. Names the proxy scores equally (the same letters in another order: it sees
# no order) share their block's probability equally, as a random tie-break would.
# Standard errors: the pool is split into POOL_PARTS disjoint parts, the exact estimate is
# computed on each, and the spread between parts gives the standard error of their mean.


def best_of_n_weights(proxy_scores, n):
    """w_i for every pool entry (in the pool's order), ties sharing their block's mass."""
    size = len(proxy_scores)
    order = sorted(range(size), key=proxy_scores.__getitem__)
    weights = [0.0] * size
    low = 0
    while low < size:
        high = low
        while high + 1 < size and proxy_scores[order[high + 1]] == proxy_scores[order[low]]:
            high += 1
        # ranks low..high are tied: P(best lands in the block) = ((high+1)/N)^n - (low/N)^n
        mass = ((high + 1) / size) ** n - (low / size) ** n
        for rank in range(low, high + 1):
            weights[order[rank]] = mass / (high + 1 - low)
        low = high + 1
    return weights


def best_of_n_curve(proxy_scores, gold_scores, lengths):
    """Per n: mean and standard error over the pool's parts of E[proxy], E[gold], E[length],
    and the per-part gold values (for paired differences between two n)."""
    parts = [list(range(p, len(proxy_scores), POOL_PARTS)) for p in range(POOL_PARTS)]
    curve = []
    for n in BON_NS:
        per_part = []
        for part in parts:
            w = best_of_n_weights([proxy_scores[i] for i in part], n)
            per_part.append([sum(wi * series[i] for wi, i in zip(w, part))
                             for series in (proxy_scores, gold_scores, lengths)])
        columns = list(zip(*per_part))
        curve.append({"n": n, "proxy": mean_and_error(columns[0]),
                      "gold": mean_and_error(columns[1]), "length": mean_and_error(columns[2]),
                      "gold_parts": list(columns[1])})
    return curve


def mean_and_error(xs):
    mean = sum(xs) / len(xs)
    spread = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    return mean, spread / math.sqrt(len(xs))


def paired_z(a_parts, b_parts):
    """mean(a - b) / its standard error, over the parts: a difference in its own noise units."""
    diff, error = mean_and_error([a - b for a, b in zip(a_parts, b_parts)])
    return diff / error if error > 0.0 else float("nan")


# === THE KL OF BEST-OF-N ===
# How far does best-of-n move from the base distribution? The formula used by Stiennon et al.
# (2020) and Gao et al. (2022) is
#     KL(best-of-n || base) = log n - (n - 1) / n
# It is exact when the base distribution is continuous (every outcome has probability 0, so
# none is drawn twice and no two rewards tie), and in general an upper bound (Beirami et
# al., 2024, "Theoretical guarantees on the best-of-n alignment policy"): outcomes with real
# probability mass (the same name drawn twice, names the reward cannot tell apart) make the
# true KL smaller. The run computes the
# exact KL over the pool's distinct names, where the base probability of a name is its share
# of the pool and its best-of-n probability is the sum of its entries' w_i. Against the proxy,
# which gives nearly every name its own score, it matches the formula to 4 decimals at every
# n; against a reward that sees only the length, best-of-1024 moves 4.27 nats, not 5.93.


def analytic_kl(n):
    return math.log(n) - (n - 1) / n


def exact_kl_over_names(names, weights):
    base, tilted = {}, {}
    for name, w in zip(names, weights):
        base[name] = base.get(name, 0.0) + 1.0 / len(names)
        tilted[name] = tilted.get(name, 0.0) + w
    return sum(p * math.log(p / base[name]) for name, p in tilted.items() if p > 0.0)


# === DETECTING REWARD HACKING: A SMALL GOLD AUDIT ===
# A practitioner has the proxy everywhere but the gold judge (people) only for a few outputs.
# The audit: AUDIT_GROUPS times, draw BON_NS[-1] names and, for every n, take the proxy's
# favourite among the first n of them (the same draws serve every n, as when one keeps the
# candidates and raises n); have the judge score those with gold. Per n that is AUDIT_GROUPS
# gold labels, against POOL_SIZE for the exact curve. The proxy-gold gap, both in units of
# their standard deviation over base samples, widens with n (from -0.05 at n = 1 to 2.10 at
# n = 1024 in the run), but it widens from the first doublings on, while gold is still rising
# fast, so the gap alone does not say when to stop. What matters is when the gap widens faster
# than the proxy rises, i.e. when the audited gold goes down: the detector flags the first n
# whose audited gold mean is below that of n / 2. It needs the fall to show, so it can only
# flag after the peak (or, by noise, before it); the criterion allows one doubling either way.


def run_audit(proxy_scores, gold_scores, rng):
    largest = BON_NS[-1]
    picked = {n: [] for n in BON_NS}
    for _ in range(AUDIT_GROUPS):
        draws = [rng.randrange(len(proxy_scores)) for _ in range(largest)]
        best, seen = draws[0], 0
        for n in BON_NS:
            for i in draws[seen:n]:
                if proxy_scores[i] > proxy_scores[best]:
                    best = i
            seen = n
            picked[n].append(best)
    return picked


def standardiser(values):
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((x - mean) ** 2 for x in values) / (len(values) - 1))
    return lambda x: (x - mean) / spread


def audit_and_flag(proxy_scores, gold_scores, rng):
    """The audit's gold mean (with its standard error) and proxy-gold gap per n, and the flag:
    the first n whose audited gold mean is below that of n / 2 (None if gold never dips)."""
    picked = run_audit(proxy_scores, gold_scores, rng)
    z_proxy, z_gold = standardiser(proxy_scores), standardiser(gold_scores)
    gold_mean = {n: mean_and_error([gold_scores[i] for i in picked[n]]) for n in BON_NS}
    gap = {n: sum(z_proxy(proxy_scores[i]) - z_gold(gold_scores[i]) for i in picked[n])
           / AUDIT_GROUPS for n in BON_NS}
    flag_n = next((n for prev, n in zip(BON_NS, BON_NS[1:])
                   if gold_mean[n][0] < gold_mean[prev][0]), None)
    return {"gold": gold_mean, "gap": gap, "flag_n": flag_n}


def print_best_of_n_table(curve, exact_kls, audit):
    print(f"\nbest-of-n against the proxy (exact over the pool; +- one standard error over "
          f"{POOL_PARTS} parts):")
    print(f"{'n':>5} {'KL formula':>10} {'KL exact':>9} {'proxy':>16} {'gold':>17} "
          f"{'length':>6} {'audit gold':>16} {'gap':>6}")
    for point, kl in zip(curve, exact_kls):
        n = point["n"]
        (p, pe), (g, ge), (ln, _) = point["proxy"], point["gold"], point["length"]
        ag, age = audit["gold"][n]
        mark = "  <- flag" if n == audit["flag_n"] else ""
        # (max: a KL of 0 can round to -1e-17; the display shows 0)
        print(f"{n:>5} {analytic_kl(n):>10.4f} {max(kl, 0.0):>9.4f} {p:>8.3f} +- {pe:<5.3f}"
              f"{g:>9.3f} +- {ge:<5.3f}{ln:>6.2f} {ag:>8.3f} +- {age:<5.3f}"
              f"{audit['gap'][n]:>6.2f}{mark}")


# === ASCII PICTURE ===


def curve_picture(curve, height=12):
    """Proxy (p) and gold (g) against log2 n, each scaled to its own range."""
    columns = []
    for key, mark in (("proxy", "p"), ("gold", "g")):
        ys = [point[key][0] for point in curve]
        low, high = min(ys), max(ys)
        columns.append([(round((y - low) / (high - low) * (height - 1)) if high > low else 0, mark)
                        for y in ys])
    rows = []
    for level in range(height - 1, -1, -1):
        line = ""
        for (p_level, _), (g_level, _) in zip(*columns):
            cell = ("*" if p_level == g_level == level else "p" if p_level == level
                    else "g" if g_level == level else " ")
            line += f"{cell:^6}"
        rows.append(("top    |" if level == height - 1 else "bottom |" if level == 0
                     else "       |") + line)
    rows.append("       +" + "-" * (6 * len(curve)))
    rows.append("      n " + "".join(f"{point['n']:^6}" for point in curve))
    return "\n".join(rows)


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
# Each check fails for some broken version, measured with this file's settings (the spec
# entry lists them with their scores; the tests rerun them):
# - the Bradley-Terry loss with its sign flipped learns the reverse of the labels (accuracy
#   0.061), and best-of-n against it lowers gold from n = 1 on;
# - labels ignored (each training pair's order shuffled) leave the proxy near chance (0.468):
#   best-of-n against it improves gold only slowly, with no peak (still rising at n = 1024),
#   and the audit flags a noisy dip at n = 2;
# - best-of-n that keeps the proxy's worst name lowers the proxy's score at every doubling;
# - labels drawn without noise agree with the gold order on every pair, 11 standard errors
#   above the ceiling that Bradley-Terry at T predicts.
CRITERIA = [
    ("labels' agreement with gold vs the ceiling, |z|", "label_check_z", "<", 3.0),
    ("held-out accuracy: Bayes ceiling minus proxy", "accuracy_gap", "<", 0.06),
    ("proxy's best-of-n score falls between doublings", "proxy_falls", "==", 0),
    ("gold at its peak n minus at n = 1, in std errors", "gold_gain_z", ">", 3.0),
    ("gold at its peak minus at the largest n, std errors", "gold_drop_z", ">", 2.0),
    ("detector flag, doublings from the gold peak", "detector_doublings_off", "<=", 1),
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
    random.seed(42)   # every random draw below (split, samples, labels, init, audit) follows
    rng = random      # the functions take a generator, so the tests can give them their own
    start = time.time()
    names = load_names()
    rng.shuffle(names)
    half = len(names) // 2
    base_rows = cumulative(count_trigrams(names[:half], BASE_SMOOTHING))
    gold = make_gold(count_trigrams(names[half:], GOLD_SMOOTHING))
    print(f"base model counted on {half} names, the gold judge on {len(names) - half}")
    print(f"gold(y) = namelike(y) - {LENGTH_WEIGHT:g} * (len(y) - {GOLD_LENGTH})^2; "
          f"e.g. gold('{names[0]}') = {gold(names[0]):.3f}, gold('xqzt') = {gold('xqzt'):.3f}")

    # --- 1. preference data from base samples, labelled by Bradley-Terry on gold ---
    train_pairs = label_pairs(draw_samples(base_rows, 2 * NUM_PAIRS, rng), gold, rng)
    heldout_pairs = label_pairs(draw_samples(base_rows, 2 * HELDOUT_PAIRS, rng), gold, rng)
    ceiling = bayes_ceiling(heldout_pairs, gold)
    gold_accuracy = pair_accuracy(gold, heldout_pairs)
    label_z = label_check_z(heldout_pairs, gold)
    print(f"{NUM_PAIRS} training pairs, {HELDOUT_PAIRS} held-out; e.g. chosen "
          f"'{train_pairs[0][0]}' over '{train_pairs[0][1]}'")

    # --- 2. the proxy reward model ---
    proxy = init_proxy(rng)
    losses = train_proxy(proxy, train_pairs, rng, start)

    def proxy_score(name):
        return proxy_forward(proxy, features(name))[0]

    accuracy = pair_accuracy(proxy_score, heldout_pairs)
    train_accuracy = pair_accuracy(proxy_score, train_pairs)
    print(f"\nheld-out pairs ordered as labelled: proxy {accuracy:.3f} (training pairs "
          f"{train_accuracy:.3f}); Bayes ceiling {ceiling:.3f} (the gold order itself scores "
          f"{gold_accuracy:.3f} on these labels, {label_z:.2f} standard errors from the ceiling)")

    # --- 3. best-of-n against the proxy, scored by gold ---
    pool = draw_samples(base_rows, POOL_SIZE, rng)
    proxy_scores = [proxy_score(name) for name in pool]
    gold_scores = [gold(name) for name in pool]
    lengths = [float(len(name)) for name in pool]
    print(f"pool: {POOL_SIZE} base samples scored by proxy and gold | {time.time() - start:.1f}s")
    curve = best_of_n_curve(proxy_scores, gold_scores, lengths)
    exact_kls = [exact_kl_over_names(pool, best_of_n_weights(proxy_scores, n)) for n in BON_NS]
    # The same exact KL for a reward that sees only the length: every name of one length ties,
    # so best-of-n can only move mass between the 20 or so lengths: the formula overstates it.
    coarse_kl = exact_kl_over_names(pool, best_of_n_weights(lengths, BON_NS[-1]))

    # --- 4. the audit: a few gold labels per n, and the detector's flag ---
    audit = audit_and_flag(proxy_scores, gold_scores, rng)
    flag_n = audit["flag_n"]
    print_best_of_n_table(curve, exact_kls, audit)
    print(f"KL of best-of-{BON_NS[-1]} for a reward that sees only the length (ties): exact "
          f"{coarse_kl:.3f}, formula {analytic_kl(BON_NS[-1]):.3f}")
    print("\nproxy (p) and gold (g) of best-of-n, each scaled to its own range (* = both):")
    print(curve_picture(curve))

    # --- 5. the overoptimisation, measured ---
    golds = [point["gold"][0] for point in curve]
    peak = max(range(len(golds)), key=golds.__getitem__)
    # If gold peaks at n = 1, best-of-n gained nothing: a gain of 0 standard errors
    gold_gain_z = paired_z(curve[peak]["gold_parts"], curve[0]["gold_parts"]) if peak else 0.0
    # ... and if it peaks at the largest n, it never fell: a fall of 0 standard errors
    gold_drop_z = (paired_z(curve[peak]["gold_parts"], curve[-1]["gold_parts"])
                   if peak < len(curve) - 1 else 0.0)
    proxy_falls = sum(b["proxy"][0] < a["proxy"][0] for a, b in zip(curve, curve[1:]))
    doublings_off = (abs(math.log2(flag_n) - math.log2(BON_NS[peak])) if flag_n is not None
                     else float("inf"))
    print(f"\ngold peaks at n = {BON_NS[peak]} ({golds[peak]:.3f}); n = 1 scores {golds[0]:.3f}, "
          f"n = {BON_NS[-1]} scores {golds[-1]:.3f}; the audit flags n = {flag_n}")
    # Why the proxy extrapolates: the pairs that could show that length stops paying are
    # those in which both names are long; the base model rarely writes two of them together.
    long_share = sum(len(name) > GOLD_LENGTH for name in pool) / POOL_SIZE
    both_long = sum(min(len(a), len(b)) > LONG_PAIR for a, b in train_pairs)
    print(f"base samples longer than {GOLD_LENGTH} letters: {long_share:.1%}; training pairs "
          f"whose two names both have more than {LONG_PAIR} letters: {both_long} of {NUM_PAIRS}")
    top = sorted(range(POOL_SIZE), key=lambda i: -proxy_scores[i])[:8]
    print("the proxy's favourites in the pool: " +
          ", ".join(f"{pool[i]} ({gold_scores[i]:.1f})" for i in top))

    results = {
        "accuracy_gap": ceiling - accuracy,
        "heldout_accuracy": accuracy,
        "bayes_ceiling": ceiling,
        "gold_order_accuracy": gold_accuracy,
        "label_check_z": label_z,
        "train_accuracy": train_accuracy,
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
        "proxy_falls": proxy_falls,
        "gold_gain_z": gold_gain_z,
        "gold_drop_z": gold_drop_z,
        "gold_peak_n": BON_NS[peak],
        "gold_at_1": golds[0],
        "gold_at_peak": golds[peak],
        "gold_at_largest_n": golds[-1],
        "detector_flag_n": flag_n if flag_n is not None else 0,   # 0: never flagged
        "detector_doublings_off": doublings_off,
        "exact_kl_largest_n": exact_kls[-1],
        "long_share": long_share,
        "both_long_pairs": both_long,
        "analytic_kl_largest_n": analytic_kl(BON_NS[-1]),
        "length_only_kl_largest_n": coarse_kl,
    }
    print_criteria(results)
    print(f"total {time.time() - start:.1f}s")
    print("\nNext: predict what a change will do, then run it: docs/challenges/microreward.md")
    return results


if __name__ == "__main__":
    main()
