"""microdropout: fused nodes against their naive forms and finite differences, the dropout
mask statistics, the Adam/AdamW update by hand, and the float evaluation path."""
import math
import random

import pytest

from support import grads, load_script, values_of

md = load_script("alignment/microdropout.py")
Value = md.Value
values = values_of(Value)


def close(a, b, tol=1e-9):
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=tol, abs_tol=tol)
                                    for x, y in zip(a, b))


def naive_sum(vs):
    total = vs[0]
    for v in vs[1:]:
        total = total + v
    return total


def test_fused_mean_equals_naive_mean():
    raw = [0.5, -2.0, 3.25, 1.0]
    a, b = values(raw), values(raw)
    fused, naive = md.mean(a), naive_sum(b) / len(b)
    (fused * 2.0).backward()
    (naive * 2.0).backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(a), grads(b)) and close(grads(a), [0.5] * 4)


@pytest.mark.parametrize("scale", [1.0, 1.0 / 0.7])
def test_hidden_unit_equals_sum_tanh_scale_and_finite_differences(scale):
    raw = [0.4, -0.9, 0.25, 0.1]
    a, b = values(raw), values(raw)
    fused = md.hidden_unit(a, scale)
    naive = naive_sum(b).tanh() * scale
    (fused * 0.7).backward()
    (naive * 0.7).backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(a), grads(b))
    for i in range(len(raw)):
        def out(t):
            return md.hidden_unit(values(raw[:i] + [t] + raw[i + 1:]), scale).data
        numeric = (out(raw[i] + 1e-6) - out(raw[i] - 1e-6)) / 2e-6
        assert math.isclose(a[i].grad, numeric * 0.7, rel_tol=1e-6, abs_tol=1e-9)


def small_model(seed=0, w2_std=0.3):
    random.seed(seed)
    model, params, decays = md.init_model(vocab_size=27)
    for row in model["w2"]:          # larger than the init so every gradient is sizeable
        for p in row:
            p.data = random.gauss(0.0, w2_std)
    return model, params, decays


def batch_inputs(model, contexts, masks, scale):
    return [md.hidden_layer(model, c, kept, scale) for c, kept in zip(contexts, masks)]


CONTEXTS = [(26, 26, 26), (26, 0, 21), (0, 21, 0), (4, 12, 12), (26, 26, 4)]
TARGETS = [0, 21, 26, 0, 12]


@pytest.mark.parametrize("dropout", [False, True])
def test_fused_head_equals_unfused_head_in_value_and_gradients(dropout):
    model, params, _ = small_model()
    rng = random.Random(3)
    masks = [sorted(rng.sample(range(md.HIDDEN), 40)) if dropout else None for _ in CONTEXTS]
    scale = 1 / 0.7 if dropout else 1.0
    losses, all_grads = [], []
    for head in (md.head_loss, md.head_loss_unfused):
        loss = head(model["w2"], batch_inputs(model, CONTEXTS, masks, scale), TARGETS)
        loss.backward()
        losses.append(loss.data)
        all_grads.append(grads(params))
        for p in params:
            p.grad = 0.0
    assert math.isclose(losses[0], losses[1], rel_tol=1e-12)
    assert close(all_grads[0], all_grads[1], 1e-10)
    assert sum(abs(g) for g in all_grads[0]) > 1.0


def test_whole_model_gradient_matches_finite_differences_with_a_dropout_mask():
    model, params, _ = small_model(seed=1)
    masks = [list(range(0, md.HIDDEN, 2)), None, list(range(1, md.HIDDEN, 3)), None, [5]]
    scale = 1 / 0.7

    def loss_value():
        return md.head_loss(model["w2"], batch_inputs(model, CONTEXTS, masks, scale), TARGETS)

    loss = loss_value()
    loss.backward()
    # every parameter with a gradient, plus a sample of the others (whose gradient is 0)
    used = [p for p in params if p.grad != 0.0]
    rng = random.Random(4)
    checked = rng.sample(used, 40) + rng.sample([p for p in params if p.grad == 0.0], 10)
    assert len(used) > 100
    for p in checked:
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = loss_value().data
        p.data = original - 1e-5
        down = loss_value().data
        p.data = original
        assert math.isclose(analytic, (up - down) / 2e-5, rel_tol=1e-4, abs_tol=1e-8)


def test_float_evaluation_matches_the_value_forward_pass():
    model, _, _ = small_model(seed=2)
    pairs = list(zip(CONTEXTS, TARGETS))
    value_loss = md.head_loss(model["w2"], [md.hidden_layer(model, c) for c in CONTEXTS],
                              TARGETS).data
    float_loss = md.mean_losses(md.snapshot(model), md.group_by_context(pairs))[0]
    assert float_loss == pytest.approx(value_loss, rel=1e-12)


