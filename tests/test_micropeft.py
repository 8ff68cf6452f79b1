"""micropeft: fused nodes, every method's gradients, parameter counts, starts and merges."""
import math
import random

import pytest

from support import close, grads, load_script, naive_softmax, values_of

peft = load_script("alignment/micropeft.py")
Value = peft.Value
BOS = 26
VOCAB = 27
NAME = [BOS, 4, 12, 12, 0, BOS]      # BOS e m m a BOS
OTHER = [BOS, 13, 14, 0, 7, BOS]     # BOS n o a h BOS
values = values_of(Value)


def frozen_base(seed=0):
    random.seed(seed)
    return peft.frozen_copy(peft.init_model(vocab_size=VOCAB))


def perturbed(kind, frozen, seed=1):
    """A method whose every trainable number is moved off its start, so all paths are live."""
    random.seed(seed)
    model, additions = peft.init_method(kind, frozen, BOS)
    rng = random.Random(seed + 100)
    for p in peft.method_parameters(kind, model, additions):
        p.data += rng.gauss(0.0, 0.3)
    return model, additions


# --- fused nodes against their naive forms ---

def test_const_dot_equals_naive_dot_with_constant_weights():
    rng = random.Random(2)
    consts, raw_x = [rng.gauss(0, 1) for _ in range(16)], [rng.gauss(0, 1) for _ in range(16)]
    x1, x2 = values(raw_x), values(raw_x)
    fused = peft.const_dot(consts, x1)
    naive = peft.naive_dot(values(consts), x2)
    fused.backward()
    naive.backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(x1), grads(x2))
    assert len(fused._children) == 16


def test_lora_add_equals_naive_add():
    for frozen_is_value in (False, True):
        u1, u2 = Value(0.7), Value(0.7)
        o1 = Value(-1.3) if frozen_is_value else -1.3
        o2 = Value(-1.3) if frozen_is_value else -1.3
        fused, naive = peft.lora_add(o1, u1, 0.5), o2 + 0.5 * u2
        (fused * 2.0).backward()
        (naive * 2.0).backward()
        assert fused.data == naive.data and u1.grad == u2.grad == 1.0
        if frozen_is_value:
            assert o1.grad == o2.grad == 2.0


@pytest.mark.parametrize("frozen_is_value", [False, True])
def test_dora_out_equals_naive_form_and_finite_differences(frozen_is_value):
    raw_o, raw_u, raw_m, norm, scale = -1.3, 0.7, 2.1, 1.7, 0.5
    o1 = Value(raw_o) if frozen_is_value else raw_o
    o2 = Value(raw_o) if frozen_is_value else raw_o
    u1, u2, m1, m2 = Value(raw_u), Value(raw_u), Value(raw_m), Value(raw_m)
    fused = peft.dora_out(o1, u1, m1, norm, scale)
    naive = m2 / norm * (o2 + scale * u2)
    (fused * 1.5).backward()
    (naive * 1.5).backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close([u1.grad, m1.grad], [u2.grad, m2.grad])
    if frozen_is_value:
        assert math.isclose(o1.grad, o2.grad, rel_tol=1e-12)

    def f(o, u, m):
        return m / norm * (o + scale * u)
    h = 1e-6
    assert math.isclose(m1.grad / 1.5, (f(raw_o, raw_u, raw_m + h) - f(raw_o, raw_u, raw_m - h))
                        / (2 * h), rel_tol=1e-6)
    assert math.isclose(u1.grad / 1.5, (f(raw_o, raw_u + h, raw_m) - f(raw_o, raw_u - h, raw_m))
                        / (2 * h), rel_tol=1e-6)
    assert peft.dora_out(raw_o, raw_u, raw_m, norm, scale) == fused.data   # the float path


def test_dora_out_with_magnitude_equal_to_norm_is_exactly_the_frozen_output():
    for o in (0.123456789, -3.3, 1e-7):
        n = 0.8123
        assert peft.dora_out(o, Value(0.0), Value(n), n, 1.0).data == o


