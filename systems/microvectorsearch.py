"""microvectorsearch: approximate nearest-neighbour search, and what each shortcut costs.

Retrieval (microrag, every embedding-backed search box) asks one question over and over: which
of the stored vectors are nearest to this query? Brute force answers it exactly by measuring
the distance to every stored vector, which is fine for thousands and hopeless for billions.
The indexes that replace it give up a little accuracy for a lot of speed or memory, and this
file builds the three families that FAISS and every vector database are made of:

    names -> hashed character n-grams -> unit vectors (16 floats each)
      -> brute force: every distance, the exact top 10 (the ground truth)
      -> inverted file (IVF): k-means cells, search only the nprobe nearest cells
      -> product quantisation (PQ): 16 floats squeezed into 4 bytes, distances from tables
      -> HNSW: a layered graph, walked greedily from the top, then a beam search at the bottom
      -> recall@10 against distance computations (counted, one counter for all), and memory

Everything is counted rather than timed: a distance computation is one full 16-wide distance,
whichever method asks for it, so the comparison does not depend on how fast Python is.
Memory is counted in the bytes FAISS would store (float32 vectors, int32 graph links, packed
PQ codes); Python's own objects are far bigger and are not what is being taught.

Attribution: the inverted file and product quantisation follow Jegou, Douze and Schmid,
"Product quantization for nearest neighbor search" (2011); the graph is Malkov and Yashunin's
HNSW, "Efficient and robust approximate nearest neighbor search using Hierarchical Navigable
Small World graphs" (2018). The embeddings are the hashing trick of microembedding, untrained.

Run: python systems/microvectorsearch.py    (about 4 s on the 2-core CI machine)
"""
import hashlib
import heapq
import itertools
import math
import operator
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.request

# === HYPERPARAMETERS ===
DIM = 16               # width of every vector (PQ splits it into PQ_M pieces)
NGRAM_SIZES = (1, 2, 3)   # character n-grams of "^name$" hashed into the DIM coordinates
NUM_DATABASE = 4000    # stored vectors (names); brute force measures all of them per query
NUM_QUERIES = 200      # held-out names, never stored, used as queries
TOP_K = 10             # recall@10: how many of the true 10 nearest a method returns
KMEANS_ITERS = 10      # Lloyd iterations for the coarse quantiser and for every PQ codebook
NLIST = 32             # IVF cells: about 125 vectors each (FAISS warns below 39 per centroid)
PQ_M = 8               # PQ sub-vectors: 16 dims -> 8 pieces of 2
PQ_BITS = 4            # bits per sub-vector code: 2^4 = 16 centroids per piece
RERANK_SHORTLIST = (10, 20, 50, 100)   # PQ candidates re-ranked by their exact distance
PQ_RERANK_CRITERION = 50    # the shortlist at which the PQ criterion is read
PQ_CHECK_QUERIES = 20  # queries whose table distances are checked against the decoded vectors
HNSW_M = 8             # graph links per node above layer 0 (layer 0 keeps up to 2 * M)
HNSW_EF_CONSTRUCTION = 40   # beam width while inserting (FAISS's default is 40 too)
HNSW_EF_SWEEP = (10, 20, 40, 80)   # beam widths at query time; recall rises with ef
HNSW_EF_CRITERION = 40      # the ef at which the HNSW criterion is read

# What is simulated, and what real systems do instead: every "cost" here is a count of
# full-width distance computations, not a time. Real indexes are judged by queries per
# second at a recall, and there memory traffic, SIMD and caches matter as much as the count.
# Memory is the bytes FAISS would store, not what these Python lists occupy. And
# 4,000 vectors of 16 dims is tiny: at a billion vectors of 768 dims brute force is out of
# reach and the indexes combine (FAISS's IndexIVFPQ stores PQ codes of each vector's
# residual from its cell's centroid in the inverted lists).

# === DATA ===
# Every no-magic script shares one download cache, so names.txt is fetched once.
# Set NO_MAGIC_DATA_DIR to use another folder (CI points it at a local copy).
DATA_URL = "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt"
DATA_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
DATA_FILE = "names.txt"


