"""Fast checks specific to foundational/microvae.py.

The VAE's backward pass is derived by hand, so each piece of it (decoder, reparameterisation
path, KL term, encoder) is compared with central finite differences on its own, and the whole
gradient of the batch loss is compared entry by entry for every one of the 198 parameters.
The rest pins down the closed-form KL (against numerical integration), the statistics of
the reparameterised draw, Adam, and the measurements the criteria rely on.
"""
import math
import random

import pytest

from support import load_script

vae = load_script("foundational/microvae.py")
H = 1e-6


def small_params(seed=0):
    """The script's own initialisation, drawn from a private seed, plus non-zero biases so
    that the bias gradients are exercised away from their starting value."""
    state = random.getstate()
    random.seed(seed)
    try:
        params = vae.init_params()
        rng = random.Random(seed + 100)
        for name, value in params.items():
            if name.startswith("b_"):
                params[name] = [rng.gauss(0.0, 0.3) for _ in value]
    finally:
        random.setstate(state)
    return params


def every_entry(params):
    """(name, row, col) for every scalar parameter; col is None for a bias vector."""
    for name, value in params.items():
        if isinstance(value[0], list):
            for i, row in enumerate(value):
                for j in range(len(row)):
                    yield name, i, j
        else:
            for i in range(len(value)):
                yield name, i, None


def get(tree, name, i, j):
    return tree[name][i] if j is None else tree[name][i][j]


def put(tree, name, i, j, x):
    if j is None:
        tree[name][i] = x
    else:
        tree[name][i][j] = x


def central_difference(f, params, name, i, j):
    original = get(params, name, i, j)
    put(params, name, i, j, original + H)
    up = f()
    put(params, name, i, j, original - H)
    down = f()
    put(params, name, i, j, original)
    return (up - down) / (2 * H)


def small_batch(seed=1, size=5):
    rng = random.Random(seed)
    batch = [[rng.uniform(-1.2, 1.2), rng.uniform(-1.2, 1.2)] for _ in range(size)]
    noise = [[rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)] for _ in range(size)]
    return batch, noise


# --- the whole gradient, parameter by parameter ------------------------------------------------

@pytest.mark.parametrize("beta", [0.1, 2.0])
def test_loss_gradient_matches_finite_differences_for_every_parameter(beta):
    params = small_params()
    batch, noise = small_batch()
    _, _, _, grads = vae.loss_and_grad(params, batch, noise, beta)
    checked = 0
    for name, i, j in every_entry(params):
        numeric = central_difference(
            lambda: vae.loss_and_grad(params, batch, noise, beta)[0], params, name, i, j)
        assert get(grads, name, i, j) == pytest.approx(numeric, rel=1e-5, abs=1e-8), (name, i, j)
        checked += 1
    assert checked == 198
    # Guard against a vacuous pass: every block of weights has a real gradient.
    for name, value in grads.items():
        flat = [x for row in value for x in row] if isinstance(value[0], list) else value
        assert max(abs(x) for x in flat) > 1e-4, name


def test_loss_is_recon_plus_beta_times_kl_from_the_definitions():
    params = small_params(seed=3)
    batch, noise = small_batch(seed=4)
    loss, recon, kl, _ = vae.loss_and_grad(params, batch, noise, 0.3)
    recon_ref = kl_ref = 0.0
    for x, eps in zip(batch, noise):
        _, mu, log_var = vae.encode(params, x)
        z = [m + math.exp(0.5 * lv) * e for m, lv, e in zip(mu, log_var, eps)]
        x_hat = vae.decode(params, z)[1]
        recon_ref += sum((a - b) ** 2 for a, b in zip(x_hat, x))
        kl_ref += sum(0.5 * (m * m + math.exp(lv) - lv - 1.0) for m, lv in zip(mu, log_var))
    assert recon == pytest.approx(recon_ref / len(batch), rel=1e-12)
    assert kl == pytest.approx(kl_ref / len(batch), rel=1e-12)
    assert loss == pytest.approx(recon + 0.3 * kl, rel=1e-12)


