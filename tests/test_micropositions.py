"""Fast checks specific to foundational/micropositions.py.

Every fused node of this script (attention_score, rope, add_constant) is compared with its
naive form and with central finite differences, and the whole string loss of each position
scheme is checked against finite differences. The claims the run's explanation rests on are
checked on known cases: a model with no positions is blind to the order of earlier letters
(and the others are not), the order-blind ceiling, the labels, ALiBi's slopes, RoPE's
relative property and its agreement with the complex-number formula.
"""
import cmath
import math
import random

import pytest

from support import close, grads, load_script, values_of

mp = load_script("foundational/micropositions.py")
Value = mp.Value
values = values_of(Value)
STEP = 1e-6


def numeric(f, x):
    return (f(x + STEP) - f(x - STEP)) / (2 * STEP)


@pytest.mark.parametrize("bias", [0.0, -0.75])
def test_attention_score_equals_naive_form_and_finite_differences(bias):
    rng = random.Random(3)
    raw_q = [rng.gauss(0, 1) for _ in range(4)]
    raw_k = [rng.gauss(0, 1) for _ in range(4)]
    q1, k1, q2, k2 = values(raw_q), values(raw_k), values(raw_q), values(raw_k)
    fused = mp.attention_score(q1, k1, bias)
    naive = mp.naive_dot(q2, k2) * (1.0 / math.sqrt(4)) + bias
    (fused * 1.3).backward()
    (naive * 1.3).backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(q1 + k1), grads(q2 + k2))
    for i in range(4):
        def at(t):
            return mp.attention_score(values(raw_q[:i] + [t] + raw_q[i + 1:]), values(raw_k),
                                      bias).data
        assert math.isclose(q1[i].grad / 1.3, numeric(at, raw_q[i]), rel_tol=1e-6)


@pytest.mark.parametrize("pos", [0, 1, 5, 37])
def test_fused_rope_equals_naive_rotation_and_finite_differences(pos):
    rng = random.Random(pos)
    raw = [rng.gauss(0, 1) for _ in range(mp.HEAD_DIM)]
    mix = [rng.gauss(0, 1) for _ in range(mp.HEAD_DIM)]
    x1, x2 = values(raw), values(raw)
    fused = mp.rope(x1, pos)
    naive = []
    for i in range(0, mp.HEAD_DIM, 2):
        theta = pos * mp.ROPE_BASE ** (-i / mp.HEAD_DIM)
        c, s = math.cos(theta), math.sin(theta)
        naive += [x2[i] * c - x2[i + 1] * s, x2[i] * s + x2[i + 1] * c]
    mp.naive_dot(fused, values(mix)).backward()
    mp.naive_dot(naive, values(mix)).backward()
    assert close([v.data for v in fused], [v.data for v in naive], 1e-12)
    assert close([v.data for v in fused], mp.rotate_floats(raw, pos), 1e-12)
    assert close(grads(x1), grads(x2))
    for j in range(mp.HEAD_DIM):
        def at(t):
            return sum(m * v for m, v in zip(mix, mp.rotate_floats(raw[:j] + [t] + raw[j + 1:],
                                                                   pos)))
        assert math.isclose(x1[j].grad, numeric(at, raw[j]), rel_tol=1e-6, abs_tol=1e-9)


