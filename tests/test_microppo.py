"""Fast checks specific to alignment/microppo.py.

Every fused node is compared with its naive form (values and gradients) and, on plain floats,
with its Value form; Value.clip() and the whole clipped surrogate are checked against central
finite differences; the hand-derived gradients of the reward model (Bradley-Terry loss) and of
the value head are checked parameter by parameter; GAE is checked at its two limits exactly.
"""
import math
import random

import pytest

from support import close, grads, load_script, naive_softmax, values_of

ppo = load_script("alignment/microppo.py")
Value = ppo.Value
H = 1e-6
values = values_of(Value)


# --- Value.clip() ---


@pytest.mark.parametrize("x", [0.5, 0.79, 1.0, 1.19, 1.7])
def test_clip_matches_finite_differences(x):
    a = Value(x)
    out = a.clip(0.8, 1.2)
    (out * 3.0).backward()
    assert out.data == min(max(x, 0.8), 1.2)
    numeric = (min(max(x + H, 0.8), 1.2) - min(max(x - H, 0.8), 1.2)) / (2 * H) * 3.0
    assert a.grad == pytest.approx(numeric, abs=1e-6)


# --- fused nodes against their naive forms, and their float paths against the Value paths ---


def test_fused_dot_equals_naive_dot_and_float_dot():
    rng = random.Random(1)
    raw_w, raw_x = [rng.gauss(0, 1) for _ in range(8)], [rng.gauss(0, 1) for _ in range(8)]
    w1, x1, w2, x2 = values(raw_w), values(raw_x), values(raw_w), values(raw_x)
    fused, naive = ppo.dot(w1, x1), ppo.naive_dot(w2, x2)
    (fused * 1.7).backward()
    (naive * 1.7).backward()
    assert fused.data == pytest.approx(naive.data, rel=1e-12)
    assert close(grads(w1) + grads(x1), grads(w2) + grads(x2))
    assert len(fused._children) == 16
    assert ppo.dot(raw_w, raw_x) == pytest.approx(fused.data, rel=1e-12)


def test_fused_softmax_equals_naive_softmax_and_float_softmax():
    rng = random.Random(2)
    raw, mix = [rng.gauss(0, 2) for _ in range(6)], [rng.gauss(0, 1) for _ in range(6)]
    z1, z2 = values(raw), values(raw)
    p1, p2 = ppo.softmax(z1), naive_softmax(z2)
    ppo.dot(p1, values(mix)).backward()
    ppo.naive_dot(p2, values(mix)).backward()
    assert close([p.data for p in p1], [p.data for p in p2])
    assert close(grads(z1), grads(z2))
    assert close(ppo.softmax(raw), [p.data for p in p1], 1e-12)


def test_log_softmax_is_stable_for_huge_logits():
    lp = ppo.log_softmax_floats([1000.0, 1001.0, -1000.0])
    assert all(math.isfinite(x) for x in lp[:2])
    assert sum(math.exp(x) for x in lp) == pytest.approx(1.0, rel=1e-12)


def test_fused_rmsnorm_equals_naive_rmsnorm_and_float_rmsnorm():
    rng = random.Random(3)
    raw, mix = [rng.gauss(0, 1) for _ in range(8)], [rng.gauss(0, 1) for _ in range(8)]
    x1, x2 = values(raw), values(raw)
    y1 = ppo.rmsnorm(x1)
    scale = (ppo.naive_dot(x2, x2) / len(x2) + 1e-5) ** -0.5
    y2 = [xi * scale for xi in x2]
    ppo.dot(y1, values(mix)).backward()
    ppo.naive_dot(y2, values(mix)).backward()
    assert close([y.data for y in y1], [y.data for y in y2])
    assert close(grads(x1), grads(x2))
    assert close(ppo.rmsnorm(raw), [y.data for y in y1], 1e-12)


def test_fused_mean_equals_naive_mean():
    raw = [0.3, -1.1, 2.5, 0.7]
    x1, x2 = values(raw), values(raw)
    fused = ppo.mean(x1)
    naive = x2[0]
    for x in x2[1:]:
        naive = naive + x
    naive = naive / len(x2)
    (fused * fused).backward()
    (naive * naive).backward()
    assert fused.data == pytest.approx(naive.data, rel=1e-12)
    assert close(grads(x1), grads(x2))


def test_relu_float_and_value_paths_agree():
    for x in (-1.5, 0.0, 2.0):
        assert ppo.relu(x) == ppo.relu(Value(x)).data


