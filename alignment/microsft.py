"""microsft: supervised fine-tuning with a chat template, in plain Python.

A pretrained language model only continues text. An assistant answers: it reads a user's turn,
writes a reply, and stops. Supervised fine-tuning (SFT) is the step between the two: the same
next-token loss as pretraining, on conversations laid out by a chat template, with the loss
counted only on what the assistant says. This file runs that step on a tiny GPT:

    pretrain on names:    <bos> e m m a <bos>
    fine-tune on chats:   <|user|> <|count|> e m m a <|end|> <|assistant|> 4 <|end|>
                          '----------- prompt: no loss -----------------' '-loss-'
    ask about new names:  <|user|> <|spell|> r o s a <|end|> <|assistant|>  -> f o u r <|end|>

Three things make a chat model out of a text model, and each is measured here. The template:
role markers and an end-of-turn token are special tokens, outside the character vocabulary,
laid out by one function (`apply_chat_template`), so training and inference see the same
layout; prompted with another layout, the same fine-tuned model fails. The loss mask: only the
assistant's tokens (its answer and its closing <|end|>) count; the run repeats the fine-tuning
with every token counted and prints both. The end-of-turn token: the model learns to emit
<|end|>, and generation stops there; a model that never learned it runs on.

In the run, the fine-tuned model answers 97.7% of the questions about 100 held-out names
exactly; the base model, prompted with the same template, answers none (it writes names);
the same fine-tuned model prompted without the role markers answers none, and with the roles
swapped 33%; fine-tuning with every token counted answers 64.7%.

The tasks are about a name's length (how many letters, as a digit or as a word, and whether it
is longer than five letters). Tasks that copy or inspect letters (repeat the name, its first
or last letter, whether it starts with a vowel) were measured too: at this size and budget the
model scores on them about what always giving the commonest answer scores (see the spec entry).

The model is foundational/microgpt.py's GPT (copied, as microdpo.py copies it; the forward pass
runs on Values for training and on plain floats for generation). Chat templates follow Hugging
Face's apply_chat_template and the ChatML layout (<|im_start|>role ... <|im_end|>); the masking
follows TRL's SFTTrainer with assistant_only_loss=True.

Run: python alignment/microsft.py    (about 35 s on the 2-core CI machine)
"""
import gc
import hashlib
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
# microgpt's model (16 wide, 4 heads, one block). Every step is one name or one conversation.
N_EMBD = 16        # width of every hidden vector
N_HEAD = 4         # attention heads, each 4 wide
N_LAYER = 1        # transformer blocks
BLOCK_SIZE = 16    # positions; the longest conversation is 14 tokens, a reply may run on
MLP_HIDDEN = 4 * N_EMBD
INIT_STD = 0.08    # small random weights: the first logits are near uniform
BETA1, BETA2, ADAM_EPS = 0.85, 0.99, 1e-8   # Adam, as in microgpt
MIN_NAME_LEN, MAX_NAME_LEN = 3, 6   # names used here: 3 to 6 letters (18,371 of them)
PRETRAIN_STEPS = 300    # names, one per step
PRETRAIN_LR = 0.01
SFT_STEPS = 400         # conversations, one per step, for each of the two fine-tuning runs
SFT_LR = 0.01
EVAL_NAMES = 100        # held-out names, each asked every task
MAX_NEW_TOKENS = 8      # a reply that has not ended after 8 tokens is cut there
NUM_SHOWN = 4           # example replies printed per model

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




