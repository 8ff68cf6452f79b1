"""Fast checks specific to foundational/microgan.py.

Both players' backward passes are derived by hand in the script, so every entry of every
gradient (D's weights under L_D, G's weights under each generator loss, and the Fourier
features' input gradient that carries G's signal through D) is compared with central finite
differences of losses written here from their definitions. The rest pins down Adam, the
nearest-point search, the coverage count and the NaN rule of the gradient ratio.
"""
import math
import random

import pytest

from support import load_script

gan = load_script("foundational/microgan.py")
H = 1e-6


def small_nets(seed=3):
    """A small G (2 -> 5 -> 4 -> 2) and D (10 -> 4 -> 3 -> 1) with non-zero biases."""
    state = random.getstate()
    random.seed(seed)
    try:
        generator = gan.init_mlp([2, 5, 4, 2])
        disc = gan.init_mlp([2 + 4 * len(gan.COORD_FREQUENCIES), 4, 3, 1])
        for layers in (generator, disc):
            for _, b in layers:
                b[:] = [random.gauss(0.0, 0.3) for _ in b]
        noise = [[random.gauss(0.0, 1.0) for _ in range(2)] for _ in range(6)]
        real = [(random.gauss(0.0, 1.0), random.gauss(0.0, 1.0)) for _ in range(5)]
    finally:
        random.setstate(state)
    return generator, disc, noise, real


def mlp(layers, x, leak):
    """The MLP from its definition, one example, written independently of the script."""
    for k, (w, b) in enumerate(layers):
        a = [bi + sum(wi * xi for wi, xi in zip(row, x)) for row, bi in zip(w, b)]
        x = a if k == len(layers) - 1 else [ai if ai > 0 else leak * ai for ai in a]
    return x


def feats(x, y):
    u = [x, y]
    for w in gan.COORD_FREQUENCIES:
        u += [math.sin(w * x), math.cos(w * x), math.sin(w * y), math.cos(w * y)]
    return u


def prob(l):
    return 1.0 / (1.0 + math.exp(-l))


def ref_d_loss(disc, real, fake):
    lr = [mlp(disc, feats(*p), gan.LEAK)[0] for p in real]
    lf = [mlp(disc, feats(*p), gan.LEAK)[0] for p in fake]
    return (-sum(math.log(prob(l)) for l in lr) / len(lr)
            - sum(math.log(1.0 - prob(l)) for l in lf) / len(lf))


def ref_g_loss(generator, disc, noise, loss):
    ps = [prob(mlp(disc, feats(*mlp(generator, z, gan.LEAK)), gan.LEAK)[0]) for z in noise]
    if loss == "non-saturating":
        return -sum(math.log(p) for p in ps) / len(ps)
    return sum(math.log(1.0 - p) for p in ps) / len(ps)


def entries(layers):
    for k, (w, b) in enumerate(layers):
        for r, row in enumerate(w):
            for c in range(len(row)):
                yield k, row, c, ("W", r, c)
        for c in range(len(b)):
            yield k, b, c, ("b", c)


def numeric(f, vec, c):
    original = vec[c]
    vec[c] = original + H
    up = f()
    vec[c] = original - H
    down = f()
    vec[c] = original
    return (up - down) / (2 * H)


def pick(grads, k, where):
    dw, db = grads[k]
    return dw[where[1]][where[2]] if where[0] == "W" else db[where[1]]


def test_discriminator_gradient_matches_finite_differences_for_every_weight():
    generator, disc, noise, real = small_nets()
    fake = gan.generate(generator, noise)
    grads, loss = gan.discriminator_gradients(disc, real, fake)
    assert loss == pytest.approx(ref_d_loss(disc, real, fake), rel=1e-12)
    checked = nonzero = 0
    for k, vec, c, where in entries(disc):
        want = numeric(lambda: ref_d_loss(disc, real, fake), vec, c)
        assert pick(grads, k, where) == pytest.approx(want, rel=1e-5, abs=1e-8), (k, where)
        checked += 1
        nonzero += abs(want) > 1e-4
    assert checked == 10 * 4 + 4 + 4 * 3 + 3 + 3 + 1
    assert nonzero > 40


