"""Fast checks specific to alignment/microoptim.py.

The network's gradient is derived by hand, so every entry of it is compared with central
finite differences of the loss written index by index (reference_loss). The optimisers are
checked against numbers worked out by hand from PyTorch's documented update rules, the
clipping against the definition of torch.nn.utils.clip_grad_norm_, and the schedules
against their formulas at the points that define them.
"""
import math
import random

import pytest

from support import load_script

SCRIPT = "alignment/microoptim.py"
opt = load_script(SCRIPT)


# --- helpers -------------------------------------------------------------------------------

def small_model(monkeypatch, seed=0):
    """A model with 3-wide embeddings and 5 hidden units, so every entry can be checked."""
    monkeypatch.setattr(opt, "EMBED", 3)
    monkeypatch.setattr(opt, "HIDDEN", 5)
    random.seed(seed)
    params = opt.init_params(27)
    # The script starts W2 small; make it larger here so that every path carries gradient.
    params["w2"] = [[random.gauss(0.0, 0.5) for _ in row] for row in params["w2"]]
    params["b1"] = [[random.gauss(0.0, 0.3) for _ in params["b1"][0]]]
    params["b2"] = [[random.gauss(0.0, 0.3) for _ in params["b2"][0]]]
    # Context 0 twice in one example: its embedding gradient must count both positions.
    batch = [((0, 0, 5), 3), ((5, 7, 9), 26), ((26, 26, 26), 0), ((1, 2, 0), 3)]
    return params, batch


def one_tensor(values):
    """A params/grads dict whose only non-empty tensor is w1, holding `values` as one row."""
    out = {name: [[0.0]] for name in opt.PARAM_NAMES}
    out["w1"] = [list(values)]
    return out


# --- the hand-derived gradient ---------------------------------------------------------------

def test_loss_matches_the_plain_reference(monkeypatch):
    params, batch = small_model(monkeypatch)
    loss, _ = opt.loss_and_grads(params, batch)
    assert loss == pytest.approx(opt.reference_loss(params, batch), rel=1e-12)


def test_every_gradient_entry_matches_finite_differences(monkeypatch):
    params, batch = small_model(monkeypatch)
    _, grads = opt.loss_and_grads(params, batch)
    h = 1e-6
    largest = {}
    for name in opt.PARAM_NAMES:
        for r, row in enumerate(params[name]):
            for c, original in enumerate(row):
                row[c] = original + h
                up = opt.reference_loss(params, batch)
                row[c] = original - h
                down = opt.reference_loss(params, batch)
                row[c] = original
                numeric = (up - down) / (2 * h)
                assert grads[name][r][c] == pytest.approx(numeric, rel=1e-5, abs=1e-8), \
                    (name, r, c)
                largest[name] = max(largest.get(name, 0.0), abs(numeric))
    # No vacuous pass: every tensor really has gradient to compare.
    assert all(value > 1e-3 for value in largest.values()), largest


def test_gradient_at_full_size_on_sampled_entries():
    random.seed(3)
    params = opt.init_params(27)
    batch = [(tuple(random.randrange(27) for _ in range(opt.CONTEXT)), random.randrange(27))
             for _ in range(6)]
    _, grads = opt.loss_and_grads(params, batch)
    h = 1e-6
    rng = random.Random(4)
    for name in opt.PARAM_NAMES:
        for _ in range(8):
            r = rng.randrange(len(params[name]))
            c = rng.randrange(len(params[name][r]))
            original = params[name][r][c]
            params[name][r][c] = original + h
            up = opt.reference_loss(params, batch)
            params[name][r][c] = original - h
            down = opt.reference_loss(params, batch)
            params[name][r][c] = original
            assert grads[name][r][c] == pytest.approx((up - down) / (2 * h), rel=1e-4,
                                                      abs=1e-8), (name, r, c)


def test_heldout_loss_is_the_mean_over_examples(monkeypatch):
    params, batch = small_model(monkeypatch)
    pairs = batch + batch[:2]          # repeated contexts are grouped, and must still count
    expected = sum(opt.reference_loss(params, [pair]) for pair in pairs) / len(pairs)
    assert opt.heldout_loss(params, opt.group_by_context(pairs)) == pytest.approx(expected,
                                                                                   rel=1e-12)


# --- the optimisers, against numbers worked out by hand ------------------------------------

def test_adam_first_step_is_lr_for_every_parameter_and_without_correction_3_16_lr():
    grads = [0.5, -0.2, 30.0]
    for corrected, expected in ((True, 1.0), (False, 0.1 / math.sqrt(0.001))):
        step, _ = opt.make_optimizer("adam", bias_correction=corrected)
        params = one_tensor([1.0, 1.0, 1.0])
        step(params, one_tensor(grads), 0.01)
        for g, p in zip(grads, params["w1"][0]):
            assert (1.0 - p) / 0.01 == pytest.approx(math.copysign(expected, g), rel=1e-5)


def test_adam_on_a_constant_gradient_steps_lr_every_time():
    # m_hat = g and v_hat = g^2 exactly at every step, so each step is lr * g / |g|.
    step, _ = opt.make_optimizer("adam")
    params = one_tensor([0.0])
    for t in range(1, 6):
        step(params, one_tensor([0.3]), 0.1)
        assert params["w1"][0][0] == pytest.approx(-0.1 * t, rel=1e-6)


def test_momentum_accumulates_like_torch():
    # b_1 = g, b_t = 0.9 b_(t-1) + g: on a constant g = 1 the steps are 1, 1.9, 2.71 times lr.
    step, _ = opt.make_optimizer("momentum")
    params = one_tensor([0.0])
    positions = []
    for _ in range(3):
        step(params, one_tensor([1.0]), 0.1)
        positions.append(params["w1"][0][0])
    assert positions == pytest.approx([-0.1, -0.29, -0.561], rel=1e-12)


