"""microlora: fused nodes, the frozen-float path, the adapter's gradients, merging and freezing."""
import math
import random

import pytest

from support import close, grads, load_script, naive_softmax, values_of

lora = load_script("alignment/microlora.py")
Value = lora.Value
BOS = 26
NAME = [BOS, 4, 12, 12, 0, BOS]      # BOS e m m a BOS
OTHER = [BOS, 13, 14, 0, 7, BOS]     # BOS n o a h BOS
values = values_of(Value)


def base_model(seed=0):
    random.seed(seed)
    return lora.init_model(vocab_size=27)


def trained_adapters(rank, seed=1):
    """Adapters with a random, non-zero B, so every gradient path is exercised."""
    random.seed(seed)
    adapters = lora.init_adapters(rank)
    for p in lora.adapter_parameters(adapters):
        if p.data == 0.0:
            p.data = random.gauss(0.0, 0.3)
    return adapters


# --- fused nodes against their naive forms ---

def test_const_dot_equals_naive_dot_with_constant_weights():
    rng = random.Random(2)
    consts, raw_x = [rng.gauss(0, 1) for _ in range(16)], [rng.gauss(0, 1) for _ in range(16)]
    x1, x2 = values(raw_x), values(raw_x)
    fused = lora.const_dot(consts, x1)
    naive = lora.naive_dot(values(consts), x2)
    fused.backward()
    naive.backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(x1), grads(x2))
    assert len(fused._children) == 16     # the constants are not in the graph


def test_any_dot_gives_the_same_number_for_every_mix_of_floats_and_values():
    rng = random.Random(3)
    a, b = [rng.gauss(0, 1) for _ in range(8)], [rng.gauss(0, 1) for _ in range(8)]
    expected = sum(x * y for x, y in zip(a, b))
    for left in (a, values(a)):
        for right in (b, values(b)):
            out = lora.any_dot(left, right)
            number = out.data if isinstance(out, Value) else out
            assert math.isclose(number, expected, rel_tol=1e-12)
    assert isinstance(lora.any_dot(a, b), float)


def test_fused_lora_add_equals_naive_add_for_frozen_and_trainable_inputs():
    for frozen_is_value in (False, True):
        u1, u2 = Value(0.7), Value(0.7)
        o1 = Value(-1.3) if frozen_is_value else -1.3
        o2 = Value(-1.3) if frozen_is_value else -1.3
        fused = lora.lora_add(o1, u1, 0.5)
        naive = o2 + 0.5 * u2
        (fused * 2.0).backward()
        (naive * 2.0).backward()
        assert fused.data == naive.data
        assert u1.grad == u2.grad == 1.0
        if frozen_is_value:
            assert o1.grad == o2.grad == 2.0
        assert len(fused._children) == (2 if frozen_is_value else 1)
    assert lora.lora_add(1.0, 2.0, 0.25) == 1.5


def test_fused_softmax_equals_naive_and_float_softmax():
    rng = random.Random(4)
    raw = [rng.gauss(0, 2) for _ in range(6)]
    mix = [rng.gauss(0, 1) for _ in range(6)]
    z1, z2 = values(raw), values(raw)
    p1, p2 = lora.softmax(z1), naive_softmax(z2)
    lora.dot(p1, values(mix)).backward()
    lora.naive_dot(p2, values(mix)).backward()
    assert close([p.data for p in p1], [p.data for p in p2])
    assert close(grads(z1), grads(z2))
    assert close(lora.softmax(raw), [p.data for p in p1], 1e-15)


def test_fused_cross_entropy_equals_naive_float_and_finite_differences():
    raw, target = [0.3, -1.2, 2.2, 0.0, 0.9], 3
    z1, z2 = values(raw), values(raw)
    fused = lora.cross_entropy(z1, target)
    naive = -(naive_softmax(z2)[target].log())
    fused.backward()
    naive.backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert lora.cross_entropy(raw, target) == fused.data
    assert close(grads(z1), grads(z2))
    for j in range(len(raw)):
        def loss_at(t):
            return lora.cross_entropy(raw[:j] + [t] + raw[j + 1:], target)
        numeric = (loss_at(raw[j] + 1e-6) - loss_at(raw[j] - 1e-6)) / 2e-6
        assert math.isclose(z1[j].grad, numeric, rel_tol=1e-5, abs_tol=1e-7)


def test_softmax_and_cross_entropy_are_stable_for_huge_logits():
    loss = lora.cross_entropy(values([1000.0, 1001.0, 999.0, -1000.0]), 1)
    assert math.isclose(loss.data, math.log(1 + math.exp(-1) + math.exp(-2)), rel_tol=1e-12)
    assert math.isfinite(lora.cross_entropy([5000.0, -5000.0], 1))


