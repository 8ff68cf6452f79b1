"""Fast checks specific to foundational/microlstm.py.

The three hand-derived backward passes (RNN, GRU, LSTM) are checked against central finite
differences for every parameter, written here from the forward pass alone; the script's own
finite-difference check is shown to catch a wrong gradient; the per-step gradient norms are
checked against finite differences of the state itself and on a case whose answer is known.
"""
import copy
import math
import random

import pytest

from support import load_script

lstm = load_script("foundational/microlstm.py")
KINDS = ("rnn", "gru", "lstm")
EPS = 1e-6


def loss_of(model, kind, tokens, target):
    return lstm.cross_entropy(lstm.forward(model, kind, tokens)[0], target)[0]


def entries(model):
    """(block, index) for every parameter: a plain list to nudge and the position in it."""
    for key, block in model.items():
        rows = block if isinstance(block[0], list) else [block]
        for r, row in enumerate(rows):
            for j in range(len(row)):
                yield key, r, j, row


@pytest.fixture(params=KINDS)
def setup(request, monkeypatch):
    monkeypatch.setattr(lstm, "INIT_STD", 0.6)   # large weights: a non-trivial recurrence
    random.seed(3)
    kind = request.param
    model = lstm.init_model(kind)
    tokens, target = lstm.make_example(random.Random(5), 6)
    return kind, model, tokens, target


def test_every_parameter_gradient_matches_finite_differences(setup):
    kind, model, tokens, target = setup
    grads = lstm.zeros_like(model)
    lstm.loss_and_grads(model, kind, tokens, target, grads)
    for key, r, j, row in entries(model):
        original = row[j]
        row[j] = original + EPS
        up = loss_of(model, kind, tokens, target)
        row[j] = original - EPS
        down = loss_of(model, kind, tokens, target)
        row[j] = original
        block = grads[key]
        analytic = block[r][j] if isinstance(block[0], list) else block[j]
        assert math.isclose(analytic, (up - down) / (2 * EPS), rel_tol=1e-5, abs_tol=1e-8), \
            (kind, key, r, j)


def test_gradients_add_up_over_a_batch(setup):
    # loss_and_grads adds into grads: two calls give twice one call's gradient
    kind, model, tokens, target = setup
    once, twice = lstm.zeros_like(model), lstm.zeros_like(model)
    lstm.loss_and_grads(model, kind, tokens, target, once)
    lstm.loss_and_grads(model, kind, tokens, target, twice)
    lstm.loss_and_grads(model, kind, tokens, target, twice)
    for key in once:
        a = once[key] if isinstance(once[key][0], list) else [once[key]]
        b = twice[key] if isinstance(twice[key][0], list) else [twice[key]]
        for ra, rb in zip(a, b):
            assert all(math.isclose(2 * x, y, rel_tol=1e-12, abs_tol=1e-15)
                       for x, y in zip(ra, rb))


def test_script_check_passes_a_right_backward_and_catches_a_wrong_one(monkeypatch):
    random.seed(0)
    for kind in KINDS:
        assert lstm.backward_check(kind, random.Random(1)) < 1e-8
    right = lstm.BACKWARDS["lstm"]

    def off_by_a_little(model, caches, dh, grads):
        norms = right(model, caches, dh, grads)
        grads["W_hf"][0][0] += 1e-4
        return norms

    monkeypatch.setitem(lstm.BACKWARDS, "lstm", off_by_a_little)
    assert lstm.backward_check("lstm", random.Random(1)) > 1e-6


def run_lstm_from(model, state, tokens):
    for token in tokens:
        state, _ = lstm.lstm_step(model, state, token)
    h = state[0]
    return [a + b for a, b in zip(lstm.matvec(model["W_hy"], h), model["b_y"])]


