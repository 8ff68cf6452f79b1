"""microreinforce: fused nodes, the policy's gradient, the surrogate loss against the
REINFORCE formula, and the baseline's (un)biasedness checked exactly by enumeration."""
import itertools
import math
import random

import pytest

from support import close, grads, load_script, values_of

rl = load_script("alignment/microreinforce.py")
Value = rl.Value
END = 26
values = values_of(Value)


def tiny_policy(seed=0):
    random.seed(seed)
    return rl.init_policy(vocab_size=27)


def zero_grads(params):
    for p in params:
        p.grad = 0.0


# --- fused nodes against their naive forms -------------------------------------------------


def naive_log_softmax(logits, target):
    top = max(z.data for z in logits)
    exps = [(z - top).exp() for z in logits]
    total = exps[0]
    for e in exps[1:]:
        total = total + e
    return (exps[target] / total).log()


def test_cross_entropy_is_stable_for_huge_logits():
    loss = rl.cross_entropy(values([1000.0, 1001.0, 999.0, -1000.0]), 1)
    assert math.isclose(loss.data, math.log(1 + math.exp(-1) + math.exp(-2)), rel_tol=1e-12)
    assert math.isfinite(rl.cross_entropy(values([5000.0, -5000.0]), 1).data)


def test_fused_weighted_sum_equals_naive_and_finite_differences():
    raw, weights = [0.4, -2.0, 1.3, 0.7], [0.25, -1.5, 2.0, 0.0]
    x1, x2 = values(raw), values(raw)
    fused = rl.weighted_sum(x1, weights)
    naive = x2[0] * weights[0]
    for x, w in zip(x2[1:], weights[1:]):
        naive = naive + x * w
    (fused * fused).backward()   # a nonlinear use, so the upstream gradient is not 1
    (naive * naive).backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(x1), grads(x2))
    for j in range(len(raw)):
        def f(t):
            y = rl.weighted_sum(values(raw[:j] + [t] + raw[j + 1:]), weights).data
            return y * y
        numeric = (f(raw[j] + 1e-6) - f(raw[j] - 1e-6)) / 2e-6
        assert math.isclose(x1[j].grad, numeric, rel_tol=1e-5, abs_tol=1e-7)


# --- the policy ------------------------------------------------------------------------------


def test_policy_log_probability_gradient_matches_finite_differences():
    model, params = tiny_policy()
    letters = [4, 12, 12, 0]   # "emma"
    rl.weighted_sum(rl.name_nlls(model, letters, END), [1.0] * 5).backward()

    def nll():
        return sum(n.data for n in rl.name_nlls(model, letters, END))

    for p in random.Random(4).sample(params, 40):
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = nll()
        p.data = original - 1e-5
        down = nll()
        p.data = original
        assert math.isclose(analytic, (up - down) / 2e-5, rel_tol=1e-4, abs_tol=1e-8)


def test_float_inference_matches_the_value_forward_pass():
    model, _ = tiny_policy()
    weights = rl.snapshot(model)
    for context, pos in (([END] * 3, 0), ([4, 12, 12], 3), ([1, 2, 3], 15)):
        assert close([z.data for z in rl.policy_logits(model, context, pos)],
                     rl.float_logits(weights, context, pos), 1e-12)
    letters = [4, 12, 12, 0]
    assert close([-n.data for n in rl.name_nlls(model, letters, END)],
                 rl.float_log_probs(weights, letters, END), 1e-12)


def test_rollout_records_the_log_probabilities_of_the_tokens_it_chose():
    model, _ = tiny_policy()
    random.seed(3)
    for _ in range(5):
        letters, nlls = rl.rollout(model, END)
        assert all(0 <= t < 26 for t in letters) and len(letters) <= rl.MAX_LEN
        assert len(nlls) == min(len(letters) + 1, rl.MAX_LEN)
        assert close([n.data for n in nlls], [n.data for n in rl.name_nlls(model, letters, END)])


