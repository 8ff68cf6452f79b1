"""microqlora: fused nodes, gradients through a frozen base, NF4 levels, quantisers, memory."""
import math
import random

import pytest

from support import close, grads, load_script, naive_softmax, values_of

mq = load_script("alignment/microqlora.py")
Value = mq.Value

# bitsandbytes' NF4 table, as hard-coded in get_4bit_type("nf4") in bitsandbytes 0.50.2
# (bitsandbytes/functional.py), float32 values. The script derives its levels instead; this
# is only the reference they are checked against.
BITSANDBYTES_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]
values = values_of(Value)


TOKENS = [26, 4, 12, 12, 0, 26]   # BOS e m m a BOS


# --- fused nodes against their naive forms ---

def test_const_dot_equals_naive_dot_and_leaves_the_constants_out_of_the_graph():
    rng = random.Random(2)
    constants = [rng.gauss(0, 1) for _ in range(16)]
    x1 = values(rng.gauss(0, 1) for _ in range(16))
    x2 = values(v.data for v in x1)
    wrapped = values(constants)
    fused, naive = mq.const_dot(constants, x1), mq.naive_dot(wrapped, x2)
    fused.backward()
    naive.backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(x1), grads(x2))
    assert all(child in x1 for child in fused._children) and len(fused._children) == 16
    # any_dot picks const_dot for a float side, dot for two Value sides, plain floats otherwise
    assert len(mq.any_dot(constants, x1)._children) == 16
    assert len(mq.any_dot(x1, constants)._children) == 16
    assert len(mq.any_dot(x1, x2)._children) == 32
    plain = mq.any_dot(constants, [v.data for v in x1])
    assert isinstance(plain, float) and math.isclose(plain, fused.data, rel_tol=1e-12)


def test_fused_softmax_equals_naive_softmax_and_its_float_form():
    rng = random.Random(3)
    raw = [rng.gauss(0, 2) for _ in range(6)]
    mix = [rng.gauss(0, 1) for _ in range(6)]
    z1, z2 = values(raw), values(raw)
    mq.dot(mq.softmax(z1), values(mix)).backward()
    p2 = naive_softmax(z2)
    mq.naive_dot(p2, values(mix)).backward()
    assert close([p.data for p in mq.softmax(values(raw))], [p.data for p in p2])
    assert close(mq.softmax(raw), [p.data for p in p2])
    assert close(grads(z1), grads(z2))


def test_fused_rmsnorm_equals_naive_rmsnorm_and_its_float_form():
    rng = random.Random(4)
    raw = [rng.gauss(0, 1) for _ in range(16)]
    mix = [rng.gauss(0, 1) for _ in range(16)]
    x1, x2 = values(raw), values(raw)
    y1 = mq.rmsnorm(x1)
    scale = (mq.naive_dot(x2, x2) / len(x2) + 1e-5) ** -0.5
    y2 = [xi * scale for xi in x2]
    mq.dot(y1, values(mix)).backward()
    mq.naive_dot(y2, values(mix)).backward()
    assert close([y.data for y in y1], [y.data for y in y2])
    assert close(mq.rmsnorm(raw), [y.data for y in y2])
    assert close(grads(x1), grads(x2))


def test_fused_mean_in_name_loss_equals_naive_mean():
    random.seed(0)
    model = mq.init_model(vocab_size=27)
    params = mq.parameters(model.values())
    fused = mq.name_loss(model, {}, TOKENS)
    fused.backward()
    fused_grads = grads(params)
    for p in params:
        p.grad = 0.0
    keys, vals = [[] for _ in range(mq.N_LAYER)], [[] for _ in range(mq.N_LAYER)]
    n = len(TOKENS) - 1
    naive = sum((mq.cross_entropy(mq.gpt_step(model, {}, TOKENS[i], i, keys, vals),
                                  TOKENS[i + 1]) for i in range(n)), Value(0.0)) / n
    naive.backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(fused_grads, grads(params))


# --- whole-model gradients: pretraining, and adapters through a frozen 4-bit base ---

