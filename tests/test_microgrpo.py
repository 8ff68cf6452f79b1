"""microgrpo: its fused nodes, the KL estimator, group advantages and the whole GRPO loss."""
import math
import random

import pytest

from support import close, grads, load_script, values_of

grpo = load_script("alignment/microgrpo.py")
Value = grpo.Value
values = values_of(Value)


def central_difference(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


def naive_log_softmax_at(logits, target):
    top = max(z.data for z in logits)
    total = (logits[0] - top).exp()
    for z in logits[1:]:
        total = total + (z - top).exp()
    return logits[target] - top - total.log()


def test_log_softmax_at_equals_naive_form_and_finite_differences():
    raw, target = [0.3, -1.2, 2.2, 0.0, 0.9], 3
    z1, z2 = values(raw), values(raw)
    fused, naive = grpo.log_softmax_at(z1, target), naive_log_softmax_at(z2, target)
    fused.backward()
    naive.backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(z1), grads(z2))
    for j in range(len(raw)):
        numeric = central_difference(
            lambda t: grpo.log_softmax_at(values(raw[:j] + [t] + raw[j + 1:]), target).data,
            raw[j])
        assert math.isclose(z1[j].grad, numeric, rel_tol=1e-5, abs_tol=1e-8)


def test_log_softmax_at_is_stable_for_huge_logits():
    value = grpo.log_softmax_at(values([1000.0, 1001.0, -1000.0]), 2).data
    assert math.isfinite(value) and math.isclose(value, -2001.0 - math.log(1 + math.exp(-1)))


def test_weighted_sum_equals_naive_form_and_finite_differences():
    raw, weights = [0.5, -2.0, 3.0], [0.25, -1.5, 2.0]
    x1, x2 = values(raw), values(raw)
    fused = grpo.weighted_sum(x1, weights)
    naive = x2[0] * weights[0] + x2[1] * weights[1] + x2[2] * weights[2]
    fused.backward()
    naive.backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(x1), grads(x2)) and close(grads(x1), weights)


def naive_clipped_surrogate(log_p, old_log_p, advantage):
    # min(ratio * A, clip(ratio) * A) from Value operations: clip() is the identity inside
    # [1 - eps, 1 + eps] and a constant outside it, and min() takes the smaller branch.
    ratio = (log_p - old_log_p).exp()
    low, high = 1.0 - grpo.CLIP_EPS, 1.0 + grpo.CLIP_EPS
    clipped = ratio if low <= ratio.data <= high else Value(min(max(ratio.data, low), high))
    unclipped_term, clipped_term = ratio * advantage, clipped * advantage
    return unclipped_term if unclipped_term.data <= clipped_term.data else clipped_term


# (log pi - log pi_old, advantage): inside the clip range, past it in the favoured direction
# for each sign of A (clipped: gradient 0), and past it in the unfavoured direction (kept)
SURROGATE_CASES = [(0.05, 1.3), (-0.1, -0.7), (0.4, 1.3), (-0.5, -0.7), (-0.5, 1.3),
                   (0.4, -0.7), (0.0, 0.0)]


@pytest.mark.parametrize("shift,advantage", SURROGATE_CASES)
def test_clipped_surrogate_equals_naive_form_and_finite_differences(shift, advantage):
    old = -1.7
    a, b = Value(old + shift), Value(old + shift)
    fused = grpo.clipped_surrogate(a, old, advantage)
    naive = naive_clipped_surrogate(b, old, advantage)
    fused.backward()
    naive.backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12, abs_tol=1e-15)
    assert math.isclose(a.grad, b.grad, rel_tol=1e-12, abs_tol=1e-15)
    numeric = central_difference(
        lambda t: grpo.clipped_surrogate(Value(t), old, advantage).data, old + shift)
    assert math.isclose(a.grad, numeric, rel_tol=1e-6, abs_tol=1e-9)


def test_clipped_surrogate_stops_the_gradient_only_in_the_favoured_direction():
    old = -1.0
    assert grpo.clipped_surrogate(Value(old + 0.4), old, 1.0)._local_grads[0] == 0.0
    assert grpo.clipped_surrogate(Value(old - 0.5), old, -1.0)._local_grads[0] == 0.0
    assert grpo.clipped_surrogate(Value(old - 0.5), old, 1.0)._local_grads[0] > 0.0
    assert grpo.clipped_surrogate(Value(old + 0.4), old, -1.0)._local_grads[0] < 0.0


