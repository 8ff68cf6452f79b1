"""Fast checks specific to foundational/microbert.py.

The hand-derived backward pass is checked against central finite differences of a loss
written here independently, straight from the formulas (one position at a time, no token
table, no cached columns), for an MLM with a projected shared table and for the
discriminator's binary loss, and for a whole ELECTRA step (the generator's loss plus 50 times
the discriminator's, through the token table and position biases they share); the script's
forward pass is checked against the same reference.
Also: BERT's and ELECTRA's corruption rules, the AUC against a brute-force pair count, that the
encoder is bidirectional, that the in-run gradient check passes and catches a wrong backward
formula, that ELECTRA's generator shares the discriminator's token table and position biases,
the counting baselines on a hand example, and that the repair and kept measures tell a
copying model apart.
"""
import math
import random

import pytest

from support import load_script

mb = load_script("foundational/microbert.py")


def reference_output(enc, tokens, i):
    """The block's output at position i, written from the formulas with explicit loops."""
    def mv(w, x):
        return [sum(w[r][c] * x[c] for c in range(len(x))) for r in range(len(w))]

    def norm(x):
        s = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + 1e-5)
        return [v * s for v in x]

    def x0_of(t):
        e = enc["wte"][t]
        return norm(mv(enc["proj"], e) if "proj" in enc else e)

    width = len(enc["wq"])
    d = width // mb.N_HEAD
    xs = [x0_of(t) for t in tokens]
    q = mv(enc["wq"], xs[i])
    keys = [mv(enc["wk"], x) for x in xs]
    values = [mv(enc["wv"], x) for x in xs]
    attended = []
    for h in range(mb.N_HEAD):
        scores = []
        for j in range(len(tokens)):
            offset = max(-mb.MAX_REL, min(mb.MAX_REL, j - i))
            scores.append(sum(q[h * d + c] * keys[j][h * d + c] for c in range(d)) / math.sqrt(d)
                          + enc["rel"][h][offset + mb.MAX_REL])
        top = max(scores)
        exps = [math.exp(s - top) for s in scores]
        p = [e / sum(exps) for e in exps]
        for c in range(d):
            attended.append(sum(p[j] * values[j][h * d + c] for j in range(len(tokens))))
    x1 = [a + b for a, b in zip(mv(enc["wo"], attended), xs[i])]
    hidden = [max(0.0, v) for v in mv(enc["fc1"], norm(x1))]
    x2 = [a + b for a, b in zip(mv(enc["fc2"], hidden), x1)]
    return norm(x2)


def reference_loss(enc, examples, binary):
    total = 0.0
    for tokens, targets in examples:
        for i, target in targets:
            out = reference_output(enc, tokens, i)
            z = [sum(w * o for w, o in zip(row, out)) + b
                 for row, b in zip(enc["head"], enc["bias"][0])]
            if binary:
                prob = 1.0 / (1.0 + math.exp(-z[0]))
                total += -(target * math.log(prob) + (1 - target) * math.log(1 - prob))
            else:
                total += math.log(sum(math.exp(v) for v in z)) - z[target]
    return total


def models(seed):
    random.seed(seed)
    disc = mb.init_encoder(mb.N_EMBD, mb.MLP_HIDDEN, 1)
    gen = mb.init_encoder(mb.GEN_EMBD, mb.GEN_MLP, len(mb.LETTERS), shared=disc)
    for model in (disc, gen):   # larger weights: attention far from uniform, ReLUs mixed
        for name, param in model.items():
            if model is disc or name not in ("wte", "rel"):
                for row in param:
                    row[:] = [4.0 * w for w in row]
    return disc, gen


NAMES = [mb.encode("anna"), mb.encode("bo"), mb.encode("christopher")]


@pytest.mark.parametrize("which", ["generator", "discriminator"])
def test_backward_matches_finite_differences_of_an_independent_reference(which):
    disc, gen = models(11)
    if which == "generator":
        model, binary, loss_fn = gen, False, mb.cross_entropy
        examples = [([mb.MASK if i == 2 else t for i, t in enumerate(tok)],
                     [(2, tok[2]), (1, tok[1])])
                    for tok in NAMES]
    else:
        model, binary, loss_fn = disc, True, mb.binary_cross_entropy
        examples = [(tok, [(i, float(i % 3 == 0)) for i in range(1, len(tok) - 1)])
                    for tok in NAMES]
    grads = mb.new_grads(model)
    loss = mb.forward_backward(model, grads, examples, loss_fn, 1.0)
    assert math.isclose(loss, reference_loss(model, examples, binary), rel_tol=1e-9)
    rng = random.Random(2)
    for name, param in model.items():
        for _ in range(4):
            r, c = rng.randrange(len(param)), rng.randrange(len(param[0]))
            original = param[r][c]
            param[r][c] = original + 1e-6
            up = reference_loss(model, examples, binary)
            param[r][c] = original - 1e-6
            down = reference_loss(model, examples, binary)
            param[r][c] = original
            assert math.isclose(grads[name][r][c], (up - down) / 2e-6, rel_tol=1e-5,
                                abs_tol=1e-8), (name, r, c)