def test_pretraining_gradient_matches_finite_differences():
    random.seed(0)
    model = mq.init_model(vocab_size=27)
    params = mq.parameters(model.values())
    mq.name_loss(model, {}, TOKENS).backward()
    rng = random.Random(5)
    for p in rng.sample(params, 25):
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = mq.name_loss(model, {}, TOKENS).data
        p.data = original - 1e-5
        down = mq.name_loss(model, {}, TOKENS).data
        p.data = original
        assert math.isclose(analytic, (up - down) / 2e-5, rel_tol=1e-4, abs_tol=1e-8)


def nf4_setup(seed=6):
    """A random base quantised to NF4, its dequantised floats, and fresh adapters."""
    random.seed(seed)
    base = mq.frozen_copy(mq.init_model(vocab_size=27))
    levels = mq.nf4_levels()
    store = mq.quantize_model(base, levels)
    adapters = mq.init_adapters(mq.LORA_RANK)
    # Give B nonzero values so that gradients reach A as well
    for _, up in adapters.values():
        for row in up:
            for b in row:
                b.data = random.gauss(0, 0.3)
    return base, levels, store, adapters


def test_adapter_gradients_through_the_dequantised_base_match_finite_differences():
    _, levels, store, adapters = nf4_setup()
    weights = mq.dequantize_model(store, levels)
    params = mq.adapter_parameters(adapters)
    mq.name_loss(weights, adapters, TOKENS).backward()
    assert any(p.grad != 0.0 for p in params)
    for p in params:
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = mq.name_loss(weights, adapters, TOKENS).data
        p.data = original - 1e-5
        down = mq.name_loss(weights, adapters, TOKENS).data
        p.data = original
        assert math.isclose(analytic, (up - down) / 2e-5, rel_tol=1e-4, abs_tol=1e-8)


def test_float_forward_equals_value_forward():
    random.seed(1)
    model = mq.init_model(vocab_size=27)
    weights = mq.frozen_copy(model)
    k1, v1 = [[] for _ in range(mq.N_LAYER)], [[] for _ in range(mq.N_LAYER)]
    k2, v2 = [[] for _ in range(mq.N_LAYER)], [[] for _ in range(mq.N_LAYER)]
    for pos, token in enumerate(TOKENS[:-1]):
        slow = [z.data for z in mq.gpt_step(model, {}, token, pos, k1, v1)]
        fast = mq.gpt_step(weights, {}, token, pos, k2, v2)
        assert all(isinstance(z, float) for z in fast)
        assert close(slow, fast, 1e-12)


# --- gradients never reach the frozen quantised base ---

def test_dequantised_base_is_plain_floats():
    _, levels, store, _ = nf4_setup()
    weights = mq.dequantize_model(store, levels)
    assert all(type(w) is float for rows in weights.values() for row in rows for w in row)


def test_only_the_adapters_are_leaves_that_persist_across_graphs():
    # Two graphs built from the same base and adapters: any Value they share as a leaf is
    # something the model holds on to (a parameter). Those must be exactly the adapters;
    # a base weight that leaked into the graph as a Value would show up here.
    _, levels, store, adapters = nf4_setup()
    weights = mq.dequantize_model(store, levels)

    def leaves(root):
        seen, stack, found = set(), [root], set()
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if not node._children:
                found.add(id(node))
            stack.extend(node._children)
        return found

    first = mq.name_loss(weights, adapters, TOKENS)
    second = mq.name_loss(weights, adapters, TOKENS[:4] + [26])
    shared = leaves(first) & leaves(second)
    assert shared == {id(p) for p in mq.adapter_parameters(adapters)}


