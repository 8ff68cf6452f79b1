"""microbeam: fused nodes, the float forward pass, the decoders and speculative sampling."""
import math
import random
from collections import Counter

import pytest

from support import close, grads, load_script, values_of

beam = load_script("systems/microbeam.py")
Value = beam.Value
BOS = 26
values = values_of(Value)


# --- fused nodes against their naive forms ---


def test_fused_mean_in_name_loss_equals_naive_mean():
    # name_loss averages the per-position losses with one fused node; the naive form adds
    # the cross-entropy nodes one by one and divides.
    random.seed(0)
    shape = beam.DRAFT_SHAPE
    model, params = beam.init_model(27, shape)
    tokens = [BOS, 4, 12, 12, 0, BOS]
    fused = beam.name_loss(model, shape, tokens)
    fused.backward()
    fused_grads = grads(params)
    for p in params:
        p.grad = 0.0
    keys, vals = [[] for _ in range(shape[2])], [[] for _ in range(shape[2])]
    losses = [beam.cross_entropy(beam.gpt_step(model, shape, beam.VALUE_OPS, tokens[t], t,
                                               keys, vals), tokens[t + 1]) for t in range(5)]
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    naive = total / 5
    naive.backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(fused_grads, grads(params))


@pytest.mark.parametrize("shape", [beam.TARGET_SHAPE, beam.DRAFT_SHAPE], ids=["target", "draft"])
def test_whole_model_gradient_matches_finite_differences(shape):
    random.seed(0)
    model, params = beam.init_model(27, shape)
    tokens = [BOS, 4, 12, 12, 0, BOS]
    beam.name_loss(model, shape, tokens).backward()
    rng = random.Random(4)
    for p in rng.sample(params, 25):
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = beam.name_loss(model, shape, tokens).data
        p.data = original - 1e-5
        down = beam.name_loss(model, shape, tokens).data
        p.data = original
        assert math.isclose(analytic, (up - down) / 2e-5, rel_tol=1e-4, abs_tol=1e-8)


# --- the plain-float forward pass and the prefix memo ---


def trained_free_models(seed=0):
    random.seed(seed)
    target = beam.LanguageModel(beam.init_model(27, beam.TARGET_SHAPE)[0], beam.TARGET_SHAPE)
    draft = beam.LanguageModel(beam.init_model(27, beam.DRAFT_SHAPE)[0], beam.DRAFT_SHAPE)
    return target, draft


def test_float_forward_equals_value_forward():
    random.seed(5)
    shape = beam.TARGET_SHAPE
    model, _ = beam.init_model(27, shape)
    frozen = beam.freeze(model)
    tokens = [BOS, 3, 7, 0, 19]
    kv_value = ([[] for _ in range(2)], [[] for _ in range(2)])
    kv_float = ([[] for _ in range(2)], [[] for _ in range(2)])
    for pos, token in enumerate(tokens):
        with_values = beam.gpt_step(model, shape, beam.VALUE_OPS, token, pos, *kv_value)
        with_floats = beam.gpt_step(frozen, shape, beam.FLOAT_OPS, token, pos, *kv_float)
        assert close([z.data for z in with_values], with_floats, 1e-12)


def test_prefix_memo_gives_the_same_distribution_as_a_fresh_model():
    target, _ = trained_free_models(6)
    prefix = (BOS, 1, 2, 3)
    for cut in range(1, len(prefix) + 1):
        target.probs(prefix[:cut])          # fill the memo prefix by prefix
    fresh = beam.LanguageModel.__new__(beam.LanguageModel)
    fresh.weights, fresh.shape, fresh.memo = target.weights, target.shape, {}
    assert fresh.probs(prefix) == target.probs(prefix)
    assert math.isclose(sum(target.probs(prefix)), 1.0, rel_tol=1e-12)


# --- sampling filters, greedy and beam search ---


