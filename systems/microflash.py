"""microflash: flash attention, simulated: the same answer as attention, without the N x N matrix.

Standard attention computes every score between N queries and N keys, writes that N x N
matrix to the GPU's large, slow memory (HBM), reads it back for the softmax, writes the
probabilities, and reads them again to weight the values. On a GPU that traffic, not the
arithmetic, is what takes most of the time. Flash attention (Dao et al., 2022)
never builds the matrix: it cuts Q, K and V into blocks of B rows, keeps one B x B tile of
scores in the small, fast on-chip memory (SRAM), and folds each tile into the output with
an *online softmax* that keeps, for every query row,

    m   the largest score seen so far
    l   the sum of exp(score - m) over the scores seen so far

and rescales what it has accumulated by exp(m_old - m_new) whenever a larger score turns up.
The result is exactly softmax(Q K^T / sqrt(d)) V, up to floating-point rounding.

This script is a simulation of what the hardware does, not a speed-up. Python lists all live
in the same memory, so the tiled version gains nothing in Python: it does the same arithmetic
plus a little rescaling (the run prints both counts). What the script does instead is
count, float by float, what a GPU kernel would read from and write to slow memory and how
much scratch space each algorithm holds, and check that the tiled answer matches the plain
one on every configuration it tries: causal mask on and off, and block sizes that do not
divide N.

Run: python systems/microflash.py    (under a second on the 2-core CI machine)
"""
import math
import operator
import random

# === HYPERPARAMETERS ===
HEAD_DIM = 8                 # d: width of one attention head
BLOCK_SIZE = 16              # B: rows of Q (and of K, V) per tile
MEMORY_LENGTHS = (32, 128)   # the growth of scratch memory is measured between these N
# Every (N, causal, B) combination below is checked against standard attention. B = 12
# divides none of these N, so the last tile of every run is ragged (32 = 2*12 + 8,
# 100 = 8*12 + 4, 128 = 10*12 + 8); with the causal mask on, tiles above the diagonal are
# fully masked. Those two places are where a tiling bug most easily hides.
CHECK_LENGTHS = (32, 100, 128)
CHECK_BLOCKS = (16, 12)
SWEEP_BLOCKS = (4, 8, 12, 16, 32, 64, 128)   # reported: IO and on-chip space vs block size
TRACE_ROW = 100              # the query row whose running m and l are printed


# === THE MEMORY METER: WHAT THIS SCRIPT SIMULATES ===
# A GPU has two memories that matter here. HBM (the "GPU memory", 40-80 GB on an A100) is
# large and slow; SRAM (192 KB per streaming multiprocessor on an A100) is small and has
# about ten times the bandwidth (the FlashAttention paper estimates 19 TB/s against
# 1.5-2.0 TB/s). A kernel can only compute on what it has
# loaded into SRAM, so every float it touches travels HBM -> SRAM, and every result it keeps
# travels back. The meter below counts those floats (`reads`, `writes`) and the scratch space
# each algorithm allocates beyond its inputs Q, K, V and its output O (`extra`, with its
# peak). It also counts the multiplications done, to set the IO count against the FLOP count.
# None of it makes Python faster; it measures what the algorithm would move on real hardware.


class MemoryMeter:
    def __init__(self):
        self.reads = 0        # floats read from slow memory (HBM)
        self.writes = 0       # floats written to slow memory
        self.extra = 0        # scratch floats currently held beyond Q, K, V and O
        self.peak_extra = 0
        self.mults = 0        # multiplications, for the FLOP comparison

    def hold(self, floats):
        self.extra += floats
        self.peak_extra = max(self.peak_extra, self.extra)

    def release(self, floats):
        self.extra -= floats


def dot(a, b, meter):
    meter.mults += len(a)
    return sum(map(operator.mul, a, b))


# === STANDARD ATTENTION: THE N x N MATRIX IN SLOW MEMORY ===
# O = softmax(S) V with S = Q K^T / sqrt(d); a causal mask sets S[i][j] = -inf for j > i,
# so row i only attends to positions 0..i. This is the textbook implementation as three
# separate kernels (the FlashAttention paper's "standard attention"):
#   1. read Q and K, compute S, write S           (2Nd reads, N^2 writes)
#   2. read S, take each row's softmax, write P   (N^2 reads, N^2 writes)
#   3. read P and V, compute O = P V, write O     (N^2 + Nd reads, Nd writes)
# Slow-memory traffic: 4N^2 + 4Nd floats, and N^2 floats of scratch for S (P overwrites
# it), plus each row's max m and sum l, kept for every row as flash attention keeps them.


