"""Fast checks specific to foundational/microembedding.py.

The InfoNCE gradient is derived by hand in the script, so every entry of it is compared with
central finite differences here; so is the L2-normalisation step on its own. The rest pins
down the pieces the measurements rely on: the hash (stable across processes), Levenshtein,
the stable softmax, the n-gram features, the augmentation and one Adam step.
"""
import math
import os
import random
import subprocess
import sys

import pytest

from support import ROOT, load_script

SCRIPT = "foundational/microembedding.py"
emb = load_script(SCRIPT)


# --- helpers -------------------------------------------------------------------------------

def tiny_problem(seed=0):
    """7 buckets, 3 dims, a batch of 3 names. Bucket 6 is used by no view (its gradient must
    be zero) and some views repeat a bucket (its gradient must count twice)."""
    rng = random.Random(seed)
    W = [[rng.gauss(0.0, 1.0) for _ in range(3)] for _ in range(7)]
    buckets_a = [[0, 1, 1], [2, 3], [4, 0, 5]]
    buckets_b = [[0, 1], [2, 3, 3], [5, 4, 1]]
    return W, buckets_a, buckets_b


def loss_only(W, buckets_a, buckets_b, temperature):
    return emb.infonce_loss_and_grad(W, buckets_a, buckets_b, temperature)[0]


# --- the hand-derived gradient ---------------------------------------------------------------

@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.1])
def test_infonce_gradient_matches_finite_differences_for_every_entry(temperature):
    W, buckets_a, buckets_b = tiny_problem()
    _, grad_rows = emb.infonce_loss_and_grad(W, buckets_a, buckets_b, temperature)
    h = 1e-6
    largest = 0.0
    for row in range(len(W)):
        for d in range(len(W[0])):
            original = W[row][d]
            W[row][d] = original + h
            up = loss_only(W, buckets_a, buckets_b, temperature)
            W[row][d] = original - h
            down = loss_only(W, buckets_a, buckets_b, temperature)
            W[row][d] = original
            numeric = (up - down) / (2 * h)
            analytic = grad_rows[row][d] if row in grad_rows else 0.0
            assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-7), (row, d)
            largest = max(largest, abs(analytic))
    # Guard against a vacuous pass: the gradient must actually be there to compare.
    assert largest > 1e-3
    assert 6 not in grad_rows


def test_infonce_loss_matches_its_definition():
    # reference_loss() is the script's InfoNCE written from the formula, sharing no code with
    # the fused loss and gradient; the run's gradient check differentiates it, so the two
    # must agree. Two independent computations agreeing checks both.
    for seed in (3, 5):
        W, buckets_a, buckets_b = tiny_problem(seed=seed)
        for temperature in (1.0, 0.2, 0.1):
            assert loss_only(W, buckets_a, buckets_b, temperature) == pytest.approx(
                emb.reference_loss(W, buckets_a, buckets_b, temperature), rel=1e-12)


def gradient_check_on_random_names(seed):
    rng = random.Random(seed)
    W = [[rng.gauss(0.0, emb.INIT_STD) for _ in range(8)] for _ in range(64)]
    names = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 8)))
             for _ in range(40)]
    random.seed(seed)
    return emb.gradient_check(W, names, {})


def test_gradient_check_passes_the_hand_derived_gradient():
    for seed in range(3):
        assert gradient_check_on_random_names(seed) < 1e-6


def test_gradient_check_catches_a_wrong_derivation(monkeypatch):
    # Treating the normalisation as the identity still trains (see the script), so the run's
    # check must be what flags it.
    monkeypatch.setattr(emb, "l2_normalize_backward", lambda unit, norm, grad: list(grad))
    assert gradient_check_on_random_names(0) > 1e-2


def test_gradient_check_is_nan_when_a_derivative_is_nan(monkeypatch):
    # Only the second unit's gradient is NaN, so a plain max() over the gaps would skip it.
    def half_nan(unit, norm, grad):
        return [g if i != 1 else math.nan for i, g in enumerate(grad)]
    monkeypatch.setattr(emb, "l2_normalize_backward", half_nan)
    assert math.isnan(gradient_check_on_random_names(0))