def test_rope_matches_complex_rotation_written_independently():
    rng = random.Random(11)
    x = [rng.gauss(0, 1) for _ in range(mp.HEAD_DIM)]
    for pos in (0, 3, 16, 100):
        rotated = mp.rotate_floats(x, pos)
        for i in range(mp.HEAD_DIM // 2):
            z = complex(x[2 * i], x[2 * i + 1]) * cmath.exp(1j * pos / 10000 ** (2 * i / 4))
            assert abs(z - complex(rotated[2 * i], rotated[2 * i + 1])) < 1e-12


def test_add_constant_equals_naive_addition():
    raw, consts = [0.3, -1.2, 2.0], [0.5, 0.25, -1.0]
    x1, x2 = values(raw), values(raw)
    fused = mp.add_constant(x1, consts)
    naive = [x + c for x, c in zip(x2, consts)]
    mp.naive_dot(fused, values([1.0, 2.0, 3.0])).backward()
    mp.naive_dot(naive, values([1.0, 2.0, 3.0])).backward()
    assert close([v.data for v in fused], [v.data for v in naive], 1e-12)
    assert close(grads(x1), grads(x2))


def test_rope_check_passes_and_catches_a_rotation_that_ignores_position(monkeypatch):
    rel, spread, ref = mp.check_rope(random.Random(0))
    assert rel < 1e-12 and ref < 1e-12 and spread > 0.1

    def broken(pos):
        return [(math.cos(mp.ROPE_BASE ** (-2 * i / mp.HEAD_DIM)),
                 math.sin(mp.ROPE_BASE ** (-2 * i / mp.HEAD_DIM)))
                for i in range(mp.HEAD_DIM // 2)]
    monkeypatch.setattr(mp, "rope_angles", broken)
    rel, spread, ref = mp.check_rope(random.Random(0))
    assert ref > 0.1 and spread < 1e-12   # relative, trivially: the score ignores position


def test_alibi_slopes_follow_press_et_al():
    assert mp.ALIBI_SLOPES == [1 / 4, 1 / 16, 1 / 64, 1 / 256]
    assert mp.alibi_bias(0, 7, 3) == -1.0 and mp.alibi_bias(3, 5, 5) == 0.0


def test_labels():
    a, b, e, f = 0, 1, 4, 5
    tokens = (mp.BOS, e, a, f, b, f)
    assert [mp.echo_label(tokens, p) for p in range(6)] == [None, None, None, e, a, f]
    assert [mp.marker_label(tokens, p) for p in range(6)] == [None, None, None, a, a, b]


def test_order_blind_ceiling_on_a_hand_example():
    # Echo labels at positions 3 and 4 of BOS, x, x, y, z: bags {x, x} -> 1 and {x, x, y} -> 2/3
    tokens = (mp.BOS, 0, 0, 1, 2)
    assert math.isclose(mp.order_blind_ceiling([tokens], mp.echo_label), (1 + 2 / 3) / 2)


def outputs_at_last(model, tokens, positions):
    outputs, _ = mp.forward(model, tokens, positions, mp.echo_label)
    return [z.data for z in outputs[-1][0]]


@pytest.mark.parametrize("positions", mp.POSITIONS)
def test_only_the_model_without_positions_is_blind_to_earlier_order(positions):
    # Swap two earlier letters: the no-position model's output at the last position cannot
    # change (attention is a weighted average over a set), every other scheme's does.
    model, _ = mp.init_model(positions)
    first = outputs_at_last(model, (mp.BOS, 0, 1, 2, 3, 4), positions)
    swapped = outputs_at_last(model, (mp.BOS, 2, 1, 0, 3, 4), positions)
    difference = max(abs(x - y) for x, y in zip(first, swapped))
    if positions == "none":
        assert difference < 1e-12
    else:
        assert difference > 1e-6


def test_every_model_starts_from_the_same_shared_weights():
    models = [mp.init_model(p)[0] for p in mp.POSITIONS]
    for name in ("wte", "wq", "wk", "wv", "wo", "fc1", "fc2", "lm_head"):
        reference = [[v.data for v in row] for row in models[0][name]]
        for model in models[1:]:
            assert [[v.data for v in row] for row in model[name]] == reference
    assert "wpe" in models[1] and all("wpe" not in m for i, m in enumerate(models) if i != 1)


@pytest.mark.parametrize("positions", mp.POSITIONS)
@pytest.mark.parametrize("label_of", [mp.echo_label, mp.marker_label], ids=["echo", "marker"])
def test_string_loss_gradient_matches_finite_differences(positions, label_of):
    model, params = mp.init_model(positions)
    for p in params:   # larger weights than at init, so that attention is far from uniform
        p.data *= 6.0
    tokens = (mp.BOS, 0, 5, 2, 0, 7, 3)
    loss = mp.string_loss(model, tokens, positions, label_of)
    loss.backward()
    for p in random.Random(5).sample(params, 30):
        analytic, original = p.grad, p.data
        p.data = original + 1e-6
        up = mp.string_loss(model, tokens, positions, label_of).data
        p.data = original - 1e-6
        down = mp.string_loss(model, tokens, positions, label_of).data
        p.data = original
        assert math.isclose(analytic, (up - down) / 2e-6, rel_tol=1e-4, abs_tol=1e-8)
