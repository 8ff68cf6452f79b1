"""micropreference: the four losses and their hand-derived gradients, the KTO data and
reference point, every fused node, and the model plumbing."""
import math
import random

import pytest

from support import close, grads, load_script, naive_softmax, values_of

mp = load_script("alignment/micropreference.py")
Value = mp.Value
values = values_of(Value)
CHOSEN, REJECTED = [26, 4, 12, 12, 0, 26], [26, 4, 21, 0, 26]   # "emma" and "eva"


def small_model(seed=0):
    random.seed(seed)
    return mp.init_model(vocab_size=27)


def central_difference(f, x, h=1e-5):
    return (f(x + h) - f(x - h)) / (2 * h)


# --- the four losses, each against its formula, finite differences and its naive form ---

def plain_sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


PAIR_POINTS = [(-7.0, -5.5, m) for m in (-30.0, -2.5, -0.3, 0.0, 0.7, 4.9, 5.0, 12.0, 60.0)]


def pair_inputs(ref_c, ref_r, margin):
    logp_rejected = -6.0
    return margin + ref_c + (logp_rejected - ref_r), logp_rejected


@pytest.mark.parametrize("ref_c, ref_r, margin", PAIR_POINTS)
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_loss_formula_gradient_and_naive_form(ref_c, ref_r, margin, beta):
    c, r = pair_inputs(ref_c, ref_r, margin)
    chosen, rejected = Value(c), Value(r)
    loss = mp.dpo_loss(chosen, rejected, ref_c, ref_r, beta)
    loss.backward()
    assert loss.data == pytest.approx(math.log1p(math.exp(-beta * margin)), rel=1e-9)
    expected = -beta / (1.0 + math.exp(beta * margin))
    assert chosen.grad == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert rejected.grad == pytest.approx(-expected, rel=1e-9, abs=1e-15)
    assert chosen.grad == pytest.approx(central_difference(
        lambda t: mp.dpo_loss(Value(t), Value(r), ref_c, ref_r, beta).data, c), rel=1e-5, abs=1e-9)
    if beta * abs(margin) > 20.0:
        return   # the naive form's clamped log (at 1e-10) flattens out there
    c2, r2 = Value(c), Value(r)
    naive = mp.naive_dpo_loss(c2, r2, ref_c, ref_r, beta)
    naive.backward()
    assert naive.data == pytest.approx(loss.data, rel=1e-9, abs=1e-12)
    assert close([chosen.grad, rejected.grad], [c2.grad, r2.grad], 1e-8)


@pytest.mark.parametrize("ref_c, ref_r, margin", PAIR_POINTS)
@pytest.mark.parametrize("tau", [0.1, 0.25, 1.0])
def test_ipo_loss_formula_gradient_and_naive_form(ref_c, ref_r, margin, tau):
    # Azar et al., Eq. 17: (m - 1 / (2 tau))^2, dL/dm = 2 (m - 1 / (2 tau))
    c, r = pair_inputs(ref_c, ref_r, margin)
    chosen, rejected = Value(c), Value(r)
    loss = mp.ipo_loss(chosen, rejected, ref_c, ref_r, tau)
    loss.backward()
    real_margin = (c - ref_c) - (r - ref_r)
    assert loss.data == pytest.approx((real_margin - 1.0 / (2.0 * tau)) ** 2, rel=1e-9, abs=1e-12)
    assert chosen.grad == pytest.approx(2.0 * (real_margin - 1.0 / (2.0 * tau)), rel=1e-9,
                                        abs=1e-12)
    assert rejected.grad == pytest.approx(-chosen.grad, rel=1e-12, abs=1e-12)
    for index in (0, 1):
        def loss_at(t):
            args = [c, r]
            args[index] = t
            return mp.ipo_loss(Value(args[0]), Value(args[1]), ref_c, ref_r, tau).data
        analytic = (chosen.grad, rejected.grad)[index]
        assert analytic == pytest.approx(central_difference(loss_at, (c, r)[index]), rel=1e-5,
                                         abs=1e-6)
    c2, r2 = Value(c), Value(r)
    naive = mp.naive_ipo_loss(c2, r2, ref_c, ref_r, tau)
    naive.backward()
    assert naive.data == pytest.approx(loss.data, rel=1e-9, abs=1e-9)
    assert close([chosen.grad, rejected.grad], [c2.grad, r2.grad], 1e-8)


