"""Fast checks specific to foundational/micrornn.py.

Every fused node is compared with its naive form (values and gradients) and with central
finite differences; so is sigmoid(). Both models' whole-window gradients are checked against
finite differences, and the gradient-norm probe is checked on cases whose answer is known
(a recurrence cut to zero, a GRU gate held shut).
"""
import math
import random

import pytest

from support import close, grads, load_script, values_of

rnn = load_script("foundational/micrornn.py")
Value = rnn.Value
STEP = 1e-6
values = values_of(Value)


def numeric(f, x):
    return (f(x + STEP) - f(x - STEP)) / (2 * STEP)


def test_sigmoid_matches_naive_form_and_finite_differences():
    for x in (-30.0, -2.5, -0.3, 0.0, 0.8, 4.0, 30.0):
        a, b = Value(x), Value(x)
        fused = a.sigmoid()
        naive = 1 / (1 + (-b).exp())
        fused.backward()
        naive.backward()
        assert math.isclose(fused.data, naive.data, rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(a.grad, b.grad, rel_tol=1e-9, abs_tol=1e-15)
        assert math.isclose(a.grad, numeric(lambda t: Value(t).sigmoid().data, x),
                            rel_tol=1e-5, abs_tol=1e-9)


def test_sigmoid_is_stable_for_huge_inputs():
    assert Value(-1000.0).sigmoid().data == 0.0
    assert Value(1000.0).sigmoid().data == 1.0


@pytest.mark.parametrize("num_biases", [0, 1, 2])
def test_fused_dot_equals_naive_dot_in_value_and_gradients(num_biases):
    rng = random.Random(num_biases)
    raw_w = [rng.gauss(0, 1) for _ in range(32)]
    raw_x = [rng.gauss(0, 1) for _ in range(32)]
    raw_b = [rng.gauss(0, 1) for _ in range(num_biases)]
    w1, x1, b1 = values(raw_w), values(raw_x), values(raw_b)
    w2, x2, b2 = values(raw_w), values(raw_x), values(raw_b)
    fused, naive = rnn.dot(w1, x1, *b1), rnn.naive_dot(w2, x2, *b2)
    (fused * 1.7).backward()
    (naive * 1.7).backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(w1 + x1 + b1), grads(w2 + x2 + b2))
    assert len(fused._children) == 64 + num_biases


def test_fused_gru_blend_equals_naive_form_and_finite_differences():
    rng = random.Random(7)
    for _ in range(5):
        raw = [rng.random(), rng.uniform(-1, 1), rng.uniform(-1, 1)]
        fused_in, naive_in = values(raw), values(raw)
        fused, naive = rnn.gru_blend(*fused_in), rnn.naive_gru_blend(*naive_in)
        fused.backward()
        naive.backward()
        assert math.isclose(fused.data, naive.data, rel_tol=1e-12, abs_tol=1e-15)
        assert close(grads(fused_in), grads(naive_in))
        for j in range(3):
            def at(t):
                shifted = raw[:j] + [t] + raw[j + 1:]
                return rnn.gru_blend(*values(shifted)).data
            assert math.isclose(fused_in[j].grad, numeric(at, raw[j]), rel_tol=1e-5,
                                abs_tol=1e-8)


def naive_cross_entropy(logits, target):
    top = max(z.data for z in logits)
    exps = [(z - top).exp() for z in logits]
    total = exps[0]
    for e in exps[1:]:
        total = total + e
    return -((exps[target] / total).log())


def test_cross_entropy_is_stable_for_huge_logits():
    loss = rnn.cross_entropy(values([1000.0, 1001.0, 999.0, -1000.0]), 1)
    assert math.isclose(loss.data, math.log(1 + math.exp(-1) + math.exp(-2)), rel_tol=1e-12)
    assert math.isfinite(rnn.cross_entropy(values([5000.0, -5000.0]), 1).data)


def test_fused_mean_equals_naive_mean():
    raw = [0.5, -1.5, 2.0, 3.25]
    x1, x2 = values(raw), values(raw)
    fused = rnn.mean(x1)
    naive = (x2[0] + x2[1] + x2[2] + x2[3]) / 4
    (fused * fused).backward()
    (naive * naive).backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(x1), grads(x2))


@pytest.fixture(params=["rnn", "gru"])
def tiny_model(request, monkeypatch):
    # A small hidden state keeps the finite-difference loop fast; the code path is the same.
    monkeypatch.setattr(rnn, "N_HIDDEN", 6)
    monkeypatch.setattr(rnn, "INIT_STD", 0.5)   # large weights: a non-trivial recurrence
    random.seed(0)
    if request.param == "rnn":
        return rnn.init_rnn(27), rnn.rnn_cell
    return rnn.init_gru(27), rnn.gru_cell


def test_parameter_counts_match_the_spec():
    assert len(rnn.parameters(rnn.init_rnn(27))) == 2811
    assert len(rnn.parameters(rnn.init_gru(27))) == 6587


def test_whole_window_gradient_matches_finite_differences(tiny_model):
    model, cell = tiny_model
    window = [26, 4, 12, 12, 0, 26, 14, 11, 8, 21, 8, 0, 26]   # .emma.olivia.
    loss = rnn.window_loss(model, cell, window)
    loss.backward()
    params = rnn.parameters(model)
    for p in random.Random(4).sample(params, 40):
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = rnn.window_loss(model, cell, window).data
        p.data = original - 1e-5
        down = rnn.window_loss(model, cell, window).data
        p.data = original
        assert math.isclose(analytic, (up - down) / 2e-5, rel_tol=1e-4, abs_tol=1e-8)