@pytest.mark.parametrize("loss", ["non-saturating", "minimax"])
def test_generator_gradient_through_d_matches_finite_differences(loss):
    generator, disc, noise, _ = small_nets()
    grads, verdict, value = gan.generator_gradients(generator, disc, noise, loss)
    assert value == pytest.approx(ref_g_loss(generator, disc, noise, loss), rel=1e-12)
    ps = [prob(mlp(disc, feats(*mlp(generator, z, gan.LEAK)), gan.LEAK)[0]) for z in noise]
    assert verdict == pytest.approx(sum(ps) / len(ps), rel=1e-12)
    checked = nonzero = 0
    for k, vec, c, where in entries(generator):
        want = numeric(lambda: ref_g_loss(generator, disc, noise, loss), vec, c)
        assert pick(grads, k, where) == pytest.approx(want, rel=1e-5, abs=1e-8), (k, where)
        checked += 1
        nonzero += abs(want) > 1e-5
    assert checked == 2 * 5 + 5 + 5 * 4 + 4 + 4 * 2 + 2
    assert nonzero > 35


def test_features_backward_is_the_derivative_of_the_features():
    rng = random.Random(4)
    points = [(rng.uniform(-2, 2), rng.uniform(-2, 2)) for _ in range(4)]
    upstream = [[rng.gauss(0, 1) for _ in feats(0, 0)] for _ in points]
    got = gan.features_backward(points, upstream)
    assert gan.features(points) == [feats(*p) for p in points]
    for (x, y), g, (gx, gy) in zip(points, upstream, got):
        def f(px, py):
            return sum(a * b for a, b in zip(g, feats(px, py)))
        assert gx == pytest.approx((f(x + H, y) - f(x - H, y)) / (2 * H), rel=1e-6, abs=1e-8)
        assert gy == pytest.approx((f(x, y + H) - f(x, y - H)) / (2 * H), rel=1e-6, abs=1e-8)


def test_the_minimax_slope_vanishes_where_d_is_sure_and_the_other_does_not():
    """dL/dl is -p for the minimax loss and -(1 - p) for the non-saturating one."""
    generator, disc, noise, _ = small_nets()
    disc[-1][1][0] = -12.0          # D says "fake" with p ~ 6e-6 for every point
    ns, p, _ = gan.generator_gradients(generator, disc, noise, "non-saturating")
    mm, _, _ = gan.generator_gradients(generator, disc, noise, "minimax")
    assert p < 1e-4
    ratio = gan.gradient_norm(mm) / gan.gradient_norm(ns)
    assert ratio == pytest.approx(p / (1 - p), rel=0.5)
    assert gan.gradient_ratio(0.0, 0.0) != gan.gradient_ratio(0.0, 0.0)      # NaN


def test_adam_step_matches_the_textbook_formula():
    layers = [([[1.0, -2.0]], [0.5])]
    adam = gan.Adam(layers)
    m, v, w = [0.0] * 3, [0.0] * 3, [1.0, -2.0, 0.5]
    b1, b2 = gan.ADAM_BETA1, gan.ADAM_BETA2
    for s, g in enumerate(([0.5, -0.1, 0.2], [0.2, 0.3, -0.4]), 1):
        adam.step(layers, [([g[:2]], [g[2]])], 0.1)
        for i in range(3):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            w[i] -= 0.1 * (m[i] / (1 - b1 ** s)) / (math.sqrt(v[i] / (1 - b2 ** s)) + 1e-8)
        assert layers[0][0][0] + layers[0][1] == pytest.approx(w, rel=1e-12)


def test_nearest_matches_brute_force():
    rng = random.Random(5)
    reference = [(rng.gauss(0, 1), rng.gauss(0, 1)) for _ in range(300)]
    points = [(rng.gauss(0, 1.5), rng.gauss(0, 1.5)) for _ in range(100)]
    for (d, i), p in zip(gan.nearest(points, reference), points):
        want = min(range(len(reference)), key=lambda j: math.dist(p, reference[j]))
        assert i == want and d == pytest.approx(math.dist(p, reference[want]), rel=1e-12)


def test_coverage_counts_segments_with_their_share():
    reference = [(float(k), 0.0) for k in range(6)]
    positions = [(k + 0.5) / 6 for k in range(6)]
    # 60 samples: 30 on segment 0, 28 on segment 1, 2 on segment 2 (under the 1/24 line),
    # and 0 elsewhere; one far sample counts for none.
    samples = [(0.0, 0.0)] * 30 + [(1.0, 0.05)] * 28 + [(2.0, 0.0)] * 2 + [(9.0, 9.0)]
    shares = gan.segment_shares(samples, reference, positions)
    assert shares[:3] == pytest.approx([30 / 61, 28 / 61, 2 / 61])
    assert gan.coverage(shares) == pytest.approx(2 / 6)
    assert gan.coverage([1 / 6] * 6) == 1.0


def test_spiral_positions_follow_the_same_random_stream():
    random.seed(7)
    plain = gan.make_spiral(20)
    random.seed(7)
    positions = []
    assert gan.make_spiral(20, positions) == plain
    assert len(positions) == 20 and all(0.0 <= s < 1.0 for s in positions)