def test_a_whole_electra_step_matches_finite_differences_through_the_shared_weights():
    # The generator's loss and 50 x the discriminator's both reach the shared token table and
    # position biases; the step's gradients must be those of the sum, with a sample equal to
    # the original labelled original. The step's random draws are replayed to rebuild its
    # examples, and the loss is taken from the independent reference.
    disc, gen = models(5)
    disc_grads, gen_grads = mb.new_grads(disc), mb.new_grads(gen)
    gen_grads["wte"], gen_grads["rel"] = disc_grads["wte"], disc_grads["rel"]
    rng, replay = random.Random(4), random.Random()
    replay.setstate(rng.getstate())
    losses = mb.electra_step(gen, disc, gen_grads, disc_grads, NAMES, rng)
    table = mb.token_table(gen)
    gen_examples, disc_examples = [], []
    for tokens in NAMES:
        picked, masked, replaced = mb.electra_corrupt(gen, table, tokens, replay)
        gen_examples.append((masked, [(i, tokens[i]) for i in picked]))
        disc_examples.append((replaced, [(i, 0.0 if replaced[i] == tokens[i] else 1.0)
                                         for i in range(1, len(tokens) - 1)]))
    n_gen = sum(len(t) for _, t in gen_examples)
    n_disc = sum(len(t) for _, t in disc_examples)

    def total():
        return (reference_loss(gen, gen_examples, False) / n_gen
                + mb.DISC_WEIGHT * reference_loss(disc, disc_examples, True) / n_disc)

    assert math.isclose(losses["generator"], reference_loss(gen, gen_examples, False) / n_gen,
                        rel_tol=1e-9)
    assert math.isclose(losses["discriminator"],
                        reference_loss(disc, disc_examples, True) / n_disc, rel_tol=1e-9)
    rng = random.Random(6)
    for model, grads, name in ((disc, disc_grads, "wte"), (disc, disc_grads, "rel"),
                               (gen, gen_grads, "proj"), (disc, disc_grads, "head"),
                               (gen, gen_grads, "wq")):
        param = model[name]
        for _ in range(4):
            r, c = rng.randrange(len(param)), rng.randrange(len(param[0]))
            original = param[r][c]
            param[r][c] = original + 1e-6
            up = total()
            param[r][c] = original - 1e-6
            down = total()
            param[r][c] = original
            assert math.isclose(grads[name][r][c], (up - down) / 2e-6, rel_tol=1e-5,
                                abs_tol=1e-8), (name, r, c)


def test_the_in_run_gradient_check_passes():
    assert mb.gradient_check(random.Random(0)) < 1e-5


def test_the_encoder_sees_both_sides():
    disc, _ = models(3)
    table = mb.token_table(disc)
    tokens = mb.encode("marta")
    base = mb.encode_position(disc, mb.prepare(disc, table, tokens), 2)[0]
    for j in (1, 3, 4):   # a letter on the left and letters on the right of position 2
        changed = list(tokens)
        changed[j] = mb.STOI["z"]
        out = mb.encode_position(disc, mb.prepare(disc, table, changed), 2)[0]
        assert max(abs(a - b) for a, b in zip(base, out)) > 1e-6


def test_picked_count_follows_berts_rounding():
    rng = random.Random(0)
    for length, count in ((1, 1), (6, 1), (9, 1), (10, 2), (15, 2)):
        tokens = mb.encode("a" * length)
        picked = mb.pick_positions(tokens, rng)
        assert len(picked) == count and all(1 <= i <= length for i in picked)


def test_bert_corruption_is_80_10_10_and_electra_masks_85():
    rng = random.Random(1)
    tokens = mb.encode("abcdefghij")
    masked = kept = replaced = 0
    for _ in range(20000):
        out = mb.bert_corrupt(tokens, [3], rng)
        masked += out[3] == mb.MASK
        kept += out[3] == tokens[3]
        replaced += out[3] not in (mb.MASK, tokens[3])
        assert out[:3] == tokens[:3] and out[4:] == tokens[4:]
    # a random letter equals the original 1 time in 26
    assert abs(masked / 20000 - 0.8) < 0.01
    assert abs(kept / 20000 - (0.1 + 0.1 / 26)) < 0.01
    assert abs(replaced / 20000 - 0.1 * 25 / 26) < 0.01
    electra = sum(mb.electra_mask(tokens, [3], rng)[3] == mb.MASK for _ in range(20000))
    assert abs(electra / 20000 - 0.85) < 0.01


