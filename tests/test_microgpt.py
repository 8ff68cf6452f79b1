"""microgpt's fused nodes, its whole-model gradient and its pronounceability rule."""
import math
import random

import pytest

from support import close, load_script, values_of

gpt = load_script("foundational/microgpt.py")
Value = gpt.Value
values = values_of(Value)


def test_softmax_and_cross_entropy_are_stable_for_huge_logits():
    logits = values([1000.0, 1001.0, 999.0, -1000.0])
    probs = gpt.softmax(logits)
    expected = [math.exp(-1) / (1 + math.exp(-1) + math.exp(-2)),
                1 / (1 + math.exp(-1) + math.exp(-2)),
                math.exp(-2) / (1 + math.exp(-1) + math.exp(-2)), 0.0]
    assert close([p.data for p in probs], expected, 1e-12)
    loss = gpt.cross_entropy(values([1000.0, 1001.0, 999.0, -1000.0]), 1)
    assert math.isclose(loss.data, math.log(1 + math.exp(-1) + math.exp(-2)), rel_tol=1e-12)
    assert math.isfinite(gpt.cross_entropy(values([5000.0, -5000.0]), 1).data)


def test_whole_model_gradient_matches_finite_differences():
    random.seed(0)
    model, params = gpt.init_model(vocab_size=27)
    tokens = [26, 4, 12, 12, 0, 26]  # BOS e m m a BOS
    loss = gpt.name_loss(model, tokens)
    loss.backward()
    rng = random.Random(4)
    for p in rng.sample(params, 25):
        analytic = p.grad
        original = p.data
        p.data = original + 1e-5
        up = gpt.name_loss(model, tokens).data
        p.data = original - 1e-5
        down = gpt.name_loss(model, tokens).data
        p.data = original
        assert math.isclose(analytic, (up - down) / 2e-5, rel_tol=1e-4, abs_tol=1e-8)


def test_pronounceability_rule_on_examples():
    pairs = gpt.letter_pair_counts(["anna", "emma", "christopher", "mia", "lena"] * 10)
    assert gpt.is_pronounceable("emma", pairs)
    assert gpt.is_pronounceable("anna", pairs)
    assert not gpt.is_pronounceable("a", pairs)          # too short
    assert not gpt.is_pronounceable("mmm", pairs)        # no vowel
    assert not gpt.is_pronounceable("emmma", pairs)      # letter three times
    assert not gpt.is_pronounceable("emmx", pairs)       # unseen letter pairs
    assert not gpt.is_pronounceable("Emma", pairs)       # not a lowercase name


def test_pronounceability_rule_separates_real_names_from_random_strings():
    names = gpt.load_names()
    pairs = gpt.letter_pair_counts(names)
    rng = random.Random(5)
    sample = rng.sample(names, 3000)
    real = sum(gpt.is_pronounceable(n, pairs) for n in sample) / len(sample)
    fake = sum(gpt.is_pronounceable(gpt.random_string(len(n), rng), pairs)
               for n in sample) / len(sample)
    assert real > 0.9
    assert fake < 0.25


def test_sampling_produces_lowercase_letters_only():
    random.seed(0)
    model, _ = gpt.init_model(vocab_size=27)
    itos = {i: chr(ord("a") + i) for i in range(26)}
    for _ in range(5):
        name = gpt.sample_name(model, 26, itos)
        assert len(name) <= gpt.BLOCK_SIZE
        assert all("a" <= c <= "z" for c in name)


def test_fused_dot_switch_changes_the_graph_but_not_the_numbers(monkeypatch):
    random.seed(0)
    model, params = gpt.init_model(vocab_size=27)
    tokens = [26, 4, 12, 12, 0, 26]
    fused = gpt.name_loss(model, tokens)
    fused.backward()
    fused_grads = [p.grad for p in params]
    for p in params:
        p.grad = 0.0
    monkeypatch.setattr(gpt, "FUSED_DOT", False)
    naive = gpt.name_loss(model, tokens)
    naive.backward()
    assert naive.data == pytest.approx(fused.data, rel=1e-12)
    assert close([p.grad for p in params], fused_grads)
    assert gpt.count_nodes(naive) > 5 * gpt.count_nodes(fused)


def test_heldout_loss_weighs_every_token_equally():
    random.seed(0)
    model, _ = gpt.init_model(vocab_size=27)
    short, long = [26, 0, 26], [26, 4, 12, 12, 0, 26]
    per_name = [gpt.name_loss(model, t).data for t in (short, long)]
    expected = (per_name[0] * 2 + per_name[1] * 5) / 7
    assert gpt.heldout_loss(model, [short, long]) == pytest.approx(expected, rel=1e-12)


def test_bigram_table_loss_by_hand():
    # Vocabulary of 2 (token 1 marks the boundary). Training: [1, 0, 1] twice gives counts
    # 1->0: 2 and 0->1: 2; with add-one smoothing P(0|1) = 3/4, P(1|0) = 3/4.
    loss = gpt.bigram_heldout_loss([[1, 0, 1], [1, 0, 1]], [[1, 0, 0, 1]], 2)
    # held-out pairs: 1->0 (3/4), 0->0 (1/4), 0->1 (3/4)
    expected = -(math.log(0.75) + math.log(0.25) + math.log(0.75)) / 3
    assert loss == pytest.approx(expected, rel=1e-12)
