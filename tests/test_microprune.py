"""Fast checks specific to systems/microprune.py.

The script trains with hand-derived gradients, so every gradient is checked against finite
differences, and the loss against a forward pass written plainly for one example at a time.
The masks are checked against references written from their definitions (a weight is pruned
by magnitude iff fewer than k weights are smaller; a unit is removed iff its norm is among
the smallest), the quantiser against its levels and its error bound, the straight-through
estimator against the gradient at the rounded weights, and the masked fine-tune against the
zeros it must keep.
"""
import math
import random

import pytest

from support import load_script

mp = load_script("systems/microprune.py")
VOCAB = 27


@pytest.fixture
def model():
    random.seed(3)
    m = mp.init_model(VOCAB)
    # Larger output weights and biases than at init, so every gradient term is exercised
    for name in ("W2", "b1", "b2"):
        m[name] = [[random.gauss(0.0, 0.5) for _ in row] for row in m[name]]
    return m


BATCH = [((0, 0, 0), 5), ((0, 5, 13), 13), ((5, 13, 13), 1), ((13, 13, 1), 0),
         ((7, 7, 7), 7)]   # the last context repeats one character in every slot


def reference_loss(model, batch):
    """Mean cross-entropy, one example at a time, straight from the formulas."""
    total = 0.0
    for ctx, y in batch:
        x = []
        for c in ctx:
            x.extend(model["C"][c])
        h = []
        for j in range(mp.HIDDEN):
            a = model["b1"][0][j]
            for i in range(len(x)):
                a += model["W1"][j][i] * x[i]
            h.append(math.tanh(a))
        z = []
        for k in range(VOCAB):
            s = model["b2"][0][k]
            for j in range(mp.HIDDEN):
                s += model["W2"][k][j] * h[j]
            z.append(s)
        log_norm = math.log(sum(math.exp(v) for v in z))
        total += log_norm - z[y]
    return total / len(batch)


def test_loss_equals_the_plain_reference(model):
    loss, _ = mp.loss_and_grads(model, BATCH)
    assert math.isclose(loss, reference_loss(model, BATCH), rel_tol=1e-12)
    assert math.isclose(mp.mean_loss(model, BATCH), loss, rel_tol=1e-12)


@pytest.mark.parametrize("name", ["C", "W1", "b1", "W2", "b2"])
def test_hand_derived_gradients_match_finite_differences(model, name):
    _, grads = mp.loss_and_grads(model, BATCH)
    rng = random.Random(hash(name) % 1000)
    rows = model[name]
    # every row of C the batch uses (row 7 sits in all three slots of one example), and a
    # sample of entries elsewhere
    cells = [(r, c) for r in (0, 5, 7, 13) for c in range(mp.EMBED)] if name == "C" else \
        [(rng.randrange(len(rows)), rng.randrange(len(rows[0]))) for _ in range(25)]
    for r, c in cells:
        original = rows[r][c]
        rows[r][c] = original + 1e-6
        up = reference_loss(model, BATCH)
        rows[r][c] = original - 1e-6
        down = reference_loss(model, BATCH)
        rows[r][c] = original
        numeric = (up - down) / 2e-6
        assert math.isclose(grads[name][r][c], numeric, rel_tol=1e-5, abs_tol=1e-8), (r, c)


def test_gradient_of_an_unused_embedding_row_is_zero(model):
    _, grads = mp.loss_and_grads(model, BATCH)
    assert grads["C"][20] == [0.0] * mp.EMBED


def test_adam_step_matches_the_formula():
    m = {"W": [[0.5, -1.0]]}
    opt = mp.Adam(m)
    opt.step(m, {"W": [[0.2, -0.4]]}, 0.1)
    # after one step m_hat = g and v_hat = g^2, so each weight moves by lr * g / (|g| + eps)
    for w, w0, g in zip(m["W"][0], (0.5, -1.0), (0.2, -0.4)):
        assert math.isclose(w, w0 - 0.1 * g / (abs(g) + mp.ADAM_EPS), rel_tol=1e-12)


# --- masks against references written from their definitions -------------------------------

def random_rows(rng, rows=7, cols=9):
    return [[rng.gauss(0.0, 1.0) for _ in range(cols)] for _ in range(rows)]


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.75, 0.9])
def test_magnitude_mask_prunes_exactly_the_smallest_weights(sparsity):
    rows = random_rows(random.Random(int(sparsity * 100)))
    mask = mp.magnitude_mask(rows, sparsity)
    flat = [abs(w) for row in rows for w in row]
    k = round(sparsity * len(flat))
    for w, keep in zip(flat, [v for row in mask for v in row]):
        smaller = sum(other < w for other in flat)
        assert keep == (0.0 if smaller < k else 1.0)


def test_random_mask_prunes_the_stated_count_and_differs_from_magnitude():
    rows = random_rows(random.Random(1))
    mask = mp.random_mask(rows, 0.5, random.Random(2))
    assert sum(v == 0.0 for row in mask for v in row) == round(0.5 * 63)
    assert mask != mp.magnitude_mask(rows, 0.5)