# === TOKENIZER: CHARACTERS PLUS SPECIAL TOKENS ===
# The character vocabulary is the 26 letters and the digits a length can be. On top of it sit
# special tokens: <bos> (pretraining's name separator, as in microgpt), the role markers
# <|user|> and <|assistant|>, the end-of-turn marker <|end|>, and one token per instruction.
# A special token is one id, never spelled out in characters, so no name can contain or fake
# one; real tokenizers keep theirs apart the same way (ChatML's <|im_start|> and <|im_end|>
# are single ids in Qwen's tokenizer).
# Signpost: an instruction here is one special token (<|count|>: "how many letters?"); real
# chat models read instructions as ordinary text in the user's turn, which needs far more
# model and data than this file has.
# The special tokens exist from the start, and pretraining reads none but <bos>, so the chat
# tokens' embeddings keep their random initial values: the base model has never read one. (A
# real base model fine-tuned to a new template gets its new ids added to the tokenizer and
# new embedding rows from Hugging Face's resize_token_embeddings; they too start untrained.)
TASKS = {
    "count": "how many letters does it have? (a digit)",
    "spell": "how many letters does it have? (a word)",
    "long": "is it longer than five letters? (yes or no)",
}
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPECIAL_TOKENS = ["<bos>", "<|user|>", "<|assistant|>", "<|end|>"] + [f"<|{t}|>" for t in TASKS]


def build_vocab():
    characters = list("abcdefghijklmnopqrstuvwxyz") + [str(d) for d in range(10)]
    return characters + SPECIAL_TOKENS   # characters first, special tokens after them


def answer_of(task, name):
    """The assistant's reply to a task about a name, as text."""
    if task == "count":
        return str(len(name))
    if task == "spell":
        return NUMBER_WORDS[len(name)]
    if task == "long":
        return "yes" if len(name) > 5 else "no"
    raise ValueError(f"unknown task {task}")


# === THE CHAT TEMPLATE ===
# One function turns a conversation (a list of (role, content) turns) into token ids, and it is
# the only place the layout is written down. Each turn is
#     <|role|> content <|end|>
# and add_generation_prompt=True appends <|assistant|>, the cue to start a reply:
#
#   tokens:  <|user|> <|count|>  e  m  m  a  <|end|> <|assistant|>  4  <|end|>
#   mask:       0        0       0  0  0  0     0         0         1     1
#
# The mask marks what the assistant generates: its content and its own <|end|>. The marker
# <|assistant|> and the user's turn are given at inference time, never generated, so they get
# 0. Hugging Face's apply_chat_template returns the same thing as assistant_masks when called
# with return_assistant_tokens_mask=True, for templates that enclose the reply in
# {% generation %} tags (in a ChatML template, placed around the reply and its <|im_end|>,
# with the <|im_start|>assistant header left outside, as here). TRL's SFTTrainer trains on
# that mask with assistant_only_loss=True.
# Signpost: real templates are Jinja programs stored with the tokenizer, and they write more
# than this one: ChatML puts the role as text after the marker and ends lines with newlines,
# <|im_start|>user\n ... <|im_end|>\n, and many templates add a system turn.


def apply_chat_template(messages, stoi, add_generation_prompt=False):
    """Token ids of a conversation and, for each token, 1 if the assistant generates it."""
    ids, mask = [], []
    for role, content in messages:
        generated = 1 if role == "assistant" else 0
        ids += [stoi[f"<|{role}|>"]] + content + [stoi["<|end|>"]]
        mask += [0] + [generated] * len(content) + [generated]   # the reply's <|end|> counts
    if add_generation_prompt:
        ids.append(stoi["<|assistant|>"])
        mask.append(0)
    return ids, mask


def user_turn(task, name, stoi):
    return [stoi[f"<|{task}|>"]] + [stoi[c] for c in name]


def conversation(task, name, stoi):
    reply = [stoi[c] for c in answer_of(task, name)]
    return [("user", user_turn(task, name, stoi)), ("assistant", reply)]


# Two wrong templates, for the mismatch measurement. The fine-tuned model is asked the same
# questions with the same special tokens, only laid out differently: as happens when a model
# is served with another model's template, or with the role markers left out.
#   no markers:     <|count|> e m m a <|end|>                         -> reply
#   roles swapped:  <|assistant|> <|count|> e m m a <|end|> <|user|>  -> reply


def mismatched_prompt(task, name, stoi, layout):
    user = user_turn(task, name, stoi)
    if layout == "no markers":
        return user + [stoi["<|end|>"]]
    if layout == "roles swapped":
        return [stoi["<|assistant|>"]] + user + [stoi["<|end|>"], stoi["<|user|>"]]
    raise ValueError(f"unknown layout {layout}")


