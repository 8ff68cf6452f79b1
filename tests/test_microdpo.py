"""microdpo: the DPO loss and its hand-derived gradient, every fused node, and the plumbing."""
import math
import random

import pytest

from support import close, grads, load_script, naive_softmax, values_of

dpo = load_script("alignment/microdpo.py")
Value = dpo.Value
values = values_of(Value)


def small_model(seed=0):
    random.seed(seed)
    return dpo.init_model(vocab_size=27)


# --- the DPO loss ---

@pytest.mark.parametrize("beta", [0.1, 1.0, 3.0])
@pytest.mark.parametrize("margin", [-40.0, -2.5, -0.3, 0.0, 0.7, 4.0, 60.0])
def test_dpo_gradient_matches_central_finite_differences(beta, margin):
    # dL/dm = -beta * sigmoid(-beta * m), checked through both log-probability inputs
    ref_chosen, ref_rejected = -7.0, -5.5
    logp_rejected = -6.0
    logp_chosen = margin + ref_chosen + (logp_rejected - ref_rejected)
    chosen, rejected = Value(logp_chosen), Value(logp_rejected)
    loss = dpo.dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    loss.backward()
    expected = -beta / (1.0 + math.exp(beta * margin))
    assert chosen.grad == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert rejected.grad == pytest.approx(-expected, rel=1e-9, abs=1e-15)

    def loss_at(c, r):
        return dpo.dpo_loss(Value(c), Value(r), ref_chosen, ref_rejected, beta).data
    h = 1e-5
    numeric_c = (loss_at(logp_chosen + h, logp_rejected) - loss_at(logp_chosen - h,
                                                                   logp_rejected)) / (2 * h)
    numeric_r = (loss_at(logp_chosen, logp_rejected + h) - loss_at(logp_chosen,
                                                                   logp_rejected - h)) / (2 * h)
    assert chosen.grad == pytest.approx(numeric_c, rel=1e-5, abs=1e-9)
    assert rejected.grad == pytest.approx(numeric_r, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("margin", [-3.0, -0.2, 0.0, 1.5, 8.0])
def test_fused_dpo_loss_equals_naive_form(margin):
    beta, ref_c, ref_r = 0.7, -4.0, -3.0
    c1, r1 = Value(margin - 4.0 - 0.5), Value(-3.5)
    c2, r2 = Value(c1.data), Value(r1.data)
    fused = dpo.dpo_loss(c1, r1, ref_c, ref_r, beta)
    naive = dpo.naive_dpo_loss(c2, r2, ref_c, ref_r, beta)
    fused.backward()
    naive.backward()
    assert fused.data == pytest.approx(naive.data, rel=1e-12)
    assert close([c1.grad, r1.grad], [c2.grad, r2.grad])


def test_dpo_loss_is_ln2_when_policy_equals_reference():
    for ref_c, ref_r in [(-3.0, -9.0), (-12.5, -2.0)]:
        loss = dpo.dpo_loss(Value(ref_c), Value(ref_r), ref_c, ref_r, 0.1)
        assert loss.data == pytest.approx(math.log(2), rel=1e-15)
    random.seed(1)
    model = dpo.init_model(vocab_size=27)
    reference = dpo.frozen_copy(model)
    chosen, rejected = [26, 4, 12, 12, 0, 26], [26, 4, 21, 0, 26]
    loss = dpo.dpo_loss(dpo.sequence_log_prob(model, chosen, dpo.PROMPT_LENGTH),
                        dpo.sequence_log_prob(model, rejected, dpo.PROMPT_LENGTH),
                        dpo.sequence_log_prob(reference, chosen, dpo.PROMPT_LENGTH),
                        dpo.sequence_log_prob(reference, rejected, dpo.PROMPT_LENGTH), 0.1)
    assert loss.data == pytest.approx(math.log(2), rel=1e-12)


def test_dpo_loss_is_stable_for_huge_margins():
    for margin in (-5000.0, 5000.0):
        loss = dpo.dpo_loss(Value(margin), Value(0.0), 0.0, 0.0, 1.0)
        assert math.isfinite(loss.data) and loss.data >= 0.0
    assert dpo.dpo_loss(Value(-5000.0), Value(0.0), 0.0, 0.0, 1.0).data == pytest.approx(5000)


def test_a_larger_beta_stops_pulling_after_a_smaller_margin():
    # The comment's numbers: the weight sigmoid(-beta * m) falls below 0.05 at beta * m = 3
    assert dpo.sigmoid(-3.0) < 0.05 < dpo.sigmoid(-2.9)
    weight = {beta: dpo.sigmoid(-beta * 3.0) for beta in (0.1, 1.0)}
    assert weight[1.0] < 0.05 < weight[0.1]


def test_a_dpo_step_moves_the_margin_the_right_way():
    # Gradient descent on the loss must raise log pi(chosen) - log pi(rejected): the check that
    # catches a sign error in the margin, which would lower it.
    model = small_model(2)
    reference = dpo.frozen_copy(model)
    chosen, rejected = [26, 4, 12, 12, 0, 26], [26, 4, 21, 0, 26]
    ref_c = dpo.sequence_log_prob(reference, chosen, dpo.PROMPT_LENGTH)
    ref_r = dpo.sequence_log_prob(reference, rejected, dpo.PROMPT_LENGTH)

    loss = dpo.dpo_loss(dpo.sequence_log_prob(model, chosen, dpo.PROMPT_LENGTH),
                        dpo.sequence_log_prob(model, rejected, dpo.PROMPT_LENGTH), ref_c, ref_r,
                        0.1)
    loss.backward()
    for p in dpo.parameters(model):
        p.data -= 0.5 * p.grad
    moved = dpo.frozen_copy(model)
    margin = ((dpo.sequence_log_prob(moved, chosen, dpo.PROMPT_LENGTH) - ref_c)
              - (dpo.sequence_log_prob(moved, rejected, dpo.PROMPT_LENGTH) - ref_r))
    assert margin > 0.0


# --- fused nodes against their naive forms ---

def test_fused_log_prob_equals_naive_and_finite_differences():
    raw, target = [0.3, -1.2, 2.2, 0.0, 0.9], 3
    z1, z2 = values(raw), values(raw)
    fused = dpo.log_prob(z1, target)
    naive = naive_softmax(z2)[target].log()
    fused.backward()
    naive.backward()
    assert fused.data == pytest.approx(naive.data, rel=1e-12)
    assert close(grads(z1), grads(z2))
    for j in range(len(raw)):
        def at(t):
            return dpo.log_prob(values(raw[:j] + [t] + raw[j + 1:]), target).data
        numeric = (at(raw[j] + 1e-6) - at(raw[j] - 1e-6)) / 2e-6
        assert z1[j].grad == pytest.approx(numeric, rel=1e-5, abs=1e-7)
    assert math.isfinite(dpo.log_prob(values([5000.0, -5000.0]), 1).data)


def test_fused_sum_and_mean_equal_chains_of_additions():
    raw = [0.5, -1.25, 3.0, 0.125]
    x1, x2 = values(raw), values(raw)
    fused = dpo.fused_sum(x1) * (1.0 / len(x1))
    naive = x2[0]
    for x in x2[1:]:
        naive = naive + x
    naive = naive / len(x2)
    (fused * fused).backward()
    (naive * naive).backward()
    assert fused.data == pytest.approx(naive.data, rel=1e-12)
    assert close(grads(x1), grads(x2))


# --- the model: floats and Values agree, and the whole gradient is right ---

def test_float_model_gives_the_same_numbers_as_the_value_model():
    model = small_model(3)
    floats = dpo.frozen_copy(model)
    tokens = [26, 9, 0, 13, 4, 26]
    assert dpo.sequence_log_prob(model, tokens, 1).data == pytest.approx(
        dpo.sequence_log_prob(floats, tokens, 1), rel=1e-12)
    keys, vals = [[] for _ in range(dpo.N_LAYER)], [[] for _ in range(dpo.N_LAYER)]
    fkeys, fvals = [[] for _ in range(dpo.N_LAYER)], [[] for _ in range(dpo.N_LAYER)]
    for pos, token in enumerate(tokens[:-1]):
        logits = dpo.gpt_step(model, token, pos, keys, vals)
        flogits = dpo.gpt_step(floats, token, pos, fkeys, fvals)
        assert close([z.data for z in logits], flogits, 1e-12)


def test_whole_dpo_gradient_matches_finite_differences():
    model = small_model(4)
    reference = dpo.frozen_copy(model)
    for p in dpo.parameters(model):          # move the policy off the reference
        p.data += random.gauss(0.0, 0.05)
    chosen, rejected = [26, 4, 12, 12, 0, 26], [26, 4, 21, 0, 26]
    ref_c = dpo.sequence_log_prob(reference, chosen, dpo.PROMPT_LENGTH)
    ref_r = dpo.sequence_log_prob(reference, rejected, dpo.PROMPT_LENGTH)

    def loss_of(m):
        return dpo.dpo_loss(dpo.sequence_log_prob(m, chosen, dpo.PROMPT_LENGTH),
                            dpo.sequence_log_prob(m, rejected, dpo.PROMPT_LENGTH), ref_c, ref_r,
                            1.0)
    loss_of(model).backward()
    rng = random.Random(5)
    for p in rng.sample(dpo.parameters(model), 30):
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = loss_of(model).data
        p.data = original - 1e-5
        down = loss_of(model).data
        p.data = original
        assert analytic == pytest.approx((up - down) / 2e-5, rel=1e-4, abs=1e-9)


def test_prompt_tokens_are_not_counted():
    model = dpo.frozen_copy(small_model(5))
    tokens = [26, 4, 12, 0, 26]
    full = dpo.sequence_log_prob(model, tokens, 1)
    completion = dpo.sequence_log_prob(model, tokens, dpo.PROMPT_LENGTH)
    keys, vals = [[] for _ in range(dpo.N_LAYER)], [[] for _ in range(dpo.N_LAYER)]
    first = dpo.log_prob(dpo.gpt_step(model, 26, 0, keys, vals), 4)
    assert full == pytest.approx(first + completion, rel=1e-12)


# --- data, sampling and the KL estimate ---

def test_pairs_share_the_first_letter_and_prefer_the_longer_name():
    names = ["ann", "anabel", "bo", "bella", "bea", "cy", "cal", "al"]
    pairs = dpo.make_pairs(names, 200, random.Random(6))
    for chosen, rejected in pairs:
        assert chosen[0] == rejected[0]
        assert len(chosen) > len(rejected)
    assert not any(chosen.startswith("c") and len(chosen) == 2 for chosen, _ in pairs)


def test_sampled_log_prob_matches_the_sequence_log_prob():
    model = dpo.frozen_copy(small_model(7))
    random.seed(8)
    for _ in range(5):
        tokens, logp = dpo.sample(model, 26)
        assert logp == pytest.approx(dpo.sequence_log_prob(model, tokens, 1), rel=1e-12)


def test_kl_of_the_reference_against_itself_is_exactly_zero(monkeypatch):
    monkeypatch.setattr(dpo, "KL_SAMPLES", 20)
    model = dpo.frozen_copy(small_model(9))
    random.seed(10)
    kl, error, names = dpo.estimate_kl(model, model, 26)
    assert kl == 0.0 and error == 0.0 and len(names) == 20


def test_kl_standard_error_describes_the_spread_between_estimates(monkeypatch):
    # Two independent estimates of the same KL differ by about sqrt(e1^2 + e2^2), where e1 and
    # e2 are the standard errors the estimator reports; 4 of those is a wide, honest bound.
    monkeypatch.setattr(dpo, "KL_SAMPLES", 300)
    model = small_model(11)
    reference = dpo.frozen_copy(model)
    policy = dpo.frozen_copy(model)
    policy["lm_head"][26] = [w + 0.3 for w in policy["lm_head"][26]]  # end names sooner
    random.seed(12)
    kl_1, error_1, _ = dpo.estimate_kl(policy, reference, 26)
    kl_2, error_2, _ = dpo.estimate_kl(policy, reference, 26)
    assert kl_1 > 0.0 and kl_2 > 0.0 and error_1 > 0.0 and error_2 > 0.0
    assert kl_1 != kl_2
    assert abs(kl_1 - kl_2) < 4.0 * math.sqrt(error_1 ** 2 + error_2 ** 2)