def test_fused_rmsnorm_equals_naive_and_float_rmsnorm():
    rng = random.Random(5)
    raw = [rng.gauss(0, 1) for _ in range(16)]
    mix = [rng.gauss(0, 1) for _ in range(16)]
    x1, x2 = values(raw), values(raw)
    y1 = lora.rmsnorm(x1)
    scale = (lora.naive_dot(x2, x2) / len(x2) + 1e-5) ** -0.5
    y2 = [xi * scale for xi in x2]
    lora.dot(y1, values(mix)).backward()
    lora.naive_dot(y2, values(mix)).backward()
    assert close([y.data for y in y1], [y.data for y in y2])
    assert close(grads(x1), grads(x2))
    assert close(lora.rmsnorm(raw), [y.data for y in y1], 1e-15)


def test_fused_mean_in_name_loss_equals_the_naive_mean():
    model = base_model()
    params = lora.parameters(model.values())
    fused = lora.name_loss(model, {}, NAME)
    fused.backward()
    fused_grads = grads(params)
    for p in params:
        p.grad = 0.0
    keys, vals = [[]], [[]]
    per_position = [lora.cross_entropy(lora.gpt_step(model, {}, NAME[pos], pos, keys, vals),
                                       NAME[pos + 1]) for pos in range(len(NAME) - 1)]
    total = per_position[0]
    for loss in per_position[1:]:
        total = total + loss
    naive = total / len(per_position)
    naive.backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(fused_grads, grads(params))


# --- whole-model gradients against finite differences ---

def check_against_finite_differences(loss_fn, params, count, seed):
    loss = loss_fn()
    loss.backward()
    for p in random.Random(seed).sample(params, count):
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = loss_fn().data
        p.data = original - 1e-5
        down = loss_fn().data
        p.data = original
        assert math.isclose(analytic, (up - down) / 2e-5, rel_tol=1e-4, abs_tol=1e-8)


def test_full_model_gradient_matches_finite_differences():
    model = base_model()
    check_against_finite_differences(lambda: lora.name_loss(model, {}, NAME),
                                     lora.parameters(model.values()), 25, seed=6)


def test_adapter_gradient_on_a_frozen_model_matches_finite_differences():
    frozen = lora.frozen_copy(base_model())
    adapters = trained_adapters(rank=2)
    params = lora.adapter_parameters(adapters)
    check_against_finite_differences(lambda: lora.name_loss(frozen, adapters, OTHER),
                                     params, 30, seed=7)
    a_entries = [w for down, _, _ in adapters.values() for row in down for w in row]
    assert any(abs(w.grad) > 1e-6 for w in a_entries)   # with B != 0, A learns too


# --- the LoRA facts the script states ---

def test_float_path_gives_the_same_loss_as_the_value_path():
    model = base_model()
    frozen = lora.frozen_copy(model)
    as_value = lora.name_loss(model, {}, NAME).data
    as_float = lora.name_loss(frozen, {}, NAME)
    assert isinstance(as_float, float)
    assert math.isclose(as_value, as_float, rel_tol=1e-12)


def test_fresh_adapters_reproduce_the_base_model_exactly():
    frozen = lora.frozen_copy(base_model())
    random.seed(2)
    fresh = lora.init_adapters(2)
    assert all(w.data == 0.0 for _, up, _ in fresh.values() for row in up for w in row)
    assert any(w.data != 0.0 for down, _, _ in fresh.values() for row in down for w in row)
    # exact equality, not closeness: W0 x + 1.0 * 0.0 is W0 x bit for bit
    assert lora.max_logit_difference(frozen, {}, frozen, lora.frozen_adapters(fresh),
                                     [NAME, OTHER]) == 0.0
    assert lora.name_loss(frozen, fresh, NAME).data == lora.name_loss(frozen, {}, NAME)


def test_merged_matrix_gives_the_same_logits_as_the_adapter_path():
    frozen = lora.frozen_copy(base_model())
    for rank in (1, 2, 4):
        adapters = trained_adapters(rank, seed=rank)
        merged = lora.merge(frozen, adapters)
        error = lora.max_logit_difference(frozen, lora.frozen_adapters(adapters), merged, {},
                                          [NAME, OTHER])
        assert error < 1e-12
        # and the adapter really changes the model, so the agreement means something
        assert lora.max_logit_difference(frozen, {}, merged, {}, [NAME]) > 1e-3


def test_merged_update_has_rank_one_at_rank_one():
    frozen = lora.frozen_copy(base_model())
    merged = lora.merge(frozen, trained_adapters(rank=1))
    delta = [[m - w for m, w in zip(mrow, wrow)]
             for mrow, wrow in zip(merged["layer0.wq"], frozen["layer0.wq"])]
    # every 2 x 2 minor of a rank-1 matrix is zero
    for i in range(1, len(delta)):
        for k in range(1, len(delta[0])):
            minor = delta[0][0] * delta[i][k] - delta[0][k] * delta[i][0]
            assert abs(minor) < 1e-12