def test_adaptation_never_changes_the_quantised_base(monkeypatch):
    _, levels, store, adapters = nf4_setup()
    snapshot = {name: (q["codes"], list(q["absmax"]), dict(q["scales"]),
                       list(q["scales"]["codes"])) for name, q in store.items()}
    monkeypatch.setattr(mq, "ADAPT_STEPS", 3)
    before = [p.data for p in mq.adapter_parameters(adapters)]
    mq.adapt("test", lambda: mq.dequantize_model(store, levels), adapters,
             [TOKENS, TOKENS[:4] + [26]], 0.0)
    assert [p.data for p in mq.adapter_parameters(adapters)] != before   # adapters moved
    for name, q in store.items():
        codes, absmax, scales, scale_codes = snapshot[name]
        assert q["codes"] == codes and q["absmax"] == absmax
        assert q["scales"]["codes"] == scale_codes
        assert q["scales"]["offset"] == scales["offset"]
        assert q["scales"]["constants"] == scales["constants"]


def test_fresh_adapters_reproduce_the_base_exactly():
    random.seed(7)
    base = mq.frozen_copy(mq.init_model(vocab_size=27))
    adapters = mq.init_adapters(mq.LORA_RANK)             # B = 0
    assert all(b.data == 0.0 for _, up in adapters.values() for row in up for b in row)
    with_adapters = mq.name_loss(base, mq.frozen_adapter_floats(adapters), TOKENS)
    assert with_adapters == mq.name_loss(base, {}, TOKENS)


def test_copied_adapters_start_equal_but_are_independent():
    random.seed(8)
    adapters = mq.init_adapters(mq.LORA_RANK)
    twin = mq.copy_adapters(adapters)
    a, b = mq.adapter_parameters(adapters), mq.adapter_parameters(twin)
    assert [p.data for p in a] == [p.data for p in b]
    assert not {id(p) for p in a} & {id(p) for p in b}
    assert len(a) == 2 * mq.N_LAYER * len(mq.LORA_TARGETS) * mq.LORA_RANK * mq.N_EMBD


# --- NF4 levels ---

def test_normal_quantile_inverts_the_normal_cdf():
    assert math.isclose(mq.normal_quantile(0.975), 1.959963984540054, rel_tol=1e-12)
    assert math.isclose(mq.normal_quantile(mq.normal_cdf(1.0)), 1.0, rel_tol=1e-12)
    for p in (0.01, 0.3, 0.6, 0.9677083, 0.999):
        assert math.isclose(mq.normal_cdf(mq.normal_quantile(p)), p, rel_tol=1e-12)
        assert math.isclose(mq.normal_quantile(1 - p), -mq.normal_quantile(p), abs_tol=1e-12)


def test_nf4_has_16_increasing_levels_with_an_exact_zero_from_minus_one_to_one():
    levels = mq.nf4_levels()
    assert len(levels) == 16
    assert all(a < b for a, b in zip(levels, levels[1:]))
    assert levels[0] == -1.0 and levels[-1] == 1.0
    assert levels[7] == 0.0 and levels.count(0.0) == 1
    assert sum(v < 0 for v in levels) == 7 and sum(v > 0 for v in levels) == 8


def test_nf4_levels_are_the_normal_quantiles_of_each_side():
    # Structure: each side is -Q or Q at evenly spaced probabilities from 0.5 to the offset,
    # with 8 steps on the positive side and 7 on the negative, all divided by Q(offset).
    levels, offset = mq.nf4_levels(), mq.NF4_OFFSET
    top = mq.normal_quantile(offset)
    for i, level in enumerate(reversed(levels[8:])):            # positive, from the top
        assert math.isclose(level * top, mq.normal_quantile(offset + (0.5 - offset) * i / 8),
                            rel_tol=1e-12)
    for i, level in enumerate(levels[:7]):                      # negative, from the bottom
        assert math.isclose(-level * top, mq.normal_quantile(offset + (0.5 - offset) * i / 7),
                            rel_tol=1e-12)
    # The two sides mirror each other only at the ends: the middle levels differ
    assert levels[0] == -levels[-1] and levels[6] != -levels[8]


def test_nf4_levels_match_bitsandbytes_table_to_float32_precision():
    for derived, reference in zip(mq.nf4_levels(), BITSANDBYTES_NF4):
        assert abs(derived - reference) < 1e-6