def test_ipo_loss_has_its_minimum_at_the_target_and_pulls_from_both_sides():
    tau = 0.1
    target = 1.0 / (2.0 * tau)
    for margin, direction in ((target - 2.0, -1.0), (target, 0.0), (target + 3.0, 1.0)):
        chosen = Value(margin)
        loss = mp.ipo_loss(chosen, Value(0.0), 0.0, 0.0, tau)
        loss.backward()
        # gradient descent moves the margin toward the target: down when above, up when below
        assert math.copysign(1.0, chosen.grad) == direction or (direction == 0 and
                                                                chosen.grad == 0.0)
    assert mp.ipo_loss(Value(target), Value(0.0), 0.0, 0.0, tau).data == 0.0


@pytest.mark.parametrize("desirable", [True, False])
@pytest.mark.parametrize("log_ratio", [-40.0, -3.0, 0.0, 0.4, 2.5, 25.0])
@pytest.mark.parametrize("z0", [0.0, 1.7])
@pytest.mark.parametrize("beta, weight", [(0.1, 1.0), (1.0, 1.33)])
def test_kto_loss_formula_gradient_and_naive_form(desirable, log_ratio, z0, beta, weight):
    ref = -9.0
    logp = Value(ref + log_ratio)
    loss = mp.kto_loss(logp, ref, z0, desirable, beta, weight)
    loss.backward()
    argument = beta * (log_ratio - z0) if desirable else beta * (z0 - log_ratio)
    assert loss.data == pytest.approx(weight * (1.0 - plain_sigmoid(argument)), rel=1e-9,
                                      abs=1e-15)
    numeric = central_difference(
        lambda t: mp.kto_loss(Value(t), ref, z0, desirable, beta, weight).data, ref + log_ratio)
    assert logp.grad == pytest.approx(numeric, rel=1e-5, abs=1e-10)
    # desirable examples are pushed up, undesirable ones down
    assert (logp.grad <= 0.0) if desirable else (logp.grad >= 0.0)
    if abs(argument) > 20.0:
        return   # the naive form's clamped log (at 1e-10) flattens out there
    logp2 = Value(ref + log_ratio)
    naive = mp.naive_kto_loss(logp2, ref, z0, desirable, beta, weight)
    naive.backward()
    assert naive.data == pytest.approx(loss.data, rel=1e-9, abs=1e-12)
    assert logp2.grad == pytest.approx(logp.grad, rel=1e-8, abs=1e-14)


def test_kto_loss_is_half_its_weight_at_the_reference_point():
    for desirable in (True, False):
        loss = mp.kto_loss(Value(-3.0 + 2.2), -3.0, 2.2, desirable, 0.1, 1.5)
        assert loss.data == pytest.approx(0.75, rel=1e-12)


@pytest.mark.parametrize("margin", [-3.0, -0.4, 0.0, 0.5, 2.0, 9.0])
@pytest.mark.parametrize("beta, gamma", [(2.0, 1.0), (0.1, 0.5)])
def test_simpo_loss_formula_gradient_and_naive_form(margin, beta, gamma):
    len_c, len_r = 6, 3
    logp_r = -7.5
    logp_c = len_c * (margin + logp_r / len_r)   # a(c) - a(r) = margin
    chosen, rejected = Value(logp_c), Value(logp_r)
    loss = mp.simpo_loss(chosen, len_c, rejected, len_r, beta, gamma)
    loss.backward()
    z = beta * (logp_c / len_c - logp_r / len_r) - gamma
    assert loss.data == pytest.approx(-math.log(plain_sigmoid(z)), rel=1e-9)
    for index in (0, 1):
        def loss_at(t):
            args = [logp_c, logp_r]
            args[index] = t
            return mp.simpo_loss(Value(args[0]), len_c, Value(args[1]), len_r, beta, gamma).data
        analytic = (chosen.grad, rejected.grad)[index]
        assert analytic == pytest.approx(central_difference(loss_at, (logp_c, logp_r)[index]),
                                         rel=1e-5, abs=1e-10)
    if abs(z) > 20.0:
        return   # the naive form's clamped log (at 1e-10) flattens out there
    c2, r2 = Value(logp_c), Value(logp_r)
    naive = mp.naive_simpo_loss(c2, len_c, r2, len_r, beta, gamma)
    naive.backward()
    assert naive.data == pytest.approx(loss.data, rel=1e-9)
    assert close([chosen.grad, rejected.grad], [c2.grad, r2.grad], 1e-8)


