"""microattention: four attention variants side by side, and what each one saves.

Every transformer language model is built around the same operation, scaled dot-product
attention: each position asks a question (a query), compares it with every earlier
position's label (a key), and takes a weighted average of their contents (values). The
variants that production models use differ only in how many keys and values they keep and
how far back they look, and that choice decides how much memory inference needs:

    multi-head (MHA)      every query head has its own key/value head
    grouped-query (GQA)   query heads share key/value heads in groups
    multi-query (MQA)     all query heads share one key/value head
    sliding window        each position sees only the last W positions

This script runs all four on the same random input, one position at a time the way a model
generates text (each new position appends its key and value to a cache), counts every
multiplication and every stored key/value float, checks the counts against closed-form
formulas, and measures how close GQA and MQA stay to MHA. It also feeds inputs large enough
that attention scores pass 1,000, where a softmax that skips its max-subtraction overflows.

It is a forward-pass comparison, not a training script: the lesson is the architecture,
so nothing is trained (like microflash.py, an exception to the collection's train-and-infer
rule). Plain floats throughout; no autograd is needed.

Where these variants run: multi-query attention was introduced by Shazeer (2019, "Fast
Transformer Decoding: One Write-Head is All You Need") and is used by PaLM and Falcon-7B;
Llama 2 70B uses GQA with 8 key/value heads for its 64 query heads; Mistral 7B uses GQA
(8 key/value heads for 32 query heads) together with a 4,096-position sliding window.

Run: python systems/microattention.py    (under a second on the 2-core CI machine)
"""
import math
import operator
import random

# === HYPERPARAMETERS ===
SEQ_LEN = 16         # positions processed, one at a time
D_MODEL = 32         # width of every token vector
N_HEAD = 4           # query heads; each works on a D_MODEL / N_HEAD = 8-wide slice
GQA_KV_HEADS = 2     # grouped-query: 2 key/value heads, each shared by 2 query heads
MQA_KV_HEADS = 1     # multi-query: 1 key/value head shared by all 4 query heads
WINDOW = 4           # sliding window: a position sees itself and the 3 before it
# Independent random heads share nothing, so averaging them (the GQA conversion below)
# would throw most of each away. So this script builds its heads alike, by choice: each MHA
# key/value head is a shared part plus a per-head part HEAD_SPREAD times as large, which
# makes any two heads' weights correlated 1 / (1 + 0.2^2) = 0.96. The GQA and MQA cosines
# the run prints measure that choice, not how alike the heads of a real model are (the
# spread sweep shows them fall as the heads are built less alike). Trained models do carry
# redundant heads in a weaker sense: Michel et al. (2019) pruned many heads of trained
# transformers with little loss, which shows heads can be removed, not that their keys and
# values are nearly equal.
HEAD_SPREAD = 0.2
SPREAD_SWEEP = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0)   # reported: how the cosines fall with spread
# The stress test multiplies the input by this factor; scores grow with its square, so the
# largest score lands well above 1,000 (the run prints the value it reached).
STRESS_SCALE = 30.0

HEAD_DIM = D_MODEL // N_HEAD


# === COUNTED ARITHMETIC ===
# Every multiplication inside a matrix product goes through these two helpers, which add
# their multiplication count to a counter. The counts are what the comparison table prints,
# and they are checked against the closed-form formulas in the COST FORMULAS section. Other
# work (the 1/sqrt(d) scale, the softmax's exps and divisions) grows with the same pairs
# of positions but is not counted: matrix products dominate, and FLOPs ~ 2 x multiplies.


def dot(a, b, counter):
    counter["mults"] += len(a)
    return sum(x * y for x, y in zip(a, b))


def weighted_sum(weights, vectors, counter):
    """sum_j weights[j] * vectors[j], one multiplication per weight and coordinate."""
    counter["mults"] += len(weights) * len(vectors[0])
    out = [0.0] * len(vectors[0])
    for w, vec in zip(weights, vectors):
        for i, x in enumerate(vec):
            out[i] += w * x
    return out


def project(matrix, x, counter):
    """y = W x, with W stored as a list of output rows (D_out rows of D_in numbers)."""
    return [dot(row, x, counter) for row in matrix]


