"""Fast checks specific to foundational/microrag.py.

The generator's gradients are derived by hand on plain floats, so every weight's gradient is
compared with central finite differences here, parameter by parameter. BM25 is compared with
an independent straight-from-the-formula implementation and with one number worked out by
hand; the synthetic world, the reader and the decoder are pinned down too.
"""
import math
import random

import pytest

from support import load_script

rag = load_script("foundational/microrag.py")


# --- the generator's hand-derived gradient -------------------------------------------------

def tiny_model(rng, layout, hidden):
    """Random weights and biases (biases non-zero so their gradients are exercised)."""
    def rows(n, width):
        return [[rng.gauss(0.0, 0.5) for _ in range(width)] for _ in range(n)]
    return {"W1": rows(layout["rows"], hidden), "b1": rows(1, hidden)[0],
            "W2": rows(rag.NUM_OUTPUTS, hidden), "b2": rows(1, rag.NUM_OUTPUTS)[0]}


def batch_problem(monkeypatch, hidden=4, vocab_size=5, char_context=3):
    monkeypatch.setattr(rag, "HIDDEN", hidden)
    monkeypatch.setattr(rag, "CHAR_CONTEXT", char_context)
    layout = rag.feature_layout(vocab_size)
    model = tiny_model(random.Random(0), layout, hidden)
    # Context word 0 appears twice (its row must collect the gradient twice); answer two
    # repeats a letter, so one char row is used at two positions.
    batch = [([0, 0, 3, vocab_size + 1], rag.spell("tea")),
             ([2, vocab_size + 4], rag.spell("otto"))]
    return layout, model, batch


def batch_loss(model, layout, batch):
    return sum(rag.answer_loss_and_grads(model, layout, rows, targets) for rows, targets in batch)


@pytest.mark.parametrize("char_context", [1, 3])
def test_every_generator_gradient_matches_finite_differences(monkeypatch, char_context):
    layout, model, batch = batch_problem(monkeypatch, char_context=char_context)
    grads = rag.zero_grads()
    for rows, targets in batch:
        rag.answer_loss_and_grads(model, layout, rows, targets, grads)
    grad_W2, grad_b2 = rag.w2_grad(grads["W2_records"])
    analytic = {
        "W1": [grads["W1"].get(r, [0.0] * rag.HIDDEN) for r in range(layout["rows"])],
        "b1": [grads["b1"]], "W2": grad_W2, "b2": [grad_b2],
    }
    h = 1e-6
    checked = largest = 0
    for key in ("W1", "b1", "W2", "b2"):
        matrix = model[key] if key in ("W1", "W2") else [model[key]]
        for r, row in enumerate(matrix):
            for j, original in enumerate(row):
                row[j] = original + h
                up = batch_loss(model, layout, batch)
                row[j] = original - h
                down = batch_loss(model, layout, batch)
                row[j] = original
                numeric = (up - down) / (2 * h)
                assert analytic[key][r][j] == pytest.approx(numeric, rel=1e-5, abs=1e-8), \
                    (key, r, j)
                checked += 1
                largest = max(largest, abs(analytic[key][r][j]))
    expected = (layout["rows"] + 1 + rag.NUM_OUTPUTS) * rag.HIDDEN + rag.NUM_OUTPUTS
    assert checked == expected
    assert largest > 1e-2   # a vacuous pass (all gradients zero) is not a pass


def test_w2_grad_equals_the_sum_of_per_character_outer_products():
    rng = random.Random(3)
    records = [([rng.gauss(0, 1) for _ in range(5)], [rng.gauss(0, 1) for _ in range(3)])
               for _ in range(4)]
    grad_W2, grad_b2 = rag.w2_grad(records)
    for k in range(5):
        assert grad_b2[k] == pytest.approx(sum(g[k] for g, _ in records))
        for j in range(3):
            assert grad_W2[k][j] == pytest.approx(sum(g[k] * hid[j] for g, hid in records))


def test_loss_without_grads_equals_loss_with_grads(monkeypatch):
    layout, model, batch = batch_problem(monkeypatch)
    rows, targets = batch[0]
    plain = rag.answer_loss_and_grads(model, layout, rows, targets)
    with_grads = rag.answer_loss_and_grads(model, layout, rows, targets, rag.zero_grads())
    assert plain == with_grads


def test_closed_book_inputs_hold_only_question_rows():
    layout = rag.feature_layout(10)
    word_ids = {w: i for i, w in enumerate("abcdefghij")}
    closed = rag.fixed_features(layout, word_ids, [], ["a", "c"])
    with_context = rag.fixed_features(layout, word_ids, ["b", "b", "z"], ["a", "c"])
    assert closed == [10, 12]
    assert with_context == [1, 1, 10, 12]   # unknown words ("z") have no row