def data_dir():
    """The shared cache folder: $NO_MAGIC_DATA_DIR, else $XDG_CACHE_HOME/no-magic."""
    override = os.environ.get("NO_MAGIC_DATA_DIR")
    if override:
        return override
    cache_root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache_root, "no-magic")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_dataset():
    """Return the path of a checksum-verified copy of DATA_FILE, downloading it if needed."""
    folder = data_dir()
    path = os.path.join(folder, DATA_FILE)
    cached_sha = sha256_of(path) if os.path.isfile(path) else None
    if cached_sha == DATA_SHA256:
        return path
    # Download beside the target and rename only after the checksum matches, so an
    # interrupted or corrupted download can never be mistaken for the real file.
    partial = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=folder, prefix=DATA_FILE + ".", suffix=".partial")
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(DATA_URL, timeout=30) as response:
            shutil.copyfileobj(response, out)
        if sha256_of(partial) != DATA_SHA256:
            raise OSError("the downloaded file failed its SHA-256 check")
        os.replace(partial, path)
    except OSError as error:  # URLError, timeouts and disk errors are all OSErrors
        if partial and os.path.exists(partial):
            os.remove(partial)
        if cached_sha is not None:
            # A file is there but it is not the expected one (another version, a truncated
            # copy): say exactly that, and leave the file alone.
            sys.exit(f"error: {path} does not match the expected SHA-256,\n"
                     f"and no fresh copy could be downloaded ({error}).\n"
                     f"  expected {DATA_SHA256}\n  found    {cached_sha}\n"
                     f"The file was left as it is. Replace it with a copy of {DATA_URL}\n"
                     f"(or set NO_MAGIC_DATA_DIR to a folder that holds the right {DATA_FILE}).")
        sys.exit(f"error: could not get {DATA_FILE} ({error}).\n"
                 f"Download {DATA_URL}\nand save it as {path}\n"
                 f"(or set NO_MAGIC_DATA_DIR to a folder that holds {DATA_FILE}).")
    return path


def load_names():
    with open(ensure_dataset(), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


# === EMBEDDING: HASHED CHARACTER N-GRAMS WITH RANDOM SIGNS ===
# A name becomes the bag of n-grams of "^name$" (microembedding's features), and the bag is
# folded into DIM coordinates by the hashing trick (Weinberger et al. 2009): n-gram g adds
# sign(g) to coordinate bucket(g), both read off one hash. The random sign makes collisions
# cancel on average instead of piling up, so the dot product of two folded bags estimates
# the number of n-grams they share. Normalised to length 1, two names are near when they
# share many n-grams ("emma", "emmy"), with no training at all: the lesson here is the
# search, and any fixed set of vectors will do.
# Signpost: production vectors come from a trained encoder and have hundreds of dimensions;
# the indexes below do not care where the vectors came from.

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193


def fnv1a_32(text):
    """32-bit FNV-1a hash: fixed across runs, unlike Python's salted hash() of a str."""
    h = FNV_OFFSET
    for byte in text.encode("utf-8"):
        h ^= byte
        h = (h * FNV_PRIME) & 0xFFFFFFFF
    return h


def embed(name):
    """The unit vector of a name: signed, hashed n-gram counts divided by their length."""
    padded = "^" + name + "$"
    vector = [0.0] * DIM
    for n in NGRAM_SIZES:
        for start in range(len(padded) - n + 1):
            h = fnv1a_32(padded[start:start + n])
            # low bits pick the coordinate, bit 16 the sign: two nearly independent draws
            vector[h % DIM] += 1.0 if (h >> 16) & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


# === DISTANCES, COUNTED ===
# Distance is Euclidean, ||a - b||. On unit vectors ||a - b||^2 = 2 - 2 cos(a, b), so ranking
# by it is ranking by squared L2 and by cosine similarity alike (FAISS's IndexFlatL2 returns
# the squared form; the order is the same). math.dist computes
#     sqrt(sum_i (a_i - b_i)^2)
# in C; squared_l2_naive() below spells the sum out (a test checks they agree to 1e-12).
# One counter serves every method: each full DIM-wide distance evaluated adds one, whether
# brute force, k-means, IVF, HNSW's graph walk or its construction asks for it.

distance = math.dist


class Counter:
    """Counts full-width distance computations; read it before and after a piece of work."""

    def __init__(self):
        self.count = 0


COUNTER = Counter()


def squared_l2_naive(a, b):
    """||a - b||^2 written from the formula; the reference for PQ's table distances."""
    diff = list(map(operator.sub, a, b))        # a_i - b_i
    return sum(map(operator.mul, diff, diff))   # sum_i (a_i - b_i)^2


def distances_to(query, vectors, ids):
    """The distance from query to each vectors[i], i in ids, all counted."""
    COUNTER.count += len(ids)
    return [distance(query, vectors[i]) for i in ids]


def top_k(dists, ids, k):
    """The k ids of smallest distance; ties broken by id, so every method ranks alike."""
    # nsmallest returns exactly sorted(...)[:k], in O(n log k) instead of O(n log n)
    return [i for _, i in heapq.nsmallest(k, zip(dists, ids))]


# === BRUTE FORCE (FAISS: IndexFlatL2) ===
# Measure everything and keep the k smallest: N distances per query, always exact. Its
# answers are the ground truth for every recall below.

def brute_force(query, vectors, k):
    ids = range(len(vectors))
    return top_k(distances_to(query, vectors, ids), ids, k)


def nan_aware_max(values):
    """max() that returns NaN if any value is NaN (max(0.0, nan) is 0.0 in Python)."""
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def recall_at_k(found, truth):
    """Share of the true k nearest that a method returned, averaged over the queries."""
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth))
    return hits / sum(len(t) for t in truth)


