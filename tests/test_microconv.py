"""Fast checks specific to foundational/microconv.py.

The convolution, the max pooling and both networks' backward passes are derived by hand in
the script, so each is compared here with central finite differences of losses written from
their definitions, independently of the script's code. The sliding dot product is checked
against the unfolded-patches matrix product and against a convolution written here; the
glyph generator is checked for determinism and for what a shifted glyph is.
"""
import math
import random

import pytest

from support import load_script

conv = load_script("foundational/microconv.py")
H = 1e-6


def ref_conv(image, size, kernel, bias, padding, stride):
    """Cross-correlation from its formula, on an explicitly zero-padded image."""
    k = math.isqrt(len(kernel))
    padded_size = size + 2 * padding
    padded = [[0.0] * padded_size for _ in range(padded_size)]
    for r in range(size):
        for c in range(size):
            padded[r + padding][c + padding] = image[r * size + c]
    out = []
    for y in range(0, padded_size - k + 1, stride):
        for x in range(0, padded_size - k + 1, stride):
            out.append(bias + sum(kernel[i * k + j] * padded[y + i][x + j]
                                  for i in range(k) for j in range(k)))
    return out


def numeric(f, vec, i):
    original = vec[i]
    vec[i] = original + H
    up = f()
    vec[i] = original - H
    down = f()
    vec[i] = original
    return (up - down) / (2 * H)


@pytest.mark.parametrize("size,padding,stride", [(8, 1, 1), (8, 0, 1), (8, 1, 2), (7, 2, 3)])
def test_sliding_and_unfolded_convolution_match_the_formula(size, padding, stride):
    rng = random.Random(size + padding + stride)
    image = [rng.gauss(0, 1) for _ in range(size * size)]
    kernel, bias = [rng.gauss(0, 1) for _ in range(9)], rng.gauss(0, 1)
    want = ref_conv(image, size, kernel, bias, padding, stride)
    assert len(want) == conv.conv_out_size(size, 3, padding, stride) ** 2
    sliding = conv.conv2d_sliding(image, size, kernel, bias, padding, stride)
    matmul = conv.conv2d_unfold(conv.unfold(image, size, 3, padding, stride), [kernel], [bias])[0]
    assert sliding == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert matmul == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_conv_backward_matches_finite_differences_with_padding_and_stride():
    rng = random.Random(3)
    size, padding, stride = 7, 1, 2
    image = [rng.gauss(0, 1) for _ in range(size * size)]
    kernels = [[rng.gauss(0, 1) for _ in range(9)] for _ in range(3)]
    biases = [rng.gauss(0, 1) for _ in range(3)]
    n_out = conv.conv_out_size(size, 3, padding, stride) ** 2
    r = [[rng.gauss(0, 1) for _ in range(n_out)] for _ in range(3)]

    def loss():
        return sum(w * o for k, b, rf in zip(kernels, biases, r)
                   for w, o in zip(rf, ref_conv(image, size, k, b, padding, stride)))

    patches = conv.unfold(image, size, 3, padding, stride)
    dk, db, dx = conv.conv2d_backward(patches, kernels, r, size, padding, stride)
    for i in range(len(image)):
        assert dx[i] == pytest.approx(numeric(loss, image, i), rel=1e-6, abs=1e-8)
    for k, dkf in zip(kernels, dk):
        for i in range(9):
            assert dkf[i] == pytest.approx(numeric(loss, k, i), rel=1e-6, abs=1e-8)
    for i in range(3):
        assert db[i] == pytest.approx(numeric(loss, biases, i), rel=1e-6, abs=1e-8)


def test_max_pool_and_its_gradient_go_to_the_maximum_only():
    act = [float(v) for v in [1, 5, 2, 0, 3, 4, 9, 1, 0, 0, 7, 8, 6, 2, 1, 1]]
    windows = conv.pool_windows(4)
    pooled, argmax = conv.max_pool(act, windows)
    assert pooled == [5.0, 9.0, 6.0, 8.0]
    d = conv.max_pool_backward([1.0, 2.0, 3.0, 4.0], argmax, windows, 4)
    assert d == [0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 4, 3, 0, 0, 0]


def cnn_reference_loss(model, image, digit):
    """The CNN from its definition: conv (formula), ReLU, 2x2 max, linear, cross-entropy."""
    size = conv.GLYPH_SIZE
    features = []
    for k, b in zip(model["kernels"], model["conv_bias"][0]):
        act = [max(0.0, v) for v in ref_conv(image, size, k, b, conv.PADDING, conv.STRIDE)]
        side = conv.conv_out_size(size, conv.KERNEL, conv.PADDING, conv.STRIDE)
        for y in range(0, side, 2):
            for x in range(0, side, 2):
                features.append(max(act[y * side + x], act[y * side + x + 1],
                                    act[(y + 1) * side + x], act[(y + 1) * side + x + 1]))
    logits = [c + sum(w * f for w, f in zip(row, features))
              for row, c in zip(model["head"], model["head_bias"][0])]
    top = max(logits)
    return -(logits[digit] - top - math.log(sum(math.exp(z - top) for z in logits)))