# === STABLE SOFTMAX ===
# softmax(s)_j = exp(s_j) / sum_k exp(s_k). Subtracting the largest score first changes
# nothing mathematically (the factor exp(-max) cancels) but keeps every exp in [0, 1].
# Without it, a score of 1,000 makes math.exp raise OverflowError in Python; array libraries
# (NumPy, PyTorch) return inf instead, and inf / inf is NaN, which then spreads through
# everything downstream. The stress test in main() shows the naive form failing.


def softmax(scores):
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def naive_softmax(scores):
    exps = [math.exp(s) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


# === WEIGHTS: MHA, AND GQA / MQA MADE FROM IT ===
# Weight matrices are lists of output rows. The key projection has one block of HEAD_DIM
# rows per key/value head, and so does the value projection.
# Scale 1/sqrt(D_MODEL) keeps each projected coordinate near unit variance for unit inputs.


def random_matrix(rows, cols):
    scale = 1.0 / math.sqrt(cols)
    return [[random.gauss(0.0, scale) for _ in range(cols)] for _ in range(rows)]


def draw_mha_parts():
    """The random draws behind every MHA built below: one shared block and one own block
    per head for keys and for values, plus the query and output projections."""
    return {"wq": random_matrix(D_MODEL, D_MODEL),
            "wo": random_matrix(D_MODEL, D_MODEL),
            "k_shared": random_matrix(HEAD_DIM, D_MODEL),
            "v_shared": random_matrix(HEAD_DIM, D_MODEL),
            "k_own": [random_matrix(HEAD_DIM, D_MODEL) for _ in range(N_HEAD)],
            "v_own": [random_matrix(HEAD_DIM, D_MODEL) for _ in range(N_HEAD)]}


def redundant_heads(shared, owns, spread):
    """One HEAD_DIM-row block per head: (shared + spread * own) / sqrt(1 + spread^2).

    Dividing by sqrt(1 + spread^2) keeps the rows' variance the same for every spread, so
    the sweep changes only how alike the heads are, not how large their outputs are."""
    norm = 1.0 / math.sqrt(1.0 + spread * spread)
    rows = []
    for own in owns:
        rows += [[(s + spread * o) * norm for s, o in zip(s_row, o_row)]
                 for s_row, o_row in zip(shared, own)]
    return rows


def build_mha(parts, spread):
    # The same draws for every spread: the sweep in main() varies only how alike heads are.
    return {"wq": parts["wq"], "wo": parts["wo"],
            "wk": redundant_heads(parts["k_shared"], parts["k_own"], spread),
            "wv": redundant_heads(parts["v_shared"], parts["v_own"], spread)}


def mean_pool_heads(matrix, n_kv_heads):
    """Average the HEAD_DIM-row blocks of consecutive heads into n_kv_heads blocks.

    This is the checkpoint conversion of the GQA paper (Ainslie et al., 2023): each group's
    key (and value) head is the mean of the original heads in the group. The paper then
    trains the converted model a little more ("uptraining", about 5% of the original
    compute) to recover quality; here we measure the conversion alone."""
    group = N_HEAD // n_kv_heads
    pooled = []
    for g in range(n_kv_heads):
        members = [matrix[(g * group + m) * HEAD_DIM:(g * group + m + 1) * HEAD_DIM]
                   for m in range(group)]
        for r in range(HEAD_DIM):
            pooled.append([sum(col) / group for col in zip(*(blk[r] for blk in members))])
    return pooled


def convert(mha, n_kv_heads):
    # Queries and the output projection are untouched: only key/value heads are shared.
    return {"wq": mha["wq"], "wo": mha["wo"],
            "wk": mean_pool_heads(mha["wk"], n_kv_heads),
            "wv": mean_pool_heads(mha["wv"], n_kv_heads)}


# === ATTENTION, ONE POSITION AT A TIME ===
# Inference produces one position per step. Each step projects the new token into a query
# and (per key/value head) a key and a value, appends key and value to the cache, and lets
# each query head attend over the cache:
#
#     out_h = softmax(q_h . K_g^T / sqrt(d)) V_g     (g = h // (N_HEAD / n_kv_heads))
#
# where K_g, V_g hold the cached keys and values of head g and d = HEAD_DIM. Because a step
# can only see what is already in the cache, the causal mask needs no explicit -inf entries:
# attending over the cache *is* attending to positions <= t. A training implementation
# computes all positions at once and masks scores above the diagonal with -inf instead;
# both give the same numbers.
# Sliding-window attention evicts a cached entry once it falls out of the window, so the
# cache holds at most W positions. Mistral 7B does this with W = 4096 as a "rolling buffer":
# a fixed array of W slots where position t overwrites slot t mod W, rather than a list.
# Signpost: production caches are preallocated tensors per layer, filled for a whole batch.


def first_visible(t, window):
    """The earliest position that position t may attend to."""
    return 0 if window is None else max(0, t - window + 1)


def attention(weights, xs, n_kv_heads, window, counter):
    """Run attention over the sequence xs; return the outputs and the peak cache size."""
    group = N_HEAD // n_kv_heads
    scale = 1.0 / math.sqrt(HEAD_DIM)
    cache = []          # entries (position, keys per kv head, values per kv head)
    peak_cache_floats = 0
    outputs = []
    for t, x in enumerate(xs):
        q = project(weights["wq"], x, counter)
        k = project(weights["wk"], x, counter)
        v = project(weights["wv"], x, counter)
        cache.append((t,
                      [k[g * HEAD_DIM:(g + 1) * HEAD_DIM] for g in range(n_kv_heads)],
                      [v[g * HEAD_DIM:(g + 1) * HEAD_DIM] for g in range(n_kv_heads)]))
        while cache[0][0] < first_visible(t, window):
            cache.pop(0)    # the rolling buffer: the oldest entry leaves the window
        peak_cache_floats = max(peak_cache_floats, len(cache) * n_kv_heads * 2 * HEAD_DIM)
        heads = []
        for h in range(N_HEAD):
            g = h // group  # which shared key/value head this query head reads
            q_h = q[h * HEAD_DIM:(h + 1) * HEAD_DIM]
            scores = [dot(q_h, keys[g], counter) * scale for _, keys, _ in cache]
            counter["max_score"] = nan_aware_max([counter["max_score"], *map(abs, scores)])
            heads += weighted_sum(softmax(scores), [vals[g] for _, _, vals in cache], counter)
        outputs.append(project(weights["wo"], heads, counter))
    return outputs, peak_cache_floats


# === A PLAIN REFERENCE, WRITTEN FROM THE FORMULA ===
# The variants above run one position at a time, with a cache, a query-head -> kv-head
# lookup and a rolling buffer: three places for a bug to hide, and comparing GQA with the
# same code's MHA would not see a bug both share. The reference below computes the formula
# as written, for the whole sequence at once and with none of that machinery: for query
# head h it reads key/value head g = floor(h * n_kv / N_HEAD), builds the full matrix of
# scores q_i . k_j / sqrt(d), sets the masked ones to -inf (j > i, or j <= i - W with a
# window), and takes each row's softmax-weighted sum of values. Every variant's output
# must match it to rounding error.


def reference_attention(weights, xs, n_kv_heads, window):
    d, n = HEAD_DIM, len(xs)
    q, k, v = ([[sum(w * x for w, x in zip(row, x_t)) for row in weights[name]] for x_t in xs]
               for name in ("wq", "wk", "wv"))
    heads = [[] for _ in range(n)]   # per position: the concatenated head outputs
    for h in range(N_HEAD):
        g = h * n_kv_heads // N_HEAD
        for i in range(n):
            scores = [sum(q[i][h * d + c] * k[j][g * d + c] for c in range(d)) / math.sqrt(d)
                      if j <= i and (window is None or j > i - window) else -math.inf
                      for j in range(n)]
            top = max(scores)
            exps = [math.exp(s - top) for s in scores]   # exp(-inf) = 0: masked out
            total = sum(exps)
            heads[i] += [sum(exps[j] / total * v[j][g * d + c] for j in range(n))
                         for c in range(d)]
    return [[sum(w * x for w, x in zip(row, head_t)) for row in weights["wo"]]
            for head_t in heads]


# === COST FORMULAS ===
# What the counters above should read, worked out by hand for N positions:
#   projections   q and output: N * D * D each; k and v: N * D * (n_kv * d) each
#   attention     every (query head, visible pair) costs d multiplications for the score
#                 and d for the weighted sum of values: 2 * N_HEAD * d * pairs
#   pairs         sum over t of the positions t sees: N(N+1)/2 causal, about N * W windowed
#   KV cache      2 (key and value) * n_kv * d floats per cached position; min(N, W) of them
# GQA and MQA shrink only the k/v projections and the cache; the attention term, where the
# work grows with N^2, keeps every query head. So as N grows their multiplications approach
# MHA's (main() prints the ratio up to N = 4,096) while their cache stays N_HEAD / n_kv
# times smaller. At long context the cache, read in full at every generated token, is what
# limits decoding speed and batch size, which is why the saving matters.


def visible_pairs(n, window):
    return sum(t + 1 - first_visible(t, window) for t in range(n))


def formula_mults(n, n_kv_heads, window):
    projections = 2 * n * D_MODEL * D_MODEL + 2 * n * D_MODEL * n_kv_heads * HEAD_DIM
    return projections + 2 * N_HEAD * HEAD_DIM * visible_pairs(n, window)


def formula_cache_floats(n, n_kv_heads, window):
    cached_positions = n if window is None else min(n, window)
    return 2 * n_kv_heads * HEAD_DIM * cached_positions


# === COMPARISON HELPERS ===


def flatten(rows):
    return [x for row in rows for x in row]


def cosine(a, b):
    a, b = flatten(a), flatten(b)
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b))