def naive_kl_estimate(log_p, ref_log_p):
    u = (ref_log_p - log_p).exp()      # pi_ref / pi
    return u - u.log() - 1.0


@pytest.mark.parametrize("log_p,ref_log_p", [(-1.0, -1.0), (-0.2, -2.5), (-3.0, -0.4),
                                             (-9.0, -0.01)])
def test_kl_estimate_equals_naive_form_and_finite_differences(log_p, ref_log_p):
    a, b = Value(log_p), Value(log_p)
    fused, naive = grpo.kl_estimate(a, ref_log_p), naive_kl_estimate(b, ref_log_p)
    fused.backward()
    naive.backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(a.grad, b.grad, rel_tol=1e-9, abs_tol=1e-12)
    numeric = central_difference(lambda t: grpo.kl_estimate(Value(t), ref_log_p).data, log_p)
    assert math.isclose(a.grad, numeric, rel_tol=1e-6, abs_tol=1e-8)


def test_kl_estimate_is_never_negative_and_zero_only_when_pi_equals_pi_ref():
    rng = random.Random(5)
    for _ in range(2000):
        log_p, ref = -rng.expovariate(0.5), -rng.expovariate(0.5)
        assert grpo.kl_estimate(Value(log_p), ref).data >= 0.0
    same = grpo.kl_estimate(Value(-1.3), -1.3)
    assert same.data == 0.0 and same._local_grads[0] == 0.0
    assert grpo.kl_estimate(Value(-1.3), -1.2999).data > 0.0


def softmax(z):
    top = max(z)
    exps = [math.exp(v - top) for v in z]
    return [e / sum(exps) for e in exps]


def test_kl_estimate_is_unbiased_and_its_expected_gradient_is_that_of_kl_ref_to_pi():
    # A policy pi = softmax(theta) over 4 tokens and a fixed reference. Averaged exactly over
    # tokens drawn from pi: E[k] = KL(pi || pi_ref), and E[dk/dtheta] through log pi equals
    # the gradient of KL(pi_ref || pi), measured by central finite differences.
    theta, ref = [0.4, -1.0, 1.3, 0.1], softmax([1.0, 0.2, -0.5, 0.3])
    pi = softmax(theta)
    expected_k = sum(p * grpo.kl_estimate(Value(math.log(p)), math.log(r)).data
                     for p, r in zip(pi, ref))
    kl_pi_ref = sum(p * math.log(p / r) for p, r in zip(pi, ref))
    assert math.isclose(expected_k, kl_pi_ref, rel_tol=1e-12)
    expected_grad = [0.0] * 4
    for token, p in enumerate(pi):
        z = values(theta)
        grpo.kl_estimate(grpo.log_softmax_at(z, token), math.log(ref[token])).backward()
        expected_grad = [g + p * zj.grad for g, zj in zip(expected_grad, z)]

    def kl_ref_pi(t):
        return sum(r * math.log(r / q) for r, q in zip(ref, softmax(t)))

    for j in range(4):
        numeric = central_difference(lambda t: kl_ref_pi(theta[:j] + [t] + theta[j + 1:]),
                                     theta[j])
        assert math.isclose(expected_grad[j], numeric, rel_tol=1e-6, abs_tol=1e-9)


def test_group_advantages_have_mean_zero_in_every_group_and_vanish_without_spread():
    rng = random.Random(6)
    for _ in range(200):
        rewards = [float(rng.random() < 0.3) for _ in range(grpo.GROUP_SIZE)]
        advantages = grpo.group_advantages(rewards)
        assert abs(sum(advantages)) < 1e-9
        if min(rewards) != max(rewards):
            # unit spread, up to the eps in the denominator
            spread = math.sqrt(sum(a * a for a in advantages) / len(advantages))
            assert math.isclose(spread, 1.0, rel_tol=1e-3)
    for r in (0.0, 1.0, 0.37):
        assert grpo.group_advantages([r] * grpo.GROUP_SIZE) == [0.0] * grpo.GROUP_SIZE
    # one success in a group of 8: +sqrt(7), the failures -sqrt(1/7) (up to eps)
    one = grpo.group_advantages([1.0] + [0.0] * 7)
    assert math.isclose(one[0], math.sqrt(7), rel_tol=1e-3)
    assert math.isclose(one[1], -math.sqrt(1 / 7), rel_tol=1e-3)