def test_sets_scored_together_give_the_same_losses_as_scored_alone():
    # mean_losses() runs a context shared by several sets once; each set's loss must still be
    # exactly what scoring that set alone gives
    weights = md.snapshot(small_model(seed=2)[0])
    first = md.group_by_context(list(zip(CONTEXTS[:4], TARGETS[:4])))
    second = md.group_by_context(list(zip(CONTEXTS[2:], TARGETS[2:])))   # shares two contexts
    together = md.mean_losses(weights, first, second)
    assert together == md.mean_losses(weights, first) + md.mean_losses(weights, second)
    assert together[0] != together[1]


def test_eval_mode_is_train_mode_with_every_unit_kept_and_no_scale():
    model, _, _ = small_model(seed=2)
    units_a, eval_mode = md.hidden_layer(model, (4, 12, 12))
    units_b, all_kept = md.hidden_layer(model, (4, 12, 12), list(range(md.HIDDEN)), 1.0)
    assert units_a == units_b and [h.data for h in eval_mode] == [h.data for h in all_kept]


def test_dropout_mask_statistics():
    random.seed(7)
    p, draws = 0.3, 5000
    masks = [set(md.draw_mask(p)) for _ in range(draws)]
    kept_share = sum(len(m) for m in masks) / (draws * md.HIDDEN)
    assert abs(kept_share - 0.7) < 0.005          # 240,000 draws: std 0.0009
    for j in range(md.HIDDEN):                      # every unit on its own: std 0.0065
        assert abs(sum(j in m for m in masks) / draws - 0.7) < 0.035
    for a, b in [(0, 1), (5, 40), (46, 47)]:        # independent units: both kept 0.49
        assert abs(sum(a in m and b in m for m in masks) / draws - 0.49) < 0.035
    # a fresh mask per call: consecutive masks differ
    assert sum(masks[i] != masks[i + 1] for i in range(100)) == 100
    assert md.draw_mask(0.0) == list(range(md.HIDDEN))


def test_inverted_dropout_keeps_the_expected_activation():
    random.seed(8)
    p, draws, h = 0.3, 20000, 0.8
    total = sum(h / (1 - p) * (0 in md.draw_mask(p)) for _ in range(draws))
    assert total / draws == pytest.approx(h, rel=0.02)


def test_activation_means_match_between_train_and_eval_mode():
    model, _, _ = small_model(seed=3)
    grouped = md.group_by_context(list(zip(CONTEXTS, TARGETS)))
    weights = md.snapshot(model)
    # every unit's mean factor 1: train mode on average is eval mode; without the rescale 0.7
    eval_mean, train_mean, unscaled = md.activation_means(weights, grouped, [1.0] * md.HIDDEN,
                                                          0.3)
    assert train_mean == pytest.approx(eval_mean, rel=1e-12)
    assert unscaled == pytest.approx(0.7 * eval_mean, rel=1e-12)
    # one mask for every example: its kept units count 1/0.7 times, the others not at all
    mask = set(range(0, md.HIDDEN, 2))
    factors = [1 / 0.7 if j in mask else 0.0 for j in range(md.HIDDEN)]
    _, train_mean, _ = md.activation_means(weights, grouped, factors, 0.3)
    assert train_mean != pytest.approx(eval_mean, rel=0.01)


def test_worst_unit_mismatch():
    assert md.worst_unit_mismatch([1.0, 1.02, 0.97]) == pytest.approx(0.03)
    assert md.worst_unit_mismatch([1 / 0.7, 0.0]) == 1.0
    assert math.isnan(md.worst_unit_mismatch([1.0, float("nan"), 1.0]))


def test_train_run_records_one_fresh_mask_per_example(monkeypatch):
    # A dropout run's mean factor per unit comes from the masks it drew: close to 1 for a
    # fresh mask per example, and exactly 1 (no masks) for a run without dropout.
    monkeypatch.setattr(md, "NUM_STEPS", 40)
    monkeypatch.setattr(md, "EVAL_EVERY", 40)
    random.seed(11)
    model, params, decays = md.init_model(27)
    pairs = list(zip(CONTEXTS, TARGETS))
    eval_sets = {"train": md.group_by_context(pairs), "valid": md.group_by_context(pairs)}
    batches = [[random.randrange(len(pairs)) for _ in range(32)] for _ in range(40)]
    start = [p.data for p in params]
    _, _, factors = md.train_run("t", model, params, decays, start, batches, pairs, eval_sets,
                                 dropout_p=0.3)
    assert md.worst_unit_mismatch(factors) < 0.15    # 1,280 masks: std 0.018 per unit
    assert sum(factors) / md.HIDDEN == pytest.approx(1.0, abs=0.02)
    _, _, none = md.train_run("t", model, params, decays, start, batches, pairs, eval_sets)
    assert none is None


