"""Fast checks specific to systems/micropaged.py.

The server's claim is exact: whatever the batch, the pool, the preemptions and the sharing,
every request gets the tokens it would get alone. These tests check the pieces that claim
rests on against references written separately (the Value forward pass, the plain formulas,
hand-counted blocks), and check that the bugs the entry lists (no reference count, the wrong
adapter, copy-on-write skipped) break it by a wide margin, so the checks cannot pass by
accident. The LoRA path of the training code is checked against finite differences.
"""
import math
import random

import pytest

from support import close, grads, load_script, values_of

mp = load_script("systems/micropaged.py")
Value = mp.Value
BOS = 26
values = values_of(Value)


def random_adapter(rng, scale=0.5):
    """Float A and B, both nonzero, so an adapter changes the model's output."""
    adapter = {}
    for layer in range(mp.N_LAYER):
        for name in mp.LORA_TARGETS:
            down = [[rng.gauss(0, scale) for _ in range(mp.N_EMBD)] for _ in range(mp.LORA_RANK)]
            up = [[rng.gauss(0, scale) for _ in range(mp.LORA_RANK)] for _ in range(mp.N_EMBD)]
            adapter[f"layer{layer}.{name}"] = (down, up)
    return adapter


@pytest.fixture(scope="module")
def served():
    """An untrained model as floats and two random adapters (exactness needs no training)."""
    random.seed(0)
    model, _ = mp.init_model(vocab_size=27)
    rng = random.Random(1)
    return model, mp.to_floats(model), {1: random_adapter(rng), 2: random_adapter(rng)}


def trace(rng, count=12, groups=2):
    """A small trace in the script's format: singles and groups sharing a 5-position prefix."""
    requests, rid = [], 0
    for g in range(groups):
        prefix = [BOS] + [rng.randrange(26) for _ in range(4)]
        adapter = rng.randrange(3)
        for member, extra in enumerate(rng.sample(range(26), 3)):
            requests.append(mp.Request(rid, prefix + [extra], adapter, 2, 9, int(member > 0), g,
                                       len(prefix)))
            rid += 1
    while rid < count:
        prompt = [BOS] + [rng.randrange(26) for _ in range(rng.randint(1, 3))]
        max_new = rng.randint(2, 10)
        requests.append(mp.Request(rid, prompt, rng.randrange(3), rng.randint(2, max_new),
                                   max_new, rng.randrange(4)))
        rid += 1
    return requests


def alone(weights, adapters, requests):
    merged = {a: mp.merged_weights(weights, adapters.get(a)) for a in range(3)}
    return {r.rid: mp.serve_alone(merged[r.adapter], r, BOS) for r in requests}


# --- fused nodes and the LoRA training path -----------------------------------------------

def test_fused_mean_equals_naive_mean():
    raw = [0.4, -1.1, 2.5, 0.7]
    x1, x2 = values(raw), values(raw)
    fused = mp.mean(x1)
    naive = x2[0]
    for x in x2[1:]:
        naive = naive + x
    naive = naive * (1.0 / len(x2))
    (fused * fused).backward()
    (naive * naive).backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(x1), grads(x2))


def test_adapter_gradients_match_finite_differences():
    random.seed(0)
    model, params = mp.init_model(vocab_size=27)
    adapter, adapter_params = mp.init_adapter()
    rng = random.Random(3)
    for p in adapter_params:   # B away from zero, so A gets a gradient too
        p.data = rng.gauss(0, 0.3)
    tokens = [BOS, 4, 12, 12, 0, BOS]
    mp.name_loss(model, tokens, adapter).backward()
    for p in rng.sample(adapter_params, 20) + rng.sample(params, 10):
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = mp.name_loss(model, tokens, adapter).data
        p.data = original - 1e-5
        down = mp.name_loss(model, tokens, adapter).data
        p.data = original
        assert math.isclose(analytic, (up - down) / 2e-5, rel_tol=1e-4, abs_tol=1e-8)