def loss_mask(mask, assistant_only):
    """Which tokens the loss counts: the assistant's, or every token."""
    # Every token is what TRL's SFTTrainer counts by default on conversations
    # (assistant_only_loss=False: "loss is computed on the entire sequence"); the assistant's
    # alone with assistant_only_loss=True. The first token is never a target (nothing comes
    # before it to predict it from).
    return mask if assistant_only else [0] + [1] * (len(mask) - 1)


# === AUTOGRAD: THE VALUE CLASS ===
# A Value wraps one float and remembers its inputs (`_children`) with the local derivative of
# its output with respect to each (`_local_grads`), computed in the forward pass.
# backward() walks the graph from the loss to the leaves applying the chain rule,
#     dL/d(child) += dL/d(node) * d(node)/d(child)
# and the += lets a weight used at many positions collect gradient from every use.


class Value:
    __slots__ = ("data", "grad", "_children", "_local_grads")

    def __init__(self, data, children=(), local_grads=()):
        self.data = data
        self.grad = 0.0
        self._children = children
        self._local_grads = local_grads

    def __add__(self, other):
        # d(a + b)/da = 1, d(a + b)/db = 1. Plain numbers are wrapped so `x + 1` works.
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1.0, 1.0))

    def __mul__(self, other):
        # d(a * b)/da = b, d(a * b)/db = a: each input's slope is the other input's value
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, exponent):
        # d(x^k)/dx = k * x^(k-1); the exponent is a plain number, not a Value
        return Value(self.data ** exponent, (self,), (exponent * self.data ** (exponent - 1),))

    # The remaining arithmetic is built from the operations above, so it needs no new
    # derivatives: a - b = a + (-b), a / b = a * b^-1, and the reflected versions let a
    # plain number stand on the left (2 * x, 1 - x, 1 / x).
    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other)

    def __truediv__(self, other):
        return self * other ** -1.0

    def __radd__(self, other):
        return self + other

    def __rmul__(self, other):
        return self * other

    def __rsub__(self, other):
        return Value(other) - self

    def __rtruediv__(self, other):
        return Value(other) * self ** -1.0

    def tanh(self):
        # d tanh(a)/da = 1 - tanh(a)^2: reuse the forward result instead of recomputing
        t = math.tanh(self.data)
        return Value(t, (self,), (1.0 - t * t,))

    def exp(self):
        # e^a is its own derivative
        e = math.exp(self.data)
        return Value(e, (self,), (e,))

    def relu(self):
        # Passes positive inputs through with slope 1 and blocks negative ones (slope 0)
        return Value(max(0.0, self.data), (self,), (1.0 if self.data > 0 else 0.0,))

    def log(self):
        # Clamped log: log(max(x, 1e-10)) never returns -inf. Below the clamp the function is
        # flat, so its derivative there is 0, not 1/x.
        if self.data > 1e-10:
            return Value(math.log(self.data), (self,), (1.0 / self.data,))
        return Value(math.log(1e-10), (self,), (0.0,))

    def backward(self):
        # Order the graph so that every node comes after all of its children (a topological
        # order), then visit it in reverse. The walk uses an explicit stack rather than
        # recursion: a recursive version overflows Python's ~1000-frame limit on long graphs.
        order, visited = [], set()
        stack = [(self, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                order.append(node)
                continue
            if node in visited:
                continue
            visited.add(node)
            stack.append((node, True))
            for child in node._children:
                # A leaf (no children: a parameter, an input, a constant) passes nothing
                # on, so it needs no place in the order; its parents still add to its .grad.
                if child._children and child not in visited:
                    stack.append((child, False))
        self.grad = 1.0
        for node in reversed(order):
            node_grad = node.grad
            for child, local_grad in zip(node._children, node._local_grads):
                child.grad += local_grad * node_grad

    def __repr__(self):
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g})"


# --- AUTOGRAD DIFFERENCES IN THIS SCRIPT ---
# This Value class follows the canonical interface (docs/autograd-interface.md) exactly.
# On top of it this script adds fused nodes, as plain functions (see FUSED NODES):
# - dot(): a whole dot product (one neuron of a linear layer) as one node
# - softmax(): each attention weight as one node over all the scores
# - cross_entropy(): log-softmax plus negative log-likelihood as one node
# - rms_scale(): the 1/RMS factor of RMSNorm as one node
# - fused_mean(): the mean of a sequence's counted losses as one node
# The model helpers also accept plain floats and then compute plain floats: generation and
# evaluation need no gradients and run without any Value.

