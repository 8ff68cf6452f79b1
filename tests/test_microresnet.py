"""Fast checks specific to foundational/microresnet.py.

The backward passes of the plain and residual stacks are derived by hand in the script, so
each is compared here with central finite differences of a loss written here from the
definitions (h <- tanh(W h + b), h <- h + tanh(W h + b)), independently of the script's
forward code. The glyph section must be microconv's, image for image.
"""
import math
import random

import pytest

from support import load_script

res = load_script("foundational/microresnet.py")
conv = load_script("foundational/microconv.py")
H = 1e-6


def ref_loss(model, depth, batch, residual):
    """Mean softmax cross-entropy of the stack, written from its formulas."""
    total = 0.0
    for image, digit in batch:
        h = [math.tanh(b + sum(w * x for w, x in zip(row, image)))
             for row, b in zip(model["w0"], model["b0"][0])]
        for layer in range(1, depth + 1):
            a = [math.tanh(b + sum(w * x for w, x in zip(row, h)))
                 for row, b in zip(model[f"w{layer}"], model[f"b{layer}"][0])]
            h = [x + t for x, t in zip(h, a)] if residual else a
        logits = [b + sum(w * x for w, x in zip(row, h))
                  for row, b in zip(model["head"], model["head_bias"][0])]
        top = max(logits)
        log_z = top + math.log(sum(math.exp(z - top) for z in logits))
        total += log_z - logits[digit]
    return total / len(batch)


@pytest.mark.parametrize("residual", [False, True])
def test_backward_matches_finite_differences_of_the_reference(residual):
    random.seed(3)
    depth = 4
    model = res.init_stack(depth)
    batch = res.make_glyphs(3, stream=9)
    loss, grads = res.batch_gradients(model, batch, residual)
    assert loss == pytest.approx(ref_loss(model, depth, batch, residual), rel=1e-12)
    for name in model:
        for row, grad_row in zip(model[name], grads[name]):
            for i in range(0, len(row), 3):
                original = row[i]
                row[i] = original + H
                up = ref_loss(model, depth, batch, residual)
                row[i] = original - H
                down = ref_loss(model, depth, batch, residual)
                row[i] = original
                assert grad_row[i] == pytest.approx((up - down) / (2 * H), rel=1e-4, abs=1e-7)


def test_in_run_check_fails_when_the_skip_is_dropped_from_backward():
    random.seed(4)
    model = res.init_stack(3)
    batch = res.make_glyphs(2, stream=9)
    good = res.check_backward(model, batch, True)
    assert good < 1e-5
    # The plain backward pass on a residual forward pass: the skip's "+ g" is missing.
    original = res.backward

    def no_skip(model, saved, dlogits, grads, residual):
        return original(model, saved, dlogits, grads, False)

    res.backward = no_skip
    try:
        bad = res.batch_gradients(model, batch, True)[1]
    finally:
        res.backward = original
    right = res.batch_gradients(model, batch, True)[1]
    assert max(abs(a - b) for a, b in zip(bad["w0"][0], right["w0"][0])) > 1e-3


def test_glyphs_are_microconvs_image_for_image():
    for stream in (0, 1, 2):
        shifted = stream == 2
        assert res.make_glyphs(50, stream, shifted) == conv.make_glyphs(50, stream, shifted)
    assert res.GLYPH_STROKES == conv.GLYPH_STROKES


def test_worst_keeps_nan():
    assert math.isnan(res.worst([0.0, float("nan"), 1.0]))