def test_losses_are_stable_for_huge_margins():
    for margin in (-5000.0, 5000.0):
        assert math.isfinite(mp.dpo_loss(Value(margin), Value(0.0), 0.0, 0.0, 1.0).data)
        assert math.isfinite(mp.simpo_loss(Value(margin), 1, Value(0.0), 1, 2.0, 1.0).data)
        for desirable in (True, False):
            assert math.isfinite(mp.kto_loss(Value(margin), 0.0, 0.0, desirable, 1.0, 1.0).data)


def test_at_the_start_every_method_sees_zero_log_ratios():
    # pi = pi_ref: DPO's loss is ln 2, IPO's is the target squared, KTO's is half its weight
    model = small_model(1)
    reference = mp.frozen_copy(model)
    c = mp.sequence_log_prob(model, CHOSEN, mp.PROMPT_LENGTH)
    r = mp.sequence_log_prob(model, REJECTED, mp.PROMPT_LENGTH)
    ref_c = mp.sequence_log_prob(reference, CHOSEN, mp.PROMPT_LENGTH)
    ref_r = mp.sequence_log_prob(reference, REJECTED, mp.PROMPT_LENGTH)
    assert mp.dpo_loss(c, r, ref_c, ref_r, 0.1).data == pytest.approx(math.log(2), rel=1e-12)
    assert mp.ipo_loss(c, r, ref_c, ref_r, 0.1).data == pytest.approx(25.0, rel=1e-12)
    assert mp.kto_loss(c, ref_c, 0.0, True, 0.1, 1.0).data == pytest.approx(0.5, rel=1e-12)


# --- the steps: each method reads what it should, and moves the margin the right way ---

def paired_batch(model, reference):
    return [(CHOSEN, REJECTED, mp.sequence_log_prob(reference, CHOSEN, mp.PROMPT_LENGTH),
             mp.sequence_log_prob(reference, REJECTED, mp.PROMPT_LENGTH))]


def test_simpo_never_reads_the_reference():
    model = small_model(2)
    batch = paired_batch(model, mp.frozen_copy(model))
    loss, margin = mp.simpo_step(model, batch)
    shifted = [(c, r, ref_c + 3.0, ref_r - 11.0) for c, r, ref_c, ref_r in batch]
    loss2, margin2 = mp.simpo_step(model, shifted)
    assert loss.data == loss2.data and margin == margin2
    lc = mp.sequence_log_prob(mp.frozen_copy(model), CHOSEN, mp.PROMPT_LENGTH)
    lr = mp.sequence_log_prob(mp.frozen_copy(model), REJECTED, mp.PROMPT_LENGTH)
    # "emma" scores m, m, a and the closing BOS: 4 tokens; "eva" 3
    assert margin == pytest.approx(lc / 4 - lr / 3, rel=1e-12)


@pytest.mark.parametrize("step_fn", ["dpo_step", "ipo_step", "simpo_step"])
def test_a_paired_step_raises_the_chosen_over_the_rejected(step_fn):
    # Gradient descent on each loss from pi = pi_ref must raise log pi(c) - log pi(r)
    model = small_model(3)
    reference = mp.frozen_copy(model)
    batch = paired_batch(model, reference)
    loss, _ = getattr(mp, step_fn)(model, batch)
    loss.backward()
    for p in mp.parameters(model):
        p.data -= 0.02 * p.grad
    moved = mp.frozen_copy(model)
    before = (mp.sequence_log_prob(reference, CHOSEN, 2) - mp.sequence_log_prob(reference,
                                                                                REJECTED, 2))
    after = mp.sequence_log_prob(moved, CHOSEN, 2) - mp.sequence_log_prob(moved, REJECTED, 2)
    assert after > before


def test_completion_length_counts_the_scored_tokens():
    for tokens in (CHOSEN, REJECTED, [26, 1, 26], [26] + [0] * 15 + [26]):
        assert mp.completion_length(tokens) == len(tokens) - mp.PROMPT_LENGTH
    assert mp.completion_length([26] + [0] * 20 + [26]) == mp.BLOCK_SIZE - 1


# --- KTO's data and reference point, against plain recomputations ---

