"""Fast checks specific to systems/microcheckpoint.py.

The hand-derived backward pass of one layer, of the readout and of the whole stack is checked
against central finite differences. Checkpointed gradients must equal the store-everything
gradients bit for bit at every depth and segment length tried, and the meter's peak and
layer-evaluation counts must equal the closed forms, checked here on many more (L, k) than
the script's own sweep. A freed slot must read as NaN, so a schedule that reads freed memory
fails instead of passing by accident.
"""
import math
import random

import pytest

from support import load_script

cp = load_script("systems/microcheckpoint.py")


def fd(f, container, j, eps=1e-6):
    original = container[j]
    container[j] = original + eps
    up = f()
    container[j] = original - eps
    down = f()
    container[j] = original
    return (up - down) / (2 * eps)


def random_batch(rng, n, width):
    return [[rng.uniform(-1.0, 1.0) for _ in range(width)] for _ in range(n)]


# --- one layer's backward against finite differences ----------------------------------------

def test_layer_backward_matches_finite_differences():
    rng = random.Random(3)
    w = cp.WIDTH
    layer = {"W": [[rng.gauss(0, 0.7) for _ in range(w)] for _ in range(w)],
             "b": [rng.gauss(0, 0.3) for _ in range(w)]}
    hs = random_batch(rng, 3, w)
    gs = random_batch(rng, 3, w)   # the upstream gradient dLoss/d(out)

    def objective():
        # a linear function of the layer's output whose gradient is gs
        out = cp.layer_forward(layer, hs, cp.ActivationMeter())
        return sum(g * o for go, oo in zip(gs, out) for g, o in zip(go, oo))

    grad = {"W": [[0.0] * w for _ in range(w)], "b": [0.0] * w}
    g_in = cp.layer_backward(layer, hs, gs, grad)
    for r in range(w):
        assert math.isclose(grad["b"][r], fd(objective, layer["b"], r), rel_tol=1e-6,
                            abs_tol=1e-9)
        for c in range(w):
            assert math.isclose(grad["W"][r][c], fd(objective, layer["W"][r], c),
                                rel_tol=1e-6, abs_tol=1e-9)
    for n, h in enumerate(hs):
        for c in range(w):
            assert math.isclose(g_in[n][c], fd(objective, h, c), rel_tol=1e-6, abs_tol=1e-9)


def test_readout_gradient_matches_finite_differences():
    rng = random.Random(4)
    w = cp.WIDTH
    readout = {"v": [rng.gauss(0, 1) for _ in range(w)], "c": [0.3]}
    hs = random_batch(rng, 5, w)
    ys = [rng.uniform(-1, 1) for _ in range(5)]

    def objective():
        return cp.loss_and_output_grad(readout, hs, ys, {"v": [0.0] * w, "c": [0.0]})[0]

    grads = {"v": [0.0] * w, "c": [0.0]}
    _, g_out = cp.loss_and_output_grad(readout, hs, ys, grads)
    for j in range(w):
        assert math.isclose(grads["v"][j], fd(objective, readout["v"], j), rel_tol=1e-6)
    assert math.isclose(grads["c"][0], fd(objective, readout["c"], 0), rel_tol=1e-6)
    for n, h in enumerate(hs):
        for c in range(w):
            assert math.isclose(g_out[n][c], fd(objective, h, c), rel_tol=1e-6, abs_tol=1e-9)


@pytest.fixture
def small_model(monkeypatch):
    """A 6-layer model with larger weights than the script's, so every gradient is sizeable."""
    monkeypatch.setattr(cp, "DEPTH", 6)
    monkeypatch.setattr(cp, "INIT_STD", 1.5)
    monkeypatch.setattr(cp, "READOUT_STD", 1.0)
    monkeypatch.setattr(cp, "BATCH", 3)
    random.seed(11)
    params = cp.init_params()
    rng = random.Random(12)
    xs = random_batch(rng, 3, cp.WIDTH)
    ys = [cp.target(x) for x in xs]
    return params, xs, ys


def test_whole_stack_gradient_matches_finite_differences_for_every_parameter(small_model):
    params, xs, ys = small_model
    _, grads = cp.store_everything_gradients(params, xs, ys, cp.ActivationMeter())
    analytic = cp.flatten(grads)
    slots = cp.parameter_slots(params)
    assert len(slots) == len(analytic)
    for (container, j), a in zip(slots, analytic):
        numeric = fd(lambda: cp.plain_loss(params, xs, ys), container, j)
        assert math.isclose(a, numeric, rel_tol=1e-5, abs_tol=1e-8)