def test_adam_and_adamw_update_by_hand():
    lr, b1, b2, eps = md.LEARNING_RATE, md.BETA1, md.BETA2, md.ADAM_EPS
    lam = 0.5
    w, bias = Value(2.0), Value(2.0)
    moments = ([0.0, 0.0], [0.0, 0.0])
    expected_w = expected_b = 2.0
    m_w = v_w = m_b = v_b = 0.0
    for t, g in [(1, 0.3), (2, -0.1), (3, 0.05)]:
        w.grad, bias.grad = g, g
        md.adam_step([w, bias], [True, False], moments, t, lam, decoupled=True)
        # AdamW by hand: first shrink the decayed weight, then the plain Adam step
        expected_w *= 1 - lr * lam
        m_w, v_w = b1 * m_w + (1 - b1) * g, b2 * v_w + (1 - b2) * g * g
        expected_w -= lr * (m_w / (1 - b1 ** t)) / (math.sqrt(v_w / (1 - b2 ** t)) + eps)
        # the bias is not decayed: plain Adam
        m_b, v_b = b1 * m_b + (1 - b1) * g, b2 * v_b + (1 - b2) * g * g
        expected_b -= lr * (m_b / (1 - b1 ** t)) / (math.sqrt(v_b / (1 - b2 ** t)) + eps)
        assert w.data == pytest.approx(expected_w, rel=1e-12)
        assert bias.data == pytest.approx(expected_b, rel=1e-12)
        assert w.grad == 0.0 and bias.grad == 0.0
    # the first Adam step has size lr whatever the gradient: 2 * (1 - lr*lam) - lr
    w, moments = Value(2.0), ([0.0], [0.0])
    w.grad = 123.0
    md.adam_step([w], [True], moments, 1, lam)
    assert w.data == pytest.approx(2.0 * (1 - lr * lam) - lr, rel=1e-9)


def test_l2_in_adam_puts_the_decay_into_the_gradient():
    lr, lam = md.LEARNING_RATE, 0.5
    a, b = Value(2.0), Value(2.0)
    a.grad = 0.3
    md.adam_step([a], [True], ([0.0], [0.0]), 1, lam, decoupled=False)
    b.grad = 0.3 + lam * 2.0     # the same as plain Adam on the gradient g + lambda * w
    md.adam_step([b], [True], ([0.0], [0.0]), 1, 0.0)
    assert a.data == pytest.approx(b.data, rel=1e-12)
    # with no loss gradient, L2-in-Adam moves by lr per step whatever lambda is; AdamW by
    # lr * lambda * w
    for lam_small in (0.001, 0.1):
        c, d = Value(1.0), Value(1.0)
        md.adam_step([c], [True], ([0.0], [0.0]), 1, lam_small, decoupled=False)
        md.adam_step([d], [True], ([0.0], [0.0]), 1, lam_small, decoupled=True)
        assert c.data == pytest.approx(1.0 - lr, rel=1e-6)
        assert d.data == pytest.approx(1.0 - lr * lam_small, rel=1e-12)


def test_decay_demo_shows_the_difference():
    shrunk = md.decay_demo()
    adamw_noisy, adamw_idle = shrunk[True]
    l2_noisy, l2_idle = shrunk[False]
    assert adamw_idle == pytest.approx((1 - md.LEARNING_RATE * md.WEIGHT_DECAY) ** 100)
    assert l2_idle < 0.5 * adamw_idle         # no gradient: L2 in Adam decays far harder
    assert l2_noisy > adamw_noisy             # large gradients: L2 in Adam barely decays


def test_examples_and_grouping():
    stoi = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}
    pairs = md.examples_of(["ava"], stoi, 26)
    assert pairs == [((26, 26, 26), 0), ((26, 26, 0), 21), ((26, 0, 21), 0), ((0, 21, 0), 26)]
    groups, count = md.group_by_context(pairs + pairs[:1])
    assert count == 5 and dict(groups)[(26, 26, 26)] == {0: 2}


def test_early_stop():
    curve = {"step": [20, 40, 60, 80, 100, 120], "valid": [3.0, 2.5, 2.6, 2.4, 2.7, 2.8]}
    assert md.early_stop(curve, 1) == (60, 40)     # gives up at the first rise
    assert md.early_stop(curve, 2) == (120, 80)    # waits past the bump
    assert md.early_stop(curve, 3) == (None, 80)   # never runs out of patience


def test_bigram_loss_by_hand():
    # vocabulary of 2 (token 1 is the boundary); training pairs 1->0 twice and 0->1 twice
    train = [((1, 1, 1), 0), ((1, 1, 0), 1)] * 2
    loss = md.bigram_loss(train, md.group_by_context([((1, 1, 1), 0), ((1, 1, 0), 0)]), 2)
    # add-one: P(0 | 1) = 3/4, P(0 | 0) = 1/4
    assert loss == pytest.approx(-(math.log(0.75) + math.log(0.25)) / 2, rel=1e-12)