# === K-MEANS: THE QUANTISER BOTH IVF AND PQ ARE BUILT FROM ===
# Lloyd's algorithm: assign every point to its nearest centroid, move every centroid to the
# mean of its points, repeat. The centroids start at k distinct random points. A centroid
# left with no points keeps its place (FAISS instead splits a large cluster in two).
# Signpost: FAISS's Clustering runs 25 iterations by default and subsamples the training set
# to at most 256 points per centroid; 10 iterations on every point is enough at this size.

def nearest_centroid(x, centroids):
    dists = list(map(distance, itertools.repeat(x, len(centroids)), centroids))
    return dists.index(min(dists))     # the first of equal minima, as a scan would find


def kmeans(points, k, iterations):
    """Return (centroids, labels): labels are the assignments of the last iteration."""
    centroids = [list(points[i]) for i in random.sample(range(len(points)), k)]
    labels = []
    for _ in range(iterations):
        COUNTER.count += len(points) * k * len(points[0]) // DIM   # full-width equivalents
        labels = [nearest_centroid(x, centroids) for x in points]
        members = [[] for _ in range(k)]
        for x, label in zip(points, labels):
            members[label].append(x)
        for c, cell in enumerate(members):
            if cell:     # mean of the cell's points, one coordinate (column) at a time
                # fsum rounds once, so the centroids are the same on every Python version
                # (3.12 changed how sum() rounds, which would move them in the last digit)
                centroids[c] = [math.fsum(column) / len(cell) for column in zip(*cell)]
    # The labels were computed before the final move of the centroids, so they are one step
    # stale: a point near a cell's border may now be nearer another centroid.
    return centroids, labels


# === INVERTED FILE (FAISS: IndexIVFFlat) ===
# Cut the space into NLIST cells with k-means (the "coarse quantiser"). Each stored vector
# goes into the list of its nearest centroid. A query measures the NLIST centroids, picks
# the nprobe nearest and measures only the vectors in those lists:
#     distances per query = NLIST + sum of the probed lists' sizes  (about nprobe * N / NLIST)
# A true neighbour is missed when it sits in a cell whose centroid is not among the query's
# nprobe nearest, which happens near cell borders. With nprobe = NLIST every list is
# searched and the answer is brute force's, to the last tie.
# Signpost: FAISS's nprobe defaults to 1; real deployments tune it against recall, as below.

def build_ivf(vectors):
    centroids, last_labels = kmeans(vectors, NLIST, KMEANS_ITERS)
    # Assign with the final centroids: the same rule a query meets when it picks its cells.
    COUNTER.count += len(vectors) * NLIST
    assignment = [nearest_centroid(x, centroids) for x in vectors]
    lists = [[] for _ in range(NLIST)]
    for i, cell in enumerate(assignment):
        lists[cell].append(i)
    return centroids, lists


def ivf_search(query, vectors, centroids, lists, nprobe, k):
    # Step 1, the coarse quantiser: NLIST distances to pick the nprobe nearest cells.
    # Step 2: exact distances to every vector in those cells, and the k best of them.
    cell_dists = distances_to(query, centroids, range(len(centroids)))
    probed = sorted(range(len(centroids)), key=cell_dists.__getitem__)[:nprobe]
    ids = [i for cell in probed for i in lists[cell]]
    dists = distances_to(query, vectors, ids)
    return top_k(dists, ids, k)      # the ids the lists hold, not positions within `ids`


def ivf_misassigned(vectors, centroids, lists):
    """Stored vectors not in the list of their nearest centroid, checked plainly.

    Written apart from build_ivf: squared distances by the formula, a scan for the smallest,
    and every id must appear in exactly one list.
    """
    where = {}
    for cell, ids in enumerate(lists):
        for i in ids:
            where.setdefault(i, []).append(cell)
    bad = 0
    for i, x in enumerate(vectors):
        best, best_cell = float("inf"), -1
        for cell, c in enumerate(centroids):
            d = squared_l2_naive(x, c)
            if d < best:
                best, best_cell = d, cell
        if where.get(i) != [best_cell]:
            bad += 1
    return bad


