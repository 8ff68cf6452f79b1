"""microgrpo: group relative policy optimisation, reinforcement learning from a checker.

A language model that has learned names can be taught, with no new examples at all, to make
more of its outputs pass a test. Here the test is a checker, the kind of reward that needs
no learned reward model: a completed name scores 1 if it appears in names.txt and 0 if it
does not (RL from verifiable rewards, as with maths answers or unit tests). The prompt is a
first letter; the policy writes the rest of the name.

GRPO (DeepSeekMath, 2024; the RL algorithm of DeepSeek-R1) keeps PPO's clipped objective:

    for each prompt, sample a GROUP of G completions from the current policy
    -> score each with the checker -> advantage = (r - mean(group)) / (std(group) + eps)
    -> maximise PPO's clipped ratio objective with that advantage on every token
    -> minus beta * a per-token KL estimate to the frozen pretrained policy, in the loss

and changes two things:
1. The group is its own baseline: no value network (PPO's critic) is trained.
2. The KL anchor moves out of the reward and into the loss, as the per-token estimator
   pi_ref/pi - log(pi_ref/pi) - 1, which is never negative.
One consequence to watch: a group whose members all score the same has advantages of 0 and
teaches nothing; the run measures how often that happens.

The same start and the same number of sampled completions are also spent on expert
iteration (sample, keep what the checker accepts, fine-tune on it by maximum likelihood), the
simplest way to learn from a checker, and the two are set side by side at the end.

Everything (the policy, its pretraining, both RL loops) is in this file, with its own scalar
autograd as in foundational/microgpt.py.

Run: python alignment/microgrpo.py    (about 11 s on the 2-core CI machine)
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
# The policy: a character MLP over the previous CONTEXT tokens and the position. Small on
# purpose: pretraining and 32 sampled names per RL step must fit in seconds.
CONTEXT = 3         # tokens the policy sees (earlier ones are forgotten)
N_EMBD = 8          # width of each character embedding and of the position embedding
HIDDEN = 16         # tanh units in the hidden layer
MAX_LEN = 16        # positions per name: the longest real name (15 letters) plus its end
INIT_STD = 0.1      # small random weights: the first predictions are near uniform
BETA1, BETA2, ADAM_EPS = 0.9, 0.99, 1e-8
PRETRAIN_STEPS = 500      # maximum-likelihood steps, one name each (see STAGE 1)
PRETRAIN_LR = 0.01
# GRPO
NUM_STEPS = 78            # RL steps (6 blocks of 13 steps; 13 steps see every letter twice)
PROMPTS_PER_STEP = 4      # first letters per step
GROUP_SIZE = 8            # G: completions sampled per prompt
INNER_EPOCHS = 2          # gradient steps on each sampled batch (mu in DeepSeekMath)
CLIP_EPS = 0.2            # the ratio pi/pi_old is clipped to [1 - eps, 1 + eps]
KL_COEF = 0.1             # beta: weight of the KL estimate in the loss (see THE RL LOOP)
ADV_EPS = 1e-4            # keeps the advantage finite when a group's rewards barely differ
RL_LR = 0.003             # Adam step size for both RL methods (see THE RL LOOP)
# Evaluation
EVAL_PER_LETTER = 10      # samples per prompt letter in each evaluation: 260 in all
EVAL_SEED = 7             # every evaluation draws the same random numbers (see EVALUATION)
BLOCK_STEPS = 13          # the policy is evaluated after every block of 13 RL steps
SHOW_LETTERS = "abjkmqxz"  # prompt letters whose samples are printed before and after

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



# === TOKENIZER ===
# Character level: the 26 letters are tokens 0..25 and one more token, END, marks the
# boundary. It fills the context before the first letter ("nothing written yet") and, when
# the policy emits it, ends the name: choosing to stop is an action like any other.


def build_vocab(names):
    # Sorting makes the letter -> id mapping the same on every run and every machine
    chars = sorted(set("".join(names)))
    return chars, len(chars)  # token ids 0..len-1 are letters; id len(chars) is END


# === AUTOGRAD: THE VALUE CLASS ===
# A Value wraps one float. Every operation creates a new Value that records its inputs
# (`_children`) and the local derivative of its output with respect to each input
# (`_local_grads`), computed right away in the forward pass. backward() then walks the
# graph from the loss back to the leaves and applies the chain rule:
#     dL/d(child) += dL/d(node) * d(node)/d(child)
# The += matters: a value used in several places collects gradient from each use.


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
# On top of it this script adds the fused nodes below, as plain functions:
# - dot(): a whole dot product (one neuron, its bias included) as one node
# - log_softmax_at(): log softmax(z)[y], the log-probability of one token, as one node
# - clipped_surrogate(): PPO's min(ratio * A, clip(ratio) * A) for one token, as one node
# - kl_estimate(): the per-token KL estimator pi_ref/pi - log(pi_ref/pi) - 1, as one node
# - weighted_sum(): sum_i w_i * x_i with constant weights as one node; every loss here
#   (pretraining's mean, GRPO's, expert iteration's) ends in one
# The tests check each one against its naive form built from Value operations, and against
# central finite differences.

# === FUSED NODES: THE SAME MATH, FEWER NODES ===
# A node may have any number of children, as long as it stores d(node)/d(child) for each.
# A dot product y = sum_i w_i * x_i built from * and + is 2n - 1 nodes; as one node it has
# the 2n local derivatives dy/dw_i = x_i and dy/dx_i = w_i and computes the same numbers.
# foundational/microgpt.py measures what this buys; here we simply use it. The naive form is
# kept beside it so the tests can compare the two.


def naive_dot(weights, inputs):
    total = weights[0] * inputs[0]
    for w, x in zip(weights[1:], inputs[1:]):
        total = total + w * x
    return total


def dot(weights, inputs):
    return Value(sum(w.data * x.data for w, x in zip(weights, inputs)),
                 (*weights, *inputs),
                 (*[x.data for x in inputs], *[w.data for w in weights]))


def shifted_exps(numbers):
    # exp(z_i - m) with m = max(z), for plain floats. Subtracting the max changes nothing in a
    # softmax (it cancels between numerator and denominator) but the largest term becomes
    # exp(0) = 1, so exp() cannot overflow on large logits. Returns m too, because
    # logsumexp(z) = m + log(sum_i exp(z_i - m)).
    top = max(numbers)
    return [math.exp(z - top) for z in numbers], top


def log_softmax_at(logits, target):
    # log pi(y) = log softmax(z)[y] = z_y - logsumexp(z)    (z = logits, y = target)
    # d log pi(y) / dz_j = [j == y] - p_j. No log of a small probability is ever taken, so
    # a token the policy thinks nearly impossible still gets an exact, finite log-probability.
    exps, top = shifted_exps([z.data for z in logits])
    total = sum(exps)
    value = logits[target].data - top - math.log(total)
    return Value(value, tuple(logits), tuple((j == target) - e / total for j, e in enumerate(exps)))


def weighted_sum(nodes, weights):
    # y = sum_i w_i * x_i with plain-number weights w_i: dy/dx_i = w_i. With w_i = 1/n it is
    # a mean. One node, however many terms, also keeps the graph shallow.
    return Value(sum(w * x.data for w, x in zip(weights, nodes)), tuple(nodes), tuple(weights))


# The two GRPO nodes are functions of one token's log-probability under the policy being
# trained, log_p (a Value), and of numbers held fixed during the update: the log-probability
# under the policy that sampled the token (old_log_p) and under the frozen reference
# (ref_log_p). Their derivations are in the GRPO section below; here is what they compute.


def clipped_surrogate(log_p, old_log_p, advantage):
    # ratio = pi / pi_old = exp(log_p - old_log_p)
    # s = min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)
    # ds/dlog_p = A * ratio where the unclipped term is the smaller one (d ratio/d log_p =
    # ratio), and 0 where the clipped, constant term is: once the ratio has moved eps past 1
    # in the direction the advantage favours, this token stops pulling.
    ratio = math.exp(log_p.data - old_log_p)
    clipped = min(max(ratio, 1.0 - CLIP_EPS), 1.0 + CLIP_EPS)
    if ratio * advantage <= clipped * advantage:
        return Value(ratio * advantage, (log_p,), (ratio * advantage,))
    return Value(clipped * advantage, (log_p,), (0.0,))


def kl_estimate(log_p, ref_log_p):
    # k = pi_ref/pi - log(pi_ref/pi) - 1 = exp(d) - d - 1,   d = ref_log_p - log_p
    # dk/dlog_p = -exp(d) + 1 = 1 - pi_ref/pi
    d = ref_log_p - log_p.data
    return Value(math.exp(d) - d - 1.0, (log_p,), (1.0 - math.exp(d),))


# === THE POLICY: A CHARACTER MLP THAT KNOWS WHERE IT IS ===
# pi(next token | last CONTEXT tokens, position):
#     x      = [emb(c_-3), emb(c_-2), emb(c_-1), pos_emb(t), 1]        (33 numbers)
#     hidden = tanh(W1 x)                                               (16 units)
#     logits = W2 [hidden, 1]                                           (27 tokens)
# The trailing 1 turns the last column of W1 and of W2 into biases inside the fused dot.
# Three characters of context cannot tell letter 3 from letter 9; the position embedding
# can, and where a name ends matters to whether it is a real one.
# Signpost: GRPO in practice fine-tunes a pretrained transformer language model (DeepSeekMath
# started from a 7-billion-parameter one); a small MLP keeps this file's rollouts cheap.


def matrix(rows, cols):
    # Random, so that units differ (identical weights get identical gradients and stay
    # identical); small, so that no tanh starts out saturated.
    return [[Value(random.gauss(0.0, INIT_STD)) for _ in range(cols)] for _ in range(rows)]


def init_policy(vocab_size):
    model = {
        "wte": matrix(vocab_size, N_EMBD),                       # character embeddings
        "wpe": matrix(MAX_LEN, N_EMBD),                          # position embeddings
        "w1": matrix(HIDDEN, CONTEXT * N_EMBD + N_EMBD + 1),     # +1: the bias column
        "w2": matrix(vocab_size, HIDDEN + 1),
    }
    # 27*8 (wte) + 16*8 (wpe) + 16*33 (w1) + 27*17 (w2) = 1,331 parameters
    params = [p for mat in model.values() for row in mat for p in row]
    return model, params


def policy_logits(model, context, pos):
    """Logits for the token at position `pos`, given the last CONTEXT tokens."""
    one = Value(1.0)
    x = [e for token in context for e in model["wte"][token]] + model["wpe"][pos] + [one]
    hidden = [dot(row, x).tanh() for row in model["w1"]] + [one]
    return [dot(row, hidden) for row in model["w2"]]


def token_log_probs(model, tokens, end, first=0, cache=None):
    """log pi of tokens[first:] given the tokens before them (teacher forcing), as Values.

    `tokens` is a whole name with its closing END; first = 1 skips the prompt letter, which
    the policy is given rather than chooses. `cache` maps a (context, position) pair to
    logits already built for this loss: the completions of one prompt share at least their
    first position, so each is built once. The gradient is unchanged (a shared node collects
    gradient from every use, through the += in backward()); a test checks it."""
    context, out = [end] * CONTEXT, []
    for pos, token in enumerate(tokens):
        if pos >= first:
            key = (*context, pos)
            if cache is None:
                logits = policy_logits(model, context, pos)
            elif key in cache:
                logits = cache[key]
            else:
                logits = cache[key] = policy_logits(model, context, pos)
            out.append(log_softmax_at(logits, token))
        context = context[1:] + [token]
    return out


# === ADAM ===
# Per parameter, running averages of the gradient (m) and of its square (v); the step is
# m / sqrt(v), so every parameter moves at a similar pace whatever its gradient's scale.


def adam_step(params, state, lr):
    state["t"] += 1
    t, m, v = state["t"], state["m"], state["v"]
    for i, p in enumerate(params):
        # m = b1*m + (1-b1)*g ; v = b2*v + (1-b2)*g^2 ; p -= lr * m_hat / (sqrt(v_hat) + eps)
        m[i] = BETA1 * m[i] + (1.0 - BETA1) * p.grad
        v[i] = BETA2 * v[i] + (1.0 - BETA2) * p.grad * p.grad
        m_hat = m[i] / (1.0 - BETA1 ** t)   # bias correction: m and v start at 0
        v_hat = v[i] / (1.0 - BETA2 ** t)
        p.data -= lr * m_hat / (math.sqrt(v_hat) + ADAM_EPS)
        p.grad = 0.0   # backward() adds into .grad, so clear it for the next step


def new_adam_state(params):
    return {"t": 0, "m": [0.0] * len(params), "v": [0.0] * len(params)}


# === STAGE 1: PRETRAINING BY MAXIMUM LIKELIHOOD ===
# RL can only reinforce what the policy already does sometimes: a random policy almost never
# writes a real name, so every group would score all zeros and GRPO would have no signal.
# So first the usual language-model training. Maximum likelihood maximises log pi(name) =
# sum_t log pi(token_t | earlier tokens) over real names; we minimise its per-token mean,
#     L = -1/|name| sum_t log pi(token_t)
# one real name per step. 500 steps see 1.6% of the names. In our runs 1,000 steps lowered
# the mean loss of the last 500 steps from 2.56 to 2.40 but not the share of samples that
# are real names (4.2% both times), so the budget goes to RL instead.


def pretrain(model, params, names, encode, end):
    state = new_adam_state(params)
    losses, start = [], time.time()
    for step in range(PRETRAIN_STEPS):
        log_probs = token_log_probs(model, encode(names[step % len(names)]), end)
        loss = weighted_sum(log_probs, [-1.0 / len(log_probs)] * len(log_probs))  # fused mean
        loss.backward()
        adam_step(params, state, PRETRAIN_LR * (1.0 - step / PRETRAIN_STEPS))  # linear decay
        losses.append(loss.data)
        if (step + 1) % 100 == 0 or step + 1 == PRETRAIN_STEPS:
            recent = losses[-100:]
            print(f"pretrain {step + 1:5d}/{PRETRAIN_STEPS} | loss {sum(recent) / len(recent):.4f}"
                  f" | {time.time() - start:.1f}s")


# === INFERENCE ON PLAIN FLOATS ===
# Sampling and scoring need no gradients, so they run on a snapshot of the weights as plain
# floats: the same arithmetic as policy_logits() without building a graph (a test checks
# that the two agree). Three snapshots matter in GRPO: the frozen reference (the pretrained
# policy), the policy that sampled the current batch (pi_old), and the one being trained.


def snapshot(model):
    return {name: [[p.data for p in row] for row in mat] for name, mat in model.items()}


def load_snapshot(model, weights):
    for name, mat in model.items():
        for row, values in zip(mat, weights[name]):
            for p, value in zip(row, values):
                p.data = value


def float_logits(weights, context, pos):
    x = [e for token in context for e in weights["wte"][token]] + weights["wpe"][pos] + [1.0]
    hidden = [math.tanh(sum(w * xi for w, xi in zip(row, x))) for row in weights["w1"]]
    hidden.append(1.0)
    return [sum(w * h for w, h in zip(row, hidden)) for row in weights["w2"]]


def float_policy(weights):
    """A function (context, position) -> log pi of every next token, remembering answers."""
    # The 8 completions of one prompt all start from the same context, and common prefixes
    # recur, so each distinct (context, position) is computed once per set of weights.
    memo = {}

    def log_probs(context, pos):
        key = (*context, pos)
        if key not in memo:
            logits = float_logits(weights, context, pos)
            exps, top = shifted_exps(logits)
            # log softmax(z)_j = z_j - logsumexp(z), with logsumexp = m + log(sum exp(z - m))
            log_total = top + math.log(sum(exps))
            memo[key] = [z - log_total for z in logits]
        return memo[key]
    return log_probs


def float_log_probs(policy, tokens, end, first=1):
    """log pi of tokens[first:] on plain floats (the same numbers as token_log_probs)."""
    context, out = [end] * CONTEXT, []
    for pos, token in enumerate(tokens):
        if pos >= first:
            out.append(policy(context, pos)[token])
        context = context[1:] + [token]
    return out


def complete(policy, prompt, end, rng):
    """Sample a completion of the prompt letter: the whole name as tokens, END included."""
    tokens, context = [prompt], [end] * (CONTEXT - 1) + [prompt]
    for pos in range(1, MAX_LEN):
        probs = [math.exp(lp) for lp in policy(context, pos)]
        token = rng.choices(range(len(probs)), weights=probs)[0]
        tokens.append(token)
        if token == end:
            break
        context = context[1:] + [token]
    return tokens   # a name that reaches MAX_LEN letters is cut off there, without an END


# === THE CHECKER: A VERIFIABLE REWARD ===
# r = 1 if the completed name (prompt letter + sampled letters) is in names.txt, else 0.
# The checker is a set lookup, like the answer check on a maths problem in RL from
# verifiable rewards: nothing is learned, so there is no reward model for the policy to
# fool. What it can still exploit is that every real name pays the same (see THE RL LOOP).
# Before RL, 4.2% of the pretrained policy's evaluation samples are real names.


def checker_reward(tokens, end, itos, real_names):
    if tokens[-1] != end:
        return 0.0   # cut off at MAX_LEN without ending: not a finished name
    return 1.0 if "".join(itos[t] for t in tokens[:-1]) in real_names else 0.0


# === GRPO: THE GROUP AS ITS OWN BASELINE ===
# For one prompt q, sample G completions o_1..o_G and score them r_1..r_G. The advantage of
# every token of o_i is its completion's standing within the group:
#     A_i = (r_i - mean(r)) / (std(r) + eps)
# Subtracting the mean is a baseline, as in REINFORCE (see alignment/microreinforce.py),
# with one difference: the group mean includes r_i itself. Since
#     r_i - mean(r) = (G - 1)/G * (r_i - mean of the other G - 1 rewards)
# and the mean of the others does not depend on o_i (a true baseline: no bias), the expected
# gradient keeps its direction and is scaled by (G - 1)/G = 7/8, the same shrinkage
# microreinforce measures for its batch-mean baseline. The baseline follows each prompt's
# difficulty for free. Dividing by the group's std is not a baseline: it multiplies each
# group's whole contribution by 1/(std + eps), so prompts are reweighted and the expected
# update is no longer the gradient of the expected reward. (With this checker's 0/1
# rewards, and leaving aside the 1/|o_i| averaging below, each prompt's expected push is
# still a non-negative multiple of the gradient of its acceptance rate: whatever the other
# names scored, an accepted name's advantage is at least a rejected one's.)
# With binary rewards and k of G accepted (p = k/G), mean = p and std = sqrt(p(1 - p)), so
# an accepted name gets A = sqrt((1 - p)/p) and a rejected one -sqrt(p/(1 - p)): one
# success in a group of 8 scores +2.65, a lone failure among 7 successes -2.65. The rare
# outcome moves the policy most, whichever way it points, and a hard letter (few real names
# start with x) is pushed as hard as an easy one. When every r_i is equal (all 0 for a
# letter the policy cannot complete yet, or all 1), every A_i is 0: the group carries no
# signal at all, and only the KL term below acts on it. Dividing by the std is a choice:
# Dr. GRPO (Liu et al., 2025) argues it tilts training toward prompts that are nearly
# always or nearly never solved, and drops it along with the 1/|o_i| length normalisation
# below.


def group_advantages(rewards):
    if min(rewards) == max(rewards):
        return [0.0] * len(rewards)   # exactly 0, not a rounding error divided by eps
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
    return [(r - mean) / (std + ADV_EPS) for r in rewards]


# The objective GRPO maximises (DeepSeekMath, eq. 3), for one prompt:
#     J(theta) = 1/G sum_i 1/|o_i| sum_t [ min(rho_it A_i, clip(rho_it, 1-eps, 1+eps) A_i)
#                                          - beta * k_it ]
#     rho_it = pi_theta(o_it | q, o_i,<t) / pi_old(o_it | q, o_i,<t)
# and the loss is L = -J, one weighted_sum node over every token's two terms.
#
# Where the first term comes from. We want the gradient of the expected reward under
# pi_theta, but the completions were sampled from pi_old (the policy at the start of this
# step), and we take INNER_EPOCHS gradient steps on them. Importance weighting corrects for
# that, one token at a time: at a fixed prefix, with the next token a drawn from pi_old,
# E[rho * f(a)] = E_{a ~ pi_theta}[f(a)] for any f. Only that token's distribution is
# corrected; the prefix before it and the tokens after it were still drawn from pi_old, so
# the sum of rho * A over a completion is not the expected advantage of whole completions
# under pi_theta. The two agree at theta = theta_old and part as theta moves, one more
# reason to keep theta near theta_old. Its gradient is
#     d(rho * A)/d theta = A * rho * d log pi_theta / d theta
# which, on the first inner step (theta = theta_old, so rho = 1), is A * grad log pi per
# token, with the group's baseline. Summed over a completion's tokens that is the policy
# gradient term A_i * grad log pi(o_i), but the objective divides it by |o_i|: a long
# completion counts for less than a short one with the same advantage, so the update is the
# policy gradient of the expected reward only up to these per-completion weights (one more
# thing Dr. GRPO removes). The clip and the min form a pessimistic bound: once rho has moved
# eps past 1 in the direction A favours (above 1 + eps for A > 0, below 1 - eps for A < 0),
# the term is the constant clipped value and its gradient is 0, so the later inner steps
# cannot run away on a few samples. Moves in the unfavourable direction are never clipped.
# The run prints how many tokens were clipped.
#
# Where the second term comes from. The anchor is KL(pi_theta || pi_ref) = E_pi[log pi /
# pi_ref], estimated on the sampled tokens by (with u = pi_ref / pi_theta)
#     k = u - log u - 1
# Sampled from pi, E[u] = sum_x pi_ref(x) = 1 and E[-log u] = KL, so E[k] = KL: unbiased.
# And k >= 0 for every single token, because e^d >= 1 + d (d = log u), with equality only
# at d = 0; the plain estimate -log u can be negative, and a per-token penalty that
# rewards some tokens for drifting is a poor anchor. (DeepSeekMath cites Schulman's note
# "Approximating KL divergence" for this estimator.) Its gradient through log pi_theta is
#     dk/d log pi = 1 - u
# so the expected gradient over tokens sampled from pi is
#     sum_x pi(x) (1 - pi_ref(x)/pi(x)) grad log pi(x)
#       = sum_x grad pi(x) - sum_x pi_ref(x) grad log pi(x)
#       = grad(1) + grad(-sum_x pi_ref(x) log pi(x)) = grad KL(pi_ref || pi)
# the gradient of the KL in the other direction. Both directions are 0 only when pi =
# pi_ref, so either anchors the policy; a test checks this identity on a small softmax.
#
# Why in the loss and not in the reward. PPO-based RLHF subtracts beta * log(pi / pi_ref)
# from every token's reward, and its value network then has to learn the penalised returns.
# GRPO's advantage is the group-normalised checker score alone; DeepSeekMath puts the KL in
# the loss "avoiding complicating the calculation" of that advantage. DeepSeekMath used
# beta = 0.04; this script uses 0.1, for the reason measured in THE RL LOOP.
#
# Signposts: DeepSeekMath samples G = 64 outputs per question and takes one gradient step
# per batch (mu = 1), so rho = 1 and the clip never binds there; INNER_EPOCHS = 2 here
# lets it act on the second step, but at RL_LR = 0.003 no token got that far in our run
# (the run prints the share, 0.00%, and the largest |ratio - 1|, 0.185: close, not past).
# Plainly: in this run the clip does nothing. With CLIP_EPS = 1e9 every number it prints
# is the same, and no criterion can tell the clip from its absence. It binds at a larger
# step: at RL_LR = 0.03, 3.4% of the second step's tokens were clipped, and against the
# same run without the clip the largest |ratio - 1| was 2.18 vs 3.22, the KL per token over
# the last 13 steps 1.21 vs 1.62, the distinct share 0.55 vs 0.44. That is one pair of runs
# (seed 42), whose draws part after the first clipped step: an example, not a measured
# effect. alignment/microppo.py measures what the clip holds back, on one batch optimised
# for 10 epochs with and without it.
# TRL's GRPOTrainer implements this loss (with Dr. GRPO's variant as an option) and
# generates many sequences in parallel on GPUs, optionally through vLLM; this loop samples
# one name at a time on plain floats.


def sample_groups(old_policy, ref_policy, prompts, end, itos, real_names):
    """G completions per prompt, scored, with pi_old's and pi_ref's token log-probs."""
    batch = []
    for prompt in prompts:
        completions = [complete(old_policy, prompt, end, random) for _ in range(GROUP_SIZE)]
        rewards = [checker_reward(c, end, itos, real_names) for c in completions]
        for tokens, r, a in zip(completions, rewards, group_advantages(rewards)):
            batch.append({"tokens": tokens, "reward": r, "advantage": a,
                          "old": float_log_probs(old_policy, tokens, end),
                          "ref": float_log_probs(ref_policy, tokens, end)})
    return batch


def grpo_loss(model, batch, end):
    """L = -J over the batch; also the share of tokens whose ratio the clip stopped, and
    the largest |ratio - 1| of any token (how near the clip came)."""
    nodes, weights, clipped, cache, widest = [], [], 0, {}, 0.0
    scale = 1.0 / len(batch)   # 1/G within a group, and the mean over the step's prompts
    for item in batch:
        log_probs = token_log_probs(model, item["tokens"], end, first=1, cache=cache)
        per_token = scale / len(log_probs)        # the 1/|o_i| of the objective
        for log_p, old, ref in zip(log_probs, item["old"], item["ref"]):
            surrogate = clipped_surrogate(log_p, old, item["advantage"])
            clipped += surrogate._local_grads[0] == 0.0 and item["advantage"] != 0.0
            widest = max(widest, abs(math.exp(log_p.data - old) - 1.0))
            nodes += [surrogate, kl_estimate(log_p, ref)]
            weights += [-per_token, KL_COEF * per_token]
    return weighted_sum(nodes, weights), (clipped / (len(nodes) // 2), widest)


def mean_token_kl(batch):
    # The same estimator k, averaged over every sampled token: KL(pi_old || pi_ref) per token
    ks = [math.exp(r - o) - (r - o) - 1.0 for item in batch
          for o, r in zip(item["old"], item["ref"])]
    return sum(ks) / len(ks)


# === EXPERT ITERATION: KEEP WHAT PASSES, IMITATE IT ===
# The simplest way to learn from a checker: sample, keep only the completions it accepts,
# and fine-tune on them by maximum likelihood,
#     L = -1/K sum_{accepted i} 1/|o_i| sum_t log pi(o_it)          (K accepted of N)
# Its gradient is a policy gradient with advantage 1 for an accepted name and 0 for a
# rejected one, each name's term divided by its length |o_i| (as in GRPO's objective) and
# the whole divided by the share accepted (K/N): no baseline, no push away from failures,
# no clip and no anchor to the reference. A step where nothing passes teaches nothing.
# (Rejection-sampling fine-tuning, STaR and ReST are variations on this loop.)


def expert_iteration_loss(model, batch, end):
    accepted = [item["tokens"] for item in batch if item["reward"] == 1.0]
    nodes, weights, cache = [], [], {}
    for tokens in accepted:
        log_probs = token_log_probs(model, tokens, end, first=1, cache=cache)
        nodes += log_probs
        weights += [-1.0 / (len(accepted) * len(log_probs))] * len(log_probs)
    return weighted_sum(nodes, weights) if nodes else None


# === THE RL LOOP (BOTH METHODS) ===
# Both methods get the same prompts in the same order, G = 8 fresh completions per prompt,
# the same INNER_EPOCHS Adam steps on each batch at the same learning rate, from the same
# pretrained weights. Only the loss differs. After every block of BLOCK_STEPS steps the
# policy is evaluated on the fixed evaluation below, which gives the reward curve.
#
# The anchor's strength, measured (seeds 42 and 43, 260 evaluation samples after 78 steps):
#     beta   step    real-name share gained   distinct names   KL per token, last block
#     0.04   0.002      0.38 / 0.46             0.57 / 0.37        1.11 / 1.01
#     0.1    0.003      0.50 / 0.42             0.65 / 0.71        0.90 / 0.80
#     0.2    0.002      0.19 / 0.26             0.87 / 0.77        0.36 / 0.41
#     0.5    0.002      0.06 / 0.09             0.99 / 0.96        0.05 / 0.08
# The checker pays the same for any real name, and the easiest way to score is to write a
# few short common ones ("jan", "man") over and over: that is the collapse the anchor is
# there to stop. At DeepSeekMath's beta = 0.04 it did not stop it here (in one seed only 37%
# of the samples were distinct), at 0.5 the policy barely moves; KL_COEF = 0.1 keeps most of
# the reward and most of the variety. A larger step is not free either: at beta 0.2 and
# RL_LR 0.004 the evaluation reward fell back by 0.05 and 0.04 between checkpoints.


def prompt_schedule(num_letters):
    # Each prompt letter once per round, in a fresh random order every round: 13 steps of 4
    # prompts cover every letter exactly twice, so block averages compare like with like.
    prompts = []
    while len(prompts) < NUM_STEPS * PROMPTS_PER_STEP:
        round_letters = list(range(num_letters))
        random.shuffle(round_letters)
        prompts += round_letters
    return [prompts[i:i + PROMPTS_PER_STEP] for i in range(0, NUM_STEPS * PROMPTS_PER_STEP,
                                                          PROMPTS_PER_STEP)]


def run_rl(method, model, params, ref_policy, schedule, end, itos, real_names, evaluate):
    state = new_adam_state(params)
    log = {"reward": [], "no_spread": [], "kl": [], "clipped": [], "widest": [], "eval": []}
    start = time.time()
    for step, prompts in enumerate(schedule):
        batch = sample_groups(float_policy(snapshot(model)), ref_policy, prompts, end, itos,
                              real_names)
        clipped = []
        for _ in range(INNER_EPOCHS):
            if method == "grpo":
                loss, share = grpo_loss(model, batch, end)
                clipped.append(share)
            else:
                loss = expert_iteration_loss(model, batch, end)
            if loss is None:
                break
            loss.backward()
            adam_step(params, state, RL_LR)
        rewards = [item["reward"] for item in batch]
        groups = [rewards[i:i + GROUP_SIZE] for i in range(0, len(rewards), GROUP_SIZE)]
        log["reward"].append(sum(rewards) / len(rewards))
        log["no_spread"].append(sum(min(g) == max(g) for g in groups) / len(groups))
        log["kl"].append(mean_token_kl(batch))
        # measured on the last inner step, the one that starts from moved weights
        log["clipped"].append(clipped[-1][0] if clipped else 0.0)
        log["widest"].append(clipped[-1][1] if clipped else 0.0)
        if (step + 1) % BLOCK_STEPS == 0:
            log["eval"].append(evaluate(snapshot(model))["reward"])
            recent = slice(step + 1 - BLOCK_STEPS, step + 1)
            print(f"{method:>4} step {step + 1:3d}/{NUM_STEPS} | reward "
                  f"{mean(log['reward'][recent]):.3f} | no spread "
                  f"{mean(log['no_spread'][recent]):.2f} | KL/token {log['kl'][step]:.4f} | "
                  f"eval reward {log['eval'][-1]:.3f} | {time.time() - start:.1f}s")
    return log


def mean(xs):
    return sum(xs) / len(xs)


def max_drawdown(curve):
    # The largest fall from any point of the curve to any later point: 0 for a curve that
    # never goes down, and (peak - end) for one that peaks and falls back to its end.
    peak, worst = curve[0], 0.0
    for x in curve:
        peak = max(peak, x)
        worst = max(worst, peak - x)
    return worst


# === EVALUATION ===
# EVAL_PER_LETTER completions for each of the 26 prompt letters, scored by the checker. Each
# sample draws its random numbers from its own generator, seeded by (EVAL_SEED, letter,
# index), so every evaluation (before, during and after training, either method) uses the
# same random numbers: two policies that assign the same probabilities write the same
# names, and a difference between two evaluations is the policy's, not the dice's.


def evaluate_policy(weights, end, itos, real_names):
    policy, samples = float_policy(weights), {}
    for letter in range(end):
        samples[letter] = []
        for k in range(EVAL_PER_LETTER):
            rng = random.Random(EVAL_SEED * 1_000_003 + letter * 1000 + k)
            tokens = complete(policy, letter, end, rng)
            samples[letter].append((tokens, checker_reward(tokens, end, itos, real_names)))
    flat = [s for letter in samples.values() for s in letter]
    names = ["".join(itos[t] for t in tokens if t != end) for tokens, _ in flat]
    return {"reward": mean([r for _, r in flat]), "distinct": len(set(names)) / len(names),
            "samples": samples}


# === PICTURES AND TABLES ===


def ascii_curve(series, width=52, height=6, fmt="{:6.3f}"):
    """Plot a series as rows of text, averaging it into `width` buckets."""
    width = min(width, len(series))
    bucket = len(series) / width
    points = [sum(series[int(i * bucket):int((i + 1) * bucket)]) /
              max(1, int((i + 1) * bucket) - int(i * bucket)) for i in range(width)]
    low, high = min(points), max(points)
    rows = []
    for r in range(height):
        level = high - (high - low) * r / max(1, height - 1)
        line = "".join("*" if abs(p - level) <= (high - low) / (2 * height) + 1e-12 else " "
                       for p in points)
        rows.append(fmt.format(level) + " |" + line)
    rows.append(" " * 7 + "+" + "-" * width)
    return "\n".join(rows)


def name_of(tokens, end, itos):
    return "".join(itos[t] for t in tokens if t != end)


def show_samples(evaluations, end, itos):
    """Real names per prompt letter, then a few samples for SHOW_LETTERS, per policy."""
    labels = list(evaluations)
    print(f"\nReal names among the {EVAL_PER_LETTER} evaluation samples per letter ("
          + " / ".join(labels) + "):")
    cells = [f"{itos[letter]} " + "/".join(
        f"{sum(r for _, r in evaluations[label]['samples'][letter]):>2.0f}" for label in labels)
        for letter in range(end)]
    for row in range(0, len(cells), 7):
        print("  " + "   ".join(cells[row:row + 7]))
    for label in labels:
        print(f"\nSamples {label} (* = a real name):")
        for letter in SHOW_LETTERS:
            row = [f"{name_of(t, end, itos) + ('*' if r else ''):<14}"
                   for t, r in evaluations[label]["samples"][itos.index(letter)][:6]]
            print(f"  {letter}: " + "".join(row))


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("real-name share of 260 samples, after GRPO minus before", "reward_gain", ">", 0.15),
    ("distinct names among those 260 samples (share)", "distinct_fraction", ">", 0.5),
    ("the same reward gain for expert iteration", "expert_iteration_reward_gain", ">", 0.0),
    ("GRPO eval reward: largest fall from any earlier checkpoint", "reward_max_drawdown", "<",
     0.03),
]
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
           "==": operator.eq}


def print_criteria(results):
    print(f"\n{'criterion':<58} {'measured':>12} {'threshold':>14}  result")
    for description, key, op, target in CRITERIA:
        value = results[key]
        threshold = results[target] if isinstance(target, str) else target
        # A non-finite value fails every row: NaN compares False with anything, but
        # inf would pass a ">" row, so finiteness is checked explicitly.
        finite = math.isfinite(value) and math.isfinite(threshold)
        verdict = "PASS" if finite and COMPARE[op](value, threshold) else "FAIL"
        print(f"{description:<58} {value:>12.6g} {op:>2} {threshold:<11.6g}  {verdict}")


# === MAIN ===


def main():
    random.seed(42)  # every random draw below (init, data order, prompts, sampling) follows
    # Speed: the graph has no reference cycles (a node points only at the older nodes it was
    # computed from), so reference counting frees each step's graph the moment the step
    # ends. Python's cycle collector would keep rescanning the live nodes as millions are
    # created and find nothing to free, so it is switched off (no number changes).
    gc.disable()
    names = load_names()
    real_names = set(names)   # the checker's list: every name in names.txt
    random.shuffle(names)     # the file is sorted by popularity; pretraining should not be
    chars, end = build_vocab(names)
    stoi = {c: i for i, c in enumerate(chars)}
    itos = chars + ["."]      # "." prints END, should a cut-off name ever show one

    def encode(name):
        return [stoi[c] for c in name][:MAX_LEN - 1] + [end]

    model, params = init_policy(vocab_size=end + 1)
    print(f"{len(names)} names ({len(real_names)} distinct, the checker's list); policy: "
          f"{len(params)} parameters")
    start = time.time()
    pretrain(model, params, names, encode, end)
    ref_weights = snapshot(model)    # the pretrained policy: the reference and the start
    ref_policy = float_policy(ref_weights)

    def evaluate(weights):
        return evaluate_policy(weights, end, itos, real_names)

    before = evaluate(ref_weights)
    print(f"\npretrained policy: {before['reward']:.1%} of {end * EVAL_PER_LETTER} samples "
          f"({EVAL_PER_LETTER} per letter) are real names, {before['distinct']:.1%} distinct\n")

    # === STAGE 2: GRPO, THEN EXPERT ITERATION FROM THE SAME START ===
    schedule = prompt_schedule(end)
    logs, after = {}, {}
    for method in ("grpo", "ei"):
        load_snapshot(model, ref_weights)
        logs[method] = run_rl(method, model, params, ref_policy, schedule, end, itos,
                              real_names, evaluate)
        after[method] = evaluate(snapshot(model))
    print(f"pretraining and both RL runs took {time.time() - start:.1f}s")

    g = logs["grpo"]
    print(f"\nGRPO: mean reward of each step's {PROMPTS_PER_STEP * GROUP_SIZE} completions "
          f"(buckets of {NUM_STEPS / min(52, NUM_STEPS):.1f} steps):")
    print(ascii_curve(g["reward"]))
    print("GRPO: share of the step's groups with no reward spread (all 0 or all 1):")
    print(ascii_curve(g["no_spread"], fmt="{:6.2f}"))
    print("GRPO: KL(pi_old || pi_ref) per sampled token, the estimator k averaged:")
    print(ascii_curve(g["kl"], fmt="{:6.3f}"))
    print(f"share of tokens whose ratio the clip stopped (last inner step): "
          f"{mean(g['clipped']):.2%} on average;\nthe largest |ratio - 1| of any token there: "
          f"{max(g['widest']):.3f} (the clip acts beyond eps = {CLIP_EPS})")

    print(f"\nEvaluation reward (the same {end * EVAL_PER_LETTER} prompts and random numbers) "
          f"every {BLOCK_STEPS} steps:")
    print(f"  {'step':<22}" + "".join(f"{BLOCK_STEPS * i:>7d}" for i in range(len(g["eval"]) + 1)))
    for method, label in (("grpo", "GRPO"), ("ei", "expert iteration")):
        curve = [before["reward"]] + logs[method]["eval"]
        print(f"  {label:<22}" + "".join(f"{x:>7.3f}" for x in curve))
    show_samples({"pretrained": before, "after GRPO": after["grpo"],
                  "after expert iteration": after["ei"]}, end, itos)

    results = {
        "reward_before": before["reward"],
        "distinct_before": before["distinct"],
        "reward_after": after["grpo"]["reward"],
        "reward_gain": after["grpo"]["reward"] - before["reward"],
        "distinct_fraction": after["grpo"]["distinct"],
        "reward_drop_from_peak": max(g["eval"]) - g["eval"][-1],
        "reward_max_drawdown": max_drawdown([before["reward"]] + g["eval"]),
        "expert_iteration_reward_gain": after["ei"]["reward"] - before["reward"],
        "expert_iteration_distinct_fraction": after["ei"]["distinct"],
        "expert_iteration_drop_from_peak": max(logs["ei"]["eval"]) - logs["ei"]["eval"][-1],
        "expert_iteration_max_drawdown": max_drawdown([before["reward"]] + logs["ei"]["eval"]),
        "completions_sampled": NUM_STEPS * PROMPTS_PER_STEP * GROUP_SIZE,
        "kl_per_token_final": mean(g["kl"][-BLOCK_STEPS:]),
        "expert_iteration_kl_per_token_final": mean(logs["ei"]["kl"][-BLOCK_STEPS:]),
        "no_spread_first_block": mean(g["no_spread"][:BLOCK_STEPS]),
        "no_spread_last_block": mean(g["no_spread"][-BLOCK_STEPS:]),
        "clip_fraction": mean(g["clipped"]),
        "largest_ratio_deviation": max(g["widest"]),
        "policy_params": len(params),
        "ppo_critic_params": len(params),
    }
    compare_methods(results)
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microgrpo.md")
    return results


# === GRPO BESIDE EXPERT ITERATION AND PPO ===
# PPO needs a critic: a value network that predicts each state's return, trained alongside
# the policy, so that advantage = return - value. DeepSeekMath motivates GRPO by its cost:
# in PPO for language models the value function is typically another model of size
# comparable to the policy, a substantial memory and compute burden. GRPO has no critic:
# the group mean is its baseline. The count below assumes a critic the same size as our
# policy (1,331 parameters); a smaller value head would shrink PPO's column, not remove it.
# (alignment/microppo.py gets away with a linear value head of 61 parameters over hand-made
# features of the prefix, because the preference behind its reward is about length alone.)


def compare_methods(r):
    print(f"\n{'':<26}{'GRPO':>14}{'expert iteration':>20}")
    rows = [
        ("real names, before", f"{r['reward_before']:.3f}", f"{r['reward_before']:.3f}"),
        ("real names, after", f"{r['reward_after']:.3f}",
         f"{r['reward_before'] + r['expert_iteration_reward_gain']:.3f}"),
        ("reward gain", f"{r['reward_gain']:+.3f}", f"{r['expert_iteration_reward_gain']:+.3f}"),
        ("distinct names, after", f"{r['distinct_fraction']:.3f}",
         f"{r['expert_iteration_distinct_fraction']:.3f}"),
        ("best checkpoint - last", f"{r['reward_drop_from_peak']:.3f}",
         f"{r['expert_iteration_drop_from_peak']:.3f}"),
        ("largest fall back", f"{r['reward_max_drawdown']:.3f}",
         f"{r['expert_iteration_max_drawdown']:.3f}"),
        ("KL/token, last block", f"{r['kl_per_token_final']:.3f}",
         f"{r['expert_iteration_kl_per_token_final']:.3f}"),
        ("completions sampled", f"{r['completions_sampled']:,}", f"{r['completions_sampled']:,}"),
    ]
    for label, a, b in rows:
        print(f"  {label:<24}{a:>14}{b:>20}")
    print("  what each trains:  GRPO: every sampled token, by its group-normalised advantage,\n"
          "                     clipped ratio, minus beta * KL to the reference\n"
          "                     expert iteration: maximum likelihood on accepted names only")
    policy, critic = r["policy_params"], r["ppo_critic_params"]
    print(f"\nParameters trained: GRPO {policy:,} (the policy; the group is the baseline); "
          f"PPO {policy + critic:,}\n(the policy plus a critic counted at the policy's size, "
          f"{critic:,}). Both also keep a frozen reference.")


if __name__ == "__main__":
    main()
