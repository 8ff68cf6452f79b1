"""microsft: the chat template and its mask, the masked loss against a plain reference, its
gradient against finite differences, the fused mean, generation's stop, the tasks' answers."""
import math
import random

import pytest

from support import close, grads, load_script, values_of

sft = load_script("alignment/microsft.py")
Value = sft.Value
values = values_of(Value)
VOCAB = sft.build_vocab()
STOI = {token: i for i, token in enumerate(VOCAB)}


def small_model(seed=0):
    random.seed(seed)
    return sft.init_model(len(VOCAB))


def chat(task="count", name="emma"):
    return sft.apply_chat_template(sft.conversation(task, name, STOI), STOI)


# --- the template and its mask ---

def test_template_lays_out_roles_content_and_end_tokens():
    ids, mask = chat("spell", "emma")
    assert [VOCAB[i] for i in ids] == ["<|user|>", "<|spell|>", "e", "m", "m", "a", "<|end|>",
                                       "<|assistant|>", "f", "o", "u", "r", "<|end|>"]
    # only the reply and its closing <|end|> are the assistant's to generate
    assert mask == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_generation_prompt_ends_with_the_assistant_marker():
    user = sft.user_turn("long", "ada", STOI)
    ids, mask = sft.apply_chat_template([("user", user)], STOI, add_generation_prompt=True)
    assert [VOCAB[i] for i in ids] == ["<|user|>", "<|long|>", "a", "d", "a", "<|end|>",
                                       "<|assistant|>"]
    assert mask == [0] * 7
    # a prompt is exactly the start of the training conversation it asks for
    full, _ = sft.apply_chat_template(sft.conversation("long", "ada", STOI), STOI)
    assert full[:len(ids)] == ids


def test_special_tokens_lie_outside_the_character_vocabulary():
    specials = {STOI[t] for t in sft.SPECIAL_TOKENS}
    assert len(specials) == len(sft.SPECIAL_TOKENS)
    for character in "abcdefghijklmnopqrstuvwxyz0123456789":
        assert STOI[character] not in specials
        assert len(character) == 1


def test_mismatched_prompts_hold_the_same_question_in_another_layout():
    user = sft.user_turn("count", "emma", STOI)
    right = sft.prompt_for("count", "emma", STOI, "template")
    for layout in ("no markers", "roles swapped"):
        wrong = sft.mismatched_prompt("count", "emma", STOI, layout)
        assert wrong != right
        assert wrong[wrong.index(user[0]):][:len(user)] == user


def test_loss_masks():
    _, mask = chat("count", "bo")
    assert sft.loss_mask(mask, True) == mask
    every = sft.loss_mask(mask, False)
    assert every[0] == 0 and all(every[1:]) and len(every) == len(mask)


def test_answers():
    assert [sft.answer_of(t, "emma") for t in sft.TASKS] == ["4", "four", "no"]
    assert [sft.answer_of(t, "amelia") for t in sft.TASKS] == ["6", "six", "yes"]
    assert sft.constant_answer_score("long", ["ada", "bob", "amelia"]) == pytest.approx(2 / 3)


# --- the masked loss ---

def reference_masked_loss(floats, tokens, counted):
    """The formula written plainly: run every prefix from scratch (no shared cache), take
    -log softmax(logits)[next token] at each counted target, and average those."""
    total, count = 0.0, 0
    for t in range(1, len(tokens)):
        if not counted[t]:
            continue
        keys, vals = [[] for _ in range(sft.N_LAYER)], [[] for _ in range(sft.N_LAYER)]
        for pos in range(t):
            logits = sft.gpt_step(floats, tokens[pos], pos, keys, vals)
        top = max(logits)
        log_norm = top + math.log(sum(math.exp(z - top) for z in logits))
        total += log_norm - logits[tokens[t]]
        count += 1
    return total / count


@pytest.mark.parametrize("assistant_only", [True, False])
def test_masked_loss_equals_the_plain_reference(assistant_only):
    model = small_model(1)
    floats = sft.frozen_copy(model)
    for task, name in [("count", "emma"), ("spell", "noah"), ("long", "amelia")]:
        tokens, mask = chat(task, name)
        counted = sft.loss_mask(mask, assistant_only)
        loss = sft.sequence_loss(model, tokens, counted)
        assert loss.data == pytest.approx(reference_masked_loss(floats, tokens, counted),
                                          rel=1e-12)


def test_masked_loss_ignores_targets_the_mask_leaves_out():
    # The user's closing <|end|> is the last prompt token before <|assistant|>: as a target it
    # is masked out, so replacing it by another token changes only the context of the later
    # positions. Compare two conversations that differ in a masked target AND are read the
    # same way: the <|assistant|> header is the last masked target, and nothing after it
    # depends on which token a *target* is, only on the inputs. So the check is done on the
    # counted set itself: a counted target changes the loss, a masked one is never scored.
    model = sft.frozen_copy(small_model(2))
    tokens, mask = chat("spell", "emma")
    base = reference_masked_loss(model, tokens, mask)
    value_model = sft.trainable_copy(model)
    assert sft.sequence_loss(value_model, tokens, mask).data == pytest.approx(base, rel=1e-12)
    other = list(tokens)
    other[mask.index(1)] = STOI["z"]   # the reply's first letter is counted
    assert abs(reference_masked_loss(model, other, mask) - base) > 1e-6
    # scoring the prompt's targets too gives another number (the all-token loss)
    every = sft.loss_mask(mask, False)
    assert abs(reference_masked_loss(model, tokens, every) - base) > 1e-6