# === FUSED NODES: THE SAME MATH, FEWER NODES ===
# A dot product built from + and * is 2n - 1 nodes; its derivatives are known in closed form,
#     y = sum_i w_i * x_i   =>   dy/dw_i = x_i,   dy/dx_i = w_i
# so one node with 2n children gives the same value and the same gradients. naive_dot() is
# the slow form, kept beside it; the tests check every fused node against its naive form.


def naive_dot(weights, inputs):
    total = weights[0] * inputs[0]
    for w, x in zip(weights[1:], inputs[1:]):
        total = total + w * x
    return total


def dot(weights, inputs):
    if not isinstance(weights[0], Value) and not isinstance(inputs[0], Value):
        return sum(map(operator.mul, weights, inputs))   # plain floats: no graph at all
    w_data, x_data = [w.data for w in weights], [x.data for x in inputs]
    return Value(sum(map(operator.mul, w_data, x_data)), (*weights, *inputs), (*x_data, *w_data))


def data_of(number):
    return number.data if isinstance(number, Value) else number


def linear(inputs, weight_rows):
    return [dot(row, inputs) for row in weight_rows]   # y = W x, no bias


def shifted_exps(numbers):
    # exp(z_i - m) with m = max(z): the max cancels in a softmax, and exp() cannot overflow.
    top = max(numbers)
    return [math.exp(z - top) for z in numbers], top


def softmax(logits):
    # p_i = exp(z_i - m) / sum_j exp(z_j - m),   dp_i/dz_j = p_i * ([i == j] - p_j)
    exps, _ = shifted_exps([data_of(z) for z in logits])
    total = sum(exps)
    probs = [e / total for e in exps]
    if not isinstance(logits[0], Value):
        return probs
    logits = tuple(logits)
    return [Value(p_i, logits, tuple(p_i * ((i == j) - p_j) for j, p_j in enumerate(probs)))
            for i, p_i in enumerate(probs)]


def cross_entropy(logits, target):
    # L = -log softmax(z)[y] = logsumexp(z) - z_y    (z = logits, y = target)
    # dL/dz_j = p_j - [j == y]: one node replaces an exp per logit, a sum, a divide and a log.
    exps, top = shifted_exps([z.data for z in logits])
    total = sum(exps)
    loss = top + math.log(total) - logits[target].data
    return Value(loss, tuple(logits), tuple(e / total - (j == target) for j, e in enumerate(exps)))


def rms_scale(x):
    # s = (mean_j x_j^2 + eps)^(-1/2),   ds/dx_j = -s^3 * x_j / n
    n = len(x)
    s = (sum(data_of(xi) ** 2 for xi in x) / n + 1e-5) ** -0.5
    if not isinstance(x[0], Value):
        return s
    return Value(s, tuple(x), tuple(-s ** 3 * xi.data / n for xi in x))


def rmsnorm(x):
    s = rms_scale(x)   # Signpost: real RMSNorm also has a learned gain per channel
    return [xi * s for xi in x]


def relu(h):
    return h.relu() if isinstance(h, Value) else max(0.0, h)


def fused_mean(terms):
    # y = (1/n) sum_i t_i,  dy/dt_i = 1/n: one node, however many terms
    n = len(terms)
    return Value(sum(t.data for t in terms) / n, tuple(terms), (1.0 / n,) * n)


# === MODEL: MICROGPT'S TRANSFORMER ===
# The block of foundational/microgpt.py, with its departures from GPT-2 (RMSNorm without a gain
# instead of LayerNorm, a norm on the embeddings, ReLU, no biases, no final norm, no weight
# tying; its comments say why): causal attention through a growing key/value cache, an MLP,
# residual connections, one position at a time. It runs on a model of Values (training) or of
# plain floats (generation); a test checks that both give the same numbers.


def matrix(rows, cols):
    return [[Value(random.gauss(0.0, INIT_STD)) for _ in range(cols)] for _ in range(rows)]