def test_temperature_top_k_and_top_p():
    probs = [0.5, 0.2, 0.15, 0.1, 0.05]
    assert close(beam.with_temperature(probs, 1.0), probs, 1e-12)
    sharp = beam.with_temperature(probs, 0.5)
    assert close(sharp, [p * p / sum(q * q for q in probs) for p in probs], 1e-12)
    assert beam.top_k_filter(probs, 2) == [0.5, 0.2, 0.0, 0.0, 0.0]
    # 0.5 + 0.2 + 0.15 = 0.85 < 0.9, so the nucleus needs the fourth token too
    assert beam.top_p_filter(probs, 0.9) == [0.5, 0.2, 0.15, 0.1, 0.0]
    assert beam.top_p_filter(probs, 0.5) == [0.5, 0.0, 0.0, 0.0, 0.0]


def test_top_k_and_top_p_agree_with_their_references_on_random_distributions():
    rng = random.Random(3)
    for _ in range(200):
        weights = [rng.random() ** 3 for _ in range(27)]
        probs = [w / sum(weights) for w in weights]
        for k in (1, 5, 26):
            kept = beam.top_k_filter(probs, k)
            assert close([q / sum(kept) for q in kept], beam.reference_top_k(probs, k), 1e-12)
        for top_p in (0.3, 0.9, 0.999):
            kept = beam.top_p_filter(probs, top_p)
            assert close([q / sum(kept) for q in kept], beam.reference_top_p(probs, top_p),
                         1e-12)
        assert close(beam.with_temperature(probs, 0.5),
                     beam.reference_temperature(probs, 0.5), 1e-12)


def test_filter_mismatches_counts_wrong_filters_and_stray_tokens():
    target, _ = trained_free_models(2)
    random.seed(4)
    right = lambda p: beam.top_k_filter(p, 5)
    reference = lambda p: beam.reference_top_k(p, 5)
    runs = [((BOS,),) + beam.sample(target, (BOS,), BOS, right) for _ in range(10)]
    assert beam.filter_mismatches(target, runs, right, reference) == 0
    least_likely = lambda p: [q if sum(r < q for r in p) < 5 else 0.0 for q in p]
    assert beam.filter_mismatches(target, runs, least_likely, reference) == sum(
        len(c) for _, c, _ in runs)
    unfiltered = [((BOS,),) + beam.sample(target, (BOS,), BOS, list) for _ in range(10)]
    assert beam.filter_mismatches(target, unfiltered, right, reference) > 0   # stray tokens
    nan_filter = lambda p: [math.nan] * len(p)
    assert beam.filter_mismatches(target, runs, nan_filter, reference) > 0


def test_beam_of_width_one_is_greedy_and_wider_beams_score_at_least_as_well_here():
    target, _ = trained_free_models(7)
    for letter in range(5):
        prompt = (BOS, letter)
        greedy_out, greedy_passes = beam.greedy(target, prompt, BOS)
        assert beam.beam_search(target, prompt, BOS, 1)[0] == greedy_out
        assert greedy_passes == len(greedy_out)
        wide = beam.beam_search(target, prompt, BOS, 4)[0]
        assert wide == beam.reference_beam_search(target, prompt, BOS, 4)
        assert (beam.log_prob(target, prompt, wide) / len(wide)
                >= beam.log_prob(target, prompt, greedy_out) / len(greedy_out))
        assert beam.is_valid(prompt, wide, BOS) and beam.is_valid(prompt, greedy_out, BOS)


def test_is_valid():
    assert beam.is_valid((BOS,), (0, 1, BOS), BOS)
    assert beam.is_valid((BOS,), tuple(range(15)), BOS)         # cut at the context limit
    assert not beam.is_valid((BOS,), (0, BOS, 1, BOS), BOS)     # an end token inside
    assert not beam.is_valid((BOS,), (0, 27, BOS), BOS)         # not a token of the vocabulary
    assert not beam.is_valid((BOS,), tuple([0] * 17), BOS)      # longer than the context
    assert not beam.is_valid((BOS,), (), BOS)


# --- speculative decoding ---


class FixedModel:
    """A stand-in language model whose next-token distribution depends on the last token."""

    def __init__(self, table):
        self.table = table

    def probs(self, prefix):
        return self.table[prefix[-1]]