# === PRODUCT QUANTISATION (FAISS: IndexPQ) ===
# Split each DIM-wide vector into PQ_M sub-vectors of DIM / PQ_M dims and learn a separate
# codebook of 2^PQ_BITS centroids for each piece (k-means per sub-space). A vector is stored
# as PQ_M small integers, the index of the nearest centroid of each piece:
#     bytes per vector = ceil(PQ_M * PQ_BITS / 8)   (8 * 4 / 8 = 4 bytes, against 64 for
#     16 float32s). The PQ_M codebooks cost PQ_M * 2^PQ_BITS * DIM / PQ_M floats in all,
#     once for the whole index.
# Its decoded vector x^ is the concatenation of the chosen centroids. Asymmetric distance
# computation (ADC): the query stays exact, and for each piece m a table
#     T[m][c] = ||q_m - codebook[m][c]||^2   (q_m = the query's m-th piece)
# is built once per query; then ||q - x^||^2 = sum_m T[m][code_m]: PQ_M lookups and adds per
# stored vector, no multiplication. Building the tables costs PQ_M * 2^PQ_BITS sub-distances
# of DIM / PQ_M dims, the work of 2^PQ_BITS full distances, which is how they are counted.
# Re-ranking: the shortlist of the R best by ADC is measured exactly (this needs the raw
# vectors, which the 4 bytes were meant to replace: FAISS's IndexRefineFlat does this).

def split(x):
    width = DIM // PQ_M
    return [x[m * width:(m + 1) * width] for m in range(PQ_M)]


def train_pq(vectors):
    # One k-means per sub-space: each codebook learns only its own two coordinates, which is
    # why 2^b centroids per piece can stand for (2^b)^M = 16^8 (about 4e9) distinct vectors.
    pieces = [split(x) for x in vectors]
    codebooks = []
    for m in range(PQ_M):
        centroids, _ = kmeans([p[m] for p in pieces], 2 ** PQ_BITS, KMEANS_ITERS)
        codebooks.append(centroids)
    return codebooks


def encode_pq(x, codebooks):
    return [nearest_centroid(piece, codebooks[m]) for m, piece in enumerate(split(x))]