def test_forward_losses_agree(small_model):
    params, xs, ys = small_model
    loss_all, _ = cp.store_everything_gradients(params, xs, ys, cp.ActivationMeter())
    # Two separately written forward passes: equal on 3.10 and 3.11, but from 3.12 sum() is
    # compensated and may round the two sums differently in the last digit.
    assert math.isclose(loss_all, cp.plain_loss(params, xs, ys), rel_tol=1e-12)


# --- checkpointing: exact gradients, counts equal to the formulas ---------------------------

@pytest.mark.parametrize("depth", [1, 2, 3, 5, 7, 10, 13])
def test_checkpointed_gradients_are_bit_identical_and_counts_match(monkeypatch, depth):
    monkeypatch.setattr(cp, "DEPTH", depth)
    monkeypatch.setattr(cp, "BATCH", 2)
    random.seed(depth)
    params = cp.init_params()
    xs = random_batch(random.Random(depth + 100), 2, cp.WIDTH)
    ys = [cp.target(x) for x in xs]
    base_meter = cp.ActivationMeter()
    base_loss, base = cp.store_everything_gradients(params, xs, ys, base_meter)
    assert base_meter.peak == depth and base_meter.layer_evals == depth
    assert base_meter.slots == {}
    for k in range(1, depth + 1):
        meter = cp.ActivationMeter()
        loss, grads = cp.checkpointed_gradients(params, xs, ys, k, meter)
        assert loss == base_loss
        assert cp.flatten(grads) == cp.flatten(base)
        assert meter.peak == cp.peak_formula(depth, k), (depth, k)
        assert meter.layer_evals - depth == cp.recompute_formula(depth, k), (depth, k)
        assert meter.slots == {}, "every slot must be freed by the end of the backward pass"


def test_formula_counts_on_larger_depths_without_training(monkeypatch):
    # The counts do not depend on the numbers, so a bare simulation of the schedule (the
    # same meter, no arithmetic) checks the formulas for every k at depths up to 40.
    for depth in range(1, 41):
        for k in range(1, depth + 1):
            meter = cp.ActivationMeter()
            meter.store(0, None)
            for i in range(depth):
                meter.layer_evals += 1
                if (i + 1) % k == 0 and i + 1 < depth:
                    meter.store(i + 1, None)
            for s in reversed(range(0, depth, k)):
                e = min(s + k, depth)
                for i in range(s, e - 1):
                    meter.layer_evals += 1
                    meter.store(i + 1, None)
                for i in reversed(range(s, e)):
                    meter.free(i)
            assert meter.peak == cp.peak_formula(depth, k), (depth, k)
            assert meter.layer_evals - depth == cp.recompute_formula(depth, k)


def test_formula_shape():
    # k dividing L: the checkpoints plus one segment, L/k + k - 1
    for depth, k in [(64, 8), (64, 4), (36, 6), (100, 10), (12, 3)]:
        assert cp.peak_formula(depth, k) == depth // k + k - 1
    # store everything and one checkpoint both hold L slots
    assert cp.peak_formula(64, 1) == 64 and cp.peak_formula(64, 64) == 64
    assert cp.recompute_formula(64, 1) == 0 and cp.recompute_formula(64, 64) == 63
    # the minimum sits at sqrt(L) (the curve is flat around it)
    for depth in (16, 25, 36, 49, 64, 100):
        least = min(cp.peak_formula(depth, k) for k in range(1, depth + 1))
        assert cp.peak_formula(depth, cp.sqrt_schedule(depth)) == least
        assert least == 2 * round(math.sqrt(depth)) - 1


def test_a_freed_slot_reads_nan():
    meter = cp.ActivationMeter()
    meter.store(3, [[1.0] * cp.WIDTH])
    meter.free(3)
    garbage = meter.load(3)
    assert all(math.isnan(x) for row in garbage for x in row)


def test_nan_aware_max_keeps_nan():
    assert math.isnan(cp.nan_aware_max([0.0, math.nan, 1.0]))
    assert cp.nan_aware_max([0.0, 2.0]) == 2.0
    assert math.isnan(cp.max_difference([1.0, math.nan], [1.0, 2.0]))