def mlp_reference_loss(model, image, digit):
    hidden = [max(0.0, b + sum(w * x for w, x in zip(row, image)))
              for row, b in zip(model["w1"], model["b1"][0])]
    logits = [b + sum(w * h for w, h in zip(row, hidden))
              for row, b in zip(model["w2"], model["b2"][0])]
    top = max(logits)
    return -(logits[digit] - top - math.log(sum(math.exp(z - top) for z in logits)))


@pytest.mark.parametrize("kind,reference", [("CNN", cnn_reference_loss),
                                            ("MLP", mlp_reference_loss)])
def test_model_gradients_match_finite_differences_of_the_reference(kind, reference):
    random.seed(5)
    model = conv.MODELS[kind][0]()
    for rows in model.values():                 # non-zero biases, so no unit sits at a kink
        if len(rows) == 1:
            rows[0][:] = [random.gauss(0, 0.2) for _ in rows[0]]
    batch = conv.make_glyphs(3, stream=9)
    loss, grads = conv.batch_gradients(kind, model, batch)

    def ref():
        return sum(reference(model, x, y) for x, y in batch) / len(batch)

    assert loss == pytest.approx(ref(), rel=1e-12)
    checked = nonzero = 0
    for name in model:
        for row, grow in zip(model[name], grads[name]):
            for i in range(0, len(row), 5 if len(row) > 20 else 1):
                want = numeric(ref, row, i)
                assert grow[i] == pytest.approx(want, rel=1e-5, abs=1e-7), (name, i)
                checked += 1
                nonzero += abs(want) > 1e-5
    assert checked > 150 and nonzero > 50


def test_in_run_checks_fail_on_a_wrong_gradient():
    rng = random.Random(1)
    assert conv.check_conv_backward(rng) < 1e-6
    assert conv.worst([0.1, float("nan"), 0.2]) != conv.worst([0.1, float("nan"), 0.2])
    assert conv.relative_error(1.0, 1.5) == pytest.approx(1 / 3)


def test_adam_step_matches_the_textbook_formula():
    model = {"w": [[1.0, -2.0]]}
    adam = conv.Adam(model)
    m, v, w = [0.0, 0.0], [0.0, 0.0], [1.0, -2.0]
    b1, b2 = conv.ADAM_BETA1, conv.ADAM_BETA2
    for s, g in enumerate(([0.5, -0.1], [0.2, 0.3]), 1):
        adam.step(model, {"w": [g]}, 0.1)
        for i in range(2):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            w[i] -= 0.1 * (m[i] / (1 - b1 ** s)) / (math.sqrt(v[i] / (1 - b2 ** s)) + 1e-8)
        assert model["w"][0] == pytest.approx(w, rel=1e-12)


def test_glyphs_are_deterministic_and_independent_of_the_script_seed():
    random.seed(1)
    a = conv.make_glyphs(20, stream=0)
    random.seed(2)
    b = conv.make_glyphs(20, stream=0)
    assert a == b
    assert conv.make_glyphs(20, stream=1) != a
    assert all(len(x) == conv.GLYPH_SIZE ** 2 and 0 <= y < 10 for x, y in a)


def test_a_shifted_glyph_is_the_centred_glyph_moved():
    """Without noise, a shifted glyph's ink is the centred glyph's ink moved by (dx, dy)."""
    saved = conv.GLYPH_NOISE
    conv.GLYPH_NOISE = 0.0
    try:
        size = conv.GLYPH_SIZE
        moved = 0
        for seed in range(20):
            centred = conv.make_glyph(8, random.Random(seed), shifted=False)
            shifted = conv.make_glyph(8, random.Random(seed), shifted=True)
            c_ink = {(i % size, i // size) for i, v in enumerate(centred) if v > 0}
            s_ink = {(i % size, i // size) for i, v in enumerate(shifted) if v > 0}
            assert len(c_ink) == len(s_ink)
            shifts = {(sx - cx, sy - cy) for (cx, cy), (sx, sy) in
                      zip(sorted(c_ink), sorted(s_ink))}
            assert len(shifts) == 1
            dx, dy = shifts.pop()
            assert (dx, dy) != (0, 0) and max(abs(dx), abs(dy)) <= conv.MAX_SHIFT
            moved += 1
        assert moved == 20
    finally:
        conv.GLYPH_NOISE = saved


def test_every_digit_has_a_distinct_glyph():
    shapes = {frozenset(conv.glyph_pixels(d, False)) for d in range(10)}
    assert len(shapes) == 10