def test_kto_batches_unpair_every_pair_and_scatter_the_halves():
    rng = random.Random(5)
    names = [[26, rng.randrange(26)] + [rng.randrange(26) for _ in range(rng.randrange(1, 8))]
             + [26] for _ in range(16)]
    pairs = [(names[2 * i], names[2 * i + 1], -float(i), -float(i) - 0.5) for i in range(8)]
    pair_batches = [pairs[i:i + 2] for i in range(0, 8, 2)]
    batches = mp.kto_batches(pair_batches, random.Random(6))
    assert all(len(b) == 2 * mp.PREF_BATCH for b in batches)
    seen = [ex for batch in batches for ex in batch]
    expected = ([(c, ref_c, True) for c, _, ref_c, _ in pairs]
                + [(r, ref_r, False) for _, r, _, ref_r in pairs])
    assert sorted(map(repr, seen)) == sorted(map(repr, expected))
    in_pair_order = [ex for c, r, ref_c, ref_r in pairs for ex in ((c, ref_c, True),
                                                                   (r, ref_r, False))]
    assert seen != in_pair_order


def test_kto_reference_point_is_the_clamped_mean_sampled_log_ratio():
    reference = mp.frozen_copy(small_model(7))
    policy = mp.frozen_copy(small_model(7))
    policy["lm_head"][26] = [w - 0.4 for w in policy["lm_head"][26]]   # names run longer
    prompts = [[26, 3], [26, 9], [26, 0], [26, 3]]
    random.seed(17)
    z0 = mp.kto_reference_point(policy, reference, prompts, 26)
    random.seed(17)
    plain = []
    for prompt in prompts:
        tokens, logp = mp.sample(policy, prompt, 26)
        assert tokens[:2] == prompt
        assert logp == pytest.approx(mp.sequence_log_prob(policy, tokens, 2), rel=1e-12)
        plain.append(logp - mp.sequence_log_prob(reference, tokens, 2))
    assert z0 == pytest.approx(max(0.0, sum(plain) / len(plain)), rel=1e-12, abs=1e-15)
    assert mp.kto_reference_point(reference, reference, prompts, 26) == 0.0


def test_reference_point_estimates_the_kl_per_completion(monkeypatch):
    # Averaged over many batches, z0 (before its clamp matters) is the sampled KL
    monkeypatch.setattr(mp, "KL_SAMPLES", 400)
    reference = mp.frozen_copy(small_model(18))
    policy = mp.frozen_copy(small_model(18))
    policy["lm_head"][26] = [w - 0.5 for w in policy["lm_head"][26]]
    prompts = [[26, 3], [26, 9], [26, 0], [26, 11]]
    random.seed(19)
    kl, error = mp.completion_kl(policy, reference, prompts, 26)
    z0s = [mp.kto_reference_point(policy, reference, prompts, 26) for _ in range(100)]
    z0, z0_error = mp.mean_and_error(z0s)
    assert kl > 5 * error
    assert abs(z0 - kl) < 4 * math.sqrt(error ** 2 + z0_error ** 2)


def test_mismatched_log_ratio_pairs_each_prompt_with_the_previous_completion():
    reference = mp.frozen_copy(small_model(20))
    policy = mp.frozen_copy(small_model(21))
    examples = [([26, 3, 0, 13, 26], 0.0, True), ([26, 9, 4, 11, 11, 0, 26], 0.0, False),
                ([26, 0, 1, 26], 0.0, True)]
    joined = [[26, 3, 1, 26], [26, 9, 0, 13, 26], [26, 0, 4, 11, 11, 0, 26]]
    plain = [mp.sequence_log_prob(policy, t, 2) - mp.sequence_log_prob(reference, t, 2)
             for t in joined]
    assert mp.mismatched_log_ratio(policy, reference, examples) == pytest.approx(
        sum(plain) / 3, rel=1e-12)