def test_global_mask_pools_both_layers():
    random.seed(4)
    m = mp.init_model(VOCAB)
    masks = mp.global_magnitude_masks(m, 0.5)
    pool = sorted(abs(w) for name in mp.LINEAR for row in m[name] for w in row)
    threshold = pool[round(0.5 * len(pool))]
    for name in mp.LINEAR:
        for row, mrow in zip(m[name], masks[name]):
            for w, keep in zip(row, mrow):
                assert keep == (1.0 if abs(w) >= threshold else 0.0)


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.9])
def test_structured_masks_remove_whole_units_with_the_smallest_norms(sparsity):
    random.seed(5)
    m = mp.init_model(VOCAB)
    masks, removed = mp.structured_masks(m, sparsity)
    assert len(removed) == round(sparsity * mp.HIDDEN)
    norms = [sum(w * w for w in m["W1"][j]) + sum(row[j] ** 2 for row in m["W2"])
             for j in range(mp.HIDDEN)]
    largest_removed = max(norms[j] for j in removed)
    assert all(norms[j] > largest_removed for j in range(mp.HIDDEN) if j not in removed)
    for j in range(mp.HIDDEN):
        keep = 0.0 if j in removed else 1.0
        assert set(masks["W1"][j]) == {keep}
        assert {row[j] for row in masks["W2"]} == {keep}
    pruned = mp.pruned_copy(m, masks)
    assert mp.measured_sparsity(pruned) == pytest.approx(sparsity, abs=1e-12)


def test_masked_finetune_keeps_every_pruned_weight_at_zero():
    random.seed(6)
    m = mp.init_model(VOCAB)
    masks = {name: mp.magnitude_mask(m[name], 0.75) for name in mp.LINEAR}
    batches = [BATCH] * 5
    tuned = mp.finetune_pruned(m, masks, batches)
    assert mp.measured_sparsity(tuned) == 0.75
    # the survivors did move: the fine-tune is not a no-op
    assert tuned["W1"] != mp.pruned_copy(m, masks)["W1"]
    # without the masks the same training lets the pruned weights grow back
    regrown = mp.train(mp.pruned_copy(m, masks), batches, mp.FINETUNE_LR)[0]
    assert mp.measured_sparsity(regrown) < 0.1


# --- quantisation and the straight-through estimator ----------------------------------------

@pytest.mark.parametrize("bits", [2, 3, 4])
def test_quantised_row_is_on_the_grid_and_within_half_a_step(bits):
    rng = random.Random(bits)
    row = [rng.gauss(0.0, 1.0) for _ in range(50)]
    qmax = 2 ** (bits - 1) - 1
    scale = max(abs(w) for w in row) / qmax
    rounded = mp.quantise_row(row, bits)
    for w, w_hat in zip(row, rounded):
        code = w_hat / scale
        assert abs(code - round(code)) < 1e-9 and -qmax - 1 <= round(code) <= qmax
        assert abs(w - w_hat) <= scale / 2 + 1e-12
    if bits == 2:
        assert {round(w_hat / scale) for w_hat in rounded} <= {-1, 0, 1}


def test_quantised_copy_leaves_embeddings_and_biases_float(model):
    q = mp.quantised_copy(model, 2)
    for name in ("C", "b1", "b2"):
        assert q[name] == model[name]
    assert q["W1"] != model["W1"]


def test_qat_gradient_is_the_gradient_at_the_rounded_weights(model):
    # The straight-through estimator: dL/dw := dL/dw_hat, the gradient of the loss of the
    # quantised model, checked here by finite differences on that model
    loss, grads = mp.qat_loss_and_grads(model, BATCH, 2)
    q = mp.quantised_copy(model, 2)
    assert math.isclose(loss, reference_loss(q, BATCH), rel_tol=1e-12)
    for r, c in [(0, 0), (3, 7), (11, 29)]:
        original = q["W1"][r][c]
        q["W1"][r][c] = original + 1e-6
        up = reference_loss(q, BATCH)
        q["W1"][r][c] = original - 1e-6
        down = reference_loss(q, BATCH)
        q["W1"][r][c] = original
        assert math.isclose(grads["W1"][r][c], (up - down) / 2e-6, rel_tol=1e-5, abs_tol=1e-8)
    assert any(g != 0.0 for row in grads["W2"] for g in row)


def test_chart_survives_nan_and_marks_every_curve():
    chart = mp.ascii_chart([("A", "a", [1.0, 2.0]), ("B", "b", [1.5, math.nan])], (0.0, 0.5))
    assert "A" in chart and "B" in chart


def test_nan_fails_the_criteria_table(capsys):
    results = {key: 1.0 for _, key, _, _ in mp.CRITERIA}
    results.update({"bigram_loss": 2.0, "qat_margin": math.nan})
    mp.print_criteria(results)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "PTQ minus QAT" in ln]
    assert lines and lines[0].endswith("FAIL")