# --- each hand-derived piece on its own --------------------------------------------------------

def test_decoder_backward_matches_finite_differences():
    params = small_params(seed=5)
    rng = random.Random(6)
    z = [rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)]
    upstream = [rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)]   # L = upstream . x_hat

    def loss_of(z_in):
        return vae.dot(upstream, vae.decode(params, z_in)[1])

    grads = vae.zeros_like(params)
    g = vae.decode(params, z)[0]
    d_z = vae.decoder_backward(vae.transposes(params), grads, z, g, upstream)
    for k in range(len(z)):
        plus, minus = list(z), list(z)
        plus[k] += H
        minus[k] -= H
        assert d_z[k] == pytest.approx((loss_of(plus) - loss_of(minus)) / (2 * H), rel=1e-6)
    for name in ("W_dec", "b_dec", "W_out", "b_out"):
        for entry in every_entry({name: params[name]}):
            numeric = central_difference(lambda: loss_of(z), params, *entry)
            assert get(grads, *entry) == pytest.approx(numeric, rel=1e-6, abs=1e-9), entry
    # The decoder's backward pass must leave the encoder's gradients alone.
    assert all(v == 0.0 for v in grads["b_enc"] + grads["b_mu"] + grads["b_lv"])


def test_reparameterisation_path_matches_finite_differences():
    rng = random.Random(8)
    mu = [rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)]
    log_var = [rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)]
    eps = [rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)]
    upstream = [rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)]   # L = upstream . z

    def loss_of(m, lv):
        return vae.dot(upstream, vae.reparameterise(m, lv, eps)[1])

    sigma, _ = vae.reparameterise(mu, log_var, eps)
    d_mu, d_log_var = vae.reparameterise_backward(sigma, eps, upstream)
    for k in range(2):
        up, down = list(mu), list(mu)
        up[k] += H
        down[k] -= H
        assert d_mu[k] == pytest.approx(
            (loss_of(up, log_var) - loss_of(down, log_var)) / (2 * H), rel=1e-6)
        up, down = list(log_var), list(log_var)
        up[k] += H
        down[k] -= H
        assert d_log_var[k] == pytest.approx(
            (loss_of(mu, up) - loss_of(mu, down)) / (2 * H), rel=1e-6)
        # The documented closed forms: dz/dmu = 1, dz/dlog_var = 0.5 * sigma * eps.
        assert d_mu[k] == upstream[k]
        assert d_log_var[k] == pytest.approx(upstream[k] * 0.5 * sigma[k] * eps[k])


@pytest.mark.parametrize("mu, log_var", [([0.3, -1.2], [0.5, -2.0]), ([0.0, 2.0], [0.0, 1.5])])
def test_kl_gradient_matches_finite_differences(mu, log_var):
    d_mu, d_log_var = vae.kl_backward(mu, log_var)
    for k in range(2):
        up, down = list(mu), list(mu)
        up[k] += H
        down[k] -= H
        numeric = (vae.kl_divergence(up, log_var) - vae.kl_divergence(down, log_var)) / (2 * H)
        assert d_mu[k] == pytest.approx(numeric, rel=1e-6, abs=1e-9)
        up, down = list(log_var), list(log_var)
        up[k] += H
        down[k] -= H
        numeric = (vae.kl_divergence(mu, up) - vae.kl_divergence(mu, down)) / (2 * H)
        assert d_log_var[k] == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_encoder_backward_matches_finite_differences():
    params = small_params(seed=9)
    rng = random.Random(10)
    x = [rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0)]
    up_mu = [rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)]    # L = up_mu . mu + up_lv . log_var
    up_lv = [rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)]

    def loss_of():
        _, mu, log_var = vae.encode(params, x)
        return vae.dot(up_mu, mu) + vae.dot(up_lv, log_var)

    grads = vae.zeros_like(params)
    h = vae.encode(params, x)[0]
    vae.encoder_backward(vae.transposes(params), grads, x, h, up_mu, up_lv)
    for name in ("W_enc", "b_enc", "W_mu", "b_mu", "W_lv", "b_lv"):
        for entry in every_entry({name: params[name]}):
            numeric = central_difference(loss_of, params, *entry)
            assert get(grads, *entry) == pytest.approx(numeric, rel=1e-6, abs=1e-9), entry