def nan_aware_max(numbers):
    """max(), but NaN if any number is NaN. Python's max() skips NaN whenever it is not
    first (max(0.0, nan) is 0.0: every comparison with NaN is False), so a NaN output would
    vanish from a largest error and the run would report a small one."""
    numbers = list(numbers)
    return math.nan if any(math.isnan(x) for x in numbers) else max(numbers)


def max_abs_difference(a, b):
    return nan_aware_max(abs(x - y) for x, y in zip(flatten(a), flatten(b)))


def count_nonfinite(rows):
    return sum(not math.isfinite(x) for x in flatten(rows))


def mask_picture(n, window):
    """Rows are query positions, columns key positions: # attended, . masked."""
    return ["".join("#" if first_visible(t, window) <= j <= t else "." for j in range(n))
            for t in range(n)]


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("non-finite numbers in every variant's output", "nonfinite_outputs", "==", 0),
    ("largest |score| reached by the stress inputs", "stress_max_score", ">", 1000),
    ("cosine similarity, GQA output vs MHA output", "gqa_cosine", ">", 0.95),
    ("cosine similarity, MQA output vs MHA output", "mqa_cosine", ">", 0.95),
    ("fewer kv heads approximate MHA less well", "gqa_cosine", ">", "mqa_cosine"),
    ("every variant vs plain reference: max |difference|", "reference_max_error", "<", 1e-12),
    ("window = sequence vs causal: max |difference|", "full_window_max_error", "<", 1e-12),
    ("counts that differ from the closed-form formula", "count_mismatches", "==", 0),
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


