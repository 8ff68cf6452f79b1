"""Fast checks specific to alignment/micromoe.py.

The experts, embeddings and output layer have hand-derived gradients: every one of their
parameters (and every router weight, which the script differentiates with its Value class) is
compared here with central finite differences of the batch loss, computed independently from
the plain-float forward pass. The fused nodes are checked against their naive forms, and the
claims the script's comments make about the gates and the balancing loss are pinned down.
"""
import math
import random

import pytest

from support import load_script

moe = load_script("alignment/micromoe.py")
Value = moe.Value

SMALL = {"CONTEXT": 3, "EMBED_DIM": 2, "N_EXPERTS": 4, "TOP_K": 2, "EXPERT_HIDDEN": 3}


@pytest.fixture
def small(monkeypatch):
    for name, value in SMALL.items():
        monkeypatch.setattr(moe, name, value)
    random.seed(7)
    model = moe.init_model(vocab_size=6)
    # Non-zero biases so that their gradients are tested away from the special point 0.
    rng = random.Random(8)
    for name, rows in model.items():
        if name.endswith(("b1", "b2")) or name == "out_b":
            rows[0] = [rng.gauss(0.0, 0.3) for _ in rows[0]]
    batch = [((5, 5, 5), 0), ((5, 5, 0), 1), ((5, 0, 1), 2), ((0, 1, 2), 5),
             ((3, 4, 1), 3), ((2, 2, 4), 4), ((1, 3, 0), 0)]
    return model, batch


def reference_batch_loss(model, batch, balance_weight):
    """mean_t CE_t + weight * N * sum_i f_i P_i, from the plain-float forward pass alone."""
    n, k = len(batch), moe.TOP_K
    loss, counts, prob_sums = 0.0, [0] * moe.N_EXPERTS, [0.0] * moe.N_EXPERTS
    for context, target in batch:
        probs, chosen, scores = moe.predict(model, context)
        loss -= math.log(probs[target]) / n
        for e in chosen:
            counts[e] += 1
        for e, p in enumerate(moe.float_softmax(scores)):
            prob_sums[e] += p / n
    balance = moe.N_EXPERTS * sum(c / (n * k) * p for c, p in zip(counts, prob_sums))
    return loss + balance_weight * balance


@pytest.mark.parametrize("balance_weight", [0.0, 0.7])
def test_every_gradient_matches_finite_differences(small, balance_weight):
    model, batch = small
    grads = moe.zeros_like(model)
    task_loss, balance, _ = moe.train_step(model, grads, batch, balance_weight)
    assert task_loss + balance_weight * balance == pytest.approx(
        reference_batch_loss(model, batch, balance_weight), rel=1e-12)
    h, checked, largest = 1e-6, 0, {}
    for name, rows in model.items():
        for r, row in enumerate(rows):
            for i, original in enumerate(row):
                row[i] = original + h
                up = reference_batch_loss(model, batch, balance_weight)
                row[i] = original - h
                down = reference_batch_loss(model, batch, balance_weight)
                row[i] = original
                numeric = (up - down) / (2 * h)
                assert grads[name][r][i] == pytest.approx(numeric, rel=1e-5, abs=1e-8), \
                    (name, r, i)
                largest[name] = max(largest.get(name, 0.0), abs(numeric))
                checked += 1
    assert checked == moe.num_params(model)
    # Guard against a vacuous pass: every tensor that the batch touches has a real gradient.
    for name in ("embed", "router", "out_w", "out_b", "expert0.w1", "expert1.w2"):
        assert largest[name] > 1e-4, name


def test_task_loss_reaches_only_the_chosen_experts_router_rows(small):
    # The script's comment: an expert outside a token's top 2 has no gate there, so the task
    # loss gives its router row no gradient; only the balancing loss (through P_i) does.
    model, batch = small
    for example in batch:
        _, chosen, _ = moe.predict(model, example[0])
        grads = moe.zeros_like(model)
        moe.train_step(model, grads, [example], 0.0)
        for e, row in enumerate(grads["router"]):
            if e in chosen:
                assert max(abs(g) for g in row) > 1e-6
            else:
                assert row == [0.0] * len(row)
        grads = moe.zeros_like(model)
        moe.train_step(model, grads, [example], 0.7)
        assert all(max(abs(g) for g in row) > 1e-9 for row in grads["router"])


