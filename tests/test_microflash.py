"""Fast checks specific to systems/microflash.py.

Flash attention's claim is exact: the tiled output equals softmax(Q K^T / sqrt(d)) V. It is
checked here against an attention written independently of the script, over many sequence
lengths and block sizes (ragged last tiles, blocks larger than N, blocks of 1), with the
causal mask on and off. The online softmax is checked against two passes; the memory meter's
reads, writes, scratch space and multiplications against the closed forms; and a tiling that
leaves out the rescale exp(m_old - m_new) is shown to fail the error criterion.
"""
import math
import random

import pytest

from support import load_script

flash = load_script("systems/microflash.py")
D = flash.HEAD_DIM


def qkv(n, seed=0, d=D):
    rng = random.Random(seed)
    return tuple([[rng.gauss(0.0, 1.0) for _ in range(d)] for _ in range(n)] for _ in range(3))


def reference(q, k, v, causal):
    """Attention straight from its definition, independent of the script."""
    out = []
    for i, q_row in enumerate(q):
        keys = range(i + 1) if causal else range(len(k))
        s = [sum(a * b for a, b in zip(q_row, k[j])) / math.sqrt(len(q_row)) for j in keys]
        top = max(s)
        w = [math.exp(x - top) for x in s]
        total = sum(w)
        out.append([sum(w[t] * v[j][c] for t, j in enumerate(keys)) / total
                    for c in range(len(v[0]))])
    return out


def error(a, b):
    return flash.max_abs_difference(a, b)


def test_a_nan_output_makes_the_error_nan():
    # Python's max(0.0, nan) is 0.0; the script's maximum must not skip a NaN
    assert math.isnan(flash.max_abs_difference([[0.0, 1.0]], [[math.nan, 1.0]]))
    assert math.isnan(flash.max_abs_difference([[1.0, math.nan]], [[0.0, 1.0]]))
    assert flash.max_abs_difference([[1.0, 2.0]], [[0.5, 2.0]]) == 0.5


# --- online softmax -------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["random", "rising", "falling"])
def test_online_softmax_equals_two_passes(order):
    rng = random.Random(1)
    scores = [rng.gauss(0.0, 5.0) for _ in range(50)]
    if order != "random":
        scores.sort(reverse=order == "falling")
    m1, l1 = flash.online_softmax_stats(scores)
    m2, l2 = flash.two_pass_softmax_stats(scores)
    assert m1 == m2
    assert l1 == pytest.approx(l2, rel=1e-12)
    # and it is a real softmax normaliser: probabilities exp(s - m) / l sum to one
    assert sum(math.exp(s - m1) / l1 for s in scores) == pytest.approx(1.0, rel=1e-12)


def test_online_softmax_with_huge_scores_stays_finite():
    m, l = flash.online_softmax_stats([1000.0, 2000.0, 1500.0])
    assert m == 2000.0 and math.isfinite(l) and l == pytest.approx(1.0, rel=1e-12)


# --- exactness ------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [1, 2, 7, 12, 13, 31, 32, 33])
def test_standard_attention_matches_the_reference(n, causal):
    q, k, v = qkv(n, seed=n)
    assert error(flash.standard_attention(q, k, v, causal, flash.MemoryMeter()),
                 reference(q, k, v, causal)) < 1e-12


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n, block", [(1, 1), (5, 1), (7, 3), (12, 12), (13, 12), (20, 6),
                                      (32, 12), (33, 16), (40, 7), (9, 50), (100, 12)])
def test_flash_attention_matches_the_reference(n, block, causal):
    q, k, v = qkv(n, seed=n + block)
    out = flash.flash_attention(q, k, v, block, causal, flash.MemoryMeter())
    assert error(out, reference(q, k, v, causal)) < 1e-12


def test_the_checked_configurations_include_ragged_tiles_and_the_mask():
    ragged = [(n, b) for n in flash.CHECK_LENGTHS for b in flash.CHECK_BLOCKS if n % b]
    assert len(ragged) >= 3
    assert {32, 100, 128} <= set(flash.CHECK_LENGTHS) and 12 in flash.CHECK_BLOCKS


def test_without_the_rescale_the_error_check_fails():
    q, k, v = qkv(128, seed=42)
    broken = flash.flash_attention(q, k, v, 16, False, flash.MemoryMeter(), rescale=False)
    assert error(broken, reference(q, k, v, False)) > 1e-3
    # A single tile needs no rescale, so the bug only shows once K and V are tiled.
    one_tile = flash.flash_attention(q, k, v, 128, False, flash.MemoryMeter(), rescale=False)
    assert error(one_tile, reference(q, k, v, False)) < 1e-12


def test_losing_the_ragged_tail_would_fail_the_error_check():
    # A common tiling bug loops only over whole blocks, so the last N % B keys never arrive.
    # Its output is attention over the truncated keys; the criterion must see the difference.
    n, block = 100, 12
    q, k, v = qkv(n, seed=3)
    whole = n - n % block
    truncated = reference(q, k[:whole], v[:whole], False)
    assert error(truncated, reference(q, k, v, False)) > 1e-3
    tiled = flash.flash_attention(q, k, v, block, False, flash.MemoryMeter())
    assert error(tiled, reference(q, k, v, False)) < 1e-12


