"""Fast checks specific to foundational/microdiffusion.py.

The MLP's backward pass is derived by hand in the script, so every entry of every gradient
tensor is compared with central finite differences here, and one Adam step with the textbook
formula. The rest pins down the diffusion maths the run relies on: the schedule, the closed
form of the forward process, the reverse update (an oracle that knows the true noise must
land exactly on the data point), the time embedding and the measurements.
"""
import math
import random

import pytest

from support import load_script

md = load_script("foundational/microdiffusion.py")


# --- helpers -------------------------------------------------------------------------------

@pytest.fixture
def small_net(monkeypatch):
    """Hidden layers of 5, 4 and 3 units on a 4-number time embedding; 8 noisy points."""
    monkeypatch.setattr(md, "HIDDEN_WIDTHS", (5, 4, 3))
    monkeypatch.setattr(md, "TIME_EMBED_DIM", 4)
    state = random.getstate()
    random.seed(1)
    try:
        params = md.init_params()
        # Nonzero biases, so that their gradients and the ReLU masks are exercised for real.
        for name in ("b1", "b2", "b3", "b4"):
            params[name] = [[random.gauss(0.0, 0.3) for _ in params[name][0]]]
        inputs = [md.network_input(random.gauss(0.0, 1.0), random.gauss(0.0, 1.0),
                                   md.time_embedding(t)) for t in (1, 9, 17, 33, 50, 71, 88, 100)]
        targets = [(random.gauss(0.0, 1.0), random.gauss(0.0, 1.0)) for _ in inputs]
    finally:
        random.setstate(state)
    return params, inputs, targets


def reference_loss(params, inputs, targets):
    """The loss straight from its definition, written independently of the script."""
    def layer(W, b, x, relu):
        z = [bi + sum(w * xi for w, xi in zip(row, x)) for row, bi in zip(W, b[0])]
        return [max(zi, 0.0) for zi in z] if relu else z

    total = 0.0
    for u, eps in zip(inputs, targets):
        h1 = layer(params["W1"], params["b1"], u, True)
        h2 = layer(params["W2"], params["b2"], h1, True)
        h3 = layer(params["W3"], params["b3"], h2, True)
        out = layer(params["W4"], params["b4"], h3, False)
        total += sum((o - e) ** 2 for o, e in zip(out, eps))
    return total / (2 * len(inputs))


# --- the hand-derived gradient ---------------------------------------------------------------

def test_loss_matches_its_definition(small_net):
    params, inputs, targets = small_net
    loss, _ = md.loss_and_grads(params, inputs, targets)
    assert loss == pytest.approx(reference_loss(params, inputs, targets), rel=1e-12)


def test_backward_matches_finite_differences_for_every_parameter(small_net):
    params, inputs, targets = small_net
    _, grads = md.loss_and_grads(params, inputs, targets)
    h = 1e-6
    checked = nonzero = 0
    assert list(grads) == list(params) == ["W1", "b1", "W2", "b2", "W3", "b3", "W4", "b4"]
    for name in params:
        assert len(grads[name]) == len(params[name])
        for r, row in enumerate(params[name]):
            assert len(grads[name][r]) == len(row)
            for c in range(len(row)):
                original = row[c]
                row[c] = original + h
                up = md.loss_and_grads(params, inputs, targets)[0]
                row[c] = original - h
                down = md.loss_and_grads(params, inputs, targets)[0]
                row[c] = original
                numeric = (up - down) / (2 * h)
                assert grads[name][r][c] == pytest.approx(numeric, rel=1e-5, abs=1e-8), \
                    (name, r, c)
                checked += 1
                nonzero += abs(numeric) > 1e-4
    # 14x5 + 5 + 5x4 + 4 + 4x3 + 3 + 3x2 + 2 = 122 entries (14 inputs: x, y, 8 Fourier
    # features, 4 of t); the count of nonzero ones guards against a vacuous pass where dead
    # ReLUs zero most gradients.
    assert checked == 122
    assert nonzero > 90              # 101 with this seed


