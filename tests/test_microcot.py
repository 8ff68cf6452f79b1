"""Fast checks specific to foundational/microcot.py.

The backward pass is derived by hand in the script, so it is compared here, on every third
parameter (every eleventh for the shorter formats), with central finite differences of a
loss written here from the model's definition (token + column + segment embeddings,
RMSNorm, causal attention, MLP, softmax cross-entropy on the tokens after '='),
independently of the script's forward code. The data the lesson rests on is checked against
Python's integers: the scratchpad's columns and carries, the answer each format writes, the
held-out split and greedy decoding's cache.
"""
import math
import random

import pytest

from support import load_script

cot = load_script("foundational/microcot.py")
cot.SCALE = 1.0 / math.sqrt(cot.N_EMBD // cot.N_HEAD)
H = 1e-6


def ref_loss(model, example):
    """Mean cross-entropy of the next token over the positions from '=' on, from the formulas."""
    tokens, columns, segments, first = example
    d = len(model["wq"])
    n_head = cot.N_HEAD
    hd = d // n_head

    def norm(x):
        r = math.sqrt(sum(v * v for v in x) / len(x) + 1e-5)
        return [v / r for v in x]

    def lin(w, x):
        return [sum(w[i][j] * x[j] for j in range(len(x))) for i in range(len(w))]

    xs, qs, ks, vs = [], [], [], []
    for t in range(len(tokens) - 1):
        pos = columns[t] if cot.POSITIONS == "column" else t
        x = [model["tok"][tokens[t]][i] + model["col"][pos][i] + model["seg"][segments[t]][i]
             for i in range(d)]
        h = norm(x)
        xs.append(x)
        qs.append(lin(model["wq"], h))
        ks.append(lin(model["wk"], h))
        vs.append(lin(model["wv"], h))
    total, count = 0.0, 0
    for t in range(first, len(tokens) - 1):
        o = []
        for head in range(n_head):
            sl = slice(head * hd, (head + 1) * hd)
            scores = [sum(a * b for a, b in zip(qs[t][sl], ks[j][sl])) / math.sqrt(hd)
                      for j in range(t + 1)]
            z = sum(math.exp(s) for s in scores)
            weights = [math.exp(s) / z for s in scores]
            o += [sum(weights[j] * vs[j][sl][i] for j in range(t + 1)) for i in range(hd)]
        x1 = [a + b for a, b in zip(xs[t], lin(model["wo"], o))]
        hidden = [max(0.0, v) for v in lin(model["fc1"], norm(x1))]
        x2 = [a + b for a, b in zip(x1, lin(model["fc2"], hidden))]
        logits = lin(model["head"], x2)
        total += math.log(sum(math.exp(v) for v in logits)) - logits[tokens[t + 1]]
        count += 1
    return total / count


def random_model(seed, std=0.4):
    model = cot.init_model(seed)
    rng = random.Random(seed)
    for rows in model.values():
        for row in rows:
            row[:] = [rng.gauss(0.0, std) for _ in row]
    return model


@pytest.mark.parametrize("fmt", ["plain", "reversed", "scratchpad"])
def test_backward_matches_finite_differences_of_the_reference(fmt):
    model = random_model(3)
    example = cot.make_example(37, 22, fmt)
    loss, grads = cot.example_loss_and_grads(model, example)
    assert loss == pytest.approx(ref_loss(model, example), rel=1e-10)
    assert cot.example_loss(model, example) == pytest.approx(loss, rel=1e-12)
    stride = 3 if fmt == "scratchpad" else 11
    for name, rows in model.items():
        for r, row in enumerate(rows):
            for i in range(0, len(row), stride):
                original = row[i]
                row[i] = original + H
                up = ref_loss(model, example)
                row[i] = original - H
                down = ref_loss(model, example)
                row[i] = original
                assert grads[name][r][i] == pytest.approx((up - down) / (2 * H),
                                                          rel=1e-4, abs=1e-8), (name, r, i)


def test_backward_with_absolute_positions():
    old = cot.POSITIONS
    cot.POSITIONS = "absolute"
    try:
        model = random_model(5)
        example = cot.make_example(50, 9, "scratchpad")
        loss, grads = cot.example_loss_and_grads(model, example)
        assert loss == pytest.approx(ref_loss(model, example), rel=1e-10)
        for r in range(len(example[0]) - 1):   # every position row the example uses
            row = model["col"][r]
            original = row[2]
            row[2] = original + H
            up = ref_loss(model, example)
            row[2] = original - H
            down = ref_loss(model, example)
            row[2] = original
            assert grads["col"][r][2] == pytest.approx((up - down) / (2 * H), rel=1e-4, abs=1e-8)
    finally:
        cot.POSITIONS = old


def test_in_run_gradient_check_passes_and_catches_a_wrong_backward():
    assert cot.gradient_check(random.Random(0)) < 1e-5
    original = cot.rmsnorm_back
    cot.rmsnorm_back = lambda x, s, dy: [s * d for d in dy]   # the s^3 term dropped
    try:
        assert cot.gradient_check(random.Random(0)) > 1e-3
    finally:
        cot.rmsnorm_back = original


def binary(n, width):
    return [int(c) for c in format(n, f"0{width}b")]


def test_every_format_writes_the_true_sum():
    rng = random.Random(1)
    w = cot.WIDTH
    for _ in range(300):
        a, b = rng.randrange(2 ** w), rng.randrange(2 ** w)
        for fmt in ("plain", "reversed", "scratchpad"):
            tokens, columns, segments, first = cot.make_example(a, b, fmt)
            assert tokens[:first + 1] == binary(a, w) + [cot.PLUS] + binary(b, w) + [cot.EQUALS]
            assert len(tokens) == len(columns) == len(segments)
            assert cot.answer_of(tokens, fmt) == a + b
        plain = cot.make_example(a, b, "plain")[0]
        assert plain[-(w + 1):] == binary(a + b, w + 1)
        assert cot.make_example(a, b, "reversed")[0][-(w + 1):] == binary(a + b, w + 1)[::-1]


def test_scratchpad_columns_are_schoolbook_addition():
    # Each column: carry = 1 if a_i + b_i + c_i is 2 or more, then digit = that sum mod 2,
    # lowest column first; each is labelled with the column of the token after it.
    w = cot.WIDTH
    for a, b in [(0, 0), (63, 1), (21, 42), (63, 63), (37, 22)]:
        tokens, columns, segments, first = cot.make_example(a, b, "scratchpad")
        scratch = tokens[first + 1:first + 1 + 2 * w]
        carry = 0
        for i in range(w):
            total = (a >> i & 1) + (b >> i & 1) + carry
            carry = int(total >= 2)
            assert scratch[2 * i:2 * i + 2] == [carry, total % 2]
            assert columns[first + 1 + 2 * i:first + 3 + 2 * i] == [i, i + 1]
        assert segments[first + 1:first + 1 + 2 * w] == [cot.SEG_CARRY, cot.SEG_DIGIT] * w
        # the operands' columns: highest digit first, column 0 for the units
        assert columns[:w] == list(range(w - 1, -1, -1))


def test_split_holds_out_pairs_never_trained_and_lengths_are_right():
    train, held = cot.split_pairs(random.Random(4))
    for n in train:
        assert not set(train[n]) & set(held[n])
        for a, b in train[n] + held[n]:
            assert max(a, b).bit_length() == n or (n == 1 and max(a, b) <= 1)
        assert len(train[n]) + len(held[n]) == (4 ** n - 4 ** (n - 1) if n > 1 else 4)
    assert held[1] == [] and held[2] == []
    assert all(max(a, b) >= 2 ** (cot.WIDTH - 1) for a, b in cot.long_pairs(random.Random(1), 30))


def test_generate_with_its_cache_matches_a_full_forward_pass():
    # Greedy decoding appends to a key/value cache; at every step its choice must equal the
    # argmax of a full forward pass over the prefix (here the model's own written prefix).
    model = random_model(8, std=0.3)
    example = cot.make_example(45, 30, "scratchpad")
    written = cot.generate(model, example)
    tokens, columns, segments, first = example
    assert written[:first + 1] == tokens[:first + 1]
    for t in range(first, len(tokens) - 1):
        prefix = (written[:t + 2], columns[:t + 2], segments[:t + 2], first)
        cache = [cot.embed(model, prefix, j) for j in range(t + 1)]
        head_keys, _, value_cols = cot.cache_views([c[4] for c in cache], [c[5] for c in cache])
        logits, _ = cot.attend_and_predict(model, cache[t][3], head_keys, value_cols,
                                           cache[t][0], t + 1)
        assert written[t + 1] == max(range(cot.VOCAB), key=logits.__getitem__)


def test_curriculum_caps_the_length_then_mixes():
    train, _ = cot.split_pairs(random.Random(4))
    rng = random.Random(0)
    steps = cot.NUM_STEPS
    early = [cot.draw_pair(rng, train, 0, True) for _ in range(50)]
    assert all(max(a, b) <= 1 for a, b in early)
    late = [cot.draw_pair(rng, train, steps // 2 + 1, True) for _ in range(400)]
    assert max(max(a, b) for a, b in late) >= 16
    assert min(max(a, b) for a, b in late) <= 1


def test_a_diverged_model_scores_nan_and_the_gradient_check_keeps_a_nan():
    # argmax over NaN logits would write token 0 and score a plausible 0.00: it must be NaN.
    model = random_model(5)
    model["head"][0][0] = float("nan")
    assert math.isnan(cot.exact_match(model, "scratchpad", [(3, 5), (6, 1)]))
    # A NaN error on the first checked parameter must survive the finite errors after it.
    original = cot.example_loss
    calls = []

    def nan_once(model, example):
        calls.append(1)
        return float("nan") if len(calls) == 1 else original(model, example)

    cot.example_loss = nan_once
    try:
        assert math.isnan(cot.gradient_check(random.Random(0)))
    finally:
        cot.example_loss = original
