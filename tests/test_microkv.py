"""Fast checks specific to systems/microkv.py.

The script's claims are exact, so these tests are too: the float forward pass equals the
Value forward pass bit for bit, cached generation equals uncached generation, paged reads
equal contiguous reads, and the multiplication counter equals the multiplications a float
type counts for itself. Deliberately broken caches (positions off by one, keys or values not
appended, a cache that stops growing, block tables read as if the blocks were contiguous)
must fail the same checks by a wide margin, so the checks cannot pass by accident. The fused autograd nodes of the brief
training run are checked against their naive forms and the whole model against finite
differences.
"""
import math
import random

import pytest

from support import close, grads, load_script, values_of

kv = load_script("systems/microkv.py")
Value = kv.Value
BOS = 26
values = values_of(Value)


@pytest.fixture(scope="module")
def weights():
    """An untrained model as floats (the cache's exactness does not depend on training)."""
    random.seed(0)
    model, _ = kv.init_model(vocab_size=27)
    return kv.to_floats(model)


# --- fused nodes against their naive forms --------------------------------------------------

def test_fused_mean_equals_naive_mean():
    raw = [0.4, -1.1, 2.5, 0.7]
    x1, x2 = values(raw), values(raw)
    fused = kv.mean(x1)
    naive = x2[0]
    for x in x2[1:]:
        naive = naive + x
    naive = naive * (1.0 / len(x2))
    (fused * fused).backward()
    (naive * naive).backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(x1), grads(x2))


def test_whole_model_gradient_matches_finite_differences():
    random.seed(0)
    model, params = kv.init_model(vocab_size=27)
    tokens = [BOS, 4, 12, 12, 0, BOS]  # BOS e m m a BOS
    kv.name_loss(model, tokens).backward()
    rng = random.Random(4)
    for p in rng.sample(params, 25):
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = kv.name_loss(model, tokens).data
        p.data = original - 1e-5
        down = kv.name_loss(model, tokens).data
        p.data = original
        assert math.isclose(analytic, (up - down) / 2e-5, rel_tol=1e-4, abs_tol=1e-8)


# --- the float forward pass and its multiplication counter ----------------------------------

def test_float_forward_equals_value_forward_exactly():
    random.seed(5)
    model, _ = kv.init_model(vocab_size=27)
    weights = kv.to_floats(model)
    tokens = [BOS, 12, 0, 17, 8, 0]
    keys, vals = [[] for _ in range(kv.N_LAYER)], [[] for _ in range(kv.N_LAYER)]
    cache = kv.ContiguousCache()
    for pos, tok in enumerate(tokens):
        value_logits = [z.data for z in kv.gpt_step(model, tok, pos, keys, vals)]
        float_logits = kv.forward_pass(weights, [tok], pos, cache, kv.OpCounter())
        assert value_logits == float_logits
        # a prefill of the first pos + 1 tokens ends at the same logits
        prefill = kv.forward_pass(weights, tokens[:pos + 1], 0, kv.ContiguousCache(),
                                  kv.OpCounter())
        assert prefill == float_logits


def test_reference_logits_equal_the_forward_pass_at_every_position(weights):
    # The plain reference behind reference_logit_difference agrees with the script's forward
    # pass at every position of a whole-sequence pass, not just the last one
    tokens = [BOS, 12, 0, 17, 8, 0, 13, 4]
    every = kv.forward_pass(weights, tokens, 0, kv.ContiguousCache(), kv.OpCounter(),
                            every_position=True)
    expected = kv.reference_logits(weights, tokens)
    assert len(every) == len(expected) == len(tokens)
    assert max(abs(a - b) for got, want in zip(every, expected)
               for a, b in zip(got, want)) < 1e-12
    assert every[-1] == kv.forward_pass(weights, tokens, 0, kv.ContiguousCache(),
                                        kv.OpCounter())


def test_nan_aware_max_does_not_skip_nan():
    assert max(0.0, math.nan) == 0.0                    # the trap
    assert math.isnan(kv.nan_aware_max([0.0, math.nan, 1.0]))
    assert kv.nan_aware_max([0.0, math.inf]) == math.inf


class CountingFloat(float):
    """A float that counts every * and / it takes part in (a division counts as one)."""
    count = 0

    def _wrap(self, result):
        return CountingFloat(result)

    def __mul__(self, other):
        CountingFloat.count += 1
        return CountingFloat(float(self) * float(other))

    __rmul__ = __mul__

    def __truediv__(self, other):
        CountingFloat.count += 1
        return CountingFloat(float(self) / float(other))

    def __rtruediv__(self, other):
        CountingFloat.count += 1
        return CountingFloat(float(other) / float(self))

    def __add__(self, other):
        return CountingFloat(float(self) + float(other))

    __radd__ = __add__

    def __sub__(self, other):
        return CountingFloat(float(self) - float(other))

    def __rsub__(self, other):
        return CountingFloat(float(other) - float(self))