def test_nf4_uses_its_levels_more_evenly_and_with_less_error_than_int4_on_gaussian_blocks():
    rng = random.Random(9)
    flat = [rng.gauss(0, 1) for _ in range(64 * 200)]
    results = {}
    for label, levels in (("nf4", mq.nf4_levels()), ("int4", mq.int4_levels())):
        codes, absmax = mq.quantize_blocks(flat, levels)
        restored = [levels[c] * absmax[i // mq.NF4_BLOCK] for i, c in enumerate(codes)]
        usage = [codes.count(c) / len(codes) for c in range(16)]
        entropy = -sum(u * math.log2(u) for u in usage if u)
        mse = sum((w - r) ** 2 for w, r in zip(flat, restored)) / len(flat)
        results[label] = (entropy, mse)
    assert results["nf4"][0] > results["int4"][0] + 0.2
    assert results["nf4"][1] < results["int4"][1]


# --- the block quantiser and its round trip ---

@pytest.mark.parametrize("levels_name", ["nf4_levels", "int4_levels", "uniform16_levels"])
def test_quantiser_picks_the_nearest_level_of_each_block(levels_name):
    levels = getattr(mq, levels_name)()
    rng = random.Random(10)
    flat = [rng.gauss(0, 0.1) for _ in range(64 * 5 + 17)] + [0.0, 1e-12]   # a partial block
    codes, absmax = mq.quantize_blocks(flat, levels)
    assert len(absmax) == 6 and len(codes) == len(flat)
    assert all(0 <= c <= 15 for c in codes)
    for i, (w, c) in enumerate(zip(flat, codes)):
        scale = absmax[i // mq.NF4_BLOCK]
        best = min(abs(level - w / scale) for level in levels)
        assert abs(levels[c] - w / scale) <= best + 1e-12
    for b in range(len(absmax)):
        block = flat[b * 64:(b + 1) * 64]
        assert absmax[b] == mq.to_float32(max(abs(w) for w in block))


def test_nf4_round_trip_keeps_zeros_and_block_maxima_exact():
    levels = mq.nf4_levels()
    rng = random.Random(11)
    rows = [[rng.gauss(0, 0.1) for _ in range(16)] for _ in range(8)]
    rows[3][5] = 0.0
    rows[6][2] = 0.5                                           # the largest weight of block 1
    q = mq.quantize_matrix(rows, levels)
    restored = mq.dequantize_matrix(q, levels, double_quantized=False)
    assert restored[3][5] == 0.0
    assert restored[6][2] == mq.to_float32(0.5)
    # Every weight is within half the widest gap between neighbouring levels of its block
    gap = max(b - a for a, b in zip(levels, levels[1:]))
    for r, (row, row_hat) in enumerate(zip(rows, restored)):
        for c, (w, w_hat) in enumerate(zip(row, row_hat)):
            scale = q["absmax"][(r * 16 + c) // mq.NF4_BLOCK]
            assert abs(w - w_hat) <= 0.5 * gap * scale + 1e-12


@pytest.mark.parametrize("count", [0, 1, 2, 7, 64, 129])
def test_pack_and_unpack_nibbles_round_trip(count):
    rng = random.Random(count)
    codes = [rng.randrange(16) for _ in range(count)]
    blob = mq.pack_nibbles(codes)
    assert len(blob) == (count + 1) // 2                    # half a byte per code
    assert mq.unpack_nibbles(blob, count) == codes


# --- double quantisation and the byte counts ---

def test_double_quantised_scales_are_within_half_a_step():
    rng = random.Random(12)
    absmax = [abs(rng.gauss(0.2, 0.05)) + 0.01 for _ in range(600)]   # three blocks of 256
    dq = mq.quantize_scales(absmax)
    assert len(dq["constants"]) == 3 and len(dq["codes"]) == 600
    assert all(isinstance(z, int) and -127 <= z <= 127 for z in dq["codes"])
    assert dq["offset"] == mq.to_float32(sum(absmax) / len(absmax))
    restored = mq.dequantize_scales(dq)
    for i, (a, r) in enumerate(zip(absmax, restored)):
        assert abs(a - r) <= 0.5 * dq["constants"][i // mq.SCALE_BLOCK] * (1 + 1e-9)
    # the largest centred scale of each block lands exactly on +-127
    for b in range(3):
        assert max(abs(z) for z in dq["codes"][b * 256:(b + 1) * 256]) == 127


def test_stored_bytes_count_codes_scales_and_constants():
    levels = mq.nf4_levels()
    rng = random.Random(13)
    weights = {"m": [[rng.gauss(0, 1) for _ in range(64)] for _ in range(300)]}  # 300 blocks
    store = mq.quantize_model(weights, levels)
    n = 64 * 300
    assert mq.stored_bytes(store, double_quantized=False) == n // 2 + 4 * 300
    assert mq.stored_bytes(store) == n // 2 + 300 + 4 * 2 + 4    # 2 blocks of 256 scales
    # Per weight: 4 + 32/64 = 4.5 bits single-level, about 4.127 bits double-quantised
    assert math.isclose(32 * n / (8 * mq.stored_bytes(store, False)), 32 / 4.5)
    assert 7.7 < 4 * n / mq.stored_bytes(store) < 32 / 4.125


def test_memory_rows_count_sixteen_bytes_per_trainable_number():
    rows = mq.memory_rows(1000, 10, 4000, 600)
    totals = {label: sum(r) for label, *r in rows}
    assert totals["full fine-tuning"] == 16 * 1000
    assert totals["LoRA (float32 base)"] == 4000 + 16 * 10
    assert totals["QLoRA (NF4 base)"] == 600 + 16 * 10
    # LoRA alone can never save 4x: the float32 base is 4 of full fine-tuning's 16 bytes
    assert totals["full fine-tuning"] / totals["LoRA (float32 base)"] < 4


def test_mean_squared_error_and_code_usage():
    weights = {"m": [[1.0, 2.0], [3.0, 4.0]]}
    assert mq.mean_squared_error(weights, {"m": [[1.0, 2.5], [3.0, 3.0]]}) == (0.25 + 1) / 4
    store = mq.quantize_model({"m": [[0.0] * 8 + [1.0] * 8]}, mq.nf4_levels())
    usage, entropy = mq.code_usage(store, 16)
    assert usage[7] == 8 and usage[15] == 8 and entropy == 1.0


# --- the gradient row: QLoRA's training gradient against finite differences ---

def test_first_step_gradient_is_the_nf4_models_and_not_the_float_bases(monkeypatch):
    # The check main() runs: the gradient adapt() trains with, on the dequantised NF4 base,
    # against central finite differences of the NF4 model's float loss. Training on the
    # float base instead gives a gradient that the same reference tells apart.
    base, levels, store, adapters = nf4_setup()
    nf4_base = mq.dequantize_model(store, levels)
    start = mq.frozen_adapter_floats(adapters)
    reference = mq.finite_difference_gradient(nf4_base, start, TOKENS)
    monkeypatch.setattr(mq, "ADAPT_STEPS", 1)
    _, through_nf4 = mq.adapt("test", lambda: mq.dequantize_model(store, levels),
                              mq.copy_adapters(adapters), [TOKENS], 0.0)
    _, through_float = mq.adapt("test", lambda: base, mq.copy_adapters(adapters), [TOKENS], 0.0)
    assert len(reference) == len(mq.adapter_parameters(adapters))
    assert mq.relative_gradient_error(through_nf4, reference) < 1e-6
    assert mq.relative_gradient_error(through_float, reference) > 1e-3
    # the reference leaves the adapters as it found them
    assert start == mq.frozen_adapter_floats(adapters)


def test_relative_gradient_error_fails_a_non_finite_gradient():
    assert mq.relative_gradient_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert mq.relative_gradient_error([1.0, math.nan], [1.0, 2.0]) == math.inf
    assert mq.relative_gradient_error([1.0, math.inf], [1.0, 2.0]) == math.inf
    # adapters that cannot learn: a zero reference is met by a zero gradient only
    assert mq.relative_gradient_error([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert mq.relative_gradient_error([0.0, 1e-9], [0.0, 0.0]) == math.inf