def random_table(rng, sharpness):
    table = []
    for _ in range(27):
        weights = [rng.random() ** sharpness for _ in range(27)]
        total = sum(weights)
        table.append([w / total for w in weights])
    return table


def tv_ratio(target, draft, k, rule, n=20000):
    exact = beam.first_two_exact(target, BOS)
    beam.NUM_TV_SAMPLES = n
    direct = beam.tv_of_sampler(lambda: beam.direct_first_two(target, BOS), exact)[0]
    spec = beam.tv_of_sampler(lambda: beam.speculative(target, draft, (BOS,), BOS, k,
                                                       max_new=2, rule=rule)[0], exact)[0]
    return spec / direct


@pytest.fixture
def far_apart_models(monkeypatch):
    # A sharp target and a draft that knows nothing of it: every speculative branch (accept,
    # residual draw, bonus token) is exercised often, and any bias in one of them is large.
    monkeypatch.setattr(beam, "NUM_TV_SAMPLES", beam.NUM_TV_SAMPLES)
    rng = random.Random(8)
    return FixedModel(random_table(rng, 4)), FixedModel(random_table(rng, 1))


# tv_ratio draws only the first two tokens (max_new=2), so a draft longer than 2 would be
# cut to 2: k = 1 and k = 2 are the draft lengths this test can tell apart.
@pytest.mark.parametrize("k", [1, 2])
def test_speculative_sampling_follows_the_target_distribution(far_apart_models, k):
    random.seed(9)
    assert tv_ratio(*far_apart_models, k, "exact") < 1.3


@pytest.mark.parametrize("rule", ["resample_target", "accept_all"])
def test_the_distribution_test_catches_broken_rules(far_apart_models, rule):
    random.seed(10)
    assert tv_ratio(*far_apart_models, 2, rule) > 3.0


def test_exact_rule_matches_the_target_to_sampling_noise_on_many_seeds(far_apart_models):
    # The ratio of two TVs of the same size is noisy itself; how often does a correct sampler
    # exceed the 1.5 threshold by chance? Over 15 seeds with n = 3000: never.
    ratios = []
    for seed in range(15):
        random.seed(seed)
        ratios.append(tv_ratio(*far_apart_models, 2, "exact", n=3000))
    assert max(ratios) < 1.5
    assert 0.85 < sum(ratios) / len(ratios) < 1.15


def test_greedy_speculative_decoding_reproduces_greedy_output():
    target, draft = trained_free_models(11)
    for letter in range(8):
        prompt = (BOS, letter)
        stats = []
        out, passes = beam.speculative(target, draft, prompt, BOS, 4, greedy_mode=True,
                                       stats=stats)
        assert out == beam.greedy(target, prompt, BOS)[0]
        assert passes == len(stats) and passes <= len(out)


def test_speculative_passes_and_tokens_per_round():
    rng = random.Random(12)
    table = random_table(rng, 2)
    target = draft = FixedModel(table)     # a perfect draft: every guess is accepted
    random.seed(13)
    stats = []
    out, passes = beam.speculative(target, draft, (BOS,), BOS, 4, stats=stats)
    assert all(accepted == guessed for guessed, accepted, _ in stats)
    # each unconstrained round yields its k guesses plus the bonus token
    assert passes == len(stats) and len(out) <= 5 * passes


def test_acceptance_by_position():
    stats = [(4, 4, True), (4, 0, True), (4, 2, True), (2, 1, False)]
    rates, checked = beam.acceptance_by_position(stats, 4)
    assert checked == [4, 3, 2, 1]
    assert rates == [3 / 4, 2 / 3, 1 / 2, 1 / 1]


def test_total_variation():
    exact = {(0, 1): 0.5, (1, 0): 0.5}
    assert beam.total_variation(Counter({(0, 1): 5, (1, 0): 5}), exact) == 0.0
    assert math.isclose(beam.total_variation(Counter({(0, 1): 10}), exact), 0.5)
    assert math.isclose(beam.total_variation(Counter({(2, 2): 10}), exact), 1.0)