def init_model(vocab_size):
    model = {"wte": matrix(vocab_size, N_EMBD), "wpe": matrix(BLOCK_SIZE, N_EMBD),
             "lm_head": matrix(vocab_size, N_EMBD)}
    for layer in range(N_LAYER):
        for name in ("wq", "wk", "wv", "wo"):
            model[f"layer{layer}.{name}"] = matrix(N_EMBD, N_EMBD)
        model[f"layer{layer}.fc1"] = matrix(MLP_HIDDEN, N_EMBD)
        model[f"layer{layer}.fc2"] = matrix(N_EMBD, MLP_HIDDEN)
    # 43*16 (wte) + 16*16 (wpe) + 43*16 (lm_head) + 4*16*16 (attention) + 2*64*16 (MLP) = 4,704
    return model


def parameters(model):
    return [p for mat in model.values() for row in mat for p in row]


def frozen_copy(model):
    # Plain floats: a snapshot that no optimiser step can move and no backward() can reach
    return {name: [[data_of(p) for p in row] for row in mat] for name, mat in model.items()}


def trainable_copy(floats):
    return {name: [[Value(p) for p in row] for row in mat] for name, mat in floats.items()}


def gpt_step(model, token_id, pos, keys, values):
    """Logits for the token after `token_id` at position `pos` (keys/values: the caches)."""
    x = rmsnorm([t + p for t, p in zip(model["wte"][token_id], model["wpe"][pos])])
    head_dim = N_EMBD // N_HEAD
    for layer in range(N_LAYER):
        residual = x
        x = rmsnorm(x)
        q = linear(x, model[f"layer{layer}.wq"])
        keys[layer].append(linear(x, model[f"layer{layer}.wk"]))
        values[layer].append(linear(x, model[f"layer{layer}.wv"]))
        attended = []
        for h in range(0, N_EMBD, head_dim):
            # weight_t = softmax_t(q . k_t / sqrt(head_dim)); output = sum_t weight_t * v_t
            scores = [dot(q[h:h + head_dim], k[h:h + head_dim]) * (1.0 / math.sqrt(head_dim))
                      for k in keys[layer]]
            weights = softmax(scores)
            for i in range(h, h + head_dim):
                attended.append(dot(weights, [v[i] for v in values[layer]]))
        x = [a + r for a, r in zip(linear(attended, model[f"layer{layer}.wo"]), residual)]
        residual = x
        hidden = [relu(h) for h in linear(rmsnorm(x), model[f"layer{layer}.fc1"])]
        x = [m + r for m, r in zip(linear(hidden, model[f"layer{layer}.fc2"]), residual)]
    return linear(x, model["lm_head"])


# === THE LOSS: NEXT-TOKEN CROSS-ENTROPY, MASKED ===
# Pretraining and SFT share one loss. Position t reads tokens[0..t] and predicts tokens[t + 1];
# the loss is the mean of -log p(tokens[t + 1]) over the targets the mask counts:
#     L = (1 / |C|) * sum_{t : counted[t + 1]} -log p(tokens[t + 1] | tokens[:t + 1])
# A masked-out token still sits in the context (the reply attends to the whole prompt); it is
# only not a target. PyTorch writes the same thing as labels set to -100, the ignore_index of
# its cross-entropy, which TRL uses for every token the mask leaves out.


def sequence_loss(model, tokens, counted):
    """Mean cross-entropy of the counted targets (a fused mean over the counted positions)."""
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    last = max(t for t in range(1, len(tokens)) if counted[t])   # no target after it: stop
    losses = []
    for pos in range(last):
        logits = gpt_step(model, tokens[pos], pos, keys, values)
        if counted[pos + 1]:
            losses.append(cross_entropy(logits, tokens[pos + 1]))
    return fused_mean(losses)


