"""microdistill: the soft-target loss and its hand-derived gradient, the fused nodes, the model."""
import math
import random

import pytest

from support import close, grads, load_script, naive_softmax, values_of

distill = load_script("alignment/microdistill.py")
Value = distill.Value
values = values_of(Value)


def random_logits(rng, n=27, spread=2.0):
    return [rng.gauss(0.0, spread) for _ in range(n)]


def small_model(seed, n_embd):
    random.seed(seed)
    return distill.init_model(vocab_size=27, n_embd=n_embd)


# --- the soft-target loss: T^2 * KL(softmax(v / T) || softmax(s / T)) ---

@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0, 8.0, 20.0])
def test_soft_loss_gradient_matches_central_finite_differences(temperature):
    # dL/ds_j = T * (q_j - p_j), checked against the loss written plainly from its formula
    rng = random.Random(int(temperature * 10))
    student, teacher = random_logits(rng), random_logits(rng)
    leaves = values(student)
    node = distill.soft_target_loss(leaves, distill.soft_targets(teacher, temperature),
                                    temperature)
    node.backward()
    assert node.data == pytest.approx(
        distill.reference_soft_loss(student, teacher, temperature), rel=1e-10, abs=1e-12)
    h = 1e-5
    for j in range(len(student)):
        up, down = list(student), list(student)
        up[j] += h
        down[j] -= h
        numeric = (distill.reference_soft_loss(up, teacher, temperature)
                   - distill.reference_soft_loss(down, teacher, temperature)) / (2 * h)
        assert leaves[j].grad == pytest.approx(numeric, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_fused_soft_loss_equals_its_naive_value_form(temperature):
    # The naive form: T^2 * sum_j p_j * (log p_j - log softmax(s / T)_j), from Value operations
    rng = random.Random(7)
    student, teacher = random_logits(rng, 6), random_logits(rng, 6)
    targets = distill.soft_targets(teacher, temperature)
    z1, z2 = values(student), values(student)
    fused = distill.soft_target_loss(z1, targets, temperature)
    q = naive_softmax([z * (1.0 / temperature) for z in z2])
    terms = [(q_j.log() * -1.0 + math.log(p_j)) * p_j for p_j, q_j in zip(targets, q)]
    naive = terms[0]
    for term in terms[1:]:
        naive = naive + term
    naive = naive * temperature ** 2
    fused.backward()
    naive.backward()
    assert fused.data == pytest.approx(naive.data, rel=1e-10)
    assert close(grads(z1), grads(z2), 1e-9)


def test_soft_loss_is_zero_when_the_student_matches_the_teacher():
    rng = random.Random(3)
    teacher = random_logits(rng)
    for temperature in (1.0, 4.0):
        targets = distill.soft_targets(teacher, temperature)
        # Adding a constant to every logit changes no probability
        for shift in (0.0, 3.5):
            leaves = values([v + shift for v in teacher])
            node = distill.soft_target_loss(leaves, targets, temperature)
            node.backward()
            assert abs(node.data) < 1e-12
            assert max(abs(g) for g in grads(leaves)) < 1e-12


def test_soft_loss_is_positive_and_its_gradient_sums_to_zero():
    # KL >= 0, and the gradient T * (q - p) sums to T * (1 - 1) = 0: a shift of all logits
    # is not a direction the loss can move in
    rng = random.Random(4)
    for _ in range(5):
        student, teacher = random_logits(rng), random_logits(rng)
        leaves = values(student)
        node = distill.soft_target_loss(leaves, distill.soft_targets(teacher, 2.0), 2.0)
        node.backward()
        assert node.data > 0.0
        assert abs(sum(grads(leaves))) < 1e-12


def test_at_high_temperature_the_t2_scaled_loss_matches_logits():
    # Hinton et al.: with zero-mean logits and T much larger than the logits, the soft-target
    # gradient T * (q_i - p_i) tends to (s_i - v_i) / V (V = number of classes): matching
    # softened distributions becomes matching logits. The T^2 factor is what keeps this
    # gradient from shrinking like 1 / T^2 as T grows.
    rng = random.Random(5)
    student, teacher = random_logits(rng, spread=1.0), random_logits(rng, spread=1.0)
    student = [s - sum(student) / len(student) for s in student]
    teacher = [v - sum(teacher) / len(teacher) for v in teacher]
    n = len(student)
    for temperature in (200.0, 1000.0):
        leaves = values(student)
        distill.soft_target_loss(leaves, distill.soft_targets(teacher, temperature),
                                 temperature).backward()
        limit = [(s - v) / n for s, v in zip(student, teacher)]
        worst = max(abs(g - l) for g, l in zip(grads(leaves), limit))
        assert worst < 5.0 / temperature * max(abs(l) for l in limit)


def test_soft_targets_soften_with_temperature():
    rng = random.Random(6)
    teacher = random_logits(rng)
    cold, warm, hot = (distill.soft_targets(teacher, t) for t in (1.0, 4.0, 1e6))
    for probs in (cold, warm, hot):
        assert sum(probs) == pytest.approx(1.0, abs=1e-12)
    # softmax(v / T): the top choice loses probability and the rest gain as T grows
    top = max(range(len(teacher)), key=lambda j: teacher[j])
    assert cold[top] > warm[top] > hot[top]
    assert max(hot) - min(hot) < 1e-5          # T -> infinity: uniform
    exps = [math.exp(v / 4.0) for v in teacher]
    assert close(warm, [e / sum(exps) for e in exps], 1e-12)


def test_gradient_check_reports_nan_rather_than_hiding_it(monkeypatch):
    student = distill.frozen_copy(small_model(8, distill.STUDENT_EMBD))
    teacher = distill.frozen_copy(small_model(9, distill.TEACHER_EMBD))
    tokens = [26, 4, 12, 12, 0, 26]
    error = distill.soft_gradient_error(student, teacher, tokens, (1.0, 4.0))
    assert 0.0 <= error < 1e-6
    monkeypatch.setattr(distill, "soft_targets", lambda logits, t: [float("nan")] * len(logits))
    assert math.isnan(distill.soft_gradient_error(student, teacher, tokens, (1.0, 4.0)))


# --- the other fused nodes against their naive forms ---

def test_weighted_sum_equals_a_chain_of_products_and_sums():
    weights, raw = [0.25, -1.5, 3.0, 0.5], [0.5, -1.25, 3.0, 0.125]
    x1, x2 = values(raw), values(raw)
    fused = distill.weighted_sum(weights, x1)
    naive = x2[0] * weights[0]
    for w, x in zip(weights[1:], x2[1:]):
        naive = naive + x * w
    (fused * fused).backward()
    (naive * naive).backward()
    assert fused.data == pytest.approx(naive.data, rel=1e-12)
    assert close(grads(x1), grads(x2))


def test_cross_entropy_on_floats_equals_the_value_node():
    raw = [0.3, -1.2, 2.2, 0.0, 0.9]
    assert distill.cross_entropy(raw, 2) == pytest.approx(
        distill.cross_entropy(values(raw), 2).data, rel=1e-15)


# --- the model: floats and Values agree, and a whole name's gradient is right ---

@pytest.mark.parametrize("n_embd", [8, 16])
def test_float_model_gives_the_same_logits_as_the_value_model(n_embd):
    model = small_model(10, n_embd)
    floats = distill.frozen_copy(model)
    tokens = [26, 9, 0, 13, 4, 26]
    for z, f in zip(distill.all_logits(model, tokens), distill.all_logits(floats, tokens)):
        assert close([v.data for v in z], f, 1e-12)


def test_parameter_counts_of_teacher_and_student():
    assert len(distill.parameters(small_model(11, 16))) == 4192
    assert len(distill.parameters(small_model(11, 8))) == 1328


@pytest.mark.parametrize("soft_weight,temperature", [(0.0, 1.0), (0.5, 4.0), (1.0, 2.0)])
def test_whole_name_loss_gradient_matches_finite_differences(soft_weight, temperature):
    model = small_model(12, distill.STUDENT_EMBD)
    teacher = distill.frozen_copy(small_model(13, distill.TEACHER_EMBD))
    for row in teacher["lm_head"]:            # a sharper teacher than a fresh init
        row[:] = [w * 20.0 for w in row]
    tokens = [26, 4, 12, 12, 0, 26]
    targets = [distill.soft_targets(v, temperature) for v in distill.all_logits(teacher, tokens)]
    distill.name_loss(model, tokens, targets, temperature, soft_weight).backward()
    rng = random.Random(14)
    for p in rng.sample(distill.parameters(model), 25):
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = distill.name_loss(model, tokens, targets, temperature, soft_weight).data
        p.data = original - 1e-5
        down = distill.name_loss(model, tokens, targets, temperature, soft_weight).data
        p.data = original
        assert analytic == pytest.approx((up - down) / 2e-5, rel=1e-4, abs=1e-9)


def test_name_loss_mixes_the_two_terms_with_the_stated_weights():
    # (1 - a) * mean CE + a * mean T^2 KL, computed here from the parts
    model = distill.frozen_copy(small_model(15, distill.STUDENT_EMBD))
    teacher = distill.frozen_copy(small_model(16, distill.TEACHER_EMBD))
    tokens = [26, 1, 14, 1, 26]
    temperature = 3.0
    teacher_logits = distill.all_logits(teacher, tokens)
    student_logits = distill.all_logits(model, tokens)
    targets = [distill.soft_targets(v, temperature) for v in teacher_logits]
    hard = sum(distill.cross_entropy(z, tokens[i + 1]) for i, z in enumerate(student_logits))
    soft = sum(distill.reference_soft_loss(z, v, temperature)
               for z, v in zip(student_logits, teacher_logits))
    n = len(student_logits)
    for a in (0.0, 0.3, 1.0):
        loss = distill.name_loss(distill.trainable_copy(model), tokens, targets, temperature, a)
        assert loss.data == pytest.approx(((1 - a) * hard + a * soft) / n, rel=1e-9)


# --- the paired standard error ---

def test_paired_difference_and_its_standard_error():
    losses_a, losses_b, counts = [5.0, 7.0, 3.0, 9.0], [4.0, 6.5, 2.0, 8.5], [4, 5, 3, 6]
    diffs = [1.0, 0.5, 1.0, 0.5]
    mean, error, z = distill.paired_difference(losses_a, losses_b, counts)
    assert mean == pytest.approx(sum(diffs) / 18)
    sd = math.sqrt(sum((d - 0.75) ** 2 for d in diffs) / 3)
    assert error == pytest.approx(sd * 2 / 18)
    assert z == pytest.approx(mean / error)
    # The same shift of every name's loss has no spread: pairing makes its error 0, and z is
    # then undefined (NaN, which fails a criterion row) rather than a division by zero
    assert distill.paired_difference([2.0, 3.0], [1.0, 2.0], [2, 2])[1] == 0.0
    assert math.isnan(distill.paired_difference([2.0, 3.0], [2.0, 3.0], [2, 2])[2])


# --- dark knowledge: the distribution shown is the one after the context ---

def test_dark_knowledge_shows_the_distribution_after_the_context(capsys, monkeypatch):
    monkeypatch.setattr(distill, "DARK_CONTEXTS", ("", "jo"))
    chars = [chr(ord("a") + i) for i in range(26)]
    bos = 26
    teacher = distill.frozen_copy(small_model(17, distill.TEACHER_EMBD))

    def encode(name):
        return [bos] + [chars.index(c) for c in name] + [bos]

    distill.show_dark_knowledge(teacher, ["jon"], ["ann"], chars, bos, encode)
    rows = capsys.readouterr().out.splitlines()[-2:]
    for row, context in zip(rows, ("", "jo")):
        # the logits after the context, step by step: BOS, then each letter of the context
        keys, vals = [[] for _ in range(distill.N_LAYER)], [[] for _ in range(distill.N_LAYER)]
        tokens = [bos] + [chars.index(c) for c in context]
        for pos, token in enumerate(tokens):
            logits = distill.gpt_step(teacher, token, pos, keys, vals)
        expected = distill.top_choices(distill.soft_targets(logits, 1.0), chars, bos)
        assert expected in row


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 50.0, 200.0])
def test_the_run_s_gradient_check_stays_far_below_its_threshold_at_any_temperature(temperature):
    # The check's step grows with T, so its own rounding does not approach the 1e-6 threshold
    # at the temperatures a learner might try
    student = distill.frozen_copy(small_model(18, distill.STUDENT_EMBD))
    teacher = distill.frozen_copy(small_model(19, distill.TEACHER_EMBD))
    for row in teacher["lm_head"]:
        row[:] = [w * 30.0 for w in row]     # a teacher with logits of a trained model's size
    error = distill.soft_gradient_error(student, teacher, [26, 4, 12, 12, 0, 26], (temperature,))
    assert error < 1e-7