def test_probe_reads_true_hidden_state_gradients(tiny_model):
    # dL/dh_1, read off the held Values, against finite differences: perturb one unit of h_1
    # and run the remaining steps forward by hand.
    model, cell = tiny_model
    window = [26, 4, 12, 12, 0, 26, 14]
    states = rnn.unroll(model, cell, window[:-1])
    rnn.cross_entropy(rnn.readout(model, states[-1]), window[-1]).backward()

    def last_loss_from(h1):
        h = h1
        for char in window[1:-1]:
            h = cell(model, h, char)
        return rnn.cross_entropy(rnn.readout(model, h), window[-1]).data

    first = [h.data for h in states[0]]
    for i in range(len(first)):
        def at(t):
            return last_loss_from(values(first[:i] + [t] + first[i + 1:]))
        assert math.isclose(states[0][i].grad, numeric(at, first[i]), rel_tol=1e-4,
                            abs_tol=1e-9)


def test_probe_on_known_cases(monkeypatch):
    monkeypatch.setattr(rnn, "N_HIDDEN", 6)
    monkeypatch.setattr(rnn, "SEQ_LEN", 8)
    windows = [[26, 4, 12, 12, 0, 26, 14, 11, 8]]
    random.seed(1)
    model = rnn.init_rnn(27)
    profile, survival = rnn.gradient_profile(model, rnn.rnn_cell, windows, 26)
    assert len(profile) == 8 and profile[-1] == 1.0 and 0 < profile[0] < 1
    assert 0 < survival["inside"] < 1 and 0 < survival["boundary"] < 1
    assert all(p.grad == 0.0 for p in rnn.parameters(model))   # probe leaves no gradient
    # The survival factors multiply back to the profile: with one window, the product of
    # the 7 per-step factors is exactly ||dL/dh_1|| / ||dL/dh_8||.
    steps_inside = sum(c != 26 for c in windows[0][1:8])
    product = survival["inside"] ** steps_inside * survival["boundary"] ** (7 - steps_inside)
    assert math.isclose(product, profile[0], rel_tol=1e-9)
    # A recurrence cut almost to nothing (W_hh = 1e-3): 7 steps back, about (6e-3)^7 is left.
    for row in model["W_hh"]:
        for w in row:
            w.data = 1e-3
    assert rnn.gradient_profile(model, rnn.rnn_cell, windows, 26)[0][0] < 1e-12
    # A GRU whose update gate is shut (z = sigmoid(-60) ~ 1e-26) copies its state:
    # every dL/dh_t equals dL/dh_T, ratio 1.
    gru = rnn.init_gru(27)
    for b in gru["b_z"]:
        b.data = -60.0
    profile, survival = rnn.gradient_profile(gru, rnn.gru_cell, windows, 26)
    assert math.isclose(profile[0], 1.0, rel_tol=1e-9)
    assert math.isclose(survival["inside"], 1.0, rel_tol=1e-9)


def test_windows_cover_the_stream_with_one_character_overlap(monkeypatch):
    monkeypatch.setattr(rnn, "SEQ_LEN", 4)
    stoi = rnn.build_vocab(["ab", "ba"])
    windows = rnn.make_windows(["ab", "ba", "ab"], stoi)
    stream = [stoi[c] for c in ".ab.ba.ab."]
    assert all(len(w) == 5 for w in windows)
    assert windows[0] == stream[:5] and windows[1] == stream[4:9]
    assert stoi["."] == 2   # letters first, the boundary last


def test_bigram_baseline_without_data_is_a_uniform_guess(monkeypatch):
    monkeypatch.setattr(rnn, "SEQ_LEN", 4)
    loss = rnn.bigram_loss([], [[0, 1, 2, 0, 1]], 3)
    assert math.isclose(loss, math.log(3), rel_tol=1e-12)


def test_pronounceability_rule_on_examples():
    pairs = rnn.letter_pair_counts(["anna", "emma", "christopher", "mia", "lena"] * 10)
    assert rnn.is_pronounceable("emma", pairs)
    assert not rnn.is_pronounceable("a", pairs)          # too short
    assert not rnn.is_pronounceable("mmm", pairs)        # no vowel
    assert not rnn.is_pronounceable("emmma", pairs)      # letter three times
    assert not rnn.is_pronounceable("emmx", pairs)       # unseen letter pairs
    assert not rnn.is_pronounceable("Emma", pairs)       # not a lowercase name


def test_sampling_produces_lowercase_letters_only():
    random.seed(0)
    stoi = rnn.build_vocab(["abcdefghijklmnopqrstuvwxyz"])
    itos = {i: c for c, i in stoi.items()}
    for init, cell in ((rnn.init_rnn, rnn.rnn_cell), (rnn.init_gru, rnn.gru_cell)):
        model = init(27)
        for _ in range(5):
            name = rnn.sample_name(model, cell, stoi["."], itos)
            assert len(name) <= rnn.SEQ_LEN and all("a" <= c <= "z" for c in name)


def test_no_grad_gives_the_same_numbers_without_a_graph():
    random.seed(3)
    model = rnn.init_gru(27)
    window = [26, 4, 12, 12, 0, 26, 14, 11, 8, 21, 8, 0, 26, 0, 21, 0, 26]
    recorded = rnn.window_loss(model, rnn.gru_cell, window)
    with rnn.no_grad():
        bare = rnn.window_loss(model, rnn.gru_cell, window)
        assert rnn.dot(model["W_hy"][0], model["W_hy"][1])._children == ()
    assert bare.data == recorded.data
    assert rnn.recording_graph
    with pytest.raises(RuntimeError), rnn.no_grad():
        raise RuntimeError
    assert rnn.recording_graph   # the switch is restored even after an error