def small_policy(seed=0):
    random.seed(seed)
    return grpo.init_policy(vocab_size=27)


def test_float_policy_matches_the_value_policy():
    model, _ = small_policy()
    policy = grpo.float_policy(grpo.snapshot(model))
    tokens = [4, 12, 12, 0, 26]    # e m m a END
    value_log_probs = [lp.data for lp in grpo.token_log_probs(model, tokens, 26, first=1)]
    assert close(value_log_probs, grpo.float_log_probs(policy, tokens, 26), 1e-12)


def test_prefix_cache_changes_neither_the_loss_nor_its_gradient():
    model, params = small_policy()
    names = [[0, 13, 13, 0, 26], [0, 13, 0, 26], [0, 1, 26]]
    losses = []
    for cache in (None, {}):
        nodes = [lp for t in names for lp in grpo.token_log_probs(model, t, 26, 1, cache)]
        loss = grpo.weighted_sum(nodes, [1.0] * len(nodes))
        loss.backward()
        losses.append((loss.data, grads(params)))
        for p in params:
            p.grad = 0.0
    assert math.isclose(losses[0][0], losses[1][0], rel_tol=1e-12)
    assert close(losses[0][1], losses[1][1], 1e-12)


def make_batch(model, rng):
    # two groups of three completions of prompts 'a' and 'b', with pi_old a slightly moved
    # copy of the policy (so ratios differ from 1) and pi_ref another
    old = {k: [[w + rng.gauss(0, 0.05) for w in row] for row in m]
           for k, m in grpo.snapshot(model).items()}
    ref = {k: [[w + rng.gauss(0, 0.2) for w in row] for row in m]
           for k, m in grpo.snapshot(model).items()}
    old_policy, ref_policy = grpo.float_policy(old), grpo.float_policy(ref)
    batch = []
    for group in ([[0, 13, 13, 0, 26], [0, 1, 26], [0, 5, 26]], [[1, 4, 13, 26]] * 2 + [[1, 26]]):
        rewards = [1.0, 0.0, 1.0]
        for tokens, r, a in zip(group, rewards, grpo.group_advantages(rewards)):
            batch.append({"tokens": tokens, "reward": r, "advantage": a,
                          "old": grpo.float_log_probs(old_policy, tokens, 26),
                          "ref": grpo.float_log_probs(ref_policy, tokens, 26)})
    return batch


@pytest.mark.parametrize("method", ["grpo", "ei"])
def test_whole_loss_gradient_matches_finite_differences(method):
    model, params = small_policy(1)
    rng = random.Random(7)
    batch = make_batch(model, rng)

    def loss_of():
        if method == "grpo":
            return grpo.grpo_loss(model, batch, 26)[0]
        return grpo.expert_iteration_loss(model, batch, 26)

    loss_of().backward()
    for p in rng.sample(params, 30):
        analytic, original = p.grad, p.data
        p.data = original + 1e-6
        up = loss_of().data
        p.data = original - 1e-6
        down = loss_of().data
        p.data = original
        assert math.isclose(analytic, (up - down) / 2e-6, rel_tol=1e-4, abs_tol=1e-8)


def test_checker_reward():
    itos = [chr(ord("a") + i) for i in range(26)] + ["."]
    real = {"emma", "ann"}
    assert grpo.checker_reward([4, 12, 12, 0, 26], 26, itos, real) == 1.0
    assert grpo.checker_reward([4, 12, 12, 26], 26, itos, real) == 0.0
    assert grpo.checker_reward([4, 12, 12, 0], 26, itos, real) == 0.0   # never ended


def test_prompt_schedule_covers_every_letter_twice_per_block(monkeypatch):
    monkeypatch.setattr(grpo, "NUM_STEPS", 26)
    random.seed(3)
    schedule = grpo.prompt_schedule(26)
    assert len(schedule) == 26 and all(len(p) == grpo.PROMPTS_PER_STEP for p in schedule)
    for block in range(2):
        letters = [x for step in schedule[13 * block:13 * (block + 1)] for x in step]
        assert sorted(letters) == sorted(list(range(26)) * 2)