def test_lift_turns_a_mixed_list_into_values_and_leaves_pure_lists_alone():
    pure_floats, pure_values = [1.0, 2.0], values([1.0, 2.0])
    assert peft.lift(pure_floats) is pure_floats and peft.lift(pure_values) is pure_values
    for mix in ([Value(1.0), 2.0, 3.0], [1.0, 2.0, Value(3.0)]):
        lifted = peft.lift(mix)
        assert all(isinstance(x, Value) for x in lifted)
        assert [x.data for x in lifted] == [1.0, 2.0, 3.0]


def test_fused_mean_in_name_loss_equals_the_naive_mean():
    random.seed(0)
    model = peft.init_model(vocab_size=VOCAB)
    params = peft.parameters(model.values())
    fused = peft.name_loss(model, {}, NAME)
    fused.backward()
    fused_grads = grads(params)
    for p in params:
        p.grad = 0.0
    keys, vals = peft.empty_caches()
    per_position = [peft.cross_entropy(peft.gpt_step(model, {}, NAME[pos], pos, keys, vals),
                                       NAME[pos + 1]) for pos in range(len(NAME) - 1)]
    total = per_position[0]
    for loss in per_position[1:]:
        total = total + loss
    naive = total / len(per_position)
    naive.backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(fused_grads, grads(params))


def test_cross_entropy_and_softmax_match_naive_forms():
    raw, target = [0.3, -1.2, 2.2, 0.0, 0.9], 3
    z1, z2 = values(raw), values(raw)
    fused = peft.cross_entropy(z1, target)
    naive = -(naive_softmax(z2)[target].log())
    fused.backward()
    naive.backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(z1), grads(z2))


# --- every method's gradient against central finite differences ---

def check_against_finite_differences(loss_fn, params, count, seed):
    loss = loss_fn()
    loss.backward()
    chosen = random.Random(seed).sample(params, min(count, len(params)))
    for p in chosen:
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = loss_fn().data
        p.data = original - 1e-5
        down = loss_fn().data
        p.data = original
        assert math.isclose(analytic, (up - down) / 2e-5, rel_tol=1e-4, abs_tol=1e-8), p
    assert any(abs(p.grad) > 1e-6 for p in chosen)


@pytest.mark.parametrize("kind", [k for k in peft.METHODS if k != "dora"])
def test_method_gradient_matches_finite_differences(kind):
    frozen = frozen_base()
    model, additions = perturbed(kind, frozen)
    params = peft.method_parameters(kind, model, additions)
    check_against_finite_differences(lambda: peft.name_loss(model, additions, OTHER),
                                     params, 30, seed=7)


def test_dora_gradient_matches_finite_differences_with_the_norm_held_constant(monkeypatch):
    # DoRA's norm n = ||W0 + s B A|| is detached (no gradient through it, as PEFT does), so
    # the gradient is that of the loss with n fixed at its current value: finite differences
    # of exactly that function.
    frozen = frozen_base()
    model, additions = perturbed("dora", frozen)
    peft.refresh_norms(model, additions)
    monkeypatch.setattr(peft, "refresh_norms", lambda model, additions: None)
    params = peft.method_parameters("dora", model, additions)
    check_against_finite_differences(lambda: peft.name_loss(model, additions, OTHER),
                                     params, 40, seed=8)
    magnitudes = [m for _, _, _, mags in additions["dora"].values() for m in mags]
    assert any(abs(m.grad) > 1e-6 for m in magnitudes)


# --- parameter counts from their formulas ---

@pytest.mark.parametrize("settings", [{}, {"LORA_RANK": 4, "NUM_VIRTUAL": 3, "BOTTLENECK": 5,
                                           "LORA_TARGETS": ("wq", "wk", "wv")}])