def test_trace_records_the_rescale_of_one_row():
    q, k, v = qkv(64, seed=7)
    trace = {"row": 50, "steps": []}
    flash.flash_attention(q, k, v, 16, False, flash.MemoryMeter(), trace=trace)
    assert len(trace["steps"]) == 4
    m_values = [step[4] for step in trace["steps"]]
    assert m_values == sorted(m_values)            # the running max never falls
    assert trace["steps"][0][5] == 0.0             # first tile: exp(-inf - m) = 0
    for _, _, tile_max, m_old, m_new, correction, _ in trace["steps"][1:]:
        assert m_new == max(m_old, tile_max)
        assert correction == pytest.approx(math.exp(m_old - m_new), rel=1e-15)
    # the final l is the full row's softmax normaliser at the final max
    s = [sum(a * b for a, b in zip(q[50], k_row)) / math.sqrt(D) for k_row in k]
    assert trace["steps"][-1][6] == pytest.approx(sum(math.exp(x - max(s)) for x in s), rel=1e-12)


# --- IO, scratch memory and multiplications against the formulas ------------------------------

@pytest.mark.parametrize("n", [5, 32, 100, 128])
@pytest.mark.parametrize("causal", [False, True])
def test_standard_meter_matches_the_formulas(n, causal):
    meter = flash.MemoryMeter()
    flash.standard_attention(*qkv(n), causal, meter)
    assert meter.reads + meter.writes == flash.standard_io(n, D) == 4 * n * n + 4 * n * D
    assert meter.peak_extra == n * n + 2 * n
    assert meter.mults == 2 * n * n * D
    assert meter.extra == 0


@pytest.mark.parametrize("n, block", [(5, 2), (32, 16), (32, 12), (100, 12), (128, 16),
                                      (9, 50)])
@pytest.mark.parametrize("causal", [False, True])
def test_flash_meter_matches_the_formulas(n, block, causal):
    meter = flash.MemoryMeter()
    flash.flash_attention(*qkv(n), block, causal, meter)
    assert meter.reads + meter.writes == flash.flash_io(n, D, block, causal)
    assert meter.mults == flash.flash_mults(n, D, block, causal)
    assert meter.peak_extra == 2 * n + min(block, n) ** 2
    assert meter.extra == 0


def test_flash_io_by_hand():
    # N = 128, B = 16, no mask: Q and O once (2Nd), K and V streamed past 8 query blocks.
    assert flash.flash_io(128, 8, 16, False) == 2 * 128 * 8 + 8 * 2 * 128 * 8 == 18432
    # With the mask, query block r (of 8) streams (r + 1) key blocks: 36 blocks of 16 keys.
    assert flash.flash_io(128, 8, 16, True) == 2 * 128 * 8 + 2 * 8 * 36 * 16
    assert flash.standard_io(128, 8) == 69632


def test_tile_picture_marks_exactly_the_processed_tiles():
    for n, block in [(100, 12), (32, 16), (13, 5)]:
        picture = flash.tile_picture(n, block)
        computed = sum(row.count("#") + row.count("/") for row in picture)
        assert computed == len(flash.processed_tiles(n, block, True))
        assert all(row[r] == "/" for r, row in enumerate(picture))


def test_log_log_slope():
    assert flash.log_log_slope(32, 32 ** 2, 128, 128 ** 2) == pytest.approx(2.0)
    assert flash.log_log_slope(32, 5.0, 128, 5.0) == 0.0


def test_main_returns_every_criterion_key(monkeypatch, capsys):
    for name, value in {"CHECK_LENGTHS": (20, 13), "CHECK_BLOCKS": (8, 5),
                        "MEMORY_LENGTHS": (8, 16), "BLOCK_SIZE": 4, "SWEEP_BLOCKS": (4,),
                        "TRACE_ROW": 5}.items():
        monkeypatch.setattr(flash, name, value)
    results = flash.main()
    assert "criterion" in capsys.readouterr().out
    for _, key, _, target in flash.CRITERIA:
        assert key in results
        assert not isinstance(target, str) or target in results
    assert results["max_abs_error"] < 1e-12
    assert results["no_rescale_error"] > 1e-3


@pytest.mark.parametrize("causal", [False, True])
def test_flash_attention_is_exact_and_finite_with_scores_in_the_thousands(causal):
    q, k, v = qkv(40, seed=11)
    q = [[400.0 * x for x in row] for row in q]    # scores reach the thousands
    biggest = max(abs(sum(a * b for a, b in zip(qr, kr))) / math.sqrt(D) for qr in q for kr in k)
    assert biggest > 1000
    out = flash.flash_attention(q, k, v, 12, causal, flash.MemoryMeter())
    assert all(math.isfinite(x) for row in out for x in row)
    assert error(out, reference(q, k, v, causal)) < 1e-12