# --- the closed-form KL and the reparameterised draw -------------------------------------------

@pytest.mark.parametrize("m, log_var", [(0.0, 0.0), (1.5, 0.0), (-0.7, -1.6), (0.4, 1.1)])
def test_closed_form_kl_matches_numerical_integration(m, log_var):
    """KL(q || p) = integral of q(z) log(q(z) / p(z)) dz, by the trapezoid rule in one dim."""
    s = math.exp(0.5 * log_var)

    def log_normal(z, mean, std):
        return -0.5 * ((z - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)

    lo, hi, n = m - 12 * s, m + 12 * s, 20000
    step = (hi - lo) / n
    total = 0.0
    for k in range(n + 1):
        z = lo + k * step
        log_q = log_normal(z, m, s)
        weight = 0.5 if k in (0, n) else 1.0
        total += weight * math.exp(log_q) * (log_q - log_normal(z, 0.0, 1.0)) * step
    assert vae.kl_divergence([m], [log_var]) == pytest.approx(total, rel=1e-6, abs=1e-9)


def test_kl_is_zero_only_at_the_prior():
    assert vae.kl_divergence([0.0, 0.0], [0.0, 0.0]) == 0.0
    for mu, log_var in (([0.1, 0.0], [0.0, 0.0]), ([0.0, 0.0], [0.0, -0.2]), ([0, 0], [0.3, 0])):
        assert vae.kl_divergence(mu, log_var) > 0.0


def test_reparameterised_draw_has_the_encoders_mean_and_std():
    rng = random.Random(11)
    mu, log_var = [0.8, -1.5], [-1.0, 0.6]
    draws = [vae.reparameterise(mu, log_var, [rng.gauss(0, 1), rng.gauss(0, 1)])[1]
             for _ in range(20000)]
    for k in range(2):
        values = [z[k] for z in draws]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        assert mean == pytest.approx(mu[k], abs=0.03)
        assert std == pytest.approx(math.exp(0.5 * log_var[k]), rel=0.03)


# --- training machinery ------------------------------------------------------------------------

def test_adam_step_matches_the_textbook_formula():
    params = {"W": [[1.0, -2.0]], "b": [0.5]}
    m, v = vae.zeros_like(params), vae.zeros_like(params)
    expected = [1.0, -2.0, 0.5]
    m_ref, v_ref = [0.0] * 3, [0.0] * 3
    for t, g in enumerate(([0.3, -0.1, 0.2], [0.1, 0.4, -0.3]), 1):
        vae.adam_step(params, {"W": [g[:2]], "b": [g[2]]}, m, v, t, 0.05)
        for k in range(3):
            m_ref[k] = 0.9 * m_ref[k] + 0.1 * g[k]
            v_ref[k] = 0.999 * v_ref[k] + 0.001 * g[k] ** 2
            expected[k] -= 0.05 * (m_ref[k] / (1 - 0.9 ** t)) / (
                math.sqrt(v_ref[k] / (1 - 0.999 ** t)) + 1e-8)
        assert params["W"][0] + params["b"] == pytest.approx(expected, rel=1e-12)


def test_150_steps_lower_the_loss_and_keep_a_kl_above_half_a_nat(monkeypatch):
    monkeypatch.setattr(vae, "NUM_STEPS", 150)
    monkeypatch.setattr(vae, "LOG_EVERY", 10_000)
    state = random.getstate()
    random.seed(0)
    try:
        data = vae.make_ring(200)
        params = vae.init_params()
        schedule = vae.make_schedule(len(data))
    finally:
        random.setstate(state)
    recons, kls = vae.train(params, data, schedule, 0.1, "test", 0.0)
    assert sum(recons[-20:]) < 0.5 * sum(recons[:20])
    assert sum(kls[-20:]) / 20 > 0.5      # the code carries information


# --- data and measurements ---------------------------------------------------------------------

def test_ring_has_the_requested_radius_and_thickness():
    state = random.getstate()
    random.seed(1)
    try:
        points = vae.make_ring(5000)
    finally:
        random.setstate(state)
    radii = [math.hypot(*p) for p in points]
    mean = sum(radii) / len(radii)
    assert mean == pytest.approx(vae.RING_RADIUS, abs=0.005)
    assert vae.radial_std(points) == pytest.approx(vae.RADIAL_NOISE, rel=0.05)
    assert min(vae.sector_counts(points)) > 0.9 * len(points) / 12


def test_gaussian_blob_has_the_data_mean_and_covariance():
    rng = random.Random(2)
    data = [[rng.gauss(1.0, 2.0), 0.0] for _ in range(200)]
    data = [[x, 0.5 * x + rng.gauss(0.0, 0.3)] for x, _ in data]
    state = random.getstate()
    random.seed(3)
    try:
        blob = vae.gaussian_blob(data, 40000)
    finally:
        random.setstate(state)

    def moments(points):
        mx = sum(p[0] for p in points) / len(points)
        my = sum(p[1] for p in points) / len(points)
        cov = [sum((p[a] - (mx, my)[a]) * (p[b] - (mx, my)[b]) for p in points) / len(points)
               for a, b in ((0, 0), (1, 1), (0, 1))]
        return [mx, my] + cov

    for got, want in zip(moments(blob), moments(data)):
        assert got == pytest.approx(want, rel=0.05, abs=0.03)


def test_interpolation_stats_score_even_paths_and_ignored_codes():
    params = small_params(seed=12)
    pairs = [([1.0, 0.0], [0.0, 1.0])]
    data = [[1.0, 0.0], [0.0, 1.0]]
    # A decoder that ignores z (all decoder weights on z set to 0) has a path of length 0,
    # which counts as the worst smoothness score, 1; both ends decode to one spot, so by the
    # triangle inequality they miss the two points by at least half their distance.
    deaf = {k: [row[:] if isinstance(row, list) else row for row in v] for k, v in params.items()}
    deaf["W_dec"] = [[0.0, 0.0] for _ in deaf["W_dec"]]
    end_gap, _, share = vae.interpolation_stats(deaf, pairs, data)
    assert share == 1.0 and end_gap >= 0.5
    # A linear decoder x_hat = z (tanh kept near its linear part) makes evenly spaced steps.
    linear = {k: [row[:] if isinstance(row, list) else row for row in v] for k, v in params.items()}
    n = len(linear["W_dec"])
    linear["W_dec"] = [[1e-3, 0.0] if k == 0 else [0.0, 1e-3] if k == 1 else [0.0, 0.0]
                       for k in range(n)]
    linear["b_dec"] = [0.0] * n
    linear["W_out"] = [[1e3 if k == 0 else 0.0 for k in range(n)],
                       [1e3 if k == 1 else 0.0 for k in range(n)]]
    linear["b_out"] = [0.0, 0.0]
    codes = {(1.0, 0.0): [1.0, 0.0], (0.0, 1.0): [0.0, 1.0]}   # x_hat(mu(x)) = x
    linear_encode = vae.encode
    try:
        vae.encode = lambda p, x: (None, codes[tuple(x)], [0.0, 0.0])
        end_gap, _, share = vae.interpolation_stats(linear, pairs, data)
    finally:
        vae.encode = linear_encode
    assert share == pytest.approx(0.1, rel=1e-3)
    assert end_gap == pytest.approx(0.0, abs=1e-5)


def test_off_ring_share_and_spread():
    data = [[1.0, 0.0], [-1.0, 0.0]]
    points = [[1.0, 0.1], [0.0, 0.0], [-1.0, -0.05], [0.5, 0.0]]
    assert vae.off_ring_share(points, data, 0.2) == 0.5
    assert vae.spread([[1.0, 0.0], [-1.0, 0.0]]) == pytest.approx(1.0)
    assert vae.spread([[0.3, 0.3]] * 4) == 0.0