def test_every_parameter_count_matches_its_formula(monkeypatch, settings):
    for name, value in settings.items():
        monkeypatch.setattr(peft, name, value)
    frozen = frozen_base()
    counts = {}
    for kind in peft.METHODS:
        random.seed(3)
        model, additions = peft.init_method(kind, frozen, BOS)
        counts[kind] = len(peft.method_parameters(kind, model, additions))
        assert counts[kind] == peft.formula_count(kind, VOCAB), kind
    if not settings:
        assert counts == {"full": 4192, "lora": 128, "dora": 160, "adapter": 164,
                          "prefix": 128, "prompt": 64, "ia3": 96, "probe": 432}


# --- starts, merges and the reference forward ---

def test_reference_forward_gives_the_base_models_logits_exactly():
    frozen = frozen_base()
    assert peft.logit_gap(frozen, {}, frozen, [NAME, OTHER]) == 0.0


@pytest.mark.parametrize("kind", ["lora", "dora", "ia3", "adapter", "full", "probe"])
def test_fresh_methods_start_exactly_at_the_base(kind):
    frozen = frozen_base()
    random.seed(4)
    model, additions = peft.init_method(kind, frozen, BOS)
    assert peft.logit_gap(peft.to_floats(model), peft.to_floats(additions), frozen,
                          [NAME, OTHER]) == 0.0


def test_prefix_and_prompt_start_near_the_base_and_exactly_there_at_position_zero():
    frozen = frozen_base()
    reference = peft.reference_logits(frozen, NAME)
    for kind in ("prefix", "prompt"):
        model, additions = peft.init_method(kind, frozen, BOS)
        additions = peft.to_floats(additions)
        keys, vals = peft.begin_name(frozen, additions)
        first = peft.gpt_step(frozen, additions, BOS, 0, keys, vals)
        # P identical copies of the start token's key and value beside its own: the same mix
        assert close(first, reference[0], 1e-12)
        gap = peft.logit_gap(frozen, additions, frozen, [NAME])
        assert 1e-6 < gap < 1.0   # later positions weigh the start token P + 1 times


def test_in_one_layer_prompt_tuning_is_a_prefix_of_projected_vectors():
    frozen = frozen_base()
    rng = random.Random(5)
    prompt = [[rng.gauss(0, 1) for _ in range(16)] for _ in range(3)]
    keys, vals = peft.begin_name(frozen, {"prompt": prompt})
    for vector, key, value in zip(prompt, keys[0], vals[0]):
        x = peft.rmsnorm(peft.rmsnorm(vector))
        assert close(key, peft.linear(x, frozen["layer0.wk"]), 1e-12)
        assert close(value, peft.linear(x, frozen["layer0.wv"]), 1e-12)


def test_dora_norm_is_taken_per_output_row_over_the_inputs():
    w0 = [(3.0, 4.0, 0.0), (1.0, 2.0, 2.0)]          # 2 outputs x 3 inputs
    down = [[1.0, 0.0, 0.0]]                           # A: r=1 x 3
    up = [[0.0], [1.0]]                                # B: 2 x 1
    assert peft.dora_norms(w0, down, [[0.0], [0.0]], 1.0) == [5.0, 3.0]
    assert peft.dora_norms(w0, down, up, 2.0) == [5.0, math.sqrt(9 + 4 + 4)]


def test_forming_the_dora_weight_first_would_not_start_exactly_at_the_base():
    # Why the forward pass computes (m / n) * (W0 x + s B A x): m / n is exactly 1.0 at the
    # start, while m * W0 / ||W0|| rounds some weights in their last bit.
    frozen = frozen_base()
    random.seed(0)
    _, additions = peft.init_method("dora", frozen, BOS)
    merged = peft.merge_dora(frozen, peft.to_floats(additions)["dora"])
    changed = sum(a != b for name in ("layer0.wq", "layer0.wv")
                  for row_a, row_b in zip(merged[name], frozen[name]) for a, b in zip(row_a, row_b))
    assert changed > 0
    assert 0.0 < peft.logit_gap(frozen, {}, merged, [NAME]) < 1e-12