def test_rmsprop_first_step_is_ten_lr_and_eps_sits_outside_the_root():
    step, _ = opt.make_optimizer("rmsprop")
    params = one_tensor([0.0, 0.0])
    step(params, one_tensor([2.0, -1e-12]), 0.01)
    # v = 0.01 g^2, so g / sqrt(v) = 10 sign(g); for g = -1e-12, sqrt(v) = 1e-13 and eps
    # (1e-8) dominates: the step is lr * 1e-12 / (1e-13 + 1e-8), tiny.
    assert params["w1"][0][0] == pytest.approx(-0.1, rel=1e-6)
    assert params["w1"][0][1] == pytest.approx(0.01 * 1e-12 / (1e-13 + 1e-8), rel=1e-9)


def test_adamw_shrinks_first_and_l2_goes_through_the_moments():
    # A zero loss gradient isolates the decay. AdamW: p * (1 - lr * lambda), then the Adam
    # step on g = 0, which is 0. L2: g = lambda p, and Adam's first step is lr * sign(g).
    lr, decay = 0.01, 0.1
    step, _ = opt.make_optimizer("adamw", weight_decay=decay)
    params = one_tensor([2.0])
    step(params, one_tensor([0.0]), lr)
    assert params["w1"][0][0] == pytest.approx(2.0 * (1 - lr * decay), rel=1e-12)
    step, _ = opt.make_optimizer("adam", weight_decay=decay)
    params = one_tensor([2.0])
    step(params, one_tensor([0.0]), lr)
    assert params["w1"][0][0] == pytest.approx(2.0 - lr, rel=1e-6)


def test_optimisers_agree_with_the_scalar_reference():
    assert opt.optimizer_reference_error() < 1e-12


def test_reference_adam_matches_a_hand_computed_second_step():
    # g1 = 1, g2 = 3: m = 0.1 then 0.39, v = 0.001 then 0.009999;
    # m_hat = 0.39 / 0.19, v_hat = 0.009999 / 0.001999.
    grads = iter([1.0, 3.0])
    path = opt.reference_optimizer_steps("adam", 0.0, lambda p: next(grads), [0.1, 0.1])
    second = -0.1 * (0.39 / 0.19) / (math.sqrt(0.009999 / 0.001999) + 1e-8)
    first = -0.1 * 1.0 / (1.0 + 1e-8)
    assert path[1] == pytest.approx(first + second, rel=1e-12)


# --- clipping ------------------------------------------------------------------------------

def test_clipping_scales_the_whole_gradient_by_one_factor():
    grads = {name: [[3.0, -4.0]] if name == "w1" else [[12.0]] for name in opt.PARAM_NAMES}
    raw = opt.copy_params(grads)
    total = math.sqrt(25 + 4 * 144)
    assert opt.clip_by_global_norm(grads, 1.0) == pytest.approx(total)
    factor = 1.0 / (total + 1e-6)       # torch.nn.utils.clip_grad_norm_'s clip_coef
    for name in opt.PARAM_NAMES:
        assert grads[name][0] == pytest.approx([g * factor for g in raw[name][0]], rel=1e-12)
    assert opt.global_norm(grads) == pytest.approx(1.0, rel=1e-5)


def test_clipping_leaves_a_small_gradient_alone():
    grads = {name: [[0.1, -0.2]] for name in opt.PARAM_NAMES}
    raw = opt.copy_params(grads)
    opt.clip_by_global_norm(grads, 5.0)
    assert grads == raw


# --- schedules and measurements ------------------------------------------------------------

def test_schedules_hit_their_defining_points(monkeypatch):
    monkeypatch.setattr(opt, "WARMUP_STEPS", 10)
    monkeypatch.setattr(opt, "STEP_DECAY_EVERY", 40)
    peak, n = 0.5, 100
    warm = opt.schedule("warmup_cosine", peak, n)
    assert warm(0) == pytest.approx(peak / 10)
    assert warm(9) == pytest.approx(peak)
    assert warm(10) == pytest.approx(peak)
    assert warm(55) == pytest.approx(peak / 2)          # halfway through the cosine part
    cosine = opt.schedule("cosine", peak, n)
    assert cosine(0) == peak and cosine(50) == pytest.approx(peak / 2)
    assert cosine(99) < 0.001 * peak
    step = opt.schedule("step", peak, n)
    assert [step(39), step(40), step(80)] == pytest.approx(
        [peak, peak * opt.STEP_DECAY_FACTOR, peak * opt.STEP_DECAY_FACTOR ** 2])
    for kind in opt.SCHEDULES:
        lr_at = opt.schedule(kind, peak, n)
        assert all(0.0 <= lr_at(s) <= peak * (1 + 1e-12) for s in range(n))


def test_steps_to_target_reads_the_smoothed_curve(monkeypatch):
    monkeypatch.setattr(opt, "SMOOTH", 3)
    losses = [3.0, 1.0, 1.0, 2.0, 0.5, 0.5, 0.5]
    # Means of 3: step 3 -> 1.667, step 4 -> 1.333, step 5 -> 1.167, step 6 -> 1.0
    assert opt.steps_to_target(losses, 1.2, 10) == 5
    assert opt.steps_to_target(losses, 0.1, 10) == 11


def test_a_diverged_run_scores_an_infinite_heldout_loss():
    run = {"losses": [3.0, float("nan")], "params": None}
    assert opt.final_loss(run, None) == math.inf


def test_chart_survives_non_finite_values():
    lines = opt.ascii_chart([("A", [1.0, 2.0, float("inf"), float("nan")])], 4, 8)
    assert len(lines) == 4 and "A" in "".join(lines)