def test_l2_normalisation_gradient_matches_finite_differences():
    rng = random.Random(7)
    raw = [rng.gauss(0.0, 2.0) for _ in range(5)]
    upstream = [rng.gauss(0.0, 1.0) for _ in range(5)]   # dL/de for L = upstream . e

    def loss_of(u):
        unit, _ = emb.l2_normalize(u)
        return sum(g * e for g, e in zip(upstream, unit))

    unit, norm = emb.l2_normalize(raw)
    assert norm == pytest.approx(math.sqrt(sum(x * x for x in raw)))
    analytic = emb.l2_normalize_backward(unit, norm, upstream)
    h = 1e-6
    for d in range(len(raw)):
        plus, minus = list(raw), list(raw)
        plus[d] += h
        minus[d] -= h
        numeric = (loss_of(plus) - loss_of(minus)) / (2 * h)
        assert analytic[d] == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    # Moving u along itself leaves e unchanged, so the gradient has no component along e.
    assert abs(sum(g * e for g, e in zip(analytic, unit))) < 1e-12


def test_encoder_sums_selected_rows_with_repeats():
    W = [[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]
    assert emb.encode_raw(W, [0, 1, 1]) == [1.0, 4.0]
    assert emb.encode_raw(W, [2]) == [3.0, 3.0]


# --- numerical stability ---------------------------------------------------------------------

def test_softmax_is_stable_for_huge_logits():
    big = emb.softmax([1000.0, 1001.0, 1002.0])
    small = emb.softmax([0.0, 1.0, 2.0])
    assert all(math.isfinite(p) for p in big)
    assert sum(big) == pytest.approx(1.0)
    assert big == pytest.approx(small, rel=1e-12)
    # A logit 2000 below the top: its probability underflows to 0, yet log softmax stays finite.
    log_probs = emb.log_softmax([1000.0, -1000.0])
    assert log_probs[0] == pytest.approx(0.0)
    assert log_probs[1] == pytest.approx(-2000.0)


def test_infonce_is_finite_when_logits_exceed_1000():
    W, buckets_a, buckets_b = tiny_problem(seed=1)
    # tau = 1e-4 turns cosines into logits of up to +-10,000: exp() would overflow unshifted.
    loss, grad_rows = emb.infonce_loss_and_grad(W, buckets_a, buckets_b, 1e-4)
    assert math.isfinite(loss) and loss >= 0.0
    assert all(math.isfinite(g) for grad in grad_rows.values() for g in grad)


# --- features and hashing --------------------------------------------------------------------

def test_fnv1a_matches_published_test_vectors():
    assert emb.fnv1a_32("") == 0x811C9DC5
    assert emb.fnv1a_32("a") == 0xE40C292C
    assert emb.fnv1a_32("foobar") == 0xBF9CF968


def test_ngram_features_cover_1_to_3_grams_with_boundaries():
    grams = ["^", "a", "n", "n", "$", "^a", "an", "nn", "n$", "^an", "ann", "nn$"]
    expected = [emb.fnv1a_32(g) % 4096 for g in grams]
    assert emb.ngram_features("ann", 4096) == expected
    cache = {}
    assert emb.ngram_features("ann", 4096, cache) == expected
    assert emb.ngram_features("ann", 4096, cache) == expected   # served from the memo


def _buckets_in_subprocess(hash_seed):
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('m', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(m)\n"
        "print(m.ngram_features('anna', 4096), hash('^an'))\n"
    )
    env = dict(os.environ, PYTHONHASHSEED=str(hash_seed))
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / SCRIPT)], env=env,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    buckets, builtin_hash = out.rsplit(" ", 1)
    return buckets, int(builtin_hash)