def test_merged_dora_rows_have_the_trained_magnitudes():
    frozen = frozen_base()
    _, additions = perturbed("dora", frozen)
    dora = peft.to_floats(additions)["dora"]
    merged = peft.merge_dora(frozen, dora)
    for name, (_, _, _, magnitude) in dora.items():
        lengths = [math.sqrt(sum(w * w for w in row)) for row in merged[name]]
        assert close(lengths, [abs(m) for m in magnitude], 1e-12)   # |m|: perturbed, m < 0 occurs


@pytest.mark.parametrize("kind", ["lora", "dora", "ia3"])
def test_merged_weights_give_the_adapter_paths_logits(kind):
    frozen = frozen_base()
    model, additions = perturbed(kind, frozen)
    model, additions = peft.to_floats(model), peft.to_floats(additions)
    merged = peft.merged_weights(kind, frozen, additions)
    assert peft.logit_gap(model, additions, merged, [NAME, OTHER]) < 1e-12
    # and the method really changed the model, so the agreement means something
    assert peft.logit_gap(frozen, {}, merged, [NAME]) > 1e-3


def test_ia3_merge_holds_for_negative_hidden_scales():
    # fc2 diag(l) relu(h) = (fc2 diag(l)) relu(h) for any sign of l (folding l into fc1
    # instead would need l > 0)
    frozen = frozen_base()
    ia3 = [([1.0] * 16, [1.0] * 16, [(-1.0) ** i * 0.5 for i in range(64)])]
    merged = peft.merge_ia3(frozen, ia3)
    assert peft.logit_gap(frozen, {"ia3": ia3}, merged, [NAME]) < 1e-12


def test_methods_that_cannot_merge_return_none():
    frozen = frozen_base()
    for kind in ("adapter", "prefix", "prompt", "full", "probe"):
        assert peft.merged_weights(kind, frozen, {}) is None


# --- evaluation helpers ---

def test_gain_and_standard_error_from_paired_differences():
    gain, se = peft.gain_and_standard_error([3.0, 5.0, 4.0], [2.0, 3.0, 4.0], 10)
    assert gain == pytest.approx(0.3)
    diffs = [1.0, 2.0, 0.0]
    var = sum((d - 1.0) ** 2 for d in diffs) / 2
    assert se == pytest.approx(math.sqrt(3 * var) / 10)


def test_largest_turns_nan_into_inf():
    assert peft.largest([0.0, 1e-15]) == 1e-15
    assert peft.largest([math.nan, 1.0]) == math.inf
    assert peft.largest([1.0, math.nan]) == math.inf


def test_training_a_method_leaves_the_frozen_base_untouched(monkeypatch):
    frozen = frozen_base()
    before = [w for mat in frozen.values() for row in mat for w in row]
    monkeypatch.setattr(peft, "ADAPT_STEPS", 2)
    for kind in peft.METHODS:
        random.seed(6)
        peft.adapt(kind, frozen, BOS, [NAME, OTHER], 0.05)
    assert before == [w for mat in frozen.values() for row in mat for w in row]


def test_learning_rate_search_runs(monkeypatch, capsys, tmp_path):
    quick = {"NUM_STEPS": 2, "ADAPT_STEPS": 2, "HELDOUT_NAMES": 8, "CHECK_NAMES": 1,
             "NUM_SAMPLES": 1, "LR_GRID": (0.01,)}
    for name, value in quick.items():
        monkeypatch.setattr(peft, name, value)
    monkeypatch.chdir(tmp_path)
    results = peft.main()
    out = capsys.readouterr().out
    assert "Learning-rate search" in out and "lr 0.01:" in out
    assert results["lora_start_error"] == 0.0