def test_fresh_adapter_is_the_base_model():
    random.seed(2)
    model, _ = mp.init_model(vocab_size=27)
    adapter, _ = mp.init_adapter()   # B = 0
    keys, vals = [[]], [[]]
    keys2, vals2 = [[]], [[]]
    for pos, tok in enumerate([BOS, 3, 7]):
        with_adapter = [z.data for z in mp.gpt_step(model, tok, pos, keys, vals, adapter)]
        without = [z.data for z in mp.gpt_step(model, tok, pos, keys2, vals2)]
        assert with_adapter == without


# --- the float server against the Value model and the plain reference -----------------------

def test_batched_forward_equals_value_forward_with_adapter(served):
    model, weights, adapters = served
    value_adapter = {name: tuple([[Value(w) for w in row] for row in m] for m in pair)
                     for name, pair in adapters[1].items()}
    tokens = [BOS, 12, 0, 17, 8, 0]
    keys, vals = [[]], [[]]
    expected = [[z.data for z in mp.gpt_step(model, t, pos, keys, vals, value_adapter)]
                for pos, t in enumerate(tokens)]
    # the whole sequence as one prefill row, through the block pool
    pool = mp.BlockPool(4)
    seq = mp.Sequence(mp.Request(0, tokens, 1, 2, 2, 0))
    seq.block_table = [pool.allocate(), pool.allocate()]
    logits = mp.batched_forward(weights, adapters, pool, [(seq, tokens)])[0]
    assert max(abs(a - b) for a, b in zip(logits, expected[-1])) < 1e-12
    # and the plain reference with the merged adapter agrees at every position
    reference = mp.reference_logits(mp.merged_weights(weights, adapters[1]), tokens)
    assert max(abs(a - b) for got, want in zip(reference, expected)
               for a, b in zip(got, want)) < 1e-12
    last = mp.reference_logits(mp.merged_weights(weights, adapters[1]), tokens, last_only=True)
    assert last == [reference[-1]]


def test_merging_a_zero_adapter_changes_nothing(served):
    _, weights, adapters = served
    zero = {name: (down, [[0.0] * mp.LORA_RANK for _ in up])
            for name, (down, up) in adapters[1].items()}
    assert mp.merged_weights(weights, zero) == weights


def test_nan_aware_max_does_not_skip_nan():
    assert max(0.0, math.nan) == 0.0
    assert math.isnan(mp.nan_aware_max([0.0, math.nan, 1.0]))


def test_next_token_bans_the_end_until_min_new():
    request = mp.Request(0, [BOS], 0, 3, 5, 0)
    logits = [0.0] * 26 + [9.0]
    assert mp.next_token(logits, 2, request, BOS) == 0
    assert mp.next_token(logits, 3, request, BOS) == BOS


# --- the block pool -------------------------------------------------------------------------

def test_reference_counts_keep_a_shared_block_out_of_the_free_list():
    pool = mp.BlockPool(3)
    block = pool.allocate()
    assert block == 0
    pool.share(block)
    pool.release(block)
    assert block not in pool.free and pool.ref_count[block] == 1
    pool.release(block)
    assert pool.free[-1] == block and pool.allocate() == block   # last freed, first reused
    pool.release(block)
    assert pool.accounting_errors() == 0


# --- the server -----------------------------------------------------------------------------

@pytest.mark.parametrize("refill", [False, True], ids=["static", "continuous"])
def test_every_request_gets_its_tokens_alone_under_preemption(served, refill):
    _, weights, adapters = served
    requests = trace(random.Random(5))
    expected = alone(weights, adapters, requests)
    engine = mp.serve(weights, adapters, requests, BOS, 7, 5, refill)
    assert len(engine.finished) == len(requests)
    assert engine.preempted                      # the small pool did force preemptions
    assert len({s.request.adapter for s in engine.finished}) == 3
    differing, gap = mp.compare_with_alone(engine, expected, list(expected))
    assert differing == 0 and gap < 1e-12
    assert engine.pool.accounting_errors() == 0
    assert engine.worst_waste < 1


