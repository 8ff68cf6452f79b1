"""Fast checks specific to systems/microvectorsearch.py.

The script's exact claims are checked against plain references on small random data: the
C distance equals the formula, IVF with every list probed is brute force, packed PQ codes read
back unchanged in ceil(M * b / 8) bytes, table distances equal the distance to the decoded
vector (and a table built from the wrong codebook does not), HNSW's graph respects its caps,
reaches every node and finds the true neighbours, and the checks the criteria rely on
(misassigned IVF vectors, the neighbour heuristic) catch what they are meant to catch.
"""
import math
import random

import pytest

from support import load_script

vs = load_script("systems/microvectorsearch.py")


def unit_vectors(count, dim, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        v = [rng.gauss(0.0, 1.0) for _ in range(dim)]
        norm = math.sqrt(sum(x * x for x in v))
        out.append([x / norm for x in v])
    return out


def exact_top_k(query, vectors, k):
    """The reference: sort every (squared distance, id) by the formula."""
    return [i for _, i in sorted((vs.squared_l2_naive(query, v), i)
                                 for i, v in enumerate(vectors))[:k]]


# --- distances and embeddings ---------------------------------------------------------------

def test_math_dist_is_the_square_root_of_the_formula():
    vectors = unit_vectors(50, 16, seed=0)
    for a, b in zip(vectors, vectors[1:]):
        assert math.isclose(vs.distance(a, b) ** 2, vs.squared_l2_naive(a, b),
                            rel_tol=1e-12, abs_tol=1e-15)


def test_embeddings_are_unit_vectors_and_fixed():
    for name in ("emma", "x", "christopher"):
        v = vs.embed(name)
        assert len(v) == vs.DIM
        assert math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-12)
        assert v == vs.embed(name)          # FNV-1a, not Python's salted hash()


def test_brute_force_equals_the_sorted_reference():
    vectors = unit_vectors(300, 16, seed=1)
    for q in unit_vectors(10, 16, seed=2):
        assert vs.brute_force(q, vectors, 10) == exact_top_k(q, vectors, 10)


def test_recall_counts_the_overlap():
    assert vs.recall_at_k([[1, 2, 3], [4, 5, 6]], [[1, 2, 9], [4, 7, 8]]) == pytest.approx(0.5)


def test_nan_aware_max_keeps_a_nan():
    assert math.isnan(vs.nan_aware_max([0.0, math.nan, 1.0]))
    assert vs.nan_aware_max([0.0, 2.0, 1.0]) == 2.0


# --- the inverted file ----------------------------------------------------------------------

@pytest.fixture()
def small_ivf(monkeypatch):
    monkeypatch.setattr(vs, "NLIST", 8)
    monkeypatch.setattr(vs, "KMEANS_ITERS", 4)
    random.seed(3)
    vectors = unit_vectors(400, 16, seed=4)
    centroids, lists = vs.build_ivf(vectors)
    return vectors, centroids, lists


def test_ivf_with_every_list_probed_is_brute_force(small_ivf):
    vectors, centroids, lists = small_ivf
    for q in unit_vectors(20, 16, seed=5):
        assert vs.ivf_search(q, vectors, centroids, lists, len(lists), 10) == \
            exact_top_k(q, vectors, 10)


def test_ivf_lists_hold_every_vector_once_in_its_nearest_cell(small_ivf):
    vectors, centroids, lists = small_ivf
    assert sorted(i for ids in lists for i in ids) == list(range(len(vectors)))
    assert vs.ivf_misassigned(vectors, centroids, lists) == 0


def test_the_misassignment_check_sees_a_moved_and_a_duplicated_vector(small_ivf):
    vectors, centroids, lists = small_ivf
    moved = [list(ids) for ids in lists]
    source = next(c for c, ids in enumerate(moved) if ids)
    moved[(source + 1) % len(moved)].append(moved[source].pop())
    assert vs.ivf_misassigned(vectors, centroids, moved) == 1
    doubled = [list(ids) for ids in lists]
    doubled[(source + 1) % len(doubled)].append(doubled[source][0])
    assert vs.ivf_misassigned(vectors, centroids, doubled) == 1


def test_ivf_recall_never_falls_as_nprobe_grows(small_ivf):
    vectors, centroids, lists = small_ivf
    queries = unit_vectors(30, 16, seed=6)
    truth = [exact_top_k(q, vectors, 10) for q in queries]
    recalls = [vs.recall_at_k([vs.ivf_search(q, vectors, centroids, lists, p, 10)
                               for q in queries], truth) for p in range(1, len(lists) + 1)]
    assert recalls == sorted(recalls) and recalls[-1] == 1.0


# --- product quantisation -------------------------------------------------------------------