def test_whole_masked_loss_gradient_matches_finite_differences():
    model = small_model(3)
    for p in sft.parameters(model):
        p.data += random.gauss(0.0, 0.05)
    tokens, mask = chat("spell", "amelia")
    sft.sequence_loss(model, tokens, mask).backward()
    rng = random.Random(4)
    for p in rng.sample(sft.parameters(model), 40):
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = sft.sequence_loss(model, tokens, mask).data
        p.data = original - 1e-5
        down = sft.sequence_loss(model, tokens, mask).data
        p.data = original
        assert analytic == pytest.approx((up - down) / 2e-5, rel=1e-4, abs=1e-9)


def test_prompt_only_weights_get_no_gradient_from_the_masked_loss():
    # The lm_head row of a token that is never a counted target, and never competes... is
    # still pushed down by the softmax. But a token embedding that appears only after the
    # last counted target is never read: its gradient must be exactly 0.
    model = small_model(5)
    tokens, mask = chat("count", "emma")
    sft.sequence_loss(model, tokens, mask).backward()
    unused = STOI["<|spell|>"]
    assert all(p.grad == 0.0 for p in model["wte"][unused])
    assert any(p.grad != 0.0 for p in model["wte"][STOI["<|count|>"]])


# --- fused nodes and the two model paths ---

def test_fused_mean_equals_a_chain_of_additions():
    raw = [0.5, -1.25, 3.0, 0.125]
    x1, x2 = values(raw), values(raw)
    fused = sft.fused_mean(x1)
    naive = x2[0]
    for x in x2[1:]:
        naive = naive + x
    naive = naive / len(x2)
    (fused * fused).backward()
    (naive * naive).backward()
    assert fused.data == pytest.approx(naive.data, rel=1e-12)
    assert close(grads(x1), grads(x2))


def test_float_model_gives_the_same_numbers_as_the_value_model():
    model = small_model(6)
    floats = sft.frozen_copy(model)
    tokens, _ = chat("long", "amelia")
    keys, vals = [[] for _ in range(sft.N_LAYER)], [[] for _ in range(sft.N_LAYER)]
    fkeys, fvals = [[] for _ in range(sft.N_LAYER)], [[] for _ in range(sft.N_LAYER)]
    for pos, token in enumerate(tokens[:-1]):
        logits = sft.gpt_step(model, token, pos, keys, vals)
        flogits = sft.gpt_step(floats, token, pos, fkeys, fvals)
        assert close([z.data for z in logits], flogits, 1e-12)


# --- generation ---

def scripted(monkeypatch, sequence):
    """Replace the model by one whose greedy choice is the next token of `sequence` once the
    prompt is read; it records the positions it was called at."""
    calls = []

    def fake_step(model, token, pos, keys, values):
        calls.append(pos)
        generated = len(calls) - model["prompt_length"]
        logits = [0.0] * len(VOCAB)
        if generated >= 0:
            logits[sequence[min(generated, len(sequence) - 1)]] = 1.0
        return logits
    monkeypatch.setattr(sft, "gpt_step", fake_step)
    return calls


def test_generation_stops_at_the_end_token(monkeypatch):
    end = STOI["<|end|>"]
    prompt = sft.prompt_for("spell", "emma", STOI, "template")
    calls = scripted(monkeypatch, [STOI["f"], STOI["o"], STOI["u"], STOI["r"], end, STOI["x"]])
    reply, stopped = sft.generate({"prompt_length": len(prompt)}, prompt, end)
    assert stopped and [VOCAB[t] for t in reply] == ["f", "o", "u", "r"]
    assert calls == list(range(len(prompt) + 4))   # prompt, 4 letters, then <|end|>: stop


def test_a_model_that_never_ends_runs_to_the_limit(monkeypatch):
    end = STOI["<|end|>"]
    prompt = sft.prompt_for("count", "emma", STOI, "template")
    scripted(monkeypatch, [STOI["a"]])
    reply, stopped = sft.generate({"prompt_length": len(prompt)}, prompt, end)
    assert not stopped
    assert len(reply) == min(sft.MAX_NEW_TOKENS, sft.BLOCK_SIZE - len(prompt) + 1)


def test_exact_match_requires_the_end_token(monkeypatch):
    # A model whose greedy reply is the right answer but never ends scores 0.
    floats = sft.frozen_copy(small_model(9))
    monkeypatch.setattr(sft, "TASKS", {"count": ""})
    monkeypatch.setattr(sft, "generate", lambda m, p, e: ([STOI["4"]], False))
    exact, ended, _ = sft.evaluate(floats, ["emma"], STOI, "template")
    assert exact == {"count": 0.0} and ended == 0.0
    monkeypatch.setattr(sft, "generate", lambda m, p, e: ([STOI["4"]], True))
    exact, ended, _ = sft.evaluate(floats, ["emma"], STOI, "template")
    assert exact == {"count": 1.0} and ended == 1.0