def test_relu_mask_blocks_the_gradient_of_a_dead_unit(small_net):
    params, inputs, targets = small_net
    params["b1"][0][0] = -100.0          # unit 0 of layer 1 is off for every input
    _, grads = md.loss_and_grads(params, inputs, targets)
    assert grads["W1"][0] == [0.0] * len(grads["W1"][0])
    assert grads["b1"][0][0] == 0.0
    assert all(row[0] == 0.0 for row in grads["W2"])
    assert any(g != 0.0 for g in grads["W1"][1] + grads["W1"][2])   # its neighbours still learn


# --- optimisation ------------------------------------------------------------------------------

def test_adam_update_matches_the_textbook_formula():
    names = ("W1", "b1", "W2", "b2")
    params = {name: [[0.0]] for name in names}
    params["W1"] = [[1.0, -2.0]]
    m = {name: [[0.0] * len(r) for r in rows] for name, rows in params.items()}
    v = {name: [[0.0] * len(r) for r in rows] for name, rows in params.items()}
    expected_w, expected_m, expected_v = [1.0, -2.0], [0.0, 0.0], [0.0, 0.0]
    lr = 0.1
    for step, grad in enumerate([[0.5, -0.1], [0.2, 0.3], [-0.4, 0.0]], 1):
        grads = {name: [[0.0]] for name in names}
        grads["W1"] = [grad]
        md.adam_update(params, grads, m, v, step, lr)
        for d, g in enumerate(grad):
            expected_m[d] = 0.9 * expected_m[d] + 0.1 * g
            expected_v[d] = 0.999 * expected_v[d] + 0.001 * g * g
            m_hat = expected_m[d] / (1 - 0.9 ** step)
            v_hat = expected_v[d] / (1 - 0.999 ** step)
            expected_w[d] -= lr * m_hat / (math.sqrt(v_hat) + 1e-8)
        assert params["W1"][0] == pytest.approx(expected_w, rel=1e-12)
        assert m["W1"][0] == pytest.approx(expected_m, rel=1e-12)
        assert v["W1"][0] == pytest.approx(expected_v, rel=1e-12)
    assert params["b2"] == [[0.0]]        # a zero gradient leaves a parameter where it is


def test_a_few_adam_steps_lower_the_loss(small_net):
    params, inputs, targets = small_net
    m = {name: [[0.0] * len(r) for r in rows] for name, rows in params.items()}
    v = {name: [[0.0] * len(r) for r in rows] for name, rows in params.items()}
    first = md.loss_and_grads(params, inputs, targets)[0]
    for step in range(1, 51):
        _, grads = md.loss_and_grads(params, inputs, targets)
        md.adam_update(params, grads, m, v, step, 0.02)
    assert md.loss_and_grads(params, inputs, targets)[0] < 0.5 * first


# --- the diffusion maths -----------------------------------------------------------------------

def test_schedule_is_linear_and_ends_in_nearly_pure_noise():
    betas, alphas, alpha_bars = md.make_schedule()
    assert len(betas) == len(alpha_bars) == md.T + 1
    assert betas[1] == pytest.approx(md.BETA_START)
    assert betas[md.T] == pytest.approx(md.BETA_END)
    steps = [betas[t + 1] - betas[t] for t in range(1, md.T)]
    assert max(steps) - min(steps) < 1e-12
    assert alpha_bars[0] == 1.0
    assert alpha_bars[md.T] == pytest.approx(math.prod(1 - b for b in betas[1:]), rel=1e-12)
    assert alpha_bars[md.T] < 0.01


def test_closed_form_matches_the_step_by_step_chain():
    """Each step x_t = sqrt(a_t) x_{t-1} + sqrt(b_t) e_t is affine in x_0 plus Gaussian noise.
    Track the coefficient of x_0 and the noise variance step by step; the closed form says
    they are sqrt(alpha_bar_t) and 1 - alpha_bar_t."""
    betas, alphas, alpha_bars = md.make_schedule()
    coefficient, variance = 1.0, 0.0
    for t in range(1, md.T + 1):
        coefficient *= math.sqrt(alphas[t])
        variance = alphas[t] * variance + betas[t]
        assert coefficient == pytest.approx(math.sqrt(alpha_bars[t]), rel=1e-12)
        assert variance == pytest.approx(1 - alpha_bars[t], rel=1e-12)
    assert md.add_noise((2.0, -1.0), (0.5, 0.25), 0.64) == pytest.approx((1.9, -0.65))