@pytest.mark.parametrize("bits", [1, 3, 4, 5, 8])
def test_packed_codes_read_back_unchanged_in_the_formula_bytes(monkeypatch, bits):
    monkeypatch.setattr(vs, "PQ_BITS", bits)
    rng = random.Random(bits)
    for _ in range(50):
        codes = [rng.randrange(2 ** bits) for _ in range(vs.PQ_M)]
        packed = vs.pack_codes(codes)
        assert len(packed) == math.ceil(vs.PQ_M * bits / 8)
        assert vs.unpack_codes(packed) == tuple(codes)


@pytest.fixture()
def small_pq(monkeypatch):
    monkeypatch.setattr(vs, "KMEANS_ITERS", 4)
    random.seed(7)
    vectors = unit_vectors(300, 16, seed=8)
    codebooks = vs.train_pq(vectors)
    codes = [tuple(vs.encode_pq(x, codebooks)) for x in vectors]
    return vectors, codebooks, codes


def test_each_code_is_the_nearest_centroid_of_its_piece(small_pq):
    vectors, codebooks, codes = small_pq
    width = vs.DIM // vs.PQ_M
    for x, code in zip(vectors, codes):
        for m, c in enumerate(code):
            piece = x[m * width:(m + 1) * width]
            best = min(range(len(codebooks[m])),
                       key=lambda j: vs.squared_l2_naive(piece, codebooks[m][j]))
            assert vs.squared_l2_naive(piece, codebooks[m][c]) == \
                vs.squared_l2_naive(piece, codebooks[m][best])


def test_table_distances_equal_the_distance_to_the_decoded_vector(small_pq):
    vectors, codebooks, codes = small_pq
    for q in unit_vectors(5, 16, seed=9):
        approx = vs.adc_distances(vs.adc_tables(q, codebooks), codes)
        for code, a in zip(codes, approx):
            assert math.isclose(a, vs.squared_l2_naive(q, vs.decode_pq(code, codebooks)),
                                rel_tol=1e-12, abs_tol=1e-14)


def test_a_table_from_the_wrong_codebook_is_far_off(small_pq):
    vectors, codebooks, codes = small_pq
    q = unit_vectors(1, 16, seed=10)[0]
    wrong = [[vs.squared_l2_naive(piece, c) for c in codebooks[(m + 1) % vs.PQ_M]]
             for m, piece in enumerate(vs.split(q))]
    errors = [abs(a - vs.squared_l2_naive(q, vs.decode_pq(code, codebooks)))
              for code, a in zip(codes, vs.adc_distances(wrong, codes))]
    assert max(errors) > 1e-3


def test_pq_search_with_a_full_shortlist_is_exact(small_pq):
    vectors, codebooks, codes = small_pq
    for q in unit_vectors(5, 16, seed=11):
        found, costs = vs.pq_search(q, vectors, codebooks, codes, (0, len(vectors)), 10)
        assert found[len(vectors)] == exact_top_k(q, vectors, 10)
        assert costs[0] == 2 ** vs.PQ_BITS                 # the tables alone
        assert costs[len(vectors)] == 2 ** vs.PQ_BITS + len(vectors)


# --- HNSW -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def graph():
    random.seed(12)
    vectors = unit_vectors(600, 16, seed=13)
    g = vs.HNSW(vectors, 6, 40)
    for i in range(len(vectors)):
        g.insert(i)
    return g


def test_hnsw_links_respect_their_caps_and_layers(graph):
    for i, layers in enumerate(graph.links):
        for layer, links in enumerate(layers):
            assert len(links) <= (2 * graph.m if layer == 0 else graph.m)
            assert i not in links and len(set(links)) == len(links)
            # a link on a layer points at a node that lives on that layer
            assert all(len(graph.links[j]) > layer for j in links)
    assert len(graph.links[graph.entry]) == graph.top + 1


def test_hnsw_layer_zero_reaches_every_node(graph):
    assert vs.reachable_from_entry(graph) == len(graph.vectors)


def test_hnsw_finds_the_true_neighbours(graph):
    queries = unit_vectors(40, 16, seed=14)
    truth = [exact_top_k(q, graph.vectors, 10) for q in queries]
    found = [graph.search(q, 10, 64) for q in queries]
    assert vs.recall_at_k(found, truth) >= 0.95


def test_a_wide_beam_over_layer_zero_alone_is_exact(graph):
    q = unit_vectors(1, 16, seed=15)[0]
    start = [(vs.distance(q, graph.vectors[graph.entry]), graph.entry)]
    found = graph.search_layer(q, start, len(graph.vectors), 0)
    assert [i for _, i in found[:10]] == exact_top_k(q, graph.vectors, 10)


def test_the_heuristic_drops_a_candidate_hidden_behind_a_kept_one():
    # x at the origin; b sits just past a, nearer to a than to x, so a covers it; c lies the
    # other way and is kept although it is farther than b.
    vectors = [[0.0, 0.0], [1.0, 0.0], [1.2, 0.1], [-1.5, 0.0]]
    g = vs.HNSW(vectors, 4, 10)
    ranked = sorted((vs.distance(vectors[0], vectors[j]), j) for j in (1, 2, 3))
    assert g.select_neighbours(ranked, 3) == [1, 3]