def test_log_softmax_is_stable_for_huge_logits():
    big = rag.log_softmax([1000.0, 1001.0, 1002.0])
    small = rag.log_softmax([0.0, 1.0, 2.0])
    assert big == pytest.approx(small, rel=1e-12)
    assert rag.log_softmax([1000.0, -1000.0]) == pytest.approx([0.0, -2000.0])


def test_generate_stops_at_end_or_at_the_length_limit(monkeypatch):
    monkeypatch.setattr(rag, "HIDDEN", 4)
    layout = rag.feature_layout(3)
    model = tiny_model(random.Random(1), layout, 4)
    model["W2"] = [[0.0] * 4 for _ in range(rag.NUM_OUTPUTS)]
    model["b2"] = [0.0] * rag.NUM_OUTPUTS
    model["b2"][rag.END] = 5.0
    assert rag.generate(model, layout, []) == ""
    model["b2"][rag.END] = -5.0
    model["b2"][rag.LETTERS.index("q")] = 5.0
    assert rag.generate(model, layout, []) == "q" * rag.MAX_ANSWER_CHARS


def test_adam_step_matches_the_textbook_formula():
    params = {"W": [[1.0, -2.0]]}
    moments = {"W": ([[0.0, 0.0]], [[0.0, 0.0]])}
    expected, m, v = [1.0, -2.0], [0.0, 0.0], [0.0, 0.0]
    b1, b2, lr, eps = rag.ADAM_BETA1, rag.ADAM_BETA2, rag.LEARNING_RATE, rag.ADAM_EPS
    for step, grad in enumerate([[0.5, -0.1], [0.2, 0.3]], 1):
        rag.adam_step(params, [("W", 0, grad)], moments, step, 0.5)
        for d, g in enumerate(grad):
            g *= 0.5
            m[d] = b1 * m[d] + (1 - b1) * g
            v[d] = b2 * v[d] + (1 - b2) * g * g
            expected[d] -= lr * (m[d] / (1 - b1 ** step)) / (
                math.sqrt(v[d] / (1 - b2 ** step)) + eps)
        assert params["W"][0] == pytest.approx(expected, rel=1e-12)


# --- BM25 and the inverted index -----------------------------------------------------------

DOCS = [["a", "b", "a"], ["b", "c"], ["c", "c", "c", "d", "e"], ["b", "b", "b", "b", "b", "b"]]


def reference_bm25(docs, query, k1, b):
    """BM25 straight from its definition, scanning every document (no index)."""
    n_docs = len(docs)
    avgdl = sum(map(len, docs)) / n_docs
    scores = {}
    for d, doc in enumerate(docs):
        total, matched = 0.0, False
        for term in query:
            tf = doc.count(term)
            if tf == 0:
                continue
            matched = True
            df = sum(term in other for other in docs)
            weight = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
            total += weight * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / avgdl))
        if matched:
            scores[d] = total
    return scores


def test_inverted_index_postings_and_lengths():
    index = rag.build_index(DOCS)
    assert index["postings"]["c"] == [(1, 1), (2, 3)]
    assert index["postings"]["b"] == [(0, 1), (1, 1), (3, 6)]
    assert index["doc_len"] == [3, 2, 5, 6]
    assert index["avg_doc_len"] == 4.0
    assert index["num_docs"] == 4


@pytest.mark.parametrize("query", [["a"], ["b", "c"], ["c", "e", "zzz"], ["b", "b"]])
@pytest.mark.parametrize("k1, b", [(1.5, 0.75), (1.2, 0.0), (0.5, 1.0)])
def test_bm25_matches_the_formula_computed_without_an_index(query, k1, b):
    index = rag.build_index(DOCS)
    scores = rag.bm25_scores(index, query, k1=k1, b=b)
    expected = reference_bm25(DOCS, query, k1, b)
    assert scores.keys() == expected.keys()
    for d in expected:
        assert scores[d] == pytest.approx(expected[d], rel=1e-12)


def test_bm25_one_score_worked_out_by_hand():
    # Query "a" against doc 0 = [a, b, a]: N = 4, n_a = 1, tf = 2, |D| = 3, avgdl = 4.
    #   idf = ln(1 + 3.5 / 1.5) = ln(10 / 3) = 1.2039728
    #   length_norm = 0.25 + 0.75 * 3 / 4 = 0.8125
    #   saturated = 2 * 2.5 / (2 + 1.5 * 0.8125) = 5 / 3.21875 = 1.5533981
    index = rag.build_index(DOCS)
    score = rag.bm25_scores(index, ["a"], k1=1.5, b=0.75)[0]
    assert score == pytest.approx(1.2039728 * 1.5533981, rel=1e-6)


