"""Fast checks specific to systems/microattention.py.

The script runs attention one position at a time over a key/value cache; here an independent
whole-sequence implementation (the score matrix with a -inf mask, as a training pass would
compute it) checks it for MHA, GQA, MQA and the sliding window. The counted multiplications
and cached floats are checked against the formulas over many shapes, and deliberately broken
versions (an off-by-one window, a cache that never evicts, unrelated heads) are shown to fail
the criteria they would otherwise slip past.
"""
import math
import random

import pytest

from support import load_script

attn = load_script("systems/microattention.py")


def fresh_counter():
    return {"mults": 0, "max_score": 0.0}


def setup(seed=0, spread=0.2, n=None):
    random.seed(seed)
    parts = attn.draw_mha_parts()
    xs = [[random.gauss(0.0, 1.0) for _ in range(attn.D_MODEL)]
          for _ in range(n or attn.SEQ_LEN)]
    return parts, attn.build_mha(parts, spread), xs


def reference_attention(weights, xs, n_kv_heads, window):
    """Whole-sequence attention with an explicit mask, written independently of the script."""
    n, d, h_count = len(xs), attn.HEAD_DIM, attn.N_HEAD

    def matvec(matrix, x):
        return [sum(a * b for a, b in zip(row, x)) for row in matrix]

    q = [matvec(weights["wq"], x) for x in xs]
    k = [matvec(weights["wk"], x) for x in xs]
    v = [matvec(weights["wv"], x) for x in xs]
    concat = [[] for _ in range(n)]
    for h in range(h_count):
        g = h * n_kv_heads // h_count
        for i in range(n):
            scores = []
            for j in range(n):
                allowed = j <= i and (window is None or i - j < window)
                s = sum(a * b for a, b in zip(q[i][h * d:(h + 1) * d], k[j][g * d:(g + 1) * d]))
                scores.append(s / math.sqrt(d) if allowed else -math.inf)
            top = max(scores)
            w = [math.exp(s - top) for s in scores]
            total = sum(w)
            concat[i] += [sum(w[j] / total * v[j][g * d + c] for j in range(n)) for c in range(d)]
    return [matvec(weights["wo"], row) for row in concat]