def test_rollout_samples_the_first_token_from_the_policy(monkeypatch):
    monkeypatch.setattr(rl, "MAX_LEN", 1)
    model, _ = tiny_policy()
    # Sharpen the policy a little so the check has something to detect.
    for row in model["w2"]:
        row[-1].data = random.gauss(0, 1.5)
    exps, _ = rl.shifted_exps([z.data for z in rl.policy_logits(model, [END] * 3, 0)])
    probs = [e / sum(exps) for e in exps]
    random.seed(5)
    draws = 2000
    counts = [0] * 27
    for _ in range(draws):
        letters, _ = rl.rollout(model, END)
        counts[letters[0] if letters else END] += 1
    chi_square = sum((c - draws * p) ** 2 / (draws * p) for c, p in zip(counts, probs))
    assert chi_square < 60   # 26 degrees of freedom: the 99.9th percentile is 54
    assert chi_square > 5    # and not suspiciously perfect


def test_reward_by_hand():
    assert rl.reward(8) == 1.0
    assert rl.reward(7) == rl.reward(9) == 0.875
    assert rl.reward(0) == rl.reward(16) == 0.0
    assert rl.reward(4) == 0.5


# --- the surrogate loss against the REINFORCE formula ----------------------------------------


def test_surrogate_gradient_is_the_reinforce_formula_on_a_one_step_policy():
    # A policy that is just a softmax over 3 actions with the logits z as its parameters.
    # grad_z log pi(a) = onehot(a) - p, so the REINFORCE estimate is
    #   g_hat = (1/N) sum_i (R_i - b) * (onehot(a_i) - p)
    # and the surrogate loss's gradient must be -g_hat.
    z_raw = [0.2, -0.5, 1.1]
    actions, rewards, baseline = [0, 2, 2, 1], [1.0, 0.25, 0.5, 0.0], 0.4
    z = values(z_raw)
    batch_nlls = [[rl.cross_entropy(z, a)] for a in actions]
    rl.surrogate_loss(batch_nlls, [r - baseline for r in rewards]).backward()
    exps = [math.exp(v) for v in z_raw]
    p = [e / sum(exps) for e in exps]
    n = len(actions)
    by_hand = [-sum((r - baseline) * ((a == j) - p[j]) for a, r in zip(actions, rewards)) / n
               for j in range(3)]
    assert close(grads(z), by_hand, 1e-12)


def test_surrogate_gradient_is_the_reinforce_formula_on_the_real_policy():
    # -(1/N) sum_i (R_i - b) * grad log pi(x_i), with grad log pi(x_i) from finite differences
    model, params = tiny_policy()
    names = [[4, 12, 12, 0], [1, 14, 1], [18, 14, 15, 7, 8, 0, 17, 4]]
    advantages = [0.3, -0.45, 0.2]
    rl.surrogate_loss([rl.name_nlls(model, x, END) for x in names], advantages).backward()

    def log_prob(x):
        return -sum(n.data for n in rl.name_nlls(model, x, END))

    for p in random.Random(6).sample(params, 30):
        original, scores = p.data, []
        for x in names:
            p.data = original + 1e-5
            up = log_prob(x)
            p.data = original - 1e-5
            down = log_prob(x)
            p.data = original
            scores.append((up - down) / 2e-5)
        expected = -sum(a * s for a, s in zip(advantages, scores)) / len(names)
        assert math.isclose(p.grad, expected, rel_tol=1e-4, abs_tol=1e-8)


# --- unbiasedness, exactly: enumerate every sequence of a short policy -------------------------


def all_sequences(max_len):
    """Every name the policy can produce with MAX_LEN = max_len (letters only; END implied)."""
    sequences = [[]]
    for length in range(1, max_len + 1):
        sequences += [list(s) for s in itertools.product(range(26), repeat=length)]
    return sequences