def test_multiplication_counter_is_exact(weights, monkeypatch):
    counting = {name: [[CountingFloat(w) for w in row] for row in mat]
                for name, mat in weights.items()}
    real_exp = kv.math.exp
    monkeypatch.setattr(kv.math, "exp", lambda z: CountingFloat(real_exp(z)))
    cache = kv.ContiguousCache()
    for tokens, start in (([BOS, 3, 4], 0), ([7], 3), ([1], 4)):   # a prefill, two decodes
        counter = kv.OpCounter()
        CountingFloat.count = 0
        logits = kv.forward_pass(counting, tokens, start, cache, counter)
        assert all(isinstance(z, CountingFloat) for z in logits)  # no path escaped counting
        assert counter.mults == CountingFloat.count > 0


# --- cached versus uncached generation ------------------------------------------------------

def generate_pair(weights, length=12, seed=7):
    prompt = [BOS, 12, 0]
    uncached = kv.generate(weights, prompt, length, False, seed, ban_token=BOS)
    cached = kv.generate(weights, prompt, length, True, seed, ban_token=BOS)
    return uncached, cached


def test_cached_and_uncached_generation_agree_exactly(weights):
    (tokens_u, steps_u), (tokens_c, steps_c) = generate_pair(weights)
    assert tokens_u == tokens_c and len(tokens_c) == 12
    assert kv.max_logit_difference(steps_u, steps_c) == 0.0
    # the cache did save work: every decode step costs less than its uncached twin
    assert all(c["mults"] < u["mults"] for u, c in zip(steps_u[1:], steps_c[1:]))
    assert steps_u[0]["mults"] == steps_c[0]["mults"]   # the prefill is the same pass


def test_cache_holds_two_vectors_per_layer_per_position(weights):
    _, (_, steps) = generate_pair(weights)
    for step in steps:
        assert step["cache_floats"] == 2 * kv.N_LAYER * kv.N_EMBD * step["positions"]


def test_deeper_and_narrower_models_cache_exactly_too(monkeypatch):
    # Two layers: layer 1's keys depend on layer 0's whole output, so this checks that a
    # prefill and the decode steps hand every layer the right inputs. Width 8 checks the
    # memory formula in its other factor.
    monkeypatch.setattr(kv, "N_LAYER", 2)
    monkeypatch.setattr(kv, "N_EMBD", 8)
    monkeypatch.setattr(kv, "MLP_HIDDEN", 32)
    random.seed(6)
    model, _ = kv.init_model(vocab_size=27)
    weights = kv.to_floats(model)
    (tokens_u, steps_u), (tokens_c, steps_c) = generate_pair(weights, length=10)
    assert tokens_u == tokens_c
    assert kv.max_logit_difference(steps_u, steps_c) == 0.0
    assert all(s["cache_floats"] == 2 * 2 * 8 * s["positions"] for s in steps_c)
    # and the Value forward pass of the training code agrees at every position
    keys, vals = [[], []], [[], []]
    for pos, tok in enumerate(tokens_c):
        value_logits = [z.data for z in kv.gpt_step(model, tok, pos, keys, vals)]
        if pos >= 2:   # from the last prompt position on, one step per position
            assert value_logits == steps_c[pos - 2]["logits"]


def test_positions_off_by_one_fail_the_logit_check(weights, monkeypatch):
    honest, _ = generate_pair(weights)
    real_forward = kv.forward_pass

    def shifted(weights, tokens, start_pos, cache, counter):
        # decode steps (one token, after the prompt) embed the position one too far
        if len(tokens) == 1 and start_pos > 0:
            start_pos += 1
        return real_forward(weights, tokens, start_pos, cache, counter)

    monkeypatch.setattr(kv, "forward_pass", shifted)
    broken = kv.generate(weights, [BOS, 12, 0], 12, True, 7, ban_token=BOS)
    assert kv.max_logit_difference(honest[1], broken[1]) > 1e-3


class KeysNotAppended(kv.ContiguousCache):
    """Appends every value but only the prompt's keys."""

    def append(self, layer, key, value):
        if len(self.keys[layer]) < 3:
            self.keys[layer].append(key)
        self.values[layer].append(value)


class ValuesNotAppended(kv.ContiguousCache):
    """Appends every key but only the prompt's values."""

    def append(self, layer, key, value):
        self.keys[layer].append(key)
        if len(self.values[layer]) < 3:
            self.values[layer].append(value)


@pytest.mark.parametrize("make_cache", [KeysNotAppended, ValuesNotAppended,
                                        lambda: kv.StaleCache(3)],
                         ids=["keys-not-appended", "values-not-appended", "stale-cache"])
def test_broken_caches_fail_the_logit_check(weights, make_cache):
    honest, _ = generate_pair(weights)
    broken = kv.generate(weights, [BOS, 12, 0], 12, True, 7, ban_token=BOS, cache=make_cache())
    assert kv.max_logit_difference(honest[1], broken[1]) > 1e-3


