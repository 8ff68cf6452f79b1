"""Fast checks specific to foundational/microvit.py.

The ViT's backward pass is derived by hand in the script, so it is compared here with
central finite differences of a loss written here from the definitions: a full pre-norm
encoder layer that computes all 17 token rows (the script computes only the class token's)
and reads row 0. The layer norm, GELU and patch embedding are checked on their own against
their formulas; the CNN and the glyphs are checked to be microconv's.
"""
import math
import random

import pytest

from support import load_script

vit = load_script("foundational/microvit.py")
conv = load_script("foundational/microconv.py")
H = 1e-6


def numeric(f, vec, i):
    original = vec[i]
    vec[i] = original + H
    up = f()
    vec[i] = original - H
    down = f()
    vec[i] = original
    return (up - down) / (2 * H)


def ref_layer_norm(x, gain, bias, eps):
    mean = sum(x) / len(x)
    var = sum((v - mean) ** 2 for v in x) / len(x)
    return [g * (v - mean) / math.sqrt(var + eps) + b for v, g, b in zip(x, gain, bias)]


def ref_matvec(w, b, x):
    return [bi + sum(wij * xj for wij, xj in zip(row, x)) for row, bi in zip(w, b)]


def ref_patches(image, size, patch):
    """The patches of an image in row-major order, each patch's pixels row by row."""
    out = []
    for py in range(size // patch):
        for px in range(size // patch):
            out.append([image[(py * patch + i) * size + px * patch + j]
                        for i in range(patch) for j in range(patch)])
    return out


def ref_vit_logits(m, image):
    """The whole encoder layer, every token's row, from the formulas; the head reads row 0."""
    eps, width, heads = vit.LN_EPS, vit.WIDTH, vit.NUM_HEADS
    d = width // heads
    x = [[c + p for c, p in zip(m["cls"][0], m["positions"][0])]]
    for t, patch in enumerate(ref_patches(image, vit.GLYPH_SIZE, vit.PATCH), 1):
        e = ref_matvec(m["embed"], m["embed_bias"][0], patch)
        x.append([a + p for a, p in zip(e, m["positions"][t])])
    n = [ref_layer_norm(row, m["ln1_gain"][0], m["ln1_bias"][0], eps) for row in x]
    q = [ref_matvec(m["wq"], m["q_bias"][0], row) for row in n]
    k = [ref_matvec(m["wk"], m["k_bias"][0], row) for row in n]
    v = [ref_matvec(m["wv"], m["v_bias"][0], row) for row in n]
    out = []
    for i in range(len(x)):
        concat = []
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            s = [sum(a * b for a, b in zip(q[i][sl], k[j][sl])) / math.sqrt(d)
                 for j in range(len(x))]
            z = sum(math.exp(si) for si in s)
            a = [math.exp(si) / z for si in s]
            concat += [sum(a[j] * v[j][sl][c] for j in range(len(x))) for c in range(d)]
        r = [xi + oi for xi, oi in zip(x[i], ref_matvec(m["wo"], m["o_bias"][0], concat))]
        hid = ref_matvec(m["w1"], m["b1"][0], ref_layer_norm(r, m["ln2_gain"][0],
                                                             m["ln2_bias"][0], eps))
        hid = [u * 0.5 * (1 + math.erf(u / math.sqrt(2))) for u in hid]
        out.append([ri + yi for ri, yi in zip(r, ref_matvec(m["w2"], m["b2"][0], hid))])
    final = ref_layer_norm(out[0], m["lnf_gain"][0], m["lnf_bias"][0], eps)
    return ref_matvec(m["head"], m["head_bias"][0], final)


def ref_xent(logits, digit):
    top = max(logits)
    return top + math.log(sum(math.exp(z - top) for z in logits)) - logits[digit]


@pytest.fixture
def small_vit():
    """A narrower ViT (width 4, 2 heads, MLP 4: 286 parameters), so that every parameter can
    be checked against the full reference in a second or two."""
    saved = vit.WIDTH, vit.NUM_HEADS, vit.MLP_HIDDEN
    vit.WIDTH, vit.NUM_HEADS, vit.MLP_HIDDEN = 4, 2, 4
    yield
    vit.WIDTH, vit.NUM_HEADS, vit.MLP_HIDDEN = saved


def perturbed_vit(seed):
    """A freshly initialised ViT with every bias, gain, class token and position moved off its
    initial value, so every term of the backward pass carries weight."""
    random.seed(seed)
    model = vit.init_vit()
    for name, rows in model.items():
        for row in rows:
            row[:] = [w + random.gauss(0.0, 0.3) for w in row]
    return model


def test_vit_logits_match_a_full_encoder_layer_written_from_the_formulas():
    model = perturbed_vit(1)
    for image, _ in vit.make_glyphs(4, stream=9):
        logits = vit.vit_forward(model, vit.unfold(image, vit.GLYPH_SIZE, vit.PATCH, 0,
                                                   vit.PATCH))[0]
        assert logits == pytest.approx(ref_vit_logits(model, image), rel=1e-10, abs=1e-12)


def test_vit_backward_matches_finite_differences_of_the_reference(small_vit):
    model = perturbed_vit(2)
    glyphs = vit.make_glyphs(2, stream=9)
    batch = vit.patchify(glyphs)
    loss, grads = vit.batch_gradients("ViT", model, batch)

    def ref():
        return sum(ref_xent(ref_vit_logits(model, x), y) for x, y in glyphs) / len(glyphs)

    assert loss == pytest.approx(ref(), rel=1e-10)
    checked = 0
    for name in model:
        for row, grow in zip(model[name], grads[name]):
            for i in range(len(row)):
                want = numeric(ref, row, i)
                assert grow[i] == pytest.approx(want, rel=1e-5, abs=1e-7), (name, i)
                checked += 1
    assert checked == 286


def test_layer_norm_and_gelu_against_their_formulas():
    rng = random.Random(3)
    x = [rng.gauss(0, 2) for _ in range(8)]
    gain = [rng.gauss(1, 0.3) for _ in range(8)]
    bias = [rng.gauss(0, 0.3) for _ in range(8)]
    r = [rng.gauss(0, 1) for _ in range(8)]
    out, saved = vit.layer_norm(x, gain, bias)
    assert out == pytest.approx(ref_layer_norm(x, gain, bias, vit.LN_EPS), rel=1e-12)
    dgain, dbias = [0.0] * 8, [0.0] * 8
    dx = vit.layer_norm_backward(r, gain, saved, dgain, dbias)

    def loss():
        return sum(a * b for a, b in zip(r, ref_layer_norm(x, gain, bias, vit.LN_EPS)))

    for vec, grad in ((x, dx), (gain, dgain), (bias, dbias)):
        for i in range(8):
            assert grad[i] == pytest.approx(numeric(loss, vec, i), rel=1e-6, abs=1e-8)
    for u in (-3.0, -0.7, 0.0, 0.4, 2.5):
        assert vit.gelu(u) == pytest.approx(u * 0.5 * (1 + math.erf(u / math.sqrt(2))))
        slope = (vit.gelu(u + H) - vit.gelu(u - H)) / (2 * H)
        assert vit.gelu_grad(u) == pytest.approx(slope, rel=1e-6, abs=1e-8)


def test_patches_are_row_major_and_the_embedding_is_a_strided_convolution():
    image = [float(i) for i in range(64)]
    patches = vit.unfold(image, vit.GLYPH_SIZE, vit.PATCH, 0, vit.PATCH)
    assert patches == ref_patches(image, vit.GLYPH_SIZE, vit.PATCH)
    # The comment's picture: patch 6 holds pixels (2,4) (2,5) (3,4) (3,5).
    assert patches[6] == [2 * 8 + 4, 2 * 8 + 5, 3 * 8 + 4, 3 * 8 + 5]
    # E patch + b over every patch is a conv with kernel = stride = patch size (microconv's
    # sliding definition, a separate piece of code).
    rng = random.Random(4)
    image = [rng.gauss(0, 1) for _ in range(64)]
    kernel, bias = [rng.gauss(0, 1) for _ in range(4)], rng.gauss(0, 1)
    embedded = [vit.linear([kernel], [bias], p)[0]
                for p in vit.unfold(image, 8, vit.PATCH, 0, vit.PATCH)]
    assert embedded == pytest.approx(conv.conv2d_sliding(image, 8, kernel, bias, 0, vit.PATCH),
                                     rel=1e-12)


def test_attention_rows_sum_to_one_and_the_query_ignores_the_image():
    # One layer: the class token's query comes from the class token and position 0 only.
    model = perturbed_vit(5)
    queries = []
    for patches, _ in vit.patchify(vit.make_glyphs(3, stream=9)):
        cache = vit.vit_forward(model, patches)[1]
        assert len(cache["attention"]) == vit.NUM_HEADS
        for weights in cache["attention"]:
            assert len(weights) == 17 and sum(weights) == pytest.approx(1.0, rel=1e-12)
        queries.append(cache["query"])
    assert queries[0] == queries[1] == queries[2]


def test_cnn_is_microconvs():
    """Same initial weights from the same seed, same logits, same gradient."""
    random.seed(6)
    ours = vit.init_cnn()
    random.seed(6)
    theirs = conv.init_cnn()
    assert ours == theirs
    batch = vit.make_glyphs(4, stream=9)
    for image, _ in batch:
        assert vit.cnn_forward(ours, image)[0] == pytest.approx(
            conv.cnn_forward(theirs, image)[0], rel=1e-12)
    loss, grads = vit.batch_gradients("CNN", ours, batch)
    loss2, grads2 = conv.batch_gradients("CNN", theirs, batch)
    assert loss == pytest.approx(loss2, rel=1e-12)
    for name in grads:
        for a, b in zip(grads[name], grads2[name]):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-12)


def test_glyphs_are_microconvs_image_for_image():
    for stream in (0, 1, 2):
        shifted = stream == 2
        assert vit.make_glyphs(50, stream, shifted) == conv.make_glyphs(50, stream, shifted)
    assert vit.GLYPH_STROKES == conv.GLYPH_STROKES
    images = [x for x, _ in conv.make_glyphs(3, 0)]
    assert vit.render(images, [1, 2, 3]) == conv.render(images, [1, 2, 3])


def test_in_run_check_catches_a_wrong_gradient(small_vit):
    model = perturbed_vit(7)
    batch = vit.patchify(vit.make_glyphs(2, stream=9))
    good, checked = vit.check_backward("ViT", model, batch)
    assert good < 1e-5 and checked == sum(len(row) for rows in model.values() for row in rows)
    init, forward, backward = vit.MODELS["ViT"]

    def off_by_a_little(model, cache, dlogits, grads):
        backward(model, cache, dlogits, grads)
        grads["positions"][3][2] += 1e-3

    vit.MODELS["ViT"] = (init, forward, off_by_a_little)
    try:
        bad, _ = vit.check_backward("ViT", model, batch)
    finally:
        vit.MODELS["ViT"] = (init, forward, backward)
    assert bad > 1e-3


def test_without_positions_the_class_token_sees_a_bag_of_patches():
    """Attention sums over tokens, so with every position equal, shuffling the patches
    leaves the logits unchanged; the learned positions are what make order matter."""
    model = perturbed_vit(8)
    patches = vit.patchify(vit.make_glyphs(1, stream=9))[0][0]
    shuffled = patches[::-1]
    assert vit.vit_forward(model, patches)[0] != pytest.approx(
        vit.vit_forward(model, shuffled)[0], rel=1e-6)
    for row in model["positions"][1:]:
        row[:] = model["positions"][1]
    assert vit.vit_forward(model, patches)[0] == pytest.approx(
        vit.vit_forward(model, shuffled)[0], rel=1e-12)


def test_worst_keeps_nan():
    assert math.isnan(vit.worst([0.0, float("nan"), 1.0]))


def test_a_diverged_model_scores_nan_and_the_chart_still_draws():
    # max() over NaN logits would still name a digit and score near chance, which the two
    # margin rows (CNN minus ViT) would count as a large, passing margin. It must be NaN.
    random.seed(0)
    model = vit.init_vit()
    model["head_bias"][0][0] = float("nan")
    data = vit.patchify(vit.make_glyphs(5, stream=9))
    assert math.isnan(vit.accuracy("ViT", model, data))
    assert "nan" in vit.bar_chart([("60 ViT", float("nan")), ("60 CNN", 0.5)])