def test_merge_and_lora_training_leave_the_frozen_weights_untouched(monkeypatch):
    frozen = lora.frozen_copy(base_model())
    before = [w for mat in frozen.values() for row in mat for w in row]
    random.seed(3)
    monkeypatch.setattr(lora, "ADAPT_STEPS", 3)
    adapters, _ = lora.adapt_with_lora(frozen, 2, [NAME, OTHER], 0.03, "test")
    lora.merge(frozen, adapters)
    after = [w for mat in frozen.values() for row in mat for w in row]
    assert before == after
    assert any(w.data != 0.0 for _, up, _ in adapters.values() for row in up for w in row)


def test_at_the_start_only_b_gets_a_gradient_and_both_zero_never_learns():
    frozen = lora.frozen_copy(base_model())
    random.seed(4)
    adapters = lora.init_adapters(2)
    lora.name_loss(frozen, adapters, OTHER).backward()
    a_grads = [w.grad for down, _, _ in adapters.values() for row in down for w in row]
    b_grads = [w.grad for _, up, _ in adapters.values() for row in up for w in row]
    assert all(g == 0.0 for g in a_grads)           # dL/dA goes through B = 0
    assert any(abs(g) > 1e-6 for g in b_grads)      # dL/dB = dL/dh (A x)^T is not zero
    for p in lora.adapter_parameters(adapters):
        p.data, p.grad = 0.0, 0.0
    lora.name_loss(frozen, adapters, OTHER).backward()
    assert all(p.grad == 0.0 for p in lora.adapter_parameters(adapters))


def test_trainable_parameter_count_is_r_times_d_plus_k_per_matrix():
    for rank in (1, 2, 8):
        random.seed(0)
        count = len(lora.adapter_parameters(lora.init_adapters(rank)))
        assert count == len(lora.LORA_TARGETS) * rank * (lora.N_EMBD + lora.N_EMBD)
    assert len(lora.parameters(base_model().values())) == 4192


# --- data and evaluation helpers ---

def test_split_by_first_letter_and_hold_out():
    a, b = lora.split_by_first_letter(["anna", "mia", "noah", "zoe", "emma"])
    assert a == ["anna", "mia", "emma"] and b == ["noah", "zoe"]
    train, held = lora.hold_out(["anna", "mia", "emma", "anna", "lea"], 2)
    assert train == ["anna", "mia", "emma"] and held == ["lea"]   # repeated "anna" dropped


def test_heldout_losses_weigh_tokens_equally_and_separate_the_first_letter():
    frozen = lora.frozen_copy(base_model())
    short, long = [BOS, 0, BOS], NAME
    total, first, rest = lora.heldout_losses(frozen, {}, [short, long])
    per_token = []
    for tokens in (short, long):
        keys, vals = [[]], [[]]
        per_token.append([lora.cross_entropy(lora.gpt_step(frozen, {}, tokens[p], p, keys, vals),
                                             tokens[p + 1]) for p in range(len(tokens) - 1)])
    flat = per_token[0] + per_token[1]
    assert total == pytest.approx(sum(flat) / len(flat), rel=1e-12)
    assert first == pytest.approx((per_token[0][0] + per_token[1][0]) / 2, rel=1e-12)
    later = per_token[0][1:] + per_token[1][1:]
    assert rest == pytest.approx(sum(later) / len(later), rel=1e-12)


def test_first_letter_probabilities_match_the_softmax_after_bos():
    frozen = lora.frozen_copy(base_model())
    probs = lora.first_letter_probs(frozen, BOS)
    full = lora.softmax(lora.gpt_step(frozen, {}, BOS, 0, [[]], [[]]))
    assert len(probs) == 26 and probs == full[:26]


def test_learning_rate_search_runs_and_prints_both_methods(monkeypatch, capsys, tmp_path):
    quick = {"NUM_STEPS": 2, "ADAPT_STEPS": 2, "HELDOUT_NAMES": 8, "MERGE_CHECK_NAMES": 1,
             "NUM_SAMPLES": 1, "SWEEP_RANKS": (2,), "LR_GRID": (0.01,)}
    for name, value in quick.items():
        monkeypatch.setattr(lora, name, value)
    monkeypatch.chdir(tmp_path)
    results = lora.main()
    out = capsys.readouterr().out
    assert "Learning-rate search" in out and "lr 0.01 " in out
    assert results["adapter_start_error"] == 0.0


def test_largest_difference_fails_a_non_finite_value():
    # max(0.0, nan) is 0.0: the merge, start and drift rows must see a NaN, not skip it
    assert lora.largest([0.0, 1e-15, 2e-15]) == 2e-15
    assert lora.largest([math.nan, 1.0]) == math.inf
    assert lora.largest([1.0, math.nan]) == math.inf
    frozen = lora.frozen_copy(base_model())
    broken = dict(frozen)
    broken["lm_head"] = [tuple(math.nan for _ in row) for row in frozen["lm_head"]]
    assert lora.max_logit_difference(frozen, {}, broken, {}, [NAME]) == math.inf