def pack_codes(codes):
    """PQ_M codes of PQ_BITS bits each into ceil(PQ_M * PQ_BITS / 8) bytes, low bits first.

    Code m occupies bits m*b to m*b + b - 1 of one integer, written out as little-endian
    bytes: with b = 4, two codes share each byte. FAISS packs bit by bit too: its code size
    is (nbits * M + 7) / 8 bytes.
    """
    bits = 0
    for m, code in enumerate(codes):
        bits |= code << (m * PQ_BITS)
    return bits.to_bytes((PQ_M * PQ_BITS + 7) // 8, "little")


def unpack_codes(packed):
    bits = int.from_bytes(packed, "little")
    mask = (1 << PQ_BITS) - 1
    return tuple((bits >> (m * PQ_BITS)) & mask for m in range(PQ_M))


def adc_tables(query, codebooks):
    """T[m][c] = ||q_m - codebook[m][c]||^2 for every piece m and centroid c."""
    COUNTER.count += 2 ** PQ_BITS     # PQ_M * 2^b sub-distances = 2^b full-width ones
    return [[distance(piece, centroid) ** 2 for centroid in codebooks[m]]
            for m, piece in enumerate(split(query))]


def adc_distances(tables, codes):
    """||q - x^||^2 for every stored code: PQ_M table lookups and adds each."""
    return [sum(map(operator.getitem, tables, code)) for code in codes]


def decode_pq(code, codebooks):
    return [v for m, c in enumerate(code) for v in codebooks[m][c]]


def pq_search(query, vectors, codebooks, codes, shortlists, k):
    """The k nearest for each shortlist size R, and the distances each one cost.

    R = 0 is ADC alone; R > 0 re-ranks the R best by ADC with their exact distances. One scan
    of the codes serves every R here; each R's cost is counted as if it ran alone.
    """
    before = COUNTER.count
    approx = adc_distances(adc_tables(query, codebooks), codes)
    table_cost = COUNTER.count - before
    ranked = heapq.nsmallest(max(max(shortlists), k), zip(approx, range(len(codes))))
    found, costs = {}, {}
    for r in shortlists:
        before = COUNTER.count
        if r == 0:
            found[r] = [i for _, i in ranked[:k]]
        else:
            candidates = [i for _, i in ranked[:r]]
            found[r] = top_k(distances_to(query, vectors, candidates), candidates, k)
        costs[r] = table_cost + COUNTER.count - before
    return found, costs


# === HNSW (FAISS: IndexHNSWFlat) ===
# A graph in which each stored vector is linked to a few near ones. Searching a graph is a
# walk: stand on a node, move to whichever neighbour is nearer the query, stop when none
# is. A plain graph needs many hops to cross the data; HNSW adds express lanes. Every node
# draws a level l = floor(-ln(U) * mL) with mL = 1 / ln(M), so a share 1/M of the nodes
# also live on layer 1, 1/M^2 on layer 2, and so on, like a skip list. Upper layers are
# sparse, so their links are long; layer 0 holds every node.
#   search(q): start at the entry point on the top layer; walk greedily to a local minimum;
#              drop to the layer below and walk again from there, down to layer 1; on layer
#              0 run a beam search that keeps the ef nearest found so far (ef >= k) and
#              expands them until no candidate is nearer than the worst kept. Return its k best.
#   insert(x): draw its level; descend greedily to that level; on each layer from there to
#              0 beam-search with efConstruction, link x to M of the results (2M on layer 0),
#              and link each of them back to x, pruning a list that grows past its cap.
# Neighbour choice is the paper's heuristic (its Algorithm 4): take candidates nearest
# first, and keep one only if it is nearer to x than to every neighbour already kept. This
# spreads the links over directions instead of spending them all on one tight cluster.
# Signpost: FAISS's IndexHNSWFlat reserves 2M int32 link slots per node on layer 0 and M on
# each upper layer (its guide puts memory at d * 4 + M * 2 * 4 bytes per vector), with
# efConstruction = 40 and efSearch = 16 by default; hnswlib is the authors' own library.

class HNSW:
    def __init__(self, vectors, m, ef_construction):
        self.vectors = vectors
        self.m, self.ef_construction = m, ef_construction
        self.level_mult = 1.0 / math.log(m)
        self.links = []          # links[i][layer] = list of neighbour ids of node i
        self.entry, self.top = None, -1

    def search_layer(self, query, entry_points, ef, layer):
        """Beam search on one layer from entry_points [(dist, id)]: the ef nearest, sorted.

        The paper's Algorithm 2. With ef = 1 it is the greedy walk: move to the nearest
        neighbour while that is nearer than where we stand.
        """
        vectors, links = self.vectors, self.links
        visited = {i for _, i in entry_points}
        candidates = list(entry_points)             # min-heap: the nearest unexpanded first
        heapq.heapify(candidates)
        kept = [(-d, i) for d, i in entry_points]   # max-heap by distance: the worst on top
        heapq.heapify(kept)
        while len(kept) > ef:
            heapq.heappop(kept)
        while candidates:
            d, node = heapq.heappop(candidates)
            if d > -kept[0][0]:
                break     # the nearest unexpanded candidate is worse than all we keep: done
            fresh = [n for n in links[node][layer] if n not in visited]
            if not fresh:
                continue
            visited.update(fresh)
            COUNTER.count += len(fresh)
            dists = map(distance, itertools.repeat(query), [vectors[n] for n in fresh])
            for dn, n in zip(dists, fresh):
                if len(kept) < ef:
                    heapq.heappush(candidates, (dn, n))
                    heapq.heappush(kept, (-dn, n))
                elif dn < -kept[0][0]:
                    heapq.heappush(candidates, (dn, n))
                    heapq.heapreplace(kept, (-dn, n))     # the new one in, the worst out
        return sorted((-nd, i) for nd, i in kept)

    def select_neighbours(self, candidates, limit):
        """The heuristic: nearest first, kept only if nearer to x than to any kept one."""
        vectors = self.vectors
        chosen = []
        for d, c in candidates:
            if len(chosen) >= limit:
                break
            good = True
            for r in chosen:
                COUNTER.count += 1
                if distance(vectors[c], vectors[r]) < d:
                    good = False
                    break
            if good:
                chosen.append(c)
        return chosen

    def insert(self, i):
        x = self.vectors[i]
        # l = floor(-ln(U) * mL), U uniform in (0, 1]: P(l >= j) = M^-j, an exponential decay
        level = int(-math.log(1.0 - random.random()) * self.level_mult)
        self.links.append([[] for _ in range(level + 1)])
        if self.entry is None:
            self.entry, self.top = i, level
            return
        COUNTER.count += 1
        nearest = [(distance(x, self.vectors[self.entry]), self.entry)]
        # Above the new node's own level only a good starting point is wanted: greedy (ef 1).
        for layer in range(self.top, level, -1):
            nearest = self.search_layer(x, nearest, 1, layer)
        # From its level down, a wide beam finds candidates to link to; each layer's results
        # seed the search of the layer below.
        for layer in range(min(level, self.top), -1, -1):
            found = self.search_layer(x, nearest, self.ef_construction, layer)
            neighbours = self.select_neighbours(found, self.m)
            self.links[i][layer] = neighbours
            cap = 2 * self.m if layer == 0 else self.m
            for n in neighbours:
                # The link back: without it a node could be found only from nodes inserted
                # after it, never from the older nodes a search walks through.
                self.links[n][layer].append(i)
                if len(self.links[n][layer]) > cap:
                    self.prune(n, layer, cap)
            nearest = found
        if level > self.top:     # a new highest node becomes the entry point of every search
            self.entry, self.top = i, level

    def prune(self, n, layer, cap):
        """Cut node n's over-full list back to at most cap links with the same heuristic."""
        own = self.vectors[n]
        ids = self.links[n][layer]
        COUNTER.count += len(ids)
        ranked = sorted((distance(own, self.vectors[j]), j) for j in ids)
        self.links[n][layer] = self.select_neighbours(ranked, cap)

    def search(self, query, k, ef):
        """The k nearest: greedy down the upper layers, then a beam of width ef on layer 0."""
        COUNTER.count += 1
        nearest = [(distance(query, self.vectors[self.entry]), self.entry)]
        for layer in range(self.top, 0, -1):
            nearest = self.search_layer(query, nearest, 1, layer)
        found = self.search_layer(query, nearest, max(ef, k), 0)
        return [i for _, i in found[:k]]


def reachable_from_entry(graph):
    """Nodes a walk on layer 0 can reach from the entry point (every one, in a sound graph)."""
    seen, stack = {graph.entry}, [graph.entry]
    while stack:
        for n in graph.links[stack.pop()][0]:
            if n not in seen:
                seen.add(n)
                stack.append(n)
    return len(seen)


# === PICTURES ===

def recall_chart(points, brute_cost, width=64, height=16):
    """Recall@10 (up) against distance computations per query (across, log scale).

    points: (letter, distances per query, recall). Several points in one cell show as '*'.
    """
    low = math.log10(min(p[1] for p in points) / 1.5)
    high = math.log10(brute_cost * 1.5)
    grid = [[" "] * width for _ in range(height)]
    for letter, cost, recall in points:
        col = round((math.log10(cost) - low) / (high - low) * (width - 1))
        row = round((1.0 - recall) * (height - 1))
        cell = grid[row][col]
        grid[row][col] = letter if cell in (" ", letter) else "*"
    lines = []
    for r, row in enumerate(grid):
        label = f"{1.0 - r / (height - 1):4.2f}" if r % 3 == 0 else "    "
        lines.append(f"  {label} |" + "".join(row))
    lines.append("       +" + "-" * width)
    ticks = [10 ** e for e in range(math.ceil(low), math.floor(high) + 1)]
    axis = [" "] * (width + 8)
    for t in ticks:
        col = 8 + round((math.log10(t) - low) / (high - low) * (width - 1))
        text = f"{t:,}"
        for j, ch in enumerate(text):
            if col + j < len(axis):
                axis[col + j] = ch
    lines.append("".join(axis).rstrip() + "   distance computations per query (log)")
    return "\n".join(lines)


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("IVF recall@10 with every list probed", "ivf_full_probe_recall", "==", 1.0),
    ("IVF: stored vectors not in their nearest cell", "ivf_misassigned", "==", 0),
    ("HNSW recall@10 at the criterion's ef", "hnsw_recall", ">=", 0.95),
    ("HNSW distances per query / brute force's", "hnsw_distance_fraction", "<=", 0.12),
    ("PQ bytes per stored vector (packed codes)", "pq_bytes_per_vector", "==", "pq_formula_bytes"),
    ("PQ: max |table distance - ||q - decoded||^2|", "pq_adc_max_error", "<", 1e-9),
    ("PQ recall@10 after re-ranking 50 candidates", "pq_rerank_recall", ">=", 0.9),
]
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
           "==": operator.eq}


