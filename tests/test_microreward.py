"""Fast checks specific to alignment/microreward.py.

The proxy's hand-derived Bradley-Terry gradient against central finite differences, the exact
best-of-n weights against brute-force enumeration of every draw, the KL of best-of-n against
its analytic bound, the Bayes ceiling against its formula, and the gold reward by hand.
"""
import itertools
import math
import random

import pytest

from support import load_script

mr = load_script("alignment/microreward.py")
H = 1e-6


def small_proxy(seed=0):
    rng = random.Random(seed)
    proxy = mr.init_proxy(rng)
    for j in range(mr.HIDDEN):          # w2 starts at 0: move it so every path carries gradient
        proxy["w2"][j] = rng.gauss(0.0, 1.0)
        proxy["b1"][j] = rng.gauss(0.2, 0.3)
    return proxy


BATCH = [("emma", "xqz"), ("olivia", "ab"), ("zzzzzzzzzz", "ava"), ("noah", "liam")]


def batch_features():
    return [(mr.features(c), mr.features(r)) for c, r in BATCH]


def test_bradley_terry_gradient_matches_central_finite_differences():
    proxy = small_proxy(1)
    data = batch_features()
    _, grads = mr.bradley_terry_loss_and_grads(proxy, data)
    checked = 0
    for (row, j), (grow, gj) in zip(mr.slots(proxy), mr.slots(grads)):
        original = row[j]
        row[j] = original + H
        up = mr.bradley_terry_loss_and_grads(proxy, data)[0]
        row[j] = original - H
        down = mr.bradley_terry_loss_and_grads(proxy, data)[0]
        row[j] = original
        assert grow[gj] == pytest.approx((up - down) / (2 * H), rel=1e-4, abs=1e-8)
        checked += 1
    assert checked == mr.HIDDEN * 27 + 2 * mr.HIDDEN + 1


def test_bradley_terry_loss_equals_its_formula_and_starts_at_ln2():
    proxy = small_proxy(2)
    data = batch_features()
    loss, _ = mr.bradley_terry_loss_and_grads(proxy, data)
    plain = 0.0
    for xc, xr in data:
        margin = mr.proxy_forward(proxy, xc)[0] - mr.proxy_forward(proxy, xr)[0]
        plain += -math.log(1.0 / (1.0 + math.exp(-margin)))
    assert loss == pytest.approx(plain / len(data), rel=1e-12)
    fresh = mr.init_proxy(random.Random(3))
    assert mr.bradley_terry_loss_and_grads(fresh, data)[0] == pytest.approx(math.log(2), rel=1e-12)


def test_a_training_step_orders_a_pair_its_way():
    # Gradient descent on the loss must raise r(chosen) - r(rejected): a flipped sign lowers it
    proxy = small_proxy(4)
    data = [(mr.features("anna"), mr.features("qxz"))]
    before = mr.proxy_forward(proxy, data[0][0])[0] - mr.proxy_forward(proxy, data[0][1])[0]
    _, grads = mr.bradley_terry_loss_and_grads(proxy, data)
    for (row, j), (grow, gj) in zip(mr.slots(proxy), mr.slots(grads)):
        row[j] -= 0.05 * grow[gj]
    after = mr.proxy_forward(proxy, data[0][0])[0] - mr.proxy_forward(proxy, data[0][1])[0]
    assert after > before


def test_softplus_and_sigmoid_are_stable():
    assert mr.softplus(-800.0) == pytest.approx(0.0, abs=1e-300)
    assert mr.softplus(800.0) == pytest.approx(800.0)
    assert mr.sigmoid(-800.0) == 0.0 and mr.sigmoid(800.0) == 1.0
    assert mr.sigmoid(0.7) == pytest.approx(1.0 / (1.0 + math.exp(-0.7)), rel=1e-12)


# --- best-of-n by order statistics, against brute force ---


def brute_force_best_of_n(scores, n):
    """Every one of the N^n equally likely draws, the argmax's probability (ties split evenly)."""
    size = len(scores)
    probs = [0.0] * size
    for draw in itertools.product(range(size), repeat=n):
        top = max(scores[i] for i in draw)
        winners = [i for i in range(size) if scores[i] == top]
        for i in winners:   # a random tie-break: each tied pool entry equally likely
            probs[i] += 1.0 / (size ** n * len(winners))
    return probs


@pytest.mark.parametrize("scores", [[0.3, -1.0, 2.5, 0.0, 1.1], [1.0, 1.0, 0.5, 2.0, 0.5, 0.5]])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_best_of_n_weights_equal_enumeration_of_every_draw(scores, n):
    assert mr.best_of_n_weights(scores, n) == pytest.approx(brute_force_best_of_n(scores, n),
                                                            abs=1e-12)


def test_best_of_n_weights_sum_to_one_and_n1_is_uniform():
    rng = random.Random(5)
    scores = [rng.gauss(0, 1) for _ in range(500)]
    for n in (1, 7, 256):
        assert sum(mr.best_of_n_weights(scores, n)) == pytest.approx(1.0, rel=1e-12)
    assert mr.best_of_n_weights(scores, 1) == pytest.approx([1 / 500] * 500, rel=1e-12)