def max_diff(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


# --- the pieces -------------------------------------------------------------------------------

def test_counted_helpers_compute_and_count():
    counter = fresh_counter()
    assert attn.dot([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], counter) == 32.0
    assert counter["mults"] == 3
    assert attn.weighted_sum([0.5, 2.0], [[1.0, 2.0], [3.0, 4.0]], counter) == [6.5, 9.0]
    assert counter["mults"] == 3 + 4
    assert attn.project([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], [3.0, 4.0], counter) == [3, 7, 8]
    assert counter["mults"] == 7 + 6


def test_softmax_matches_the_naive_form_and_survives_huge_scores():
    scores = [0.3, -1.2, 2.2, 0.0]
    assert attn.softmax(scores) == pytest.approx(attn.naive_softmax(scores), rel=1e-12)
    huge = [1000.0, 999.0, -5.0]
    with pytest.raises(OverflowError):
        attn.naive_softmax(huge)
    probs = attn.softmax(huge)
    assert all(math.isfinite(p) for p in probs)
    assert probs[0] == pytest.approx(1.0 / (1.0 + math.exp(-1.0)), rel=1e-12)


def test_first_visible_and_mask_picture():
    assert [attn.first_visible(t, None) for t in range(5)] == [0] * 5
    assert [attn.first_visible(t, 3) for t in range(6)] == [0, 0, 0, 1, 2, 3]
    picture = attn.mask_picture(5, 2)
    assert picture == ["#....", "##...", ".##..", "..##.", "...##"]
    assert all(row.count("#") == t + 1 for t, row in enumerate(attn.mask_picture(6, None)))


def test_redundant_heads_keep_the_scale_and_spread_zero_makes_identical_heads():
    parts, _, _ = setup()
    same = attn.redundant_heads(parts["k_shared"], parts["k_own"], 0.0)
    d = attn.HEAD_DIM
    blocks = [same[h * d:(h + 1) * d] for h in range(attn.N_HEAD)]
    assert all(block == blocks[0] for block in blocks)
    # The variance of the entries stays near 1 / D_MODEL whatever the spread.
    for spread in (0.0, 1.0, 3.0):
        rows = attn.redundant_heads(parts["k_shared"], parts["k_own"], spread)
        entries = [x for row in rows for x in row]
        variance = sum(x * x for x in entries) / len(entries)
        assert variance == pytest.approx(1.0 / attn.D_MODEL, rel=0.25)


def test_mean_pooling_averages_heads_within_each_group():
    _, mha, _ = setup()
    d = attn.HEAD_DIM
    pooled = attn.mean_pool_heads(mha["wk"], 2)
    assert len(pooled) == 2 * d
    for r in range(d):
        expected = [(a + b) / 2 for a, b in zip(mha["wk"][r], mha["wk"][d + r])]
        assert pooled[r] == pytest.approx(expected, rel=1e-12)
        expected = [(a + b) / 2 for a, b in zip(mha["wk"][2 * d + r], mha["wk"][3 * d + r])]
        assert pooled[d + r] == pytest.approx(expected, rel=1e-12)
    # One group per head is no conversion at all.
    same = attn.mean_pool_heads(mha["wk"], attn.N_HEAD)
    assert max_diff(same, mha["wk"]) < 1e-15


# --- attention against an independent implementation -------------------------------------------

@pytest.mark.parametrize("n_kv, window", [(4, None), (2, None), (1, None), (4, 4), (2, 3),
                                          (1, 1), (4, 40)])
def test_incremental_attention_matches_whole_sequence_attention(n_kv, window):
    _, mha, xs = setup(seed=3, n=9)
    weights = mha if n_kv == attn.N_HEAD else attn.convert(mha, n_kv)
    outputs, _ = attn.attention(weights, xs, n_kv, window, fresh_counter())
    assert max_diff(outputs, reference_attention(weights, xs, n_kv, window)) < 1e-12


@pytest.mark.parametrize("n_kv, window", [(4, None), (2, None), (1, None), (4, 4), (2, 3),
                                          (1, 1)])
def test_the_scripts_reference_matches_the_tests_reference(n_kv, window):
    # The script's own reference (behind reference_max_error) agrees with this file's one
    _, mha, xs = setup(seed=4, n=9)
    weights = mha if n_kv == attn.N_HEAD else attn.convert(mha, n_kv)
    assert max_diff(attn.reference_attention(weights, xs, n_kv, window),
                    reference_attention(weights, xs, n_kv, window)) < 1e-12


def test_nan_aware_max_does_not_skip_nan():
    assert max(0.0, math.nan) == 0.0                    # the trap
    assert math.isnan(attn.nan_aware_max([0.0, math.nan, 1.0]))
    assert attn.nan_aware_max([0.0, 2.0, 1.0]) == 2.0


@pytest.mark.parametrize("n", [1, 3, 4, 5, 9])
@pytest.mark.parametrize("n_kv, window", [(4, None), (2, None), (1, None), (4, 4), (2, 2),
                                          (1, 1), (4, 100)])
def test_counts_match_the_closed_form_formulas(n, n_kv, window):
    _, mha, xs = setup(seed=4, n=n)
    weights = mha if n_kv == attn.N_HEAD else attn.convert(mha, n_kv)
    counter = fresh_counter()
    _, cache_floats = attn.attention(weights, xs, n_kv, window, counter)
    assert counter["mults"] == attn.formula_mults(n, n_kv, window)
    assert cache_floats == attn.formula_cache_floats(n, n_kv, window)


def test_formulas_by_hand_for_one_case():
    # N = 3, causal MHA: q, o projections 3*32*32 each; k, v 3*32*32 each; 6 visible pairs,
    # 4 heads * 8 dims * 2 (scores and values) per pair.
    assert attn.visible_pairs(3, None) == 6
    assert attn.formula_mults(3, 4, None) == 4 * 3 * 32 * 32 + 2 * 4 * 8 * 6
    assert attn.formula_cache_floats(3, 1, None) == 2 * 1 * 8 * 3
    assert attn.visible_pairs(10, 4) == 1 + 2 + 3 + 4 * 7


# --- broken versions fail the criteria -------------------------------------------------------

def test_off_by_one_window_fails_the_full_window_check(monkeypatch):
    _, mha, xs = setup()
    good, _ = attn.attention(mha, xs, attn.N_HEAD, None, fresh_counter())
    monkeypatch.setattr(attn, "first_visible",
                        lambda t, window: 0 if window is None else max(0, t - window + 2))
    full_window, _ = attn.attention(mha, xs, attn.N_HEAD, attn.SEQ_LEN, fresh_counter())
    assert max_diff(full_window, good) > 1e-3


def test_a_window_that_never_evicts_is_counted_as_a_mismatch(monkeypatch):
    _, mha, xs = setup()
    monkeypatch.setattr(attn, "first_visible", lambda t, window: 0)
    counter = fresh_counter()
    _, cache_floats = attn.attention(mha, xs, attn.N_HEAD, attn.WINDOW, counter)
    monkeypatch.undo()
    assert cache_floats != attn.formula_cache_floats(attn.SEQ_LEN, attn.N_HEAD, attn.WINDOW)
    assert counter["mults"] != attn.formula_mults(attn.SEQ_LEN, attn.N_HEAD, attn.WINDOW)


def test_unrelated_heads_fail_the_cosine_criteria():
    parts, _, xs = setup(seed=42)
    runs, _ = attn.run_variants(attn.build_mha(parts, 2.0), xs)
    base = runs["MHA"][0]
    assert attn.cosine(runs["MQA (1 kv)"][0], base) < 0.95
    assert attn.cosine(runs["GQA (2 kv)"][0], base) < 0.95


def test_stress_inputs_pass_1000_and_stay_finite():
    _, mha, xs = setup(seed=5)
    stress = [[attn.STRESS_SCALE * x for x in row] for row in xs]
    runs, max_score = attn.run_variants(mha, stress)
    assert max_score > 1000
    assert sum(attn.count_nonfinite(run[0]) for run in runs.values()) == 0
    # The reported maximum is the real maximum over what the softmax saw.
    counter = fresh_counter()
    attn.attention(mha, stress, attn.N_HEAD, None, counter)
    assert counter["max_score"] <= max_score


def test_count_nonfinite_sees_nan_and_infinity():
    assert attn.count_nonfinite([[1.0, math.nan], [math.inf, -math.inf]]) == 3


def test_main_returns_every_criterion_key(monkeypatch, capsys):
    monkeypatch.setattr(attn, "SEQ_LEN", 6)
    monkeypatch.setattr(attn, "SPREAD_SWEEP", (0.2,))
    results = attn.main()
    out = capsys.readouterr().out
    assert "criterion" in out and "OverflowError" in out
    for _, key, _, target in attn.CRITERIA:
        assert key in results
        assert not isinstance(target, str) or target in results
    assert results["count_mismatches"] == 0 and results["nonfinite_outputs"] == 0
    assert results["gqa_kv_ratio"] == 0.5 and results["mqa_kv_ratio"] == 0.25