def test_auc_equals_a_brute_force_pair_count():
    rng = random.Random(4)
    scores = [rng.choice([0.0, 0.5, 1.0, 2.0]) + rng.random() * (i % 2) for i in range(60)]
    labels = [rng.random() < 0.3 for _ in scores]
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    assert math.isclose(mb.auc(scores, labels), wins / (len(pos) * len(neg)), rel_tol=1e-12)
    assert math.isnan(mb.auc([1.0, 2.0], [False, False]))


def test_generator_shares_the_token_table_and_position_biases():
    disc, gen = models(5)
    assert gen["wte"] is disc["wte"] and gen["rel"] is disc["rel"]
    assert len(gen["wq"]) == mb.GEN_EMBD and len(gen["proj"][0]) == mb.N_EMBD


def test_baselines_on_a_hand_example():
    train = [mb.encode(n) for n in ("ab", "ab", "cb")]
    tables = mb.count_tables(train)
    # letters: a (left BOS, right b), b (left a / c, right BOS)
    base = mb.baseline_accuracies(tables, [mb.encode("ab")])
    assert base["unigram"] == 0.5          # 'b' is the commonest letter: right at position 2
    assert base["window"] == 1.0           # (BOS, b) -> a, (a, BOS) -> b
    assert base["left_bigram"] == 1.0      # after BOS: a (2 of 3); after a: b


def test_the_in_run_gradient_check_catches_a_wrong_backward_formula(monkeypatch):
    # RMSNorm's backward without the term that removes the length change: a classic slip.
    monkeypatch.setattr(mb, "rms_backward", lambda x, s, dy: [s * d for d in dy])
    assert mb.gradient_check(random.Random(0)) > 1e-3


def test_mlm_accuracy_separates_copying_from_context():
    # A model that copies: attention and MLP outputs zeroed, so the output at a position is
    # the direction of its own token's embedding; embeddings of equal length, and the head is
    # the embedding table, so the highest logit is always the visible token: kept 1, repair 0.
    enc = mb.init_encoder(mb.N_EMBD, mb.MLP_HIDDEN, len(mb.LETTERS))
    for name in ("wo", "fc2"):
        enc[name] = [[0.0] * len(enc[name][0]) for _ in enc[name]]
    rng = random.Random(9)
    enc["wte"] = [mb.rms_forward([rng.gauss(0, 1) for _ in range(mb.N_EMBD)])[0]
                  for _ in range(mb.VOCAB)]
    enc["head"] = [row[:] for row in enc["wte"][:len(mb.LETTERS)]]
    result = mb.mlm_accuracy(enc, [mb.encode("anna"), mb.encode("zoe")], random.Random(1))
    assert result["kept"] == 1.0 and result["repair"] == 0.0


def test_a_diverged_model_scores_nan_not_a_number_that_could_pass():
    # argmax over NaN logits names token 0, sorted() ranks NaNs arbitrarily, and a NaN
    # probe score reads as "shuffled": each would turn a diverged model into a plausible
    # number (the repair row and the ELECTRA probe row could even pass). Each must be NaN.
    enc = mb.init_encoder(mb.N_EMBD, mb.MLP_HIDDEN, len(mb.LETTERS))
    enc["head"] = [[float("nan")] * len(row) for row in enc["head"]]
    names = [mb.encode("anna"), mb.encode("zoe")]
    assert all(math.isnan(v) for v in mb.mlm_accuracy(enc, names, random.Random(1)).values())
    assert math.isnan(mb.auc([0.3, float("nan"), 0.1, 0.7], [1, 0, 0, 1]))
    enc["wo"] = [[float("nan")] * len(row) for row in enc["wo"]]
    items = [("anna", 1), ("nnaa", 0), ("zoe", 1), ("ezo", 0)]
    assert math.isnan(mb.probe_accuracy(enc, items, items))


def test_the_in_run_gradient_check_keeps_a_nan(monkeypatch):
    # A NaN error must survive later finite ones (max() would drop it; so would a running
    # maximum that lets a finite error replace a NaN).
    monkeypatch.setattr(mb, "rms_backward", lambda x, s, dy: [float("nan")] * len(dy))
    assert math.isnan(mb.gradient_check(random.Random(0)))
