"""Fast checks specific to systems/microssm.py.

The closed-form references of Part 1 are checked against a plain numerical integration (RK4
with tiny steps), so the discretisation criteria rest on a reference that is right; the
kernel against powers computed directly; the parallel scan against the sequential one on
random numbers; and the hand-derived gradients of both Part 3 models against finite
differences, for every parameter.
"""
import cmath
import math
import random

import pytest

from support import load_script

ssm = load_script("systems/microssm.py")


def system_and_pieces(seed=1, states=4):
    rng = random.Random(seed)
    system = (ssm.s4d_lin(states), [1.0 + 0j] * states,
              [ssm.random_complex(rng, 0.5) for _ in range(states)])
    pieces = [rng.uniform(-1.0, 1.0) for _ in range(round(ssm.HORIZON / ssm.PIECE))]
    return system, pieces


def rk4_output(system, u_of_t, t_end, h=1e-3, held=False):
    """x' = a x + b u(t) for each state by classical Runge-Kutta, then y = 2 Re(sum c x).
    For a held input every stage reads u at the middle of the step: h divides PIECE, so no
    step straddles a jump, and the value at a jump's instant is never asked for."""
    poles, bs, cs = system
    total = 0.0
    for a, b, c in zip(poles, bs, cs):
        x, t = 0j, 0.0
        for _ in range(round(t_end / h)):
            u0, um, u1 = ((u_of_t(t + h / 2),) * 3 if held else
                          (u_of_t(t), u_of_t(t + h / 2), u_of_t(t + h)))
            k1 = a * x + b * u0
            k2 = a * (x + h / 2 * k1) + b * um
            k3 = a * (x + h / 2 * k2) + b * um
            k4 = a * (x + h * k3) + b * u1
            x += h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            t += h
        total += 2.0 * (c * x).real
    return total


# --- the closed-form references of Part 1 ------------------------------------------------

def test_held_input_closed_form_matches_numerical_integration():
    system, pieces = system_and_pieces()

    def u(t):
        return pieces[int(t / ssm.PIECE)]

    for t_end in (0.3, 1.0, 2.7):
        expected = rk4_output(system, u, t_end, held=True)
        assert abs(ssm.exact_held(system, pieces, t_end) - expected) < 1e-9


def test_cosine_closed_form_matches_numerical_integration():
    system, _ = system_and_pieces()
    for t_end in (0.5, 2.0):
        expected = rk4_output(system, lambda t: math.cos(ssm.SMOOTH_OMEGA * t), t_end)
        assert abs(ssm.exact_cosine(system, t_end) - expected) < 1e-9


def test_zoh_is_exact_for_held_input_and_euler_input_matrix_is_not():
    system, pieces = system_and_pieces()
    assert ssm.discretisation_error(system, 0.1, ssm.discretize_zoh, False, pieces) < 1e-12

    def euler_input(a, b, dt):      # the broken version: B_bar = dt B
        return cmath.exp(a * dt), dt * b

    assert ssm.discretisation_error(system, 0.1, euler_input, False, pieces) > 1e-3


def test_discretisations_agree_with_their_definitions():
    a, b, dt = complex(-0.5, 2.0), complex(0.3, -0.2), 0.01
    a_bar, b_bar = ssm.discretize_zoh(a, b, dt)
    assert cmath.isclose(a_bar, cmath.exp(a * dt), rel_tol=1e-15)
    # b_bar = integral_0^dt e^(a s) ds * b, by the midpoint rule on a fine grid
    m = 20000
    integral = sum(cmath.exp(a * (k + 0.5) * dt / m) for k in range(m)) * dt / m
    assert cmath.isclose(b_bar, integral * b, rel_tol=1e-9)
    a_bil, b_bil = ssm.discretize_bilinear(a, b, dt)
    assert cmath.isclose(a_bil, (2 + dt * a) / (2 - dt * a), rel_tol=1e-15)
    assert cmath.isclose(b_bil, 2 * dt * b / (2 - dt * a), rel_tol=1e-15)


def test_loglog_slope_recovers_a_power_law():
    xs = [0.1, 0.05, 0.025]
    assert math.isclose(ssm.loglog_slope(xs, [3 * x ** 2 for x in xs]), 2.0, rel_tol=1e-12)


# --- Part 2: kernel, convolution, counts --------------------------------------------------

def test_kernel_equals_direct_powers_and_counts_match_formulas():
    rng = random.Random(5)
    poles = ssm.s4d_lin(3)
    cs = [ssm.random_complex(rng, 0.5) for _ in range(3)]
    pairs = [ssm.discretize_zoh(a, 1.0 + 0j, 0.05) for a in poles]
    kernel, kernel_mults = ssm.ssm_kernel(pairs, cs, 20)
    for k in range(20):
        direct = 2.0 * sum((c * b_bar * a_bar ** k).real for (a_bar, b_bar), c in zip(pairs, cs))
        assert abs(kernel[k] - direct) < 1e-13
    assert kernel_mults == 4 * 3 + 6 * 3 * 20
    inputs = [rng.gauss(0, 1) for _ in range(20)]
    rec, rec_mults = ssm.recurrence(pairs, cs, inputs)
    conv, conv_mults = ssm.causal_convolution(kernel, inputs)
    assert rec_mults == 8 * 3 * 20 and conv_mults == 20 * 21 // 2
    assert max(abs(p - q) for p, q in zip(rec, conv)) < 1e-12