def test_hash_buckets_are_the_same_in_every_process():
    buckets_1, builtin_1 = _buckets_in_subprocess(1)
    buckets_2, builtin_2 = _buckets_in_subprocess(2)
    assert buckets_1 == buckets_2 == str(emb.ngram_features("anna", 4096))
    # The reason the script does not use hash(): it changes with PYTHONHASHSEED.
    assert builtin_1 != builtin_2


# --- augmentation, edit distance, retrieval --------------------------------------------------

@pytest.mark.parametrize("s, t, distance", [
    ("", "", 0), ("", "abc", 3), ("abc", "", 3), ("abc", "abc", 0),
    ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("anna", "anne", 1),
    ("ab", "ba", 2),              # a swap costs two edits: Levenshtein has no transposition
    ("emma", "michael", 6), ("saturday", "sunday", 3),
])
def test_levenshtein_known_cases(s, t, distance):
    assert emb.levenshtein(s, t) == distance
    assert emb.levenshtein(t, s) == distance


def test_augment_makes_one_typo():
    state = random.getstate()
    random.seed(0)
    try:
        lengths = set()
        for _ in range(400):
            name = "michael"
            view = emb.augment(name)
            lengths.add(len(view) - len(name))
            assert emb.levenshtein(name, view) <= 2   # a swap is two Levenshtein edits
            assert sorted(view) == sorted(name) or emb.levenshtein(name, view) <= 1
    finally:
        random.setstate(state)
    assert lengths == {-1, 0, 1}   # deletions, substitutions or swaps, and insertions happen


def test_nearest_neighbours_skip_the_query_and_rank_by_cosine():
    pool_names = ["anna", "anne", "zed"]
    pool_vecs = [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]
    found = emb.nearest_neighbours([1.0, 0.0], pool_vecs, pool_names, "anna", 2)
    assert [name for _, name in found] == ["anne", "zed"]
    assert found[0][0] == pytest.approx(0.8)


# --- optimisation ------------------------------------------------------------------------------

def test_adam_update_matches_the_textbook_formula():
    W, m, v = [[1.0, -2.0]], [[0.0, 0.0]], [[0.0, 0.0]]
    grads = [[0.5, -0.1], [0.2, 0.3]]
    expected_w, expected_m, expected_v = [1.0, -2.0], [0.0, 0.0], [0.0, 0.0]
    lr = 0.1
    for step, grad in enumerate(grads, 1):
        emb.adam_update(W, {0: grad}, m, v, step, lr)
        for d, g in enumerate(grad):
            expected_m[d] = 0.9 * expected_m[d] + 0.1 * g
            expected_v[d] = 0.999 * expected_v[d] + 0.001 * g * g
            m_hat = expected_m[d] / (1 - 0.9 ** step)
            v_hat = expected_v[d] / (1 - 0.999 ** step)
            expected_w[d] -= lr * m_hat / (math.sqrt(v_hat) + 1e-8)
        assert W[0] == pytest.approx(expected_w, rel=1e-12)


def test_a_few_adam_steps_lower_the_loss():
    rng = random.Random(5)
    W = [[rng.gauss(0.0, 0.2) for _ in range(8)] for _ in range(64)]
    m = [[0.0] * 8 for _ in range(64)]
    v = [[0.0] * 8 for _ in range(64)]
    names = ["anna", "bob", "carla", "dmitri", "eve", "fatima"]
    buckets_a = [emb.ngram_features(n[1:], 64) for n in names]     # first letter dropped
    buckets_b = [emb.ngram_features(n[:-1], 64) for n in names]    # last letter dropped
    first, _ = emb.infonce_loss_and_grad(W, buckets_a, buckets_b, 0.1)
    for step in range(1, 31):
        loss, grad_rows = emb.infonce_loss_and_grad(W, buckets_a, buckets_b, 0.1)
        emb.adam_update(W, grad_rows, m, v, step, 0.05)
    last, _ = emb.infonce_loss_and_grad(W, buckets_a, buckets_b, 0.1)
    assert last < 0.5 * first