def standard_attention(q, k, v, causal, meter):
    n, d = len(q), len(q[0])
    scale = 1.0 / math.sqrt(d)
    meter.hold(n * n + 2 * n)          # S (then P in its place), and m, l per row
    meter.reads += 2 * n * d
    # As in a plain PyTorch implementation (nanoGPT's: Q K^T, then masked_fill with -inf),
    # every score is computed and the masked ones are then overwritten.
    scores = [[dot(q_row, k_row, meter) * scale for k_row in k] for q_row in q]
    if causal:
        for i, row in enumerate(scores):
            row[i + 1:] = [-math.inf] * (n - i - 1)
    meter.writes += n * n
    meter.reads += n * n
    row_max = [max(row) for row in scores]          # m per row
    row_sum = []                                    # l per row
    for i, row in enumerate(scores):
        exps = [math.exp(s - row_max[i]) for s in row]    # exp(-inf) = 0: masked out
        row_sum.append(sum(exps))
        scores[i] = [e / row_sum[i] for e in exps]
    meter.writes += n * n
    meter.reads += n * n + n * d
    v_columns = list(zip(*v))
    out = [[dot(p_row, column, meter) for column in v_columns] for p_row in scores]
    meter.writes += n * d
    meter.release(n * n + 2 * n)
    return out


# === ONLINE SOFTMAX: ONE PASS, RUNNING MAX AND SUM ===
# A softmax needs the row's maximum before it can exponentiate safely, which seems to need
# two passes over the scores. The online version needs one: keep the maximum m and the sum
# l = sum exp(s - m) of what has been seen, and when a larger score arrives, rescale the sum
# to the new maximum:
#     m_new = max(m_old, s)
#     l_new = l_old * exp(m_old - m_new) + exp(s - m_new)
# At the end, softmax(s)_j = exp(s_j - m) / l. The same rescaling applies to anything summed
# with these weights, which is how flash attention builds the output without keeping scores.


def two_pass_softmax_stats(scores):
    top = max(scores)
    return top, sum(math.exp(s - top) for s in scores)


def online_softmax_stats(scores):
    m, l = -math.inf, 0.0
    for s in scores:
        m_new = max(m, s)
        l = l * math.exp(m - m_new) + math.exp(s - m_new)
        m = m_new
    return m, l


# === FLASH ATTENTION: TILES AND AN ONLINE SOFTMAX ===
# The loop order is FlashAttention-2's: for each block of B query rows (loaded once), stream
# every block of B keys and values past it, fold the B x B tile of scores into the running
# (m, l, acc) of each row, and write the finished rows of O once at the end. For query row
# i and a new tile with scores s_j and values v_j:
#     m_new = max(m_i, max_j s_j)
#     c     = exp(m_i - m_new)                        the rescale factor (0 on the first tile)
#     l_i   = c * l_i + sum_j exp(s_j - m_new)
#     acc_i = c * acc_i + sum_j exp(s_j - m_new) v_j
# and finally O_i = acc_i / l_i. With rescale=False the factor c is left out, the bug the
# error criterion exists to catch; the run prints how far off it lands.
# With the causal mask, a tile whose first key comes after its last query is fully masked:
# it is skipped, which is also why a causal kernel does about half the work. Here every
# row's first tile holds key 0, so m is finite from then on; where a row's first tile can
# be fully masked (another loop order, a sliding window), m_new is -inf there and
# exp(m_old - m_new) = exp(-inf + inf) = NaN, so such a kernel must check for it. The last block
# is shorter when B does not divide N; every loop bound below is clipped to N.
# Signpost: the original FlashAttention (2022) swaps the loops (K, V outside, Q inside) and
# keeps O, m and l in HBM between tiles; a real kernel runs many query blocks in parallel,
# one per thread block, in CUDA, and saves per-row softmax statistics for the backward pass.


