"""Fast checks specific to systems/microparallel.py.

The hand-derived gradients of one block and of the whole stack are checked against finite
differences (the full block and a tensor-parallel slice of it). The ring collectives are
checked against a plain sum for several worker counts, with their traffic against the
formula. The pipeline schedules are checked on many (p, m) pairs: no dependency broken, the
makespan and so the bubble equal to the formula, and 1F1B's stored micro-batches per stage
equal to min(p - s, m). Broken schedules (a backward before its forward, a deadlock) must be
reported by the validator, not crash. ZeRO is rerun with another worker count, where its
memory and traffic must still equal the formulas and its weights the serial run's.
"""
import math
import random

import pytest

from support import load_script

mp = load_script("systems/microparallel.py")


def random_vector(n, rng):
    return [rng.gauss(0.0, 1.0) for _ in range(n)]


def block_loss(flat, units, hs, targets):
    """0.5 * sum |h + o - y|^2 over examples: a scalar to differentiate numerically."""
    _, outs = mp.forward_block(flat, units, hs)
    return sum(0.5 * sum((h[k] + o[k] - y[k]) ** 2 for k in range(mp.D_MODEL))
               for h, o, y in zip(hs, outs, targets))


@pytest.mark.parametrize("units", [mp.D_HIDDEN, mp.D_HIDDEN // 4])
def test_block_backward_matches_finite_differences(units):
    rng = random.Random(3)
    flat = random_vector(2 * units * mp.D_MODEL, rng)
    hs = [random_vector(mp.D_MODEL, rng) for _ in range(3)]
    targets = [random_vector(mp.D_MODEL, rng) for _ in range(3)]
    acts, outs = mp.forward_block(flat, units, hs)
    g_outs = [[h[k] + o[k] - y[k] for k in range(mp.D_MODEL)]
              for h, o, y in zip(hs, outs, targets)]
    g_flat, g_hs = mp.backward_block(flat, units, hs, acts, g_outs)
    eps = 1e-6
    for k in range(len(flat)):
        up, down = list(flat), list(flat)
        up[k] += eps
        down[k] -= eps
        numeric = (block_loss(up, units, hs, targets)
                   - block_loss(down, units, hs, targets)) / (2 * eps)
        assert math.isclose(g_flat[k], numeric, rel_tol=1e-5, abs_tol=1e-7)
    # dL/dh = g + W1^T dL/da: backward_block returns the second term, the caller adds g
    for n in range(len(hs)):
        for k in range(mp.D_MODEL):
            up = [list(h) for h in hs]
            down = [list(h) for h in hs]
            up[n][k] += eps
            down[n][k] -= eps
            numeric = (block_loss(flat, units, up, targets)
                       - block_loss(flat, units, down, targets)) / (2 * eps)
            assert math.isclose(g_outs[n][k] + g_hs[n][k], numeric, rel_tol=1e-5, abs_tol=1e-7)


def test_model_gradients_match_finite_differences():
    rng = random.Random(5)
    blocks = mp.random_blocks(0.5, rng)
    xs = [random_vector(mp.D_MODEL, rng) for _ in range(4)]
    ys = [random_vector(mp.D_MODEL, rng) for _ in range(4)]
    loss, grads, _ = mp.model_gradients(blocks, xs, ys, 0.25)
    eps = 1e-6
    for _ in range(60):
        b, k = rng.randrange(len(blocks)), rng.randrange(mp.BLOCK_SIZE)
        original = blocks[b][k]
        values = []
        for delta in (eps, -eps):
            blocks[b][k] = original + delta
            values.append(mp.model_gradients(blocks, xs, ys, 0.25)[0])
        blocks[b][k] = original
        assert math.isclose(grads[b][k], (values[0] - values[1]) / (2 * eps),
                            rel_tol=1e-5, abs_tol=1e-8)


def test_finite_difference_check_in_the_script_sees_a_wrong_gradient(monkeypatch):
    rng = random.Random(2)
    blocks = mp.random_blocks(0.5, rng)
    xs = [random_vector(mp.D_MODEL, rng) for _ in range(4)]
    ys = [random_vector(mp.D_MODEL, rng) for _ in range(4)]
    assert mp.finite_difference_error([list(f) for f in blocks], xs, ys) < 1e-8
    real = mp.model_gradients

    def doubled(*args):
        loss, grads, outputs = real(*args)
        return loss, [[2 * x for x in g] for g in grads], outputs

    monkeypatch.setattr(mp, "model_gradients", doubled)
    assert mp.finite_difference_error([list(f) for f in blocks], xs, ys) > 1e-4


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5])
def test_ring_all_reduce_equals_the_sum_and_sends_the_formula(p):
    rng = random.Random(p)
    n = 6 * p
    vectors = [random_vector(n, rng) for _ in range(p)]
    expected = [sum(v[i] for v in vectors) for i in range(n)]
    buffers = [list(v) for v in vectors]
    net = mp.Network(p)
    mp.ring_all_reduce(net, buffers)
    for buf in buffers:
        assert all(math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12) for a, b in zip(buf, expected))
    assert net.floats_sent == [2 * (p - 1) * n // p] * p
    assert net.messages_sent == [2 * (p - 1)] * p


def test_reduce_scatter_leaves_chunk_r_summed_on_worker_r():
    p, c = 4, 3
    rng = random.Random(1)
    vectors = [random_vector(p * c, rng) for _ in range(p)]
    buffers = [list(v) for v in vectors]
    mp.ring_reduce_scatter(mp.Network(p), buffers)
    for r in range(p):
        for i in range(r * c, (r + 1) * c):
            assert math.isclose(buffers[r][i], sum(v[i] for v in vectors), rel_tol=1e-12)


def test_tensor_parallel_split_is_invertible_and_partials_sum_to_the_output():
    rng = random.Random(9)
    flat = random_vector(mp.BLOCK_SIZE, rng)
    p = 4
    shards = [mp.tp_split(flat, r, p) for r in range(p)]
    assert mp.tp_join(shards) == flat
    hs = [random_vector(mp.D_MODEL, rng) for _ in range(2)]
    _, full = mp.forward_block(flat, mp.D_HIDDEN, hs)
    partials = [mp.forward_block(s, mp.D_HIDDEN // p, hs)[1] for s in shards]
    for n in range(len(hs)):
        for k in range(mp.D_MODEL):
            assert math.isclose(sum(part[n][k] for part in partials), full[n][k],
                                rel_tol=1e-12, abs_tol=1e-12)


def stored_peaks(events, p):
    """Peak number of micro-batches between their F and B on each stage, from a timeline."""
    peaks = []
    for s in range(p):
        changes = sorted((e[3], 1 if e[1] == "F" else -1) for e in events if e[0] == s)
        level = peak = 0
        for _, delta in changes:
            level += delta
            peak = max(peak, level)
        peaks.append(peak)
    return peaks


@pytest.mark.parametrize("p", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 13])
@pytest.mark.parametrize("ticks", [(1, 1), (1, 2), (2, 3)])
def test_schedules_are_valid_and_meet_the_formulas(p, m, ticks, monkeypatch):
    monkeypatch.setattr(mp, "T_F", ticks[0])
    monkeypatch.setattr(mp, "T_B", ticks[1])
    for build, expected_peaks in ((mp.gpipe_schedule, [m] * p),
                                  (mp.one_f_one_b_schedule, [min(p - s, m) for s in range(p)])):
        events, never_ran = mp.simulate(build(p, m), p)
        assert never_ran == 0
        assert mp.validate(events, p, m) == 0
        makespan = max(e[4] for e in events)
        assert makespan == (m + p - 1) * (ticks[0] + ticks[1])
        assert stored_peaks(events, p) == expected_peaks


def test_validator_catches_a_backward_before_its_forward():
    p, m = 3, 4
    schedule = mp.one_f_one_b_schedule(p, m)
    last = schedule[-1]
    last[0], last[1] = last[1], last[0]          # B(0) before F(0) on the last stage
    events, never_ran = mp.simulate(schedule, p)
    assert never_ran == 0                        # the devices run; the rules are broken
    assert mp.validate(events, p, m) > 0


def test_deadlock_is_reported_not_raised():
    p, m = 2, 2
    schedule = mp.gpipe_schedule(p, m)
    # stage 0 first waits for a gradient that needs its own, later, forward
    schedule[0] = [("B", 0)] + [op for op in schedule[0] if op != ("B", 0)]
    events, never_ran = mp.simulate(schedule, p)
    assert never_ran > 0


def test_timeline_chart_reads_back_as_the_schedule():
    events, _ = mp.simulate(mp.one_f_one_b_schedule(4, 12), 4)
    lines = mp.draw_timeline(events, 4, 12)      # two-digit micro-batch numbers
    assert mp.read_timeline(lines, 12) == mp.timeline_grid(events, 4)


def test_zero_with_two_workers_meets_its_formulas(monkeypatch):
    monkeypatch.setattr(mp, "NUM_STEPS", 2)
    random.seed(0)
    teacher = mp.random_blocks(mp.TEACHER_STD)
    blocks = mp.random_blocks(mp.INIT_STD)
    batches = mp.make_batches(teacher)
    (_, serial_grads), serial_final, _ = mp.train_serial(blocks, batches)
    p = 2
    psi = mp.BLOCK_SIZE * mp.NUM_BLOCKS
    for stage in range(4):
        net = mp.Network(p)
        first, final, mems = mp.train_zero(stage, blocks, batches, p, net)
        assert mp.max_difference(first, serial_grads) < 1e-12
        assert all(mp.max_difference(w, serial_final) < 1e-12 for w in final)
        assert net.floats_sent == [mp.zero_traffic_formula(stage, psi, p, 2)] * p
        formula = mp.zero_memory_formula(stage, psi, p)
        for mem in mems:
            assert dict(mem.peak, total=mem.peak_total) == formula


def test_nan_aware_max_and_shape_mismatch():
    assert max(0.0, math.nan) == 0.0                      # the trap
    assert math.isnan(mp.nan_aware_max([0.0, math.nan, 1.0]))
    assert mp.max_difference([[1.0, 2.0]], [[1.0]]) == math.inf
    assert math.isnan(mp.max_difference([[math.nan]], [[0.0]]))
