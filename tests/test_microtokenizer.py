"""Fast checks for foundational/microtokenizer.py: round trips, merge order, training bookkeeping.

Everything here trains on small inline corpora, so no dataset is needed and the file runs in
well under a second.
"""
import random

import pytest

from support import load_script

tok = load_script("foundational/microtokenizer.py")

# Repeated words give BPE pairs worth merging; the non-ASCII words make merges that glue
# multi-byte UTF-8 characters together, and "aaaaaa" / "banana" have overlapping pairs.
CORPUS = [
    "anna annabelle hannah", "banana bandana", "aaaaaa aaa", "zoë zoë chloë", "李雷 李雷 李",
    "🙂🙂 🙂", "  spaced   out  ", "tab\tand\nnewline", "josé josé", "mississippi",
    "emma olivia ava isabella sophia", "ella stella bella", "anna", "hannah", "ann",
]

TRICKY = [
    "", " ", "\n\t ", "a", "aaaaaaa", "🙂", "👩\u200d💻", "🇯🇵", "李雷", "e\u0301",
    "zoë", "José and 李雷 🙂", "Ανδρέας Олег", "  leading and trailing  ", "\u200b",
    "\U0010ffff", "mixed\r\nline\rendings",
]


@pytest.fixture(scope="module")
def trained():
    merges, _counts = tok.train_bpe(CORPUS, 60)
    return merges, tok.make_merge_table(merges), tok.build_vocab(merges)


def random_text(rng, alphabet="ab né🙂", max_len=14):
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(max_len + 1)))


def test_corpus_is_big_enough_to_learn_all_requested_merges(trained):
    merges, _, vocab = trained
    assert len(merges) == 60
    assert len(vocab) == 256 + 60


@pytest.mark.parametrize("text", TRICKY + tok.EDGE_CASES)
def test_round_trip(trained, text):
    _, table, vocab = trained
    ids = tok.encode(text, table)
    assert tok.decode(ids, vocab) == text
    assert tok.decode_bytes(ids, vocab) == text.encode("utf-8")
    assert all(0 <= token_id < len(vocab) for token_id in ids)


def test_round_trip_uses_learned_multibyte_tokens(trained):
    # Without this, the round trips above could pass with every non-ASCII byte left unmerged.
    _, table, vocab = trained
    ids = tok.encode("李雷 zoë 🙂", table)
    assert len(ids) < len("李雷 zoë 🙂".encode("utf-8"))
    assert any(len(vocab[token_id]) > 1 and vocab[token_id][0] >= 0x80 for token_id in ids)


@pytest.mark.parametrize("text", TRICKY + CORPUS)
def test_pre_split_loses_nothing(text):
    assert "".join(tok.split_into_chunks(text)) == text


def test_priority_order_beats_frequency_order_on_crafted_case():
    # Merge 0 is a+b, merge 1 is b+c. In "abcbc" the pair b+c occurs twice and a+b once, so a
    # frequency-driven encoder merges b+c first; the learned order merges a+b first.
    a, b, c = ord("a"), ord("b"), ord("c")
    merges = [(a, b), (b, c)]
    table = tok.make_merge_table(merges)
    learned = [256, c, 257]
    assert tok.encode("abcbc", table) == learned
    assert tok.encode_by_replay("abcbc", merges) == learned
    assert tok.encode_by_frequency("abcbc", table) == [a, 257, 257]  # the case discriminates


def test_encode_matches_replay_on_random_strings(trained):
    merges, table, vocab = trained
    rng = random.Random(0)
    texts = [random_text(rng) for _ in range(400)]
    for text in texts:
        assert tok.encode(text, table) == tok.encode_by_replay(text, merges), text
    # The same check catches an encoder that merges by frequency in the new text...
    foil_mismatches = sum(tok.encode_by_frequency(t, table) != tok.encode_by_replay(t, merges)
                          for t in texts)
    assert foil_mismatches > 0
    # ...even though that encoder round-trips, which is why round trips alone cannot catch it.
    assert all(tok.decode(tok.encode_by_frequency(t, table), vocab) == t for t in texts)


def test_incremental_pair_counts_equal_a_full_recount_after_every_merge():
    merges_seen = []

    def check(words, freqs, pair_counts):
        recount = tok.count_pairs(words, freqs)
        assert dict(pair_counts) == dict(recount)
        assert all(count > 0 for count in pair_counts.values())
        merges_seen.append(len(merges_seen))

    merges, counts = tok.train_bpe(CORPUS, 60, on_merge=check)
    assert len(merges_seen) == len(merges) == 60
    # The winning count never rises: other pairs only lose occurrences, and a pair containing
    # the new token occurs at most as often as the new token, i.e. the merged pair's count.
    assert counts == sorted(counts, reverse=True)


def test_incremental_training_learns_the_naive_merges():
    for num_merges in (1, 7, 60, 200):  # 200 runs out of pairs and must stop early
        fast, _counts = tok.train_bpe(CORPUS, num_merges)
        assert fast == tok.train_bpe_naive(CORPUS, num_merges)
    assert len(tok.train_bpe(CORPUS, 200)[0]) < 200


def test_merged_pair_is_gone_from_every_word_after_its_merge():
    final_words = []

    def keep(words, freqs, pair_counts):
        final_words[:] = [list(word) for word in words]

    merges, _counts = tok.train_bpe(CORPUS, 60, on_merge=keep)
    word_pairs = {pair for word in final_words for pair in zip(word, word[1:])}
    assert not word_pairs & set(merges)


def test_encode_reproduces_the_segmentation_training_built():
    final_words = []

    def keep(words, freqs, pair_counts):
        final_words[:] = [list(word) for word in words]

    merges, _counts = tok.train_bpe(CORPUS, 60, on_merge=keep)
    table = tok.make_merge_table(merges)
    # train_bpe stores one word per distinct chunk, in first-seen order.
    chunks = list(dict.fromkeys(c for text in CORPUS for c in tok.split_into_chunks(text)))
    assert len(chunks) == len(final_words)
    for chunk, word in zip(chunks, final_words):
        assert tok.encode(chunk, table) == word, chunk


def test_ties_break_to_the_smallest_pair():
    counts = {(5, 1): 3, (2, 9): 3, (2, 4): 3, (0, 0): 2}
    assert tok.most_frequent_pair(counts) == (2, 4)
    assert tok.most_frequent_pair({(9, 9): 1, (9, 8): 2}) == (9, 8)


def test_merge_pair_is_left_to_right_without_overlap():
    assert tok.merge_pair([1, 1, 1], (1, 1), 256) == [256, 1]
    assert tok.merge_pair([1, 1, 1, 1], (1, 1), 256) == [256, 256]
    assert tok.merge_pair([1, 2, 3, 1, 2], (1, 2), 300) == [300, 3, 300]
    assert tok.merge_pair([], (1, 2), 300) == []


def test_decode_of_every_vocab_id_is_its_byte_string(trained):
    merges, _, vocab = trained

    def expand(token_id):
        if token_id < 256:
            return bytes([token_id])
        left, right = merges[token_id - 256]
        return expand(left) + expand(right)

    for token_id in range(len(vocab)):
        assert tok.decode_bytes([token_id], vocab) == expand(token_id)


def test_compression_is_one_without_merges_and_grows_with_them(trained):
    _, table, _ = trained
    assert tok.compression_ratio(CORPUS, {}) == 1.0
    assert tok.compression_ratio(CORPUS, table) > 1.5