def adam_step(params, state, lr):
    # m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g^2 ; p -= lr * m_hat / (sqrt(v_hat) + eps)
    state["t"] += 1
    m, v, t = state["m"], state["v"], state["t"]
    m_scale, v_scale = 1.0 - BETA1 ** t, 1.0 - BETA2 ** t
    for i, p in enumerate(params):
        g = p.grad
        m[i] = BETA1 * m[i] + (1.0 - BETA1) * g
        v[i] = BETA2 * v[i] + (1.0 - BETA2) * g * g
        p.data -= lr * (m[i] / m_scale) / (math.sqrt(v[i] / v_scale) + ADAM_EPS)
        p.grad = 0.0   # backward() adds into .grad, so it must be emptied after every step


def train(model, examples, lr, label, start):
    """One example (tokens, counted) per step, Adam with a rate decaying linearly to 0."""
    params = parameters(model)
    state = {"m": [0.0] * len(params), "v": [0.0] * len(params), "t": 0}
    losses = []
    for step, (tokens, counted) in enumerate(examples):
        loss = sequence_loss(model, tokens, counted)
        loss.backward()
        adam_step(params, state, lr * (1.0 - step / len(examples)))
        losses.append(loss.data)
        if (step + 1) % 100 == 0 or step + 1 == len(examples):
            recent = losses[-100:]
            print(f"{label:<12} step {step + 1:4d}/{len(examples)} | loss "
                  f"{sum(recent) / len(recent):.4f} | {time.time() - start:.1f}s")
    return losses


# === GENERATION: GREEDY, UNTIL <|end|> ===
# Exact match needs one answer per prompt, so decoding is greedy: the most likely token each
# step. Generation stops when the model emits <|end|> (the reply is the tokens before it), or
# after MAX_NEW_TOKENS, or at BLOCK_SIZE. A model that never learned to emit <|end|> runs on to
# the limit, and its reply then holds more than the answer, so it cannot match exactly.
# Signpost: a served model stops the same way: Hugging Face's generate() stops at the ids in
# eos_token_id, and a chat model's generation config lists its end-of-turn token there (Llama 3
# Instruct lists <|eot_id|> beside <|end_of_text|>).


def generate(model, prompt, end):
    """Greedy reply of a float model to a prompt: (reply tokens, whether it ended with end)."""
    keys, values = [[] for _ in range(N_LAYER)], [[] for _ in range(N_LAYER)]
    for pos, token in enumerate(prompt[:-1]):
        gpt_step(model, token, pos, keys, values)   # fills the caches; logits not needed
    token, reply = prompt[-1], []
    for pos in range(len(prompt) - 1, min(BLOCK_SIZE, len(prompt) - 1 + MAX_NEW_TOKENS)):
        logits = gpt_step(model, token, pos, keys, values)
        token = max(range(len(logits)), key=logits.__getitem__)
        if token == end:
            return reply, True
        reply.append(token)
    return reply, False


# === EVALUATION: EXACT MATCH ON HELD-OUT NAMES ===
# Every held-out name is asked every task. A reply is right when it is exactly the answer and
# ended with <|end|>. The table also prints, per task, the best a model could score by giving
# one constant answer whatever the name (for "count" the commonest length): a model above it
# read the name.


def prompt_for(task, name, stoi, layout):
    if layout == "template":
        return apply_chat_template([("user", user_turn(task, name, stoi))], stoi,
                                   add_generation_prompt=True)[0]
    return mismatched_prompt(task, name, stoi, layout)


def evaluate(model, names, stoi, layout):
    """Exact match per task, the share of replies that ended with <|end|>, and the replies."""
    end = stoi["<|end|>"]
    exact, ended, replies = {}, 0, {}
    for task in TASKS:
        hits = 0
        replies[task] = []
        for name in names:
            reply, stopped = generate(model, prompt_for(task, name, stoi, layout), end)
            hits += stopped and reply == [stoi[c] for c in answer_of(task, name)]
            ended += stopped
            replies[task].append((reply, stopped))
        exact[task] = hits / len(names)
    return exact, ended / (len(names) * len(TASKS)), replies


def constant_answer_score(task, names):
    """Exact match of the best constant reply: the share of names with the commonest answer."""
    answers = [answer_of(task, name) for name in names]
    return max(answers.count(a) for a in set(answers)) / len(answers)