def flash_attention(q, k, v, block, causal, meter, rescale=True, trace=None):
    n, d = len(q), len(q[0])
    scale = 1.0 / math.sqrt(d)
    out = [None] * n
    m = [-math.inf] * n       # running max per query row
    l = [0.0] * n             # running sum of exp(score - m) per query row
    meter.hold(2 * n)
    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)                         # the last block may be ragged
        q_block = q[r0:r1]
        meter.reads += (r1 - r0) * d
        acc = [[0.0] * d for _ in range(r1 - r0)]       # the output rows being built
        for c0 in range(0, n, block):
            if causal and c0 > r1 - 1:
                break          # every key here is after every query: the tile is all -inf
            c1 = min(c0 + block, n)
            k_block, v_columns = k[c0:c1], list(zip(*v[c0:c1]))
            meter.reads += 2 * (c1 - c0) * d
            meter.hold((r1 - r0) * (c1 - c0))            # the score tile, in fast memory
            tile = [[dot(q_row, k_row, meter) * scale for k_row in k_block]
                    for q_row in q_block]
            if causal and c1 - 1 > r0:   # a diagonal tile: mask keys after each query
                for a, tile_row in enumerate(tile):
                    visible = max(0, r0 + a - c0 + 1)
                    tile_row[visible:] = [-math.inf] * (len(tile_row) - visible)
            for a, row in enumerate(tile):
                i = r0 + a
                # Finite from the first tile on: key block 0 holds key 0, which every row sees.
                m_new = max(m[i], max(row))
                correction = math.exp(m[i] - m_new) if rescale else 1.0
                p = [math.exp(s - m_new) for s in row]
                l[i] = l[i] * correction + sum(p)
                meter.mults += d + 1                    # rescaling acc and l
                acc[a] = [x * correction + dot(p, column, meter)
                          for x, column in zip(acc[a], v_columns)]
                if trace is not None and i == trace["row"]:
                    trace["steps"].append((c0, c1, max(row), m[i], m_new, correction, l[i]))
                m[i] = m_new
            meter.release((r1 - r0) * (c1 - c0))
        for a in range(r1 - r0):
            out[r0 + a] = [x / l[r0 + a] for x in acc[a]]
        meter.writes += (r1 - r0) * d
    meter.release(2 * n)
    return out


# === IO AND FLOPS BY FORMULA ===
# What the meter should read, worked out by hand. T = ceil(N / B) blocks.
#   standard  IO = 4N^2 + 4Nd; multiplications = 2 N^2 d (scores and P V, mask or not)
#   flash     IO = Nd (Q, once) + Nd (O, once) + 2d * (keys streamed past each query block)
#             without the mask every query block streams all N keys: IO = 2Nd + 2NdT;
#             with it, query block r streams only the keys up to its last row.
# Flash does *more* multiplications than standard attention without the mask (the rescale
# adds d + 1 per row per tile), yet on a GPU it is faster: it moves several times fewer
# floats to and from slow memory, and that is where the time goes.


def blocks(n, block):
    return [(start, min(start + block, n)) for start in range(0, n, block)]


def processed_tiles(n, block, causal):
    return [(r, c) for r in blocks(n, block) for c in blocks(n, block)
            if not causal or c[0] <= r[1] - 1]


def standard_io(n, d):
    return 4 * n * n + 4 * n * d


def flash_io(n, d, block, causal):
    streamed_keys = sum(c1 - c0 for _, (c0, c1) in processed_tiles(n, block, causal))
    return 2 * n * d + 2 * d * streamed_keys


def flash_mults(n, d, block, causal):
    return sum((r1 - r0) * ((c1 - c0) * 2 * d + d + 1)
               for (r0, r1), (c0, c1) in processed_tiles(n, block, causal))


# === HELPERS ===


def random_matrix(rows, cols):
    return [[random.gauss(0.0, 1.0) for _ in range(cols)] for _ in range(rows)]


def nan_aware_max(numbers):
    """The largest of the numbers, or NaN if any is NaN.

    Python's max() is blind to NaN: max(0.0, nan) is 0.0, because every comparison with NaN
    is False. An attention output that came out NaN would then vanish from the maximum and
    the run would report a tiny error, so a NaN anywhere makes the whole maximum NaN (and
    the criteria table fails it). Infinity needs no special case: it is larger than any
    number, so max() keeps it."""
    numbers = list(numbers)
    return math.nan if any(math.isnan(x) for x in numbers) else max(numbers)