def test_kto_step_gradient_matches_finite_differences_with_z0_held_fixed():
    # z0 is computed from the policy but carries no gradient (TRL detaches it): the step's
    # gradient is that of the loss with z0 frozen at its value.
    model = small_model(8)
    reference = mp.frozen_copy(model)
    for p in mp.parameters(model):
        p.data += random.gauss(0.0, 0.05)
    examples = [(CHOSEN, mp.sequence_log_prob(reference, CHOSEN, 2), True),
                (REJECTED, mp.sequence_log_prob(reference, REJECTED, 2), False)]
    random.seed(22)
    loss, z0 = mp.kto_step(model, examples, reference, 26)
    random.seed(22)
    assert z0 == mp.kto_reference_point(mp.frozen_copy(model), reference,
                                        [CHOSEN[:2], REJECTED[:2]], 26)
    loss.backward()

    def frozen_loss():
        terms = [mp.kto_loss(mp.sequence_log_prob(model, t, 2), ref, z0, good, mp.KTO_BETA,
                             1.0) for t, ref, good in examples]
        return sum(term.data for term in terms) / len(terms)
    for p in random.Random(9).sample(mp.parameters(model), 20):
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = frozen_loss()
        p.data = original - 1e-5
        down = frozen_loss()
        p.data = original
        assert analytic == pytest.approx((up - down) / 2e-5, rel=1e-4, abs=1e-9)


def test_fitted_margin_is_the_target_at_the_least_squares_scale():
    # For margins proportional to how many letters longer the chosen name is, the scale that
    # minimises mean (c * m_i - t)^2 makes E[(c m)^2] / E[c m] equal to t
    margins = [1.0, 2.0, 2.0, 3.0, 5.0]
    t = 2.0
    c = t * sum(margins) / sum(m * m for m in margins)
    assert mp.fitted_margin([c * m for m in margins]) == pytest.approx(t, rel=1e-12)
    assert sum(c * m for m in margins) / len(margins) < t


# --- whole-model gradients for the paired losses ---

@pytest.mark.parametrize("loss_name", ["dpo", "ipo", "simpo"])
def test_whole_model_gradient_matches_finite_differences(loss_name):
    model = small_model(10)
    reference = mp.frozen_copy(model)
    for p in mp.parameters(model):
        p.data += random.gauss(0.0, 0.05)
    batch = paired_batch(model, reference)
    step = getattr(mp, loss_name + "_step")
    step(model, batch)[0].backward()
    rng = random.Random(11)
    for p in rng.sample(mp.parameters(model), 25):
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = step(model, batch)[0].data
        p.data = original - 1e-5
        down = step(model, batch)[0].data
        p.data = original
        assert analytic == pytest.approx((up - down) / 2e-5, rel=1e-4, abs=1e-8)


# --- fused nodes and the model (as in microdpo) ---

def test_fused_log_prob_equals_naive_and_finite_differences():
    raw, target = [0.3, -1.2, 2.2, 0.0, 0.9], 3
    z1, z2 = values(raw), values(raw)
    fused = mp.log_prob(z1, target)
    naive = naive_softmax(z2)[target].log()
    fused.backward()
    naive.backward()
    assert fused.data == pytest.approx(naive.data, rel=1e-12)
    assert close(grads(z1), grads(z2))
    assert math.isfinite(mp.log_prob(values([5000.0, -5000.0]), 1).data)


def test_fused_sum_and_mean_equal_chains_of_additions():
    raw = [0.5, -1.25, 3.0, 0.125]
    x1, x2 = values(raw), values(raw)
    fused = mp.mean_node(x1)
    naive = x2[0]
    for x in x2[1:]:
        naive = naive + x
    naive = naive / len(x2)
    (fused * fused).backward()
    (naive * naive).backward()
    assert fused.data == pytest.approx(naive.data, rel=1e-12)
    assert close(grads(x1), grads(x2))


def test_float_model_gives_the_same_numbers_as_the_value_model():
    model = small_model(12)
    floats = mp.frozen_copy(model)
    tokens = [26, 9, 0, 13, 4, 26]
    assert mp.sequence_log_prob(model, tokens, 1).data == pytest.approx(
        mp.sequence_log_prob(floats, tokens, 1), rel=1e-12)


def test_sampled_log_prob_matches_the_sequence_log_prob():
    model = mp.frozen_copy(small_model(13))
    random.seed(14)
    for _ in range(5):
        tokens, logp = mp.sample(model, [26], 26)
        assert logp == pytest.approx(mp.sequence_log_prob(model, tokens, 1), rel=1e-12)


def test_kl_of_the_reference_against_itself_is_exactly_zero(monkeypatch):
    monkeypatch.setattr(mp, "KL_SAMPLES", 20)
    model = mp.frozen_copy(small_model(15))
    random.seed(16)
    kl, error, names = mp.estimate_kl(model, model, 26)
    assert kl == 0.0 and error == 0.0 and len(names) == 20


def test_mean_and_error():
    mean, error = mp.mean_and_error([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0
    assert error == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3) / 2, rel=1e-12)