@pytest.fixture(scope="module")
def short_policy():
    # MAX_LEN = 2: names of 0, 1 or 2 letters (a 2-letter name is cut off there), 703 in all.
    # Computed once for the module; tests that run the policy again patch MAX_LEN themselves.
    saved, rl.MAX_LEN = rl.MAX_LEN, 2
    try:
        model, params = tiny_policy(7)
        for row in model["w2"]:            # make END likely enough that all lengths matter
            row[-1].data = random.gauss(0, 1.0)
        sequences = all_sequences(2)
        probs, scores = [], []
        for x in sequences:
            nlls = rl.name_nlls(model, x, END)
            probs.append(math.exp(-sum(n.data for n in nlls)))
            rl.weighted_sum(nlls, [1.0] * len(nlls)).backward()
            scores.append([-p.grad for p in params])
            zero_grads(params)
    finally:
        rl.MAX_LEN = saved
    return model, params, sequences, probs, scores


def test_enumerated_probabilities_sum_to_one(short_policy):
    _, _, _, probs, _ = short_policy
    assert math.isclose(sum(probs), 1.0, rel_tol=1e-12)


def test_exact_expectations_reinforce_is_unbiased_and_a_baseline_adds_nothing(short_policy,
                                                                             monkeypatch):
    monkeypatch.setattr(rl, "MAX_LEN", 2)
    model, params, sequences, probs, scores = short_policy
    rewards = [rl.reward(len(x)) for x in sequences]
    num = len(params)
    # E[R * s] and E[s], summed exactly over every possible name
    e_rs = [sum(p * r * s[k] for p, r, s in zip(probs, rewards, scores)) for k in range(num)]
    e_s = [sum(p * s[k] for p, s in zip(probs, scores)) for k in range(num)]
    assert max(abs(v) for v in e_s) < 1e-12     # E[grad log pi] = 0, so E[b * s] = 0 for any b
    baseline = 0.13
    e_with = [a - baseline * b for a, b in zip(e_rs, e_s)]
    assert close(e_with, e_rs, 1e-12)

    # And E[R * s] is the true gradient of J = sum_x pi(x) R(x) (finite differences on J).
    weights = rl.snapshot(model)

    def objective():
        return sum(r * math.exp(sum(rl.float_log_probs(weights, x, END)))
                   for x, r in zip(sequences, rewards) if r)

    moving = [k for k in range(num) if abs(e_rs[k]) > 1e-4]   # parameters J really depends on
    for k in random.Random(8).sample(moving, 3):
        name, row, col = locate(model, params[k])
        original = weights[name][row][col]
        weights[name][row][col] = original + 1e-6
        up = objective()
        weights[name][row][col] = original - 1e-6
        down = objective()
        weights[name][row][col] = original
        assert math.isclose(e_rs[k], (up - down) / 2e-6, rel_tol=1e-5, abs_tol=1e-9)


def locate(model, param):
    for name, mat in model.items():
        for r, row in enumerate(mat):
            for c, p in enumerate(row):
                if p is param:
                    return name, r, c
    raise KeyError


def test_exact_expectation_of_the_batch_mean_baseline_is_shrunk_by_n_minus_1_over_n(short_policy):
    # N = 2 names per batch, every ordered pair of the 703 names enumerated (for a few
    # parameters, to keep it fast). The batch-mean baseline includes each name's own reward:
    #   E[(1/N) sum_i (R_i - mean R) s_i] = (N-1)/N * E[R s]   (here 1/2)
    # while the leave-one-out baseline (the other name's reward) is exactly unbiased.
    _, params, sequences, probs, scores = short_policy
    rewards = [rl.reward(len(x)) for x in sequences]
    for k in random.Random(9).sample(range(len(params)), 2):
        e_rs = sum(p * r * s[k] for p, r, s in zip(probs, rewards, scores))
        terms = [(p, r, s[k]) for p, r, s in zip(probs, rewards, scores)]
        batch_mean = leave_one_out = 0.0
        for p1, r1, s1 in terms:
            for p2, r2, s2 in terms:
                mean_r = (r1 + r2) / 2
                batch_mean += p1 * p2 * ((r1 - mean_r) * s1 + (r2 - mean_r) * s2) / 2
                leave_one_out += p1 * p2 * ((r1 - r2) * s1 + (r2 - r1) * s2) / 2
        assert abs(e_rs) > 1e-6
        assert batch_mean == pytest.approx(e_rs / 2, rel=1e-9)
        assert leave_one_out == pytest.approx(e_rs, rel=1e-9)