def test_continuous_batching_takes_fewer_steps(served):
    _, weights, adapters = served
    requests = trace(random.Random(6), count=16)
    static = mp.serve(weights, adapters, requests, BOS, 40, 4, refill=False)
    continuous = mp.serve(weights, adapters, requests, BOS, 40, 4, refill=True)
    assert static.tokens_out == continuous.tokens_out
    assert continuous.model_steps < static.model_steps


def test_prefix_sharing_saves_and_copies_the_derived_counts(served):
    _, weights, adapters = served
    requests = [r for r in trace(random.Random(7), count=6, groups=2)]
    shared = mp.serve(weights, adapters, requests, BOS, 40, 6)
    unshared = mp.serve(weights, adapters, requests, BOS, 40, 6, share=False)
    # 2 groups of 3, prefix of 5 positions, blocks of 4: (3 - 1) * floor(5 / 4) each
    assert unshared.blocks_in_use[1] - shared.blocks_in_use[1] == 2 * 2 * 1
    assert shared.cow_copies == 2 * 2 and unshared.cow_copies == 0
    differing, gap = mp.compare_with_alone(shared, alone(weights, adapters, requests),
                                           [r.rid for r in requests])
    assert differing == 0 and gap < 1e-12


def test_the_wrong_adapter_breaks_the_tokens(served, monkeypatch):
    _, weights, adapters = served
    requests = trace(random.Random(5))
    expected = alone(weights, adapters, requests)
    real = mp.batched_forward

    def first_adapter_for_all(weights, adapters, pool, scheduled):
        # every row served with the adapter of the batch's first request
        first = scheduled[0][0].request.adapter
        saved = [seq.request.adapter for seq, _ in scheduled]
        for seq, _ in scheduled:
            seq.request.adapter = first
        try:
            return real(weights, adapters, pool, scheduled)
        finally:
            for (seq, _), a in zip(scheduled, saved):
                seq.request.adapter = a

    monkeypatch.setattr(mp, "batched_forward", first_adapter_for_all)
    engine = mp.serve(weights, adapters, requests, BOS, 40, 5)
    differing, gap = mp.compare_with_alone(engine, expected, list(expected))
    assert gap > 1e-3 and differing > 0


def test_no_reference_count_breaks_the_pool(served, monkeypatch):
    _, weights, adapters = served
    requests = trace(random.Random(7), count=10, groups=2)
    expected = alone(weights, adapters, requests)

    def release_without_count(self, block):
        self.ref_count[block] -= 1
        self.free.append(block)

    monkeypatch.setattr(mp.BlockPool, "release", release_without_count)
    engine = mp.serve(weights, adapters, requests, BOS, 12, 6)
    differing, gap = mp.compare_with_alone(engine, expected, list(expected))
    assert engine.pool.accounting_errors() > 0
    assert gap > 1e-3 or differing > 0


def test_a_lost_request_counts_all_its_tokens(served):
    _, weights, adapters = served
    requests = trace(random.Random(5))
    expected = alone(weights, adapters, requests)
    engine = mp.serve(weights, adapters, requests, BOS, 40, 5)
    engine.finished.pop()   # as if the server had dropped one request
    differing, _ = mp.compare_with_alone(engine, expected, list(expected))
    assert differing > 0


def test_a_pool_too_small_for_one_request_stops_with_a_message(served):
    _, weights, adapters = served
    requests = [mp.Request(0, [BOS, 1, 2, 3, 4, 5, 6, 7, 8], 0, 2, 2, 0)]
    with pytest.raises(SystemExit, match="raise NUM_BLOCKS"):
        mp.serve(weights, adapters, requests, BOS, 2, 2)


def test_quick_run_passes_every_row(monkeypatch, tmp_path, capsys):
    for name, value in {"NUM_STEPS": 3, "ADAPTER_STEPS": 3, "NUM_REQUESTS": 12}.items():
        monkeypatch.setattr(mp, name, value)
    monkeypatch.chdir(tmp_path)
    results = mp.main()
    assert results["token_mismatches"] == 0
    assert results["max_logit_difference"] < 1e-9
    assert results["prefix_saved_blocks"] == results["prefix_saved_formula"] == 6
    assert results["cow_copies"] == results["cow_copies_formula"] == 6
    assert results["pool_accounting_errors"] == 0