def test_curve_matches_a_simulation_of_best_of_n(monkeypatch):
    # The exact estimate against plain simulation: draw n, keep the proxy's favourite
    monkeypatch.setattr(mr, "POOL_PARTS", 2)
    monkeypatch.setattr(mr, "BON_NS", (1, 8))
    rng = random.Random(6)
    proxy = [rng.gauss(0, 1) for _ in range(400)]
    gold = [p - 0.5 * p * p + rng.gauss(0, 0.3) for p in proxy]
    curve = mr.best_of_n_curve(proxy, gold, [1.0] * 400)
    exact = sum(w * g for w, g in zip(mr.best_of_n_weights(proxy, 8), gold))
    simulated = []
    for _ in range(40000):
        best = max((rng.randrange(400) for _ in range(8)), key=proxy.__getitem__)
        simulated.append(gold[best])
    mean = sum(simulated) / len(simulated)
    spread = math.sqrt(sum((s - mean) ** 2 for s in simulated) / len(simulated))
    assert abs(exact - mean) < 4 * spread / math.sqrt(len(simulated))
    assert curve[0]["gold"][0] == pytest.approx(sum(gold) / 400, rel=1e-12)


# --- the KL of best-of-n ---


def test_exact_kl_is_below_the_formula_and_reaches_it_without_ties():
    rng = random.Random(7)
    size = 20000
    scores = [rng.random() for _ in range(size)]
    names = [str(i) for i in range(size)]      # all distinct: the continuous case
    for n in (2, 16, 128):
        kl = mr.exact_kl_over_names(names, mr.best_of_n_weights(scores, n))
        assert kl <= mr.analytic_kl(n) + 1e-12
        assert kl == pytest.approx(mr.analytic_kl(n), rel=0.02)
    # Two outcomes, each half the mass: the KL can never exceed log 2, the formula grows
    coarse = [0.0] * 10 + [1.0] * 10
    names = ["low"] * 10 + ["high"] * 10
    kl = mr.exact_kl_over_names(names, mr.best_of_n_weights(coarse, 64))
    # best-of-64 lands on "high" with probability 1 - 2^-64, which is 1 in floats: KL = log 2
    assert kl == pytest.approx(math.log(2), rel=1e-9)
    assert kl <= math.log(2) < mr.analytic_kl(64) - 2.0


def test_analytic_kl_values():
    assert mr.analytic_kl(1) == 0.0
    assert mr.analytic_kl(2) == pytest.approx(math.log(2) - 0.5)


# --- the gold reward, the labels and the ceiling ---


def test_gold_reward_by_hand():
    table = mr.count_trigrams(["ab"], mr.GOLD_SMOOTHING)
    gold = mr.make_gold(table)
    k, V = mr.GOLD_SMOOTHING, 27
    # "ab" under its own counts: trigrams "..a", ".ab", "ab." each seen once in their rows
    namelike = math.log((1 + k) / (1 + V * k))
    expected = namelike - mr.LENGTH_WEIGHT * (2 - mr.GOLD_LENGTH) ** 2
    assert gold("ab") == pytest.approx(expected, rel=1e-12)
    # an unseen context costs log(1/27) per symbol
    assert gold("zz") < gold("ab")


def test_bayes_ceiling_is_the_mean_of_the_larger_probability():
    values = {"a": 0.0, "b": 1.0, "c": -2.0}
    pairs = [("a", "b"), ("c", "a"), ("b", "c")]
    ceiling = mr.bayes_ceiling(pairs, values.__getitem__)
    T = mr.TEMPERATURE
    expected = sum(1 / (1 + math.exp(-abs(values[x] - values[y]) / T)) for x, y in pairs) / 3
    assert ceiling == pytest.approx(expected, rel=1e-12)


def test_labels_follow_bradley_terry():
    rng = random.Random(8)
    values = {"a": 0.25, "b": 0.0}
    samples = ["a", "b"] * 20000
    pairs = mr.label_pairs(samples, values.__getitem__, rng)
    share = sum(chosen == "a" for chosen, _ in pairs) / len(pairs)
    expected = 1 / (1 + math.exp(-0.25 / mr.TEMPERATURE))
    assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / len(pairs))


def test_samples_are_letters_and_cut_at_max_letters():
    table = mr.count_trigrams(["abcdefghijklmnopqrstuvwxyz" * 2], 0.0)
    rows = mr.cumulative(table)
    rng = random.Random(9)
    name = mr.sample_name(rows, rng)
    assert name == "abcdefghijklmnopqrstuvwxyz"[:mr.MAX_LETTERS]


def test_paired_z_of_identical_parts_is_nan():
    assert math.isnan(mr.paired_z([1.0, 2.0], [1.0, 2.0]))
    assert mr.paired_z([2.0, 3.1, 4.0], [1.0, 2.0, 3.05]) > 10


def test_label_check_is_small_for_bradley_terry_labels_and_large_without_noise():
    rng = random.Random(10)
    gold_of = {f"n{i}": rng.gauss(0.0, 1.0) for i in range(4000)}
    samples = list(gold_of)
    pairs = mr.label_pairs(samples, gold_of.__getitem__, rng)
    assert mr.label_check_z(pairs, gold_of.__getitem__) < 3.0
    noiseless = [(a, b) if gold_of[a] > gold_of[b] else (b, a) for a, b in pairs]
    assert mr.label_check_z(noiseless, gold_of.__getitem__) > 10.0


def test_audit_keeps_the_proxy_favourite_among_the_first_n_draws(monkeypatch):
    monkeypatch.setattr(mr, "BON_NS", (1, 2, 4, 8))
    monkeypatch.setattr(mr, "AUDIT_GROUPS", 50)
    scores = [random.Random(i).random() for i in range(30)]
    picked = mr.run_audit(scores, scores, random.Random(12))
    replay = random.Random(12)
    for group in range(50):
        draws = [replay.randrange(30) for _ in range(8)]
        for n in (1, 2, 4, 8):
            assert scores[picked[n][group]] == max(scores[i] for i in draws[:n])