def run_variants(mha, xs):
    """Run every variant on xs; return {name: (outputs, counted mults, peak cache, spec)}."""
    variants = [("MHA", mha, N_HEAD, None),
                (f"GQA ({GQA_KV_HEADS} kv)", convert(mha, GQA_KV_HEADS), GQA_KV_HEADS, None),
                (f"MQA ({MQA_KV_HEADS} kv)", convert(mha, MQA_KV_HEADS), MQA_KV_HEADS, None),
                (f"window W={WINDOW}", mha, N_HEAD, WINDOW)]
    runs = {}
    max_score = 0.0
    for name, weights, n_kv, window in variants:
        counter = {"mults": 0, "max_score": 0.0}
        outputs, cache_floats = attention(weights, xs, n_kv, window, counter)
        runs[name] = (outputs, counter["mults"], cache_floats, (n_kv, window), weights)
        max_score = nan_aware_max([max_score, counter["max_score"]])
    return runs, max_score


def main():
    random.seed(42)  # weights and inputs below all follow from this seed
    parts = draw_mha_parts()
    mha = build_mha(parts, HEAD_SPREAD)
    xs = [[random.gauss(0.0, 1.0) for _ in range(D_MODEL)] for _ in range(SEQ_LEN)]
    print(f"sequence {SEQ_LEN}, width {D_MODEL}, {N_HEAD} query heads of {HEAD_DIM}, "
          f"head spread {HEAD_SPREAD}")

    print("\nWho shares which key/value head (query head -> kv head):")
    for name, n_kv in (("MHA", N_HEAD), ("GQA", GQA_KV_HEADS), ("MQA", MQA_KV_HEADS)):
        links = "  ".join(f"q{h}->kv{h // (N_HEAD // n_kv)}" for h in range(N_HEAD))
        print(f"  {name}: {links}")

    shown = min(SEQ_LEN, 10)
    print(f"\nWhat each position sees (row = query, column = key, first {shown} positions; "
          f"# attended):")
    print(f"  {'causal':<{shown + 4}}window W={WINDOW}")
    for causal_row, window_row in zip(mask_picture(shown, None), mask_picture(shown, WINDOW)):
        print(f"  {causal_row}    {window_row}")

    # --- the four variants on the same input ---
    runs, max_score = run_variants(mha, xs)
    mha_out = runs["MHA"][0]
    mha_mults, mha_cache = runs["MHA"][1], runs["MHA"][2]
    count_mismatches = 0
    print(f"\n{'variant':<14} {'mults':>8} {'formula':>8} {'kv floats':>10} {'formula':>8} "
          f"{'kv vs MHA':>10} {'mults vs MHA':>13} {'cosine':>8}")
    for name, (outputs, mults, cache_floats, (n_kv, window), _) in runs.items():
        want_mults = formula_mults(SEQ_LEN, n_kv, window)
        want_cache = formula_cache_floats(SEQ_LEN, n_kv, window)
        count_mismatches += (mults != want_mults) + (cache_floats != want_cache)
        print(f"{name:<14} {mults:>8} {want_mults:>8} {cache_floats:>10} {want_cache:>8} "
              f"{cache_floats / mha_cache:>10.3f} {mults / mha_mults:>13.3f} "
              f"{cosine(outputs, mha_out):>8.4f}")
    gqa_cosine = cosine(runs[f"GQA ({GQA_KV_HEADS} kv)"][0], mha_out)
    mqa_cosine = cosine(runs[f"MQA ({MQA_KV_HEADS} kv)"][0], mha_out)
    nonfinite = sum(count_nonfinite(run[0]) for run in runs.values())
    print(f"  (mults = multiplications in matrix products; FLOPs are about twice that. "
          f"Largest |score| {max_score:.2f})")
    # The window's output differs from MHA's because it sees less, not because it is wrong:
    # its cosine to MHA says how much the first positions still mattered.

    # --- every variant against the plain reference ---
    # The cosines above compare variants with this script's own MHA; this checks each one,
    # MHA included, against the formula computed independently (same weights, same inputs).
    print("\nlargest |difference| from the plain whole-sequence reference (same weights):")
    reference_errors = []
    for name, (outputs, _, _, (n_kv, window), weights) in runs.items():
        reference_errors.append(max_abs_difference(
            outputs, reference_attention(weights, xs, n_kv, window)))
        print(f"  {name:<14} {reference_errors[-1]:.3g}")
    reference_max_error = nan_aware_max(reference_errors)

    # --- a window as long as the sequence is plain causal attention ---
    counter = {"mults": 0, "max_score": 0.0}
    full_window, _ = attention(mha, xs, N_HEAD, SEQ_LEN, counter)
    full_window_max_error = max_abs_difference(full_window, mha_out)
    print(f"\nwindow W={SEQ_LEN} (the whole sequence) vs causal MHA: "
          f"max |difference| {full_window_max_error:.3g}")

    # --- the long-sequence story, from the formulas the counts above just confirmed ---
    # Cost of producing the last position of an N-long sequence: the difference between the
    # totals for N and N - 1 positions. At N = 16 the projections dominate, so sharing
    # key/value heads saves 20-30% of the multiplications; as N grows the attention term
    # (which keeps every query head) takes over and the saving fades, while the cache stays
    # N_HEAD / n_kv times smaller. The window's cost stops growing once N passes W.
    def last_step(n, n_kv, window):
        return (formula_mults(n, n_kv, window) - formula_mults(n - 1, n_kv, window),
                formula_cache_floats(n, n_kv, window))

    print("\nCost of the last position as the sequence grows (from the formulas):")
    print(f"{'N':>6} {'MHA mults':>10} {'GQA/MHA':>8} {'MQA/MHA':>8} {'MHA kv':>8} "
          f"{'MQA kv':>7} {'window mults':>13} {'window kv':>10}")
    for n in (16, 64, 256, 1024, 4096):
        mha_cost = last_step(n, N_HEAD, None)
        gqa_cost = last_step(n, GQA_KV_HEADS, None)
        mqa_cost = last_step(n, MQA_KV_HEADS, None)
        window_cost = last_step(n, N_HEAD, WINDOW)
        print(f"{n:>6} {mha_cost[0]:>10} {gqa_cost[0] / mha_cost[0]:>8.3f} "
              f"{mqa_cost[0] / mha_cost[0]:>8.3f} {mha_cost[1]:>8} {mqa_cost[1]:>7} "
              f"{window_cost[0]:>13} {window_cost[1]:>10}")

    # --- stress: inputs so large that scores pass 1,000 ---
    # Scores are products of two projections of x, so scaling x by 30 scales them by 900.
    stress_xs = [[STRESS_SCALE * x for x in row] for row in xs]
    stress_runs, stress_max_score = run_variants(mha, stress_xs)
    nonfinite += sum(count_nonfinite(run[0]) for run in stress_runs.values())
    try:
        naive_softmax([stress_max_score, 0.0])
        naive_verdict = "returned a number"
    except OverflowError:
        naive_verdict = "raised OverflowError"
    print(f"\nstress inputs (x times {STRESS_SCALE:g}): largest |score| {stress_max_score:.0f}")
    print(f"non-finite outputs over every variant, normal and stress inputs: {nonfinite}")
    print(f"the same largest score through a softmax without max-subtraction: {naive_verdict}")

    # --- how much redundancy GQA and MQA need ---
    # Reported, not asserted: with fully independent heads (large spread) averaging them
    # loses most of each head, and the cosines fall.
    print("\nGQA and MQA cosine to MHA as the heads become less alike (bar: MQA, 40 = 1.0):")
    print(f"{'spread':>7} {'GQA':>8} {'MQA':>8}")
    sweep = []
    for spread in SPREAD_SWEEP:
        sweep_runs, _ = run_variants(build_mha(parts, spread), xs)
        base = sweep_runs["MHA"][0]
        pair = (cosine(sweep_runs[f"GQA ({GQA_KV_HEADS} kv)"][0], base),
                cosine(sweep_runs[f"MQA ({MQA_KV_HEADS} kv)"][0], base))
        sweep.append(pair)
        print(f"{spread:>7.2f} {pair[0]:>8.4f} {pair[1]:>8.4f}  |{'#' * round(pair[1] * 40)}")

    results = {
        "nonfinite_outputs": nonfinite,
        "stress_max_score": stress_max_score,
        "gqa_cosine": gqa_cosine,
        "mqa_cosine": mqa_cosine,
        "full_window_max_error": full_window_max_error,
        "reference_max_error": reference_max_error,
        "count_mismatches": count_mismatches,
        "max_score": max_score,
        "window_cosine": cosine(runs[f"window W={WINDOW}"][0], mha_out),
        "gqa_kv_ratio": runs[f"GQA ({GQA_KV_HEADS} kv)"][2] / mha_cache,
        "mqa_kv_ratio": runs[f"MQA ({MQA_KV_HEADS} kv)"][2] / mha_cache,
        "sweep_gqa_cosines": [p[0] for p in sweep],
        "sweep_mqa_cosines": [p[1] for p in sweep],
    }
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microattention.md")
    return results


if __name__ == "__main__":
    main()