def test_nan_aware_max_does_not_skip_nan():
    assert max(0.0, math.nan) == 0.0                    # the trap
    assert math.isnan(ssm.nan_aware_max([0.0, math.nan, 1.0]))
    assert ssm.nan_aware_max([0.0, math.inf]) == math.inf


# --- the parallel scan --------------------------------------------------------------------

@pytest.mark.parametrize("length", [1, 2, 7, 16, 19])
def test_parallel_scan_equals_sequential_scan(length):
    rng = random.Random(length)
    pairs = [(rng.uniform(0, 1), rng.gauss(0, 1)) for _ in range(length)]
    prefixes, rounds = ssm.parallel_scan(pairs)
    h = 0.0
    for (a, b), (_, scanned) in zip(pairs, prefixes):
        h = a * h + b
        assert abs(scanned - h) < 1e-12
    assert rounds == math.ceil(math.log2(length)) if length > 1 else rounds == 0


def test_combine_is_associative():
    p, q, r = (0.3, 1.0), (0.7, -2.0), (0.9, 0.5)
    left = ssm.combine(ssm.combine(p, q), r)
    right = ssm.combine(p, ssm.combine(q, r))
    assert all(math.isclose(x, y, rel_tol=1e-15) for x, y in zip(left, right))


# --- Part 3: the task, the model and its hand-derived gradients ---------------------------

def test_example_layout():
    tokens, data = ssm.make_example(random.Random(0))
    assert len(tokens) == ssm.BODY + ssm.NUM_DATA
    body = tokens[:ssm.BODY]
    assert [t for t in body if t != ssm.NOISE] == data
    assert tokens[ssm.BODY:] == [ssm.MARKER + i for i in range(ssm.NUM_DATA)]


def test_softplus_and_its_derivative():
    for z in (-30.0, -2.0, 0.0, 1.5, 40.0):
        assert math.isclose(ssm.softplus(z), math.log1p(math.exp(z)), rel_tol=1e-12)
        numeric = (ssm.softplus(z + 1e-6) - ssm.softplus(z - 1e-6)) / 2e-6
        assert math.isclose(ssm.sigmoid(z), numeric, rel_tol=1e-6, abs_tol=1e-9)


def test_time_invariant_model_has_the_same_step_size_everywhere():
    params = ssm.init_ssm(random.Random(3))
    tokens, _ = ssm.make_example(random.Random(4))
    _, steps, _ = ssm.forward(params, tokens, selective=False)
    assert all(st[4] == steps[0][4] and st[5] == steps[0][5] for st in steps)
    _, steps, _ = ssm.forward(params, tokens, selective=True)
    assert any(st[4] != steps[0][4] for st in steps)


@pytest.mark.parametrize("selective", [True, False])
def test_hand_gradients_match_finite_differences(selective):
    rng = random.Random(11)
    params = ssm.init_ssm(rng)
    # train-like weights: move every parameter off its initial pattern
    for row in ssm.rows_of(params):
        for i in range(len(row)):
            row[i] += rng.gauss(0.0, 0.2)
    tokens, targets = ssm.make_example(rng)
    grads = ssm.zeros_like(params)
    ssm.loss_and_grads(params, tokens, targets, selective, grads)
    eps = 1e-6
    checked = 0
    for row, g_row in zip(ssm.rows_of(params), ssm.rows_of(grads)):
        for i in range(len(row)):
            original = row[i]
            row[i] = original + eps
            up = ssm.loss_and_grads(params, tokens, targets, selective, ssm.zeros_like(params))
            row[i] = original - eps
            down = ssm.loss_and_grads(params, tokens, targets, selective,
                                      ssm.zeros_like(params))
            row[i] = original
            numeric = (up - down) / (2 * eps)
            assert math.isclose(g_row[i], numeric, rel_tol=1e-5, abs_tol=1e-8), (i, row)
            checked += 1
    assert checked == sum(len(r) for r in ssm.rows_of(params))


def test_loss_matches_forward_cross_entropy():
    params = ssm.init_ssm(random.Random(2))
    tokens, targets = ssm.make_example(random.Random(3))
    logits, _, _ = ssm.forward(params, tokens, True)
    expected = sum(-math.log(math.exp(z[t]) / sum(math.exp(v) for v in z))
                   for z, t in zip(logits, targets)) / ssm.NUM_DATA
    got = ssm.loss_and_grads(params, tokens, targets, True, ssm.zeros_like(params))
    assert math.isclose(got, expected, rel_tol=1e-12)