# --- the policy ---


def small_policy(seed=0):
    random.seed(seed)
    return ppo.init_model()


def test_float_forward_equals_value_forward():
    model = small_policy()
    tokens = [ppo.BOS] + [ppo.STOI[c] for c in "emma"]
    with_values = ppo.token_logits(model, tokens)
    with_floats = ppo.token_logits(ppo.frozen(model), tokens)
    for zv, zf in zip(with_values, with_floats):
        assert close([z.data for z in zv], zf, 1e-12)


def test_encode_cuts_long_names_without_an_end_token():
    assert ppo.encode("emma") == [ppo.BOS, 4, 12, 12, 0, ppo.BOS]
    long = ppo.encode("christopher")
    assert len(long) == 1 + ppo.MAX_LETTERS and long[-1] != ppo.BOS
    assert ppo.decode(long) == "christop"


def test_rollout_records_the_sampling_log_probs():
    model = small_policy(1)
    policy, reference = ppo.frozen(model), ppo.frozen(small_policy(2))
    random.seed(5)
    for _ in range(20):
        sample = ppo.rollout(policy, reference, "k")
        tokens = sample["tokens"]
        assert tokens[:2] == [ppo.BOS, ppo.STOI["k"]]
        assert 1 <= len(sample["name"]) <= ppo.MAX_LETTERS and sample["name"][0] == "k"
        assert len(sample["old_logps"]) == len(sample["ref_logps"]) == len(tokens) - 2
        assert ppo.BOS not in tokens[1:-1]
        # the log-probabilities the sampler stored are the policy's and the reference's own
        for m, key in ((policy, "old_logps"), (reference, "ref_logps")):
            logits = ppo.token_logits(m, tokens[:-1])[1:]
            expected = [ppo.log_softmax_floats(z)[a] for z, a in zip(logits, tokens[2:])]
            assert close(sample[key], expected, 1e-12)
        # the exact KL, summed over the sampled prefixes, written plainly from its formula
        exact = 0.0
        for zp, zr in zip(ppo.token_logits(policy, tokens[:-1])[1:],
                          ppo.token_logits(reference, tokens[:-1])[1:]):
            lp, lr = ppo.log_softmax_floats(zp), ppo.log_softmax_floats(zr)
            exact += sum(math.exp(a) * (a - b) for a, b in zip(lp, lr))
        assert sample["exact_kl"] == pytest.approx(exact, rel=1e-9, abs=1e-12)
        assert sample["exact_kl"] > 0.0
    assert ppo.rollout(policy, policy, "k")["exact_kl"] == 0.0


def test_importance_weighted_advantage_is_the_unclipped_surrogate():
    # Recomputed on floats, mean_t ratio_t * A_t must equal the Value path's unclipped
    # surrogate (eps so large that nothing is clipped), and be mean(A) before any move.
    old, new = small_policy(4), small_policy(5)
    random.seed(8)
    batch = [ppo.rollout(ppo.frozen(old), ppo.frozen(old), c) for c in "aekm"]
    advantages = [[random.gauss(0.0, 1.0) for _ in s["old_logps"]] for s in batch]
    every = [a for advs in advantages for a in advs]
    assert ppo.importance_weighted_advantage(ppo.frozen(old), batch, advantages) == \
        pytest.approx(sum(every) / len(every), rel=1e-9)
    loss, _ = ppo.surrogate_loss(new, batch, advantages, 1e9)
    assert ppo.importance_weighted_advantage(ppo.frozen(new), batch, advantages) == \
        pytest.approx(-loss.data, rel=1e-9)


def test_first_epoch_ratios_are_exactly_one():
    # The Value forward pass recomputes exactly what the float sampler computed, so before
    # any update every ratio is 1 and nothing can be clipped.
    model = small_policy(3)
    random.seed(6)
    batch = [ppo.rollout(ppo.frozen(model), ppo.frozen(model), "a") for _ in range(4)]
    advantages = [[1.0] * len(s["old_logps"]) for s in batch]
    loss, clip_fraction = ppo.surrogate_loss(model, batch, advantages)
    assert loss.data == pytest.approx(-1.0, rel=1e-12)
    assert clip_fraction == 0.0