def test_exact_expectation_of_a_baseline_from_the_names_own_reward_is_biased(short_policy,
                                                                          monkeypatch):
    # A baseline that is a function of the scored name's own reward, b(R_i), is not subtracted
    # for free: E[(R - b(R)) s] = grad E[R - b(R)], the gradient of another objective. The run's
    # score_mean_ratio cannot see this (b cancels from it), so it is checked here, exactly.
    monkeypatch.setattr(rl, "MAX_LEN", 2)
    model, params, sequences, probs, scores = short_policy
    rewards = [rl.reward(len(x)) for x in sequences]
    weights = rl.snapshot(model)

    def expectation(h, k):
        return sum(p * h(r) * s[k] for p, r, s in zip(probs, rewards, scores))

    def objective(h):
        return sum(h(r) * math.exp(sum(rl.float_log_probs(weights, x, END)))
                   for x, r in zip(sequences, rewards))

    moving = [k for k in range(len(params)) if abs(expectation(lambda r: r, k)) > 1e-4]
    for k in random.Random(10).sample(moving, 2):
        e_rs = expectation(lambda r: r, k)
        # b = the name's own reward (a group of one): the estimate is 0, whatever the gradient
        assert expectation(lambda r: r - r, k) == 0.0 and abs(e_rs) > 1e-4
        # b = R^2: the expectation moves away from grad J to grad E[R - R^2]
        with_own = expectation(lambda r: r - r * r, k)
        assert abs(with_own - e_rs) > 0.05 * abs(e_rs)
        name, row, col = locate(model, params[k])
        original = weights[name][row][col]
        weights[name][row][col] = original + 1e-6
        up = objective(lambda r: r - r * r)
        weights[name][row][col] = original - 1e-6
        down = objective(lambda r: r - r * r)
        weights[name][row][col] = original
        assert math.isclose(with_own, (up - down) / 2e-6, rel_tol=1e-5, abs_tol=1e-9)


# --- the variance measurement ----------------------------------------------------------------


def test_variance_measurement_with_a_zero_baseline_equals_no_baseline(monkeypatch):
    monkeypatch.setattr(rl, "VARIANCE_BATCHES", 3)
    monkeypatch.setattr(rl, "BATCH_SIZE", 4)
    model, params = tiny_policy()
    random.seed(1)
    variances, score_ratio, mean_reward = rl.measure_baseline_variance(model, params, 0.0, END)
    assert variances["moving average"] == pytest.approx(variances["none"], rel=1e-12)
    assert variances["none"] > 0 and math.isfinite(score_ratio) and 0 <= mean_reward <= 1
    assert all(p.grad == 0.0 for p in params)   # measuring must not leave gradients behind


def test_variance_measurement_uses_the_same_samples_for_every_baseline(monkeypatch):
    # Two calls from the same random state with different baselines see the same names, so
    # the no-baseline and batch-mean variances agree exactly and only the baseline's differs.
    monkeypatch.setattr(rl, "VARIANCE_BATCHES", 3)
    monkeypatch.setattr(rl, "BATCH_SIZE", 4)
    model, params = tiny_policy()
    random.seed(2)
    first, _, _ = rl.measure_baseline_variance(model, params, 0.7, END)
    random.seed(2)
    second, _, _ = rl.measure_baseline_variance(model, params, 0.1, END)
    assert first["none"] == second["none"]
    assert first["batch mean"] == second["batch mean"]
    assert first["moving average"] != second["moving average"]


def test_one_training_step_moves_the_policy_and_clears_gradients(monkeypatch):
    monkeypatch.setattr(rl, "NUM_STEPS", 1)
    monkeypatch.setattr(rl, "BATCH_SIZE", 4)
    model, params = tiny_policy()
    before = [p.data for p in params]
    random.seed(3)
    curve = rl.train_policy(model, params, 0.5, END)
    assert len(curve) == 1
    assert any(p.data != b for p, b in zip(params, before))
    assert all(p.grad == 0.0 for p in params)