def max_abs_difference(a, b):
    return nan_aware_max(abs(x - y) for row_a, row_b in zip(a, b)
                         for x, y in zip(row_a, row_b))


def tile_picture(n, block):
    """One character per tile for causal attention: # computed in full, / on the diagonal
    (partly masked), . skipped (fully masked)."""
    lines = []
    for r0, r1 in blocks(n, block):
        lines.append("".join("." if c0 > r1 - 1 else "/" if c1 - 1 > r0 else "#"
                             for c0, c1 in blocks(n, block)))
    return lines


def log_log_slope(x1, y1, x2, y2):
    return math.log(y2 / y1) / math.log(x2 / x1)


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("max |flash - standard| over every configuration", "max_abs_error", "<", 1e-12),
    ("standard scratch memory: log-log slope in N", "standard_memory_exponent", ">", 1.9),
    ("flash scratch memory: log-log slope in N", "flash_memory_exponent", "<", 1.1),
    ("slow-memory floats moved at N = 128, flash vs std", "flash_io", "<", "standard_io"),
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


def main():
    random.seed(42)  # Q, K and V for every sequence length follow from this seed
    largest = max(CHECK_LENGTHS + MEMORY_LENGTHS)
    # One set of random rows; shorter sequences use its first N rows.
    q_all, k_all, v_all = (random_matrix(largest, HEAD_DIM) for _ in range(3))

    def inputs(n):
        return q_all[:n], k_all[:n], v_all[:n]

    # --- the online softmax on its own ---
    row = [random.gauss(0.0, 3.0) for _ in range(10)]
    online, two_pass = online_softmax_stats(row), two_pass_softmax_stats(row)
    print(f"10 scores, one pass (online):       m = {online[0]:.6f}, l = {online[1]:.6f}")
    print(f"10 scores, two passes (max, sum):   m = {two_pass[0]:.6f}, l = {two_pass[1]:.6f}")

    # --- correctness over every configuration ---
    print(f"\n{'N':>5} {'causal':>7} {'B':>4} {'last block':>10} {'max |flash - standard|':>24}")
    errors = []
    for n in CHECK_LENGTHS:
        for causal in (False, True):
            reference = standard_attention(*inputs(n), causal, MemoryMeter())
            for block in CHECK_BLOCKS:
                error = max_abs_difference(
                    flash_attention(*inputs(n), block, causal, MemoryMeter()), reference)
                errors.append(error)
                ragged = n % block or block
                print(f"{n:>5} {str(causal):>7} {block:>4} {ragged:>4} rows {error:>24.3g}")
    configs = len(CHECK_LENGTHS) * 2 * len(CHECK_BLOCKS)
    max_abs_error = nan_aware_max(errors)   # NaN if any configuration produced a NaN
    print(f"largest error over all {configs} configurations: {max_abs_error:.3g}")

    # The bug the criterion exists to catch: drop the rescale factor exp(m_old - m_new).
    n = max(CHECK_LENGTHS)
    reference = standard_attention(*inputs(n), False, MemoryMeter())
    broken = flash_attention(*inputs(n), BLOCK_SIZE, False, MemoryMeter(), rescale=False)
    no_rescale_error = max_abs_difference(broken, reference)
    print(f"the same tiling without the rescale exp(m_old - m_new), N = {n}: "
          f"max error {no_rescale_error:.3g}")

    # --- one row's running max and sum as the key blocks stream past ---
    trace = {"row": TRACE_ROW, "steps": []}
    flash_attention(*inputs(n), BLOCK_SIZE, False, MemoryMeter(), trace=trace)
    print(f"\nQuery row {TRACE_ROW} (N = {n}, B = {BLOCK_SIZE}, no mask): m and l as the "
          f"key blocks stream past")
    print(f"{'keys':>9} {'tile max':>9} {'m_old':>8} {'m_new':>8} {'rescale':>8} {'l':>9}")
    for c0, c1, tile_max, m_old, m_new, correction, l_value in trace["steps"]:
        print(f"{c0:>3}-{c1 - 1:<5} {tile_max:>9.4f} {m_old:>8.4f} {m_new:>8.4f} "
              f"{correction:>8.4f} {l_value:>9.4f}")
    # A rescale of 1 means the running max did not move; anything less shrinks what was
    # accumulated so it is measured against the new, larger maximum. On the first tile the
    # rescale is exp(-inf) = 0, applied to an accumulator that is still empty.

    # --- which tiles a causal kernel computes ---
    ragged_n, ragged_block = 100, 12
    print(f"\nCausal tiles for N = {ragged_n}, B = {ragged_block} (rows: query blocks, columns: "
          f"key blocks;\n# full, / diagonal, partly masked, . fully masked and skipped; "
          f"the last block has {ragged_n % ragged_block} rows)")
    for line in tile_picture(ragged_n, ragged_block):
        print("  " + " ".join(line))

    # --- scratch memory and slow-memory traffic ---
    print(f"\n{'N':>5} {'std scratch':>12} {'flash scratch':>14} {'std IO':>9} {'flash IO':>9} "
          f"{'std mults':>10} {'flash mults':>12}")
    measured = {}
    for n in MEMORY_LENGTHS:
        standard_meter, flash_meter = MemoryMeter(), MemoryMeter()
        standard_attention(*inputs(n), False, standard_meter)
        flash_attention(*inputs(n), BLOCK_SIZE, False, flash_meter)
        measured[n] = (standard_meter, flash_meter)
        print(f"{n:>5} {standard_meter.peak_extra:>12} {flash_meter.peak_extra:>14} "
              f"{standard_meter.reads + standard_meter.writes:>9} "
              f"{flash_meter.reads + flash_meter.writes:>9} {standard_meter.mults:>10} "
              f"{flash_meter.mults:>12}")
    print(f"(B = {BLOCK_SIZE}, no mask. scratch: floats held beyond Q, K, V and O;\n"
          f" IO: floats read from and written to slow memory)")
    # Scratch memory and IO are the meter's figures: the script's own bookkeeping of what
    # each algorithm would hold and move, kept beside the code that does it, not a
    # measurement of what Python allocates. The memory criteria check that bookkeeping (a
    # flash that never freed its tiles would fail them); the tests check the meter's
    # counts against the closed forms above.
    small, large = MEMORY_LENGTHS[0], MEMORY_LENGTHS[-1]
    standard_memory_exponent = log_log_slope(small, measured[small][0].peak_extra,
                                             large, measured[large][0].peak_extra)
    flash_memory_exponent = log_log_slope(small, measured[small][1].peak_extra,
                                          large, measured[large][1].peak_extra)
    standard_meter, flash_meter = measured[large]
    print(f"scratch memory grows as N^{standard_memory_exponent:.2f} (standard) and "
          f"N^{flash_memory_exponent:.2f} (flash) between N = {small} and {large}")

    # --- the block size trade-off ---
    # A bigger tile means fewer passes of K and V over each query block (less IO), but
    # four blocks and the tile must fit in fast memory: the Q, K and V blocks and the output
    # block being built (B rows of d floats each, 4Bd) plus the B x B tile of scores. Real
    # kernels pick the largest B whose tiles fit in SRAM. At B = N there is one tile and the
    # IO reaches its floor of 4Nd, but then the whole N x N score matrix must fit in fast
    # memory, which is exactly what fails for long sequences.
    print(f"\nBlock size at N = {large} (no mask): slow-memory floats moved, and the "
          f"fast-memory\nworking set from the formula 4Bd + B^2")
    print(f"{'B':>5} {'IO':>8} {'IO / standard':>14} {'fast memory':>12}")
    standard_total = standard_meter.reads + standard_meter.writes
    for block in SWEEP_BLOCKS:
        meter = MemoryMeter()
        flash_attention(*inputs(large), block, False, meter)
        io = meter.reads + meter.writes
        bar = "#" * round(40 * io / standard_total)
        print(f"{block:>5} {io:>8} {io / standard_total:>14.3f} "
              f"{4 * block * HEAD_DIM + block * block:>12}  |{bar}")

    results = {
        "max_abs_error": max_abs_error,
        "standard_memory_exponent": standard_memory_exponent,
        "flash_memory_exponent": flash_memory_exponent,
        "flash_io": flash_meter.reads + flash_meter.writes,
        "standard_io": standard_meter.reads + standard_meter.writes,
        "no_rescale_error": no_rescale_error,
        "configurations_checked": configs,
        "standard_mults": standard_meter.mults,
        "flash_mults": flash_meter.mults,
    }
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microflash.md")
    return results


if __name__ == "__main__":
    main()