def test_surrogate_gradient_matches_finite_differences():
    # A policy that has moved away from the sampler, so that some ratios sit outside the clip
    # band: the gradient has to handle both branches of the min.
    old = small_policy(4)
    random.seed(7)
    batch = [ppo.rollout(ppo.frozen(old), ppo.frozen(old), c) for c in "aekm"]
    rng = random.Random(8)
    advantages = [[rng.gauss(0, 1) for _ in s["old_logps"]] for s in batch]
    model = {k: [[Value(p.data + rng.gauss(0, 0.15)) for p in row] for row in mat]
             for k, mat in old.items()}
    loss, clip_fraction = ppo.surrogate_loss(model, batch, advantages)
    assert 0.0 < clip_fraction < 1.0
    loss.backward()
    params = ppo.parameters(model)
    for p in rng.sample(params, 40):
        analytic, original = p.grad, p.data
        p.data = original + H
        up = ppo.surrogate_loss(model, batch, advantages)[0].data
        p.data = original - H
        down = ppo.surrogate_loss(model, batch, advantages)[0].data
        p.data = original
        assert analytic == pytest.approx((up - down) / (2 * H), rel=1e-4, abs=1e-7)


def test_clip_stops_the_gradient_only_when_the_move_helps():
    # One token, logit of the chosen action z; pi_old had ratio 1 at z = 0.
    def term(z0, advantage):
        z = [Value(z0), Value(0.0)]
        old_logp = ppo.log_softmax_floats([0.0, 0.0])[0]
        sample = {"tokens": [ppo.BOS, 0, 0], "old_logps": [old_logp]}
        ratio = (-ppo.cross_entropy(z, 0) - old_logp).exp()
        unclipped = ratio * advantage
        clipped = ratio.clip(1 - ppo.CLIP_EPS, 1 + ppo.CLIP_EPS) * advantage
        chosen = unclipped if unclipped.data <= clipped.data else clipped
        chosen.backward()
        return ratio.data, z[0].grad, sample
    ratio, grad, _ = term(1.0, +1.0)     # good action already made much more likely
    assert ratio > 1 + ppo.CLIP_EPS and grad == 0.0
    ratio, grad, _ = term(1.0, -1.0)     # bad action made more likely: never clipped
    assert ratio > 1 + ppo.CLIP_EPS and grad < 0.0
    ratio, grad, _ = term(0.1, +1.0)     # inside the band: the plain policy gradient
    assert 1 < ratio < 1 + ppo.CLIP_EPS and grad > 0.0


# --- reward model: Bradley-Terry, hand-derived gradients ---


def small_reward_model():
    random.seed(9)
    rm = ppo.init_reward_model()
    rng = random.Random(10)
    rm["w2"] = [rng.gauss(0, 0.5) for _ in rm["w2"]]
    rm["b1"] = [rng.gauss(0, 0.3) for _ in rm["b1"]]
    rm["b2"] = [0.4]
    return rm


PAIRS = [("annabelle", "ann"), ("kevin", "kai"), ("zoe", "zo"), ("mariana", "mia"),
         ("bob", "bo")]


def test_bradley_terry_starts_at_ln2_with_zero_output_weights():
    random.seed(0)
    loss, _ = ppo.bradley_terry_loss_and_grads(ppo.init_reward_model(), PAIRS)
    assert loss == pytest.approx(math.log(2), rel=1e-12)


def test_reward_model_gradient_matches_finite_differences():
    rm = small_reward_model()
    _, grads_by_hand = ppo.bradley_terry_loss_and_grads(rm, PAIRS)
    checked = 0
    for name, rows in rm.items():
        for r, row in enumerate(rows if name == "W1" else [rows]):
            grad_row = grads_by_hand[name][r] if name == "W1" else grads_by_hand[name]
            for i, original in enumerate(row):
                row[i] = original + H
                up = ppo.bradley_terry_loss_and_grads(rm, PAIRS)[0]
                row[i] = original - H
                down = ppo.bradley_terry_loss_and_grads(rm, PAIRS)[0]
                row[i] = original
                assert grad_row[i] == pytest.approx((up - down) / (2 * H), rel=1e-5, abs=1e-9)
                checked += 1
    assert checked == 26 * ppo.RM_HIDDEN + 2 * ppo.RM_HIDDEN + 1


def test_bradley_terry_is_finite_for_huge_margins():
    rm = small_reward_model()
    rm["b2"] = [0.0]
    rm["w2"] = [w * 1e4 for w in rm["w2"]]
    loss, grads_by_hand = ppo.bradley_terry_loss_and_grads(rm, PAIRS + [(p[1], p[0]) for p in PAIRS])
    assert math.isfinite(loss) and all(math.isfinite(g) for g in grads_by_hand["w2"])