def mean(numbers):
    return sum(numbers) / len(numbers)


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
# Measured at seed 42: the fine-tuned model answers 0.977 of the held-out questions exactly;
# the base model 0 (it writes names and never emits <|end|>); one constant reply per task
# would score 0.51; through the better wrong template ("roles swapped", which keeps every
# position; here "count" survives it at 1.00) the same model scores 0.333; every reply ends with
# <|end|>; counting every token instead of the assistant's gives 0.647. The broken versions
# in the spec entry each fail rows here: the mask put on the prompt instead of the reply
# (exact match 0: the model learns to write prompts), the reply's <|end|> left out of the
# mask (end share 0: every reply runs on, "sixixix..."), the mask read one position early
# (exact match 0: the first token of every reply is never trained).
CRITERIA = [
    ("SFT exact match, held-out names, mean of tasks", "sft_exact_match", ">", 0.8),
    ("SFT minus base model exact match", "sft_gain_over_base", ">", 0.6),
    ("SFT minus best constant answer exact match", "sft_gain_over_constant", ">", 0.2),
    ("SFT exact match minus best mismatched template", "template_mismatch_drop", ">", 0.4),
    ("share of SFT replies that end with <|end|>", "sft_end_share", ">=", 0.95),
    ("SFT exact match, assistant-only minus every-token", "masking_gain", ">", 0.0),
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
    random.seed(42)   # every random draw below (init, data order, tasks) follows from this
    # Speed: the graph has no reference cycles (a node points only at the older nodes it was
    # computed from), so reference counting frees each step's graph the moment the step
    # ends. Python's cycle collector would keep rescanning the live nodes as millions are
    # created and find nothing to free, so it is switched off (no number changes).
    gc.disable()
    start = time.time()
    vocab = build_vocab()
    stoi = {token: i for i, token in enumerate(vocab)}
    # Distinct names of 3 to 6 letters, in a fixed order before the seeded shuffle. Held-out,
    # pretraining and fine-tuning names are three disjoint slices: no held-out name is ever
    # trained on, in either stage.
    names = sorted({n for n in load_names() if MIN_NAME_LEN <= len(n) <= MAX_NAME_LEN})
    random.shuffle(names)
    heldout = names[:EVAL_NAMES]
    pretrain_names = names[EVAL_NAMES:EVAL_NAMES + PRETRAIN_STEPS]
    sft_names = names[EVAL_NAMES + PRETRAIN_STEPS:EVAL_NAMES + PRETRAIN_STEPS + SFT_STEPS]
    model = init_model(len(vocab))
    print(f"{len(names)} names of {MIN_NAME_LEN}-{MAX_NAME_LEN} letters; vocabulary {len(vocab)} "
          f"tokens ({len(SPECIAL_TOKENS)} special); {len(parameters(model))} parameters")

    # --- 1. pretraining: the base model learns names, and nothing about chats ---
    bos = stoi["<bos>"]
    pretraining = [([bos] + [stoi[c] for c in n] + [bos], [0] + [1] * (len(n) + 1))
                   for n in pretrain_names]
    train(model, pretraining, PRETRAIN_LR, "pretrain", start)
    base = frozen_copy(model)

    # --- 2. the fine-tuning data: one conversation per name, the task drawn at random ---
    chats = [apply_chat_template(conversation(random.choice(list(TASKS)), n, stoi), stoi)
             for n in sft_names]
    tokens, mask = chats[0]
    print("\nfirst training conversation, and the tokens its loss counts (^):")
    print("  " + " ".join(vocab[t] for t in tokens))
    print("  " + " ".join(("^" if m else " ").center(len(vocab[t])) for t, m in zip(tokens, mask)))

    # --- 3. two fine-tuning runs from the same base, same conversations, same order ---
    # Why counting every token does worse here: the loss is a mean over the counted targets,
    # and with every token counted most of them are a name's letters, which no model can
    # predict from what comes before (at seed 42 the all-token loss ends at 1.51 nats per
    # token, the reply-only loss at 0.05). Those targets take most of each step's gradient
    # and of the model's capacity, while the one to five reply tokens get a small share
    # (mean of the last 100 steps' losses, as the progress lines print). On real data
    # it can go the other way: Shi et al. (2024, "Instruction Tuning With Loss Over
    # Instructions") found that counting the instruction too often helps, most when
    # instructions are long, replies short and training examples few.
    tuned = {}
    for label, assistant_only in (("SFT masked", True), ("SFT all", False)):
        policy = trainable_copy(base)
        train(policy, [(t, loss_mask(m, assistant_only)) for t, m in chats], SFT_LR, label, start)
        tuned[label] = frozen_copy(policy)

    # --- 4. exact match on held-out names ---
    # The wrong templates fail for a reason a reader can see in this model: the reply's first
    # token is predicted at the position after <|assistant|>, and "how many letters" is read
    # off that position. Without the markers the prompt is two tokens shorter, so every
    # position is off by two and the lengths come out wrong; with the roles swapped the
    # positions are the same, so "count" can survive, but the markers the model learned to
    # answer after are not where they were.
    columns = [("base", base, "template"), ("SFT", tuned["SFT masked"], "template"),
               ("SFT all tokens", tuned["SFT all"], "template"),
               ("no markers", tuned["SFT masked"], "no markers"),
               ("roles swapped", tuned["SFT masked"], "roles swapped")]
    scores = {label: evaluate(model_, heldout, stoi, layout)
              for label, model_, layout in columns}
    constant = {task: constant_answer_score(task, heldout) for task in TASKS}
    print(f"\nexact match on {len(heldout)} held-out names per task (greedy decoding); "
          f"the last two columns\nprompt the masked SFT model with a wrong template")
    print(f"{'task':<8}" + "".join(f"{label:>16}" for label, _, _ in columns)
          + f"{'constant answer':>17}")
    for task in TASKS:
        print(f"{task:<8}" + "".join(f"{scores[label][0][task]:>16.2f}" for label, _, _ in columns)
              + f"{constant[task]:>17.2f}")
    print(f"{'mean':<8}" + "".join(f"{mean(list(scores[label][0].values())):>16.3f}"
                                   for label, _, _ in columns)
          + f"{mean(list(constant.values())):>17.3f}")
    print(f"{'ended':<8}" + "".join(f"{scores[label][1]:>16.3f}" for label, _, _ in columns)
          + "   (share of replies that ended with <|end|>)")

    def shown(reply, stopped):
        return "".join(vocab[t] for t in reply) + ("<|end|>" if stopped else "...")

    print("\nexample replies (... = never emitted <|end|>):")
    for i, name in enumerate(heldout[:NUM_SHOWN]):
        for task in TASKS:
            print(f"  {name:<7} {task:<6} answer {answer_of(task, name) + '<|end|>':<13}"
                  + "".join(f" {label}: {shown(*scores[label][2][task][i]):<15}"
                            for label in ("base", "SFT", "no markers")))

    sft = mean(list(scores["SFT"][0].values()))
    mismatched = max(mean(list(scores[label][0].values()))
                     for label in ("no markers", "roles swapped"))
    results = {
        "sft_exact_match": sft,
        "base_exact_match": mean(list(scores["base"][0].values())),
        "sft_gain_over_base": sft - mean(list(scores["base"][0].values())),
        "constant_exact_match": mean(list(constant.values())),
        "sft_gain_over_constant": sft - mean(list(constant.values())),
        "unmasked_exact_match": mean(list(scores["SFT all tokens"][0].values())),
        "masking_gain": sft - mean(list(scores["SFT all tokens"][0].values())),
        "no_markers_exact_match": mean(list(scores["no markers"][0].values())),
        "roles_swapped_exact_match": mean(list(scores["roles swapped"][0].values())),
        "template_mismatch_drop": sft - mismatched,
        "sft_end_share": scores["SFT"][1],
        "base_end_share": scores["base"][1],
        "unmasked_end_share": scores["SFT all tokens"][1],
    }
    for label, _, _ in columns:
        for task in TASKS:
            results[f"exact_{label.replace(' ', '_').lower()}_{task}"] = scores[label][0][task]
    print_criteria(results)
    print(f"total {time.time() - start:.1f}s")
    print("\nNext: predict what a change will do, then run it: docs/challenges/microsft.md")
    return results


if __name__ == "__main__":
    main()