def test_gates_equal_softmax_over_all_then_renormalised_top2():
    # The script's comment: Hugging Face's Mixtral code (softmax over all experts, keep the
    # top 2, divide by their sum) computes the same gates as a softmax over the top-2 scores.
    scores = [0.3, -1.2, 2.2, 0.9]
    chosen = moe.top_k(scores, 2)
    assert chosen == [2, 3]
    ours = moe.float_softmax([scores[e] for e in chosen])
    full = moe.float_softmax(scores)
    theirs = [full[e] / sum(full[c] for c in chosen) for e in chosen]
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_fused_router_dot_equals_naive_dot():
    rng = random.Random(1)
    x = [rng.gauss(0, 1) for _ in range(12)]
    w1 = [Value(rng.gauss(0, 1)) for _ in range(12)]
    w2 = [Value(w.data) for w in w1]
    fused, naive = moe.router_dot(w1, x), moe.naive_dot(w2, x)
    (fused * 1.3).backward()
    (naive * 1.3).backward()
    assert fused.data == pytest.approx(naive.data, rel=1e-12)
    assert [w.grad for w in w1] == pytest.approx([w.grad for w in w2], rel=1e-12)
    assert len(fused._children) == 12


def test_fused_mean_and_weighted_sum_equal_naive_forms():
    raw, coefficients = [0.4, -1.1, 2.5, 0.2, 0.9], [1.5, -0.5, 2.0, 0.0, 3.0]
    a, b = [Value(v) for v in raw], [Value(v) for v in raw]
    fused = moe.mean(a) * 2.0 + moe.weighted_sum(a, coefficients)
    naive = (a_sum := b[0] + b[1] + b[2] + b[3] + b[4]) * (2.0 / 5) + moe.naive_dot(b, coefficients)
    fused.backward()
    naive.backward()
    assert fused.data == pytest.approx(naive.data, rel=1e-12)
    assert [v.grad for v in a] == pytest.approx([v.grad for v in b], rel=1e-12)
    assert a_sum.data == pytest.approx(sum(raw))


def test_balance_loss_is_one_at_perfect_balance_and_its_gradient_is_n_times_f():
    probs = [Value(0.25) for _ in range(4)]
    loss = moe.balance_loss(probs, [0.25] * 4)
    assert loss.data == pytest.approx(1.0)
    probs = [Value(p) for p in (0.4, 0.3, 0.2, 0.1)]
    shares = [0.5, 0.25, 0.25, 0.0]
    loss = moe.balance_loss(probs, shares)
    loss.backward()
    assert loss.data == pytest.approx(4 * (0.5 * 0.4 + 0.25 * 0.3 + 0.25 * 0.2))
    assert [p.grad for p in probs] == pytest.approx([4 * f for f in shares])


def test_routing_picks_the_top_k_scores_deterministically(small):
    model, batch = small
    for context, _ in batch:
        probs, chosen, scores = moe.predict(model, context)
        assert sum(probs) == pytest.approx(1.0)
        assert len(set(chosen)) == moe.TOP_K
        assert chosen == moe.top_k(scores, moe.TOP_K)
    assert moe.top_k([1.0, 1.0, 0.0, 1.0], 2) == [0, 1]   # ties go to the lower index


def test_examples_pad_the_start_and_end_with_bos():
    examples = moe.make_examples(["emma"], {"e": 0, "m": 1, "a": 2}, 3)
    assert examples == [((3, 3, 3), 0), ((3, 3, 0), 1), ((3, 0, 1), 1), ((0, 1, 1), 2),
                        ((1, 1, 2), 3)]


def test_bigram_table_loss_by_hand():
    # Vocabulary of 2 (token 1 is BOS). Training pairs 1->0 twice and 0->1 twice; with
    # add-one smoothing P(0|1) = P(1|0) = 3/4.
    train = [((1, 1, 1), 0), ((1, 1, 0), 1)] * 2
    heldout = [((1, 1, 1), 0), ((1, 1, 0), 0), ((1, 0, 0), 1)]
    expected = -(math.log(0.75) + math.log(0.25) + math.log(0.75)) / 3
    assert moe.bigram_heldout_loss(train, heldout, 2) == pytest.approx(expected, rel=1e-12)


def test_heldout_balance_loss_by_hand(small):
    # evaluate()'s balance is N * sum_i f_i P_i over all the examples at once: f_i the share
    # of top-k assignments, P_i the mean full router probability (here recomputed by hand).
    model, batch = small
    itos = {i: str(i) for i in range(6)}
    n, counts, prob_sums = len(batch), [0] * moe.N_EXPERTS, [0.0] * moe.N_EXPERTS
    for context, _ in batch:
        x = [v for c in context for v in model["embed"][c]]
        scores = [sum(w * xi for w, xi in zip(row, x)) for row in model["router"]]
        exps = [math.exp(z) for z in scores]
        for i, e in enumerate(exps):
            prob_sums[i] += e / sum(exps)
        for e in sorted(range(moe.N_EXPERTS), key=lambda i: -scores[i])[:moe.TOP_K]:
            counts[e] += 1
    expected = moe.N_EXPERTS * sum(c / (n * moe.TOP_K) * p / n
                                   for c, p in zip(counts, prob_sums))
    assert moe.evaluate(model, batch, itos)["balance"] == pytest.approx(expected, rel=1e-12)