def test_reverse_mean_with_the_true_noise_is_the_posterior_mean():
    """If eps_hat is the noise that was really added, the DDPM update's mean must equal the
    mean of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 7), for every t."""
    schedule = md.make_schedule()
    betas, alphas, alpha_bars = schedule
    x0, eps = 0.7, -1.3
    for t in range(1, md.T + 1):
        xt = math.sqrt(alpha_bars[t]) * x0 + math.sqrt(1 - alpha_bars[t]) * eps
        noise_scale, inv_sqrt_alpha, sigma = md.reverse_coefficients(t, schedule)
        mean = (xt - noise_scale * eps) * inv_sqrt_alpha
        posterior = (math.sqrt(alpha_bars[t - 1]) * betas[t] * x0
                     + math.sqrt(alphas[t]) * (1 - alpha_bars[t - 1]) * xt) / (1 - alpha_bars[t])
        assert mean == pytest.approx(posterior, rel=1e-9, abs=1e-12)
        assert sigma ** 2 == pytest.approx(
            betas[t] * (1 - alpha_bars[t - 1]) / (1 - alpha_bars[t]), rel=1e-12)
    assert md.reverse_coefficients(1, schedule)[2] == 0.0   # the last step adds no noise


def test_sampling_with_an_oracle_lands_on_the_data_point(monkeypatch):
    """A data set of one point x_0: the best possible network returns
    (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t). Sampling with it must end at x_0."""
    schedule = md.make_schedule()
    x0 = (0.8, -0.3)
    embeddings = {tuple(md.time_embedding(t)): t for t in range(1, md.T + 1)}

    def oracle(params, inputs):
        outputs = []
        for u in inputs:
            t = embeddings[tuple(u[-md.TIME_EMBED_DIM:])]
            root = math.sqrt(schedule[2][t])
            scale = math.sqrt(1 - schedule[2][t])
            outputs.append([(u[0] - root * x0[0]) / scale, (u[1] - root * x0[1]) / scale])
        return None, outputs

    monkeypatch.setattr(md, "forward", oracle)
    random.seed(0)
    points, snapshots = md.sample(None, 20, schedule, (md.T, md.T // 2, 0))
    assert set(snapshots) == {md.T, md.T // 2, 0}
    assert snapshots[0] == points
    for x, y in points:
        assert (x, y) == pytest.approx(x0, abs=1e-9)


def test_network_input_holds_the_coordinates_their_waves_and_the_time_features():
    u = md.network_input(0.5, -1.0, [7.0, 8.0])
    assert len(u) == 2 + 4 * len(md.COORD_FREQUENCIES) + 2
    assert u[:2] == [0.5, -1.0] and u[-2:] == [7.0, 8.0]
    w = md.COORD_FREQUENCIES[0]
    assert u[2:6] == pytest.approx([math.sin(w * 0.5), math.cos(w * 0.5),
                                    math.sin(-w), math.cos(-w)])


def test_time_embedding_gives_every_step_a_distinct_bounded_fingerprint():
    embeddings = [md.time_embedding(t) for t in range(1, md.T + 1)]
    assert all(len(e) == md.TIME_EMBED_DIM for e in embeddings)
    assert all(-1.0 <= x <= 1.0 for e in embeddings for x in e)
    closest = min(math.dist(a, b) for i, a in enumerate(embeddings) for b in embeddings[i + 1:])
    assert closest > 0.1


# --- data and measurements ---------------------------------------------------------------------

def test_normalised_spiral_has_zero_mean_and_unit_variance():
    random.seed(1)
    raw = md.make_spiral(500)
    points = md.normaliser(raw)(raw)
    (mx, my), (vx, vy), _ = md.moments(points)
    assert mx == pytest.approx(0.0, abs=1e-12) and my == pytest.approx(0.0, abs=1e-12)
    assert (vx + vy) / 2 == pytest.approx(1.0, rel=1e-12)


def test_gaussian_blob_has_the_reference_moments():
    random.seed(2)
    reference = [(random.gauss(1.0, 2.0), 0.0) for _ in range(100)]
    reference = [(x, 0.5 * x + random.gauss(-1.0, 0.5)) for x, _ in reference]
    (rmx, rmy), (rvx, rvy), rc = md.moments(reference)
    (bmx, bmy), (bvx, bvy), bc = md.moments(md.gaussian_blob(40000, reference))
    assert (bmx, bmy) == pytest.approx((rmx, rmy), abs=0.05)
    assert (bvx, bvy, bc) == pytest.approx((rvx, rvy, rc), rel=0.05)


def test_measure_on_known_sets():
    reference = [(0.0, 0.0), (2.0, 0.0), (0.0, 2.0), (2.0, 2.0)]
    same = md.measure(reference, reference, 1.0)
    assert same["mean_error"] == 0.0
    assert same["variance_ratio_min"] == same["variance_ratio_max"] == 1.0
    assert same["shape_distance_ratio"] == 0.0
    shifted = md.measure([(x + 0.5, y) for x, y in reference], reference, 2.0)
    assert shifted["mean_error"] == pytest.approx(0.5)        # data std is 1 on each axis
    assert shifted["nearest_distance"] == pytest.approx(0.5)
    assert shifted["shape_distance_ratio"] == pytest.approx(0.25)
    wide = md.measure([(2 * x, y) for x, y in reference], reference, 1.0)
    assert wide["variance_ratio_max"] == pytest.approx(4.0)
    assert wide["variance_ratio_min"] == pytest.approx(1.0)


def test_scatter_draws_points_and_skips_those_outside():
    rows = md.scatter([(0.0, 0.0), (0.0, 0.0), (-2.3, 2.3), (9.0, 9.0)], 10, 5, 2.4)
    assert len(rows) == 5 and all(len(r) == 12 for r in rows)
    assert rows[0][1] == ":"           # the top-left point: half as busy as the centre
    assert rows[2][6] == "@"           # the busiest cell
    assert sum(c != " " for r in rows for c in r[1:-1]) == 2


def test_reverse_step_matches_the_posterior_formula_and_catches_a_wrong_step(monkeypatch):
    """The sampler's step and the reference written from q(x_{t-1} | x_t, x0_hat) agree to
    rounding for any network; a step that leaves out the fresh noise, or shows the network
    the neighbouring t, does not."""
    random.seed(5)
    params = md.init_params()
    schedule = md.make_schedule()
    points = [(random.gauss(0, 1), random.gauss(0, 1)) for _ in range(5)]
    assert md.reverse_step_error(params, points, schedule) < 1e-12
    original = md.reverse_coefficients
    monkeypatch.setattr(md, "reverse_coefficients", lambda t, s: original(t, s)[:2] + (0.0,))
    assert md.reverse_step_error(params, points, schedule) > 1e-3
    monkeypatch.setattr(md, "reverse_coefficients", original)
    embedding = md.time_embedding
    shifted = {"calls": 0}

    def off_by_one_in_the_sampler(t):
        # reverse_step asks first, the reference second: shift only the sampler's question
        shifted["calls"] += 1
        return embedding(t - 1 if shifted["calls"] % 2 else t)
    monkeypatch.setattr(md, "time_embedding", off_by_one_in_the_sampler)
    assert md.reverse_step_error(params, points, schedule) > 1e-3


def test_reverse_step_error_is_infinite_when_a_step_is_nan(monkeypatch):
    # A NaN in the second coordinate only: max() over the two gaps would skip it.
    random.seed(5)
    params, schedule = md.init_params(), md.make_schedule()
    points = [(random.gauss(0, 1), random.gauss(0, 1)) for _ in range(3)]
    original = md.reverse_step

    def nan_in_y(*args):
        return [(x, math.nan) for x, _ in original(*args)]
    monkeypatch.setattr(md, "reverse_step", nan_in_y)
    assert md.reverse_step_error(params, points, schedule) == math.inf