def test_idf_is_positive_and_falls_with_document_frequency():
    index = rag.build_index(DOCS)
    weights = [rag.idf(index, t) for t in ("a", "c", "b")]   # in 1, 2 and 3 of 4 documents
    assert weights[0] > weights[1] > weights[2] > 0.0
    everywhere = rag.build_index([["x", "y"], ["x"], ["x", "z"]])
    assert 0.0 < rag.idf(everywhere, "x") < 0.2   # a word in every document weighs ~0


def test_term_frequency_saturates():
    # Documents of equal length so that only tf changes; b = 0 switches length off anyway.
    docs = [["t"] * tf + ["pad"] * (60 - tf) for tf in range(1, 51)] + [["other"] * 60]
    index = rag.build_index(docs)
    scores = rag.bm25_scores(index, ["t"], k1=1.5, b=0.0)
    ordered = [scores[d] for d in range(50)]
    gains = [later - earlier for earlier, later in zip(ordered, ordered[1:])]
    assert all(g > 0 for g in gains)
    assert all(later < earlier for earlier, later in zip(gains, gains[1:]))
    assert ordered[-1] < rag.idf(index, "t") * (1.5 + 1)   # bounded by idf * (k1 + 1)


def test_length_normalisation_penalises_long_documents_only_when_b_is_positive():
    docs = [["t", "x"], ["t"] + ["x"] * 20, ["y"]]
    index = rag.build_index(docs)
    no_norm = rag.bm25_scores(index, ["t"], k1=1.5, b=0.0)
    assert no_norm[0] == pytest.approx(no_norm[1])
    full_norm = rag.bm25_scores(index, ["t"], k1=1.5, b=1.0)
    assert full_norm[0] > full_norm[1]


def test_top_k_breaks_ties_by_document_id():
    assert rag.top_k({3: 1.0, 1: 1.0, 2: 5.0, 0: 0.5}, 3) == [(2, 5.0), (1, 1.0), (3, 1.0)]


def test_counting_baseline_counts_every_occurrence():
    index = rag.build_index(DOCS)
    assert rag.count_scores(index, ["b", "c"]) == {0: 1, 1: 2, 2: 3, 3: 6}


# --- the world and the reader --------------------------------------------------------------

@pytest.fixture(scope="module")
def world():
    state = random.getstate()
    random.seed(7)
    try:
        return rag.build_world(40)
    finally:
        random.setstate(state)


def test_city_names_are_unique_and_clash_with_no_other_word(world):
    cities, _, _ = world
    assert len(set(cities)) == len(cities) == 40
    values = {v for vs in rag.ATTRIBUTE_VALUES.values() for v in vs}
    template_words = {w for ts in rag.FACT_TEMPLATES.values() for t in ts
                      for w in rag.tokenize(t)}
    assert not (set(cities) & (values | template_words | set(rag.ADJECTIVES)))


def test_each_paragraph_states_each_fact_in_exactly_one_sentence(world):
    cities, facts, documents = world
    for city, sentences in zip(cities, documents):
        for attribute in rag.ATTRIBUTES:
            naming = [s for s in sentences if attribute in rag.tokenize(s)]
            assert len(naming) == 1, (city, attribute)
            words = rag.tokenize(rag.attribute_sentence(sentences, attribute))
            assert facts[city][attribute] in words and city in words
            # No other sentence of the paragraph leaks the answer.
            others = [w for s in sentences if s != naming[0] for w in rag.tokenize(s)]
            assert facts[city][attribute] not in others


def test_value_lists_are_disjoint_and_spellable():
    values = [v for vs in rag.ATTRIBUTE_VALUES.values() for v in vs]
    assert len(values) == len(set(values))
    assert all(set(v) <= set(rag.LETTERS) and len(v) < rag.MAX_ANSWER_CHARS for v in values)
    assert rag.spell("tea") == [19, 4, 0, rag.END]


def test_bm25_finds_the_city_paragraph_for_every_question(world):
    cities, _, documents = world
    index = rag.build_index([rag.tokenize(" ".join(s)) for s in documents])
    for doc_id, city in enumerate(cities):
        for attribute, template in rag.QUESTION_TEMPLATES.items():
            tokens = rag.tokenize(template.format(city=city))
            ranking, sentence = rag.retrieve_and_read(index, documents, tokens, attribute)
            assert ranking[0][0] == doc_id
            assert sentence == rag.attribute_sentence(documents[doc_id], attribute)


def test_attribute_sentence_returns_empty_when_nothing_names_the_attribute():
    assert rag.attribute_sentence(["the river osma flows through kelan"], "river") \
        == "the river osma flows through kelan"
    assert rag.attribute_sentence(["kelan has a quiet harbour"], "river") == ""