def test_cell_gradient_norms_match_finite_differences(monkeypatch):
    # ||dL/dc_1|| from the backward pass against the same norm from finite differences:
    # nudge one unit of c_1, recompute h_1 = o_1 tanh(c_1) from it (c_1 reaches the loss
    # through h_1 as well as through c_2), and run the remaining steps forward.
    monkeypatch.setattr(lstm, "INIT_STD", 0.6)
    random.seed(4)
    model = lstm.init_model("lstm")
    tokens, target = lstm.make_example(random.Random(2), 5)
    norms = lstm.loss_and_grads(model, "lstm", tokens, target, lstm.zeros_like(model))[1]
    assert len(norms) == len(tokens)
    (_, c1), cache = lstm.lstm_step(model, ([0.0] * 8, [0.0] * 8), tokens[0])
    o1 = cache[6]
    grad = []
    for u in range(8):
        def at(x):
            c = c1[:u] + [x] + c1[u + 1:]
            h = [o * math.tanh(v) for o, v in zip(o1, c)]
            return lstm.cross_entropy(run_lstm_from(model, (h, c), tokens[1:]), target)[0]
        grad.append((at(c1[u] + EPS) - at(c1[u] - EPS)) / (2 * EPS))
    assert math.isclose(norms[0], math.sqrt(sum(g * g for g in grad)), rel_tol=1e-5)


def test_a_cell_that_always_keeps_passes_its_gradient_intact():
    # Recurrent weights at 0 and a forget gate pinned at 1 (bias 60): nothing reaches the
    # earlier steps except along the cell, and each step back multiplies it by f = 1.
    random.seed(1)
    model = lstm.init_model("lstm", forget_bias=60.0)
    for gate in "ifgo":
        model[f"W_h{gate}"] = [[0.0] * 8 for _ in range(8)]
    probes = [lstm.make_example(random.Random(s), 10) for s in range(3)]
    profile = lstm.gradient_profile(model, "lstm", probes)
    assert all(math.isclose(p, 1.0, rel_tol=1e-9) for p in profile)


def test_forget_bias_sets_the_untrained_gradient_path():
    # The same weights with b_f = 1 and b_f = 0: the one-step keep factor is sigmoid(b_f + ...)
    random.seed(2)
    base = lstm.init_model("lstm")
    zero = copy.deepcopy(base)
    zero["b_f"] = [0.0] * 8
    probes = [lstm.make_example(random.Random(s), 20) for s in range(10)]
    assert lstm.gradient_profile(base, "lstm", probes)[0] > \
        10 * lstm.gradient_profile(zero, "lstm", probes)[0]


def test_examples_have_the_right_shape():
    rng = random.Random(0)
    for delay in (1, 5, 20):
        tokens, target = lstm.make_example(rng, delay)
        assert len(tokens) == delay + 2 and tokens[0] == target < lstm.NUM_LETTERS
        assert all(lstm.NUM_LETTERS <= t < lstm.QUERY for t in tokens[1:-1])
        assert tokens[-1] == lstm.QUERY


def test_parameter_counts():
    random.seed(0)
    counts = {kind: lstm.num_parameters(lstm.init_model(kind)) for kind in KINDS}
    # per gate 8 x 9 input weights, 8 x 8 recurrent weights, 8 biases; read-out 4 x 8 + 4
    assert counts == {"rnn": 144 + 36, "gru": 3 * 144 + 36, "lstm": 4 * 144 + 36}


def test_initial_gate_biases():
    random.seed(0)
    assert lstm.init_model("lstm")["b_f"] == [1.0] * 8
    assert lstm.init_model("lstm", forget_bias=0.0)["b_f"] == [0.0] * 8
    assert lstm.init_model("gru")["b_z"] == [-2.0] * 8


def test_sigmoid_is_stable_and_exact():
    assert lstm.sigmoid(-1000.0) == 0.0 and lstm.sigmoid(1000.0) == 1.0
    for a in (-3.0, -0.2, 0.0, 0.7, 5.0):
        assert math.isclose(lstm.sigmoid(a), 1 / (1 + math.exp(-a)), rel_tol=1e-12)


def test_steps_to_learn():
    assert lstm.steps_to_learn([1.0] * 50) == -1
    losses = [1.0] * 30 + [0.0] * 30
    # the mean of the last 20 falls below 0.1 once 19 of them are 0
    assert lstm.steps_to_learn(losses) == 49


def test_cross_entropy_is_stable_for_huge_logits():
    loss, grad = lstm.cross_entropy([1000.0, 1001.0, 999.0, -1000.0], 1)
    assert math.isclose(loss, math.log(1 + math.exp(-1) + math.exp(-2)), rel_tol=1e-12)
    assert math.isclose(sum(grad), 0.0, abs_tol=1e-12)