def test_growth_exponents_separate_quadratic_from_linear(weights):
    totals = {}
    for length in (8, 32):
        for use_cache in (False, True):
            _, steps = kv.generate(weights, [BOS, 12, 0], length, use_cache, 3, ban_token=BOS)
            totals[length, use_cache] = sum(s["mults"] for s in steps)
    exponent = {c: math.log(totals[32, c] / totals[8, c]) / math.log(4) for c in (False, True)}
    assert exponent[False] > 1.8
    assert exponent[True] < 1.3


def test_linear_fit_r2():
    r2, slope = kv.linear_fit_r2([1, 2, 3, 4], [3, 5, 7, 9])
    assert math.isclose(r2, 1.0) and math.isclose(slope, 2.0)
    r2, _ = kv.linear_fit_r2([1, 2, 3, 4], [1, 4, 9, 16])   # a parabola is not a line
    assert r2 < 0.99


# --- paged allocation -----------------------------------------------------------------------

def test_paged_cache_reads_what_a_contiguous_cache_reads(weights):
    requests = [[BOS, 1, 2, 3, 4, 5, 6], [BOS, 7], [BOS, 8, 9, 10, 11, 12, 13, 14, 15, 16]]
    done, difference, peak_blocks, peak_requests, snapshot = kv.serve_requests(weights,
                                                                               requests)
    assert difference == 0.0
    for rid, tokens in enumerate(requests):
        used, blocks = done[rid]
        assert used == len(tokens)
        assert blocks == math.ceil(len(tokens) / kv.KV_BLOCK)   # never a block too many
    # at the snapshot (the last arrival) no physical block belongs to two requests, and the
    # pool's owner map agrees with the block tables
    tick, tables, owners = snapshot
    assert tick == len(requests) - 1
    held = [b for table, _ in tables.values() for b in table]
    assert len(held) == len(set(held)) == sum(o is not None for o in owners) <= peak_blocks
    assert all(owners[b] == rid for rid, (table, _) in tables.items() for b in table)
    # busiest tick: tick 6, request 0 holds 7 positions (2 blocks) and request 2 holds 5 (2)
    assert peak_blocks == 4 and peak_requests == 3


def test_freed_blocks_are_reused():
    pool = kv.BlockPool(4)
    first = kv.PagedCache(pool, 0)
    for _ in range(kv.KV_BLOCK + 1):
        first.append(0, [0.0], [0.0])
    assert first.block_table == [0, 1]
    pool.release(first.block_table)
    second = kv.PagedCache(pool, 1)
    second.append(0, [1.0], [1.0])
    assert second.block_table == [0] and pool.owner[0] == 1


def test_reading_blocks_as_if_contiguous_fails(weights, monkeypatch):
    # The bug paging invites: follow only the first block table entry and assume the request's
    # later blocks come right after it. Interleaved requests make that read another
    # request's keys and values.
    def contiguous_read(self, layer):
        places = [(self.block_table[0] + p // kv.KV_BLOCK, p % kv.KV_BLOCK)
                  for p in range(self.lengths[layer])]
        return ([self.pool.keys[b][layer][s] for b, s in places],
                [self.pool.values[b][layer][s] for b, s in places])

    monkeypatch.setattr(kv.PagedCache, "read", contiguous_read)
    requests = [[BOS, 1, 2, 3, 4, 5, 6], [BOS, 8, 9, 10, 11, 12]]
    _, difference, _, _, _ = kv.serve_requests(weights, requests)
    assert difference > 1e-3


# --- sampling and a whole quick run ---------------------------------------------------------

def test_a_banned_token_is_never_drawn():
    rng = random.Random(0)
    logits = [0.0] * 26 + [50.0]   # BOS would win every draw if it were allowed
    assert all(kv.sample_token(logits, rng, ban_token=BOS) != BOS for _ in range(200))
    assert kv.sample_token(logits, rng) == BOS


def test_quick_run_measures_exact_agreement_and_real_growth(monkeypatch, tmp_path, capsys):
    for name, value in {"NUM_STEPS": 3, "NUM_SAMPLES": 1, "NUM_REQUESTS": 4}.items():
        monkeypatch.setattr(kv, name, value)
    monkeypatch.chdir(tmp_path)
    results = kv.main()
    out = capsys.readouterr().out
    assert results["max_logit_difference"] == 0.0
    assert results["paged_logit_difference"] == 0.0
    assert results["broken_cache_logit_difference"] > 1e-3   # the yardstick is a real bug
    assert results["cache_formula_mismatches"] == 0
    assert results["uncached_growth_exponent"] > 1.8 > 1.3 > results["cached_growth_exponent"]
    assert "FAIL" not in out and out.count("PASS") == len(kv.CRITERIA)