def test_normalising_the_reward_keeps_every_ordering():
    rm = small_reward_model()
    names = ["ann", "bo", "kevin", "mariana", "zoe", "annabelle"]
    before = [ppo.reward_forward(rm, n)[0] for n in names]
    ppo.normalise_reward(rm, before)
    after = [ppo.reward_forward(rm, n)[0] for n in names]
    assert sorted(range(6), key=before.__getitem__) == sorted(range(6), key=after.__getitem__)
    assert ppo.avg(after) == pytest.approx(0.0, abs=1e-12)
    assert ppo.avg([a * a for a in after]) == pytest.approx(1.0, rel=1e-12)


# --- value head ---


def test_value_head_gradient_matches_finite_differences():
    rng = random.Random(11)
    n = ppo.MAX_LETTERS + 2 * len(ppo.LETTERS)
    head = {"w": [rng.gauss(0, 0.3) for _ in range(n)], "b": 0.2}
    prefixes = [[ppo.BOS] + [ppo.STOI[c] for c in name[:k]]
                for name in ("emma", "kevin", "zo") for k in range(1, len(name) + 1)]
    states = [ppo.value_features(p) for p in prefixes]
    returns = [rng.gauss(0, 1) for _ in states]
    _, grad_w, grad_b = ppo.value_loss_and_grads(head, states, returns)

    def loss():
        return ppo.value_loss_and_grads(head, states, returns)[0]
    for i in range(n):
        original = head["w"][i]
        head["w"][i] = original + H
        up = loss()
        head["w"][i] = original - H
        down = loss()
        head["w"][i] = original
        assert grad_w[i] == pytest.approx((up - down) / (2 * H), rel=1e-5, abs=1e-9)
    original = head["b"]
    head["b"] = original + H
    up = loss()
    head["b"] = original - H
    down = loss()
    head["b"] = original
    assert grad_b == pytest.approx((up - down) / (2 * H), rel=1e-5)
    assert sum(1 for g in grad_w if g != 0.0) > 10


def test_value_features():
    f = ppo.value_features([ppo.BOS, ppo.STOI["e"], ppo.STOI["m"], ppo.STOI["m"]])
    assert f[2] == 1.0 and sum(f[:ppo.MAX_LETTERS]) == 1.0            # 3 letters in
    assert f[ppo.MAX_LETTERS + ppo.STOI["m"]] == 1.0                   # last letter m
    counts = f[ppo.MAX_LETTERS + 26:]
    assert counts[ppo.STOI["m"]] == 2.0 and counts[ppo.STOI["e"]] == 1.0 and sum(counts) == 3


# --- GAE ---

REWARDS = [0.0, 0.0, 0.5, -0.3, 2.0]
VALUES = [0.4, -0.2, 1.1, 0.7, 0.9]


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_gae_with_lambda_one_is_the_return_minus_the_value(gamma):
    advantages, returns = ppo.gae(REWARDS, VALUES, gamma, 1.0)
    for t in range(len(REWARDS)):
        discounted = sum(gamma ** k * r for k, r in enumerate(REWARDS[t:]))
        assert advantages[t] == pytest.approx(discounted - VALUES[t], rel=1e-12, abs=1e-12)
        assert returns[t] == pytest.approx(discounted, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_gae_with_lambda_zero_is_the_one_step_td_error(gamma):
    advantages, _ = ppo.gae(REWARDS, VALUES, gamma, 0.0)
    for t in range(len(REWARDS)):
        next_value = VALUES[t + 1] if t + 1 < len(VALUES) else 0.0
        assert advantages[t] == pytest.approx(REWARDS[t] + gamma * next_value - VALUES[t],
                                              rel=1e-12, abs=1e-12)


def test_gae_is_the_weighted_sum_of_td_errors():
    gamma, lam = 0.9, 0.6
    deltas = [REWARDS[t] + gamma * (VALUES[t + 1] if t + 1 < 5 else 0.0) - VALUES[t]
              for t in range(5)]
    advantages, _ = ppo.gae(REWARDS, VALUES, gamma, lam)
    for t in range(5):
        expected = sum((gamma * lam) ** k * d for k, d in enumerate(deltas[t:]))
        assert advantages[t] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_preference_pairs_share_a_first_letter_and_prefer_the_longer_name():
    random.seed(12)
    names = ["ann", "annabelle", "anna", "bo", "bob", "bobby", "cy"]
    for chosen, rejected in ppo.preference_pairs(names, 50):
        assert chosen[0] == rejected[0]
        assert len(chosen) > len(rejected)