def print_criteria(results):
    print(f"\n{'criterion':<52} {'measured':>12} {'threshold':>14}  result")
    for description, key, op, target in CRITERIA:
        value = results[key]
        threshold = results[target] if isinstance(target, str) else target
        # A non-finite value fails every row: NaN compares False with anything, but
        # inf would pass a ">" row, so finiteness is checked explicitly.
        finite = math.isfinite(value) and math.isfinite(threshold)
        verdict = "PASS" if finite and COMPARE[op](value, threshold) else "FAIL"
        print(f"{description:<52} {value:>12.6g} {op:>2} {threshold:<11.6g}  {verdict}")


# === MAIN ===

def main():
    random.seed(42)  # every random draw below (split, k-means starts, HNSW levels) follows
    start = time.time()
    # Distinct names only (a repeated name would be its own exact neighbour), shuffled so the
    # stored set and the queries are both random draws; queries are never stored, as in use.
    names = sorted(set(load_names()))
    random.shuffle(names)
    database_names = names[:NUM_DATABASE]
    query_names = names[NUM_DATABASE:NUM_DATABASE + NUM_QUERIES]
    vectors = [embed(n) for n in database_names]
    queries = [embed(n) for n in query_names]
    n = len(vectors)
    print(f"{len(names)} distinct names: {n} stored, {len(queries)} held out as queries; "
          f"{DIM} dims each")

    # --- 1. Brute force: the ground truth ---
    # N distances per query, no index, no error. Every recall below is measured against
    # these lists; a few are printed to show the vectors put similar spellings together.
    print(f"\n--- 1. Brute force: every distance ({time.time() - start:.1f}s) ---")
    before = COUNTER.count
    truth = [brute_force(q, vectors, TOP_K) for q in queries]
    brute_cost = (COUNTER.count - before) / len(queries)
    for q in range(3):
        print(f"  {query_names[q]:<12} -> " + ", ".join(database_names[i] for i in truth[q][:6]))
    print(f"{brute_cost:,.0f} distances per query; recall 1 by definition")
    rows = [("brute force", "", 1.0, brute_cost, 0, DIM * 4)]
    chart = [("B", brute_cost, 1.0)]

    # --- 2. Inverted file ---
    # Built once (k-means plus one assignment pass), then searched with rising nprobe. Watch
    # recall climb toward 1 while the work climbs toward brute force's: nprobe is the dial.
    print(f"\n--- 2. Inverted file: {NLIST} k-means cells ({time.time() - start:.1f}s) ---")
    before = COUNTER.count
    centroids, lists = build_ivf(vectors)
    build = COUNTER.count - before
    sizes = sorted(len(ids) for ids in lists)
    print(f"build: {build:,} distances; list sizes from {sizes[0]} to {sizes[-1]} "
          f"(mean {n / NLIST:.0f})")
    # The invariant IVF's search relies on: a vector lives in its nearest centroid's list,
    # the same rule the query uses to pick cells. Checked by a plain scan, apart from build.
    misassigned = ivf_misassigned(vectors, centroids, lists)
    nprobes = [p for p in (1, 2, 4, 8, 16, 32, 64, 128) if p < NLIST] + [NLIST]
    # At nprobe = NLIST the coarse step still costs NLIST distances: more than brute force.
    ivf_recall = {}
    for nprobe in nprobes:
        before = COUNTER.count
        found = [ivf_search(q, vectors, centroids, lists, nprobe, TOP_K) for q in queries]
        cost = (COUNTER.count - before) / len(queries)
        ivf_recall[nprobe] = recall_at_k(found, truth)
        # FAISS stores each vector's float32s plus its int64 id in the list
        rows.append(("IVF", f"nprobe={nprobe}", ivf_recall[nprobe], cost, 0, DIM * 4 + 8))
        chart.append(("I", cost, ivf_recall[nprobe]))
        print(f"  nprobe {nprobe:3d}: recall@10 {ivf_recall[nprobe]:.3f}, "
              f"{cost:7,.0f} distances per query")
    print(f"stored vectors not in the list of their nearest centroid: {misassigned}")

    # --- 3. Product quantisation ---
    # The other axis: not fewer distances but smaller vectors. The codes are packed into
    # bytes, read back from them, and searched by table lookups; re-ranking then buys back
    # accuracy with a few exact distances on a shortlist.
    print(f"\n--- 3. Product quantisation: {PQ_M} pieces x {2 ** PQ_BITS} centroids "
          f"({time.time() - start:.1f}s) ---")
    codebooks = train_pq(vectors)
    encoded = [encode_pq(x, codebooks) for x in vectors]
    packed = [pack_codes(code) for code in encoded]
    storage = b"".join(packed)       # the index holds these bytes and nothing else per vector
    # Search reads the codes back out of the bytes, so the bytes are all PQ keeps per vector.
    width = len(packed[0])
    codes = [unpack_codes(storage[j:j + width]) for j in range(0, len(storage), width)]
    mismatches = sum(c != tuple(e) for c, e in zip(codes, encoded))
    bytes_per_vector = len(storage) / n
    formula_bytes = math.ceil(PQ_M * PQ_BITS / 8)
    codebook_bytes = PQ_M * 2 ** PQ_BITS * (DIM // PQ_M) * 4
    print(f"{len(storage):,} bytes of codes: {bytes_per_vector:g} per vector (formula "
          f"ceil({PQ_M} x {PQ_BITS} / 8) = {formula_bytes}), against {DIM * 4} as float32; "
          f"codebooks {codebook_bytes:,} bytes once")
    print(f"stored vector 0 '{database_names[0]}': codes {list(codes[0])} = bytes "
          f"{packed[0].hex(' ')}")
    # The table distances must equal the exact squared distance to the decoded vector,
    # computed plainly from the formula: that is the whole claim of ADC.
    errors = []
    for q in queries[:PQ_CHECK_QUERIES]:
        tables = adc_tables(q, codebooks)
        errors += [abs(approx - squared_l2_naive(q, decode_pq(code, codebooks)))
                   for code, approx in zip(codes, adc_distances(tables, codes))]
    worst = nan_aware_max(errors)
    print(f"max |ADC - ||q - decoded||^2| over {PQ_CHECK_QUERIES} queries x {n} codes: "
          f"{worst:.1e}")
    # ADC alone ranks by distance to the decoded vectors, which are off by the quantisation
    # error, so near neighbours swap places; a shortlist of a few times k re-ranked exactly
    # recovers most of them. Re-ranking 10 returns the same 10 as ADC alone (only reordered).
    settings = tuple(sorted({0, PQ_RERANK_CRITERION, *RERANK_SHORTLIST}))
    searched = [pq_search(q, vectors, codebooks, codes, settings, TOP_K) for q in queries]
    pq_recall = {}
    for shortlist in settings:
        pq_recall[shortlist] = recall_at_k([f[shortlist] for f, _ in searched], truth)
        cost = sum(c[shortlist] for _, c in searched) / len(queries)
        label = "ADC only" if not shortlist else f"re-rank {shortlist}"
        # re-ranking keeps the float32 vectors beside the codes
        memory = bytes_per_vector if not shortlist else bytes_per_vector + DIM * 4
        rows.append(("PQ", label, pq_recall[shortlist], cost, n * PQ_M, memory))
        chart.append(("P", cost, pq_recall[shortlist]))
        print(f"  {label:<12}: recall@10 {pq_recall[shortlist]:.3f}, {cost:5,.0f} distances "
              f"+ {n * PQ_M:,} table lookups per query")

    # --- 4. HNSW ---
    # Built by inserting the vectors one at a time (no training); every distance the
    # insertions compute is counted too, since the graph's build is its price.
    print(f"\n--- 4. HNSW: M = {HNSW_M}, efConstruction = {HNSW_EF_CONSTRUCTION} "
          f"({time.time() - start:.1f}s) ---")
    before = COUNTER.count
    graph = HNSW(vectors, HNSW_M, HNSW_EF_CONSTRUCTION)
    for i in range(n):
        graph.insert(i)
        if (i + 1) % max(1, n // 4) == 0:
            print(f"  inserted {i + 1:5d}/{n} | {COUNTER.count - before:,} distances | "
                  f"{time.time() - start:.1f}s")
    build = COUNTER.count - before
    per_layer = [sum(1 for links in graph.links if len(links) > layer)
                 for layer in range(graph.top + 1)]
    link_count = sum(len(l) for links in graph.links for l in links)
    # Layer sizes should shrink by about M per layer; a sound graph reaches every node.
    reached = reachable_from_entry(graph)
    print(f"build: {build / n:,.0f} distances per insertion; nodes per layer (0 up): "
          f"{per_layer}; {link_count / n:.1f} links per node; layer 0 reaches {reached}/{n}")
    # ef is the search's beam width: a wider beam explores more of layer 0 before it stops.
    hnsw_recall, hnsw_cost = {}, {}
    for ef in sorted(set(HNSW_EF_SWEEP) | {HNSW_EF_CRITERION}):
        before = COUNTER.count
        found = [graph.search(q, TOP_K, ef) for q in queries]
        hnsw_cost[ef] = (COUNTER.count - before) / len(queries)
        hnsw_recall[ef] = recall_at_k(found, truth)
        rows.append(("HNSW", f"ef={ef}", hnsw_recall[ef], hnsw_cost[ef], 0,
                     DIM * 4 + 4 * link_count / n))
        chart.append(("H", hnsw_cost[ef], hnsw_recall[ef]))
        print(f"  ef {ef:3d}: recall@10 {hnsw_recall[ef]:.3f}, {hnsw_cost[ef]:6,.0f} distances "
              f"per query ({hnsw_cost[ef] / brute_cost:.1%} of brute force)")

    # --- 5. The comparison ---
    # One row per setting: recall@10, full distances per query (one counter for all), PQ's
    # table lookups (an add each, far cheaper than a 16-wide distance), and bytes per vector
    # as FAISS would store them (float32, int64 ids in IVF lists, int32 graph links).
    print(f"\n--- 5. Recall against work and memory ({time.time() - start:.1f}s) ---")
    print(f"  {'method':<11} {'setting':<12} {'recall@10':>9} {'distances':>10} "
          f"{'lookups':>8} {'bytes/vector':>13}")
    for method, setting, recall, cost, lookups, memory in rows:
        print(f"  {method:<11} {setting:<12} {recall:>9.3f} {cost:>10,.0f} {lookups:>8,} "
              f"{memory:>13.1f}")
    print("\nRecall@10 against distance computations per query (B brute force, I IVF, "
          "P PQ, H HNSW, * several):")
    print(recall_chart(chart, brute_cost))
    print("P points also scan every stored code (table lookups, not counted on this axis).")

    results = {
        "brute_force_distances": brute_cost,
        "ivf_full_probe_recall": ivf_recall[NLIST],
        "ivf_recall_nprobe1": ivf_recall[1],
        "ivf_misassigned": misassigned,
        "hnsw_recall": hnsw_recall[HNSW_EF_CRITERION],
        "hnsw_distances": hnsw_cost[HNSW_EF_CRITERION],
        "hnsw_distance_fraction": hnsw_cost[HNSW_EF_CRITERION] / brute_cost,
        "hnsw_build_distances_per_vector": build / n,
        "hnsw_reachable_fraction": reached / n,
        "pq_bytes_per_vector": bytes_per_vector,
        "pq_formula_bytes": formula_bytes,
        "pq_unpack_mismatches": mismatches,
        "pq_adc_max_error": worst,
        "pq_adc_recall": pq_recall[0],
        "pq_rerank_recall": pq_recall[PQ_RERANK_CRITERION],
    }
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: "
          "docs/challenges/microvectorsearch.md")
    return results


if __name__ == "__main__":
    main()
