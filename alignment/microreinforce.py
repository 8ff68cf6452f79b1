"""microreinforce: teach a name generator to hit a target length with policy gradients.

The language models so far in this collection learned from examples of the right answer:
the next character of a real name. Reinforcement learning has no right answers, only a score.
The model writes a whole name, a rule grades it, and training has to turn that one number
into a change of every weight. The tool for that is the policy gradient (REINFORCE):

    pretrain on names (maximum likelihood) -> sample a batch of names -> score each one
    -> weight each name's log-probability by (score - baseline) -> gradient step -> repeat

The score here is a rule about length, R = max(0, 1 - |length - 8| / 8), so the policy
learns to write 8-letter names. Two facts carry the lesson. The comments derive both, the
tests check both exactly on a policy small enough to enumerate every name it can write, and
the run measures the second on the real one:

1. The gradient of the expected score is an expectation we can sample:
   grad E[R] = E[R * grad log pi(name)]   (the log-derivative trick, derived below).
2. Subtracting from every score a baseline b that does not depend on the sampled name
   leaves that expectation unchanged (unbiased) but shrinks the noise of its estimate. On
   the same 800 sampled names, the run computes the gradient estimate of 50 batches with
   and without the baseline and prints how much the baseline cuts their variance.

Everything (the policy, its pretraining, the RL loop) is in this file; the policy is a small
character MLP with its own scalar autograd, as in foundational/microgpt.py.

Run: python alignment/microreinforce.py    (about 13 s on the 2-core CI machine)
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
# The policy reads the previous CONTEXT characters and its position in the name. It is
# small on purpose: pretraining and 16 sampled names per RL step must fit in seconds.
CONTEXT = 3         # characters the policy sees (earlier ones are forgotten)
N_EMBD = 8          # width of each character embedding and of the position embedding
HIDDEN = 16         # tanh units in the hidden layer
MAX_LEN = 16        # positions per name: the longest real name (15 letters) plus its end
INIT_STD = 0.1      # small random weights: the first predictions are near uniform
BETA1, BETA2, ADAM_EPS = 0.9, 0.99, 1e-8
PRETRAIN_STEPS = 1500     # maximum-likelihood steps, one name each
PRETRAIN_LR = 0.01
HELDOUT_NAMES = 500       # names never pretrained on, to check the pretrained policy
NUM_STEPS = 60            # policy-gradient steps
BATCH_SIZE = 16           # names sampled per policy-gradient step
RL_LR = 0.005             # small on purpose: see the note on drift in STAGE 2
BASELINE_DECAY = 0.9      # b <- 0.9 * b + 0.1 * (mean reward of the batch)
TARGET_LENGTH = 8         # the reward peaks at 8 letters
VARIANCE_BATCHES = 50     # batches (of BATCH_SIZE names) behind the variance comparison
EVAL_SAMPLES = 500        # names sampled before and after RL to measure the mean reward

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
# the policy emits it, ends the name. Choosing END is an action like any other, so the
# policy controls the length of its names, which is exactly what the reward grades.


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
# - cross_entropy(): -log softmax(z)[y] as one node; the policy's -log pi(token)
# - weighted_sum(): sum_i w_i * x_i with constant weights as one node; it is the mean of
#   the pretraining loss, a name's -log pi(name), and the policy-gradient surrogate loss
# The tests check each one against its naive form, and cross_entropy() and weighted_sum()
# against central finite differences as well.

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


def cross_entropy(logits, target):
    # L = -log softmax(z)[y] = logsumexp(z) - z_y    (z = logits, y = target)
    # dL/dz_j = p_j - [j == y]: push up the chosen token, push the others down by how much
    # probability they held. One node replaces an exp per logit, a sum, a division and a log.
    exps, top = shifted_exps([z.data for z in logits])
    total = sum(exps)
    loss = top + math.log(total) - logits[target].data
    local_grads = tuple(e / total - (j == target) for j, e in enumerate(exps))
    return Value(loss, tuple(logits), local_grads)


def weighted_sum(nodes, weights):
    # y = sum_i w_i * x_i with plain-number weights w_i: dy/dx_i = w_i. With w_i = 1/n it is
    # a mean; with w_i = 1 a sum. One node, however many terms, also keeps the graph shallow.
    return Value(sum(w * x.data for w, x in zip(weights, nodes)), tuple(nodes), tuple(weights))


# === THE POLICY: A CHARACTER MLP THAT KNOWS WHERE IT IS ===
# pi(next token | last CONTEXT tokens, position):
#     x      = [emb(c_-3), emb(c_-2), emb(c_-1), pos_emb(t), 1]        (33 numbers)
#     hidden = tanh(W1 x)                                               (16 units)
#     logits = W2 [hidden, 1]                                           (27 tokens)
# The trailing 1 turns the last column of W1 and of W2 into biases inside the fused dot.
# The position embedding lets the policy count: three characters of context cannot tell
# letter 3 from letter 9, and stopping at exactly 8 letters depends on that difference.
# Signpost: real RL fine-tuning (RLHF, GRPO) starts from a pretrained transformer like
# foundational/microgpt.py's, only far larger; a small MLP keeps this file's rollouts cheap.


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


def name_nlls(model, letters, end):
    """-log pi of each token of a given name, its END included (teacher forcing)."""
    tokens = (letters + [end])[:MAX_LEN]
    context, nlls = [end] * CONTEXT, []
    for pos, token in enumerate(tokens):
        nlls.append(cross_entropy(policy_logits(model, context, pos), token))
        context = context[1:] + [token]
    return nlls


def rollout(model, end):
    """Sample one name from the policy: its letters and the -log pi of every token chosen."""
    # The graph is built while sampling, so the same forward pass serves both the choice
    # and, later, the gradient. A name that reaches MAX_LEN letters is cut off there: the
    # "sequence" is then those MAX_LEN choices, and its probability is theirs.
    context, letters, nlls = [end] * CONTEXT, [], []
    for pos in range(MAX_LEN):
        logits = policy_logits(model, context, pos)
        weights, _ = shifted_exps([z.data for z in logits])
        token = random.choices(range(len(weights)), weights=weights)[0]
        nlls.append(cross_entropy(logits, token))
        if token == end:
            break
        letters.append(token)
        context = context[1:] + [token]
    return letters, nlls


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
# RL needs a policy that already writes names: a random one writes random strings, and a
# length rule would happily reward "qxzkwvjb". So first the usual language-model training:
# minimise the mean over a name's tokens of -log pi(token), one real name per step. The
# lengths it learns are the data's (74% of the names in names.txt have 5 to 7 letters; 9.7%
# have 8), not the reward's.


def pretrain(model, params, names, encode, end):
    state = new_adam_state(params)
    losses, start = [], time.time()
    for step in range(PRETRAIN_STEPS):
        nlls = name_nlls(model, encode(names[step % len(names)]), end)
        loss = weighted_sum(nlls, [1.0 / len(nlls)] * len(nlls))   # fused mean
        loss.backward()
        adam_step(params, state, PRETRAIN_LR * (1.0 - step / PRETRAIN_STEPS))  # linear decay
        losses.append(loss.data)
        if (step + 1) % 500 == 0 or step + 1 == PRETRAIN_STEPS:
            recent = losses[-500:]
            print(f"pretrain {step + 1:5d}/{PRETRAIN_STEPS} | loss {sum(recent) / len(recent):.4f}"
                  f" | {time.time() - start:.1f}s")


# === THE REWARD ===
# R = max(0, 1 - |length - 8| / 8): 1 for 8 letters, 0.875 for 7 or 9, 0 from 16 letters on
# (and for the empty name). The reward sees only the finished name: no per-letter signal,
# and no gradient through R itself, since a length is not a differentiable function of the
# weights. The real names in names.txt average 0.745 and the pretrained policy's names about
# 0.72 (the run prints both): almost every reward is positive and most are large, the case
# where the baseline below matters most.


def reward(length):
    return max(0.0, 1.0 - abs(length - TARGET_LENGTH) / TARGET_LENGTH)


# === THE POLICY GRADIENT: FROM THE OBJECTIVE TO A LOSS ===
# The objective is the expected reward of a name x sampled from the policy pi_theta:
#     J(theta) = E_{x ~ pi}[R(x)] = sum over every possible name x of pi(x) * R(x)
# R does not depend on theta; only the probabilities do. So
#     grad J = sum_x R(x) * grad pi(x)
# a sum over every possible name (26^16, about 4e22, with 16 letters alone), which nobody
# can compute. The log-derivative trick
# turns it into something we can sample: grad log pi = grad pi / pi, so grad pi = pi * grad
# log pi, and
#     grad J = sum_x pi(x) * R(x) * grad log pi(x) = E_{x ~ pi}[R(x) * grad log pi(x)]
# An expectation under the policy is estimated by sampling from the policy:
#     g_hat = (1/N) sum_i R(x_i) * grad log pi(x_i),    x_1..x_N ~ pi,   E[g_hat] = grad J
# A name's log-probability is the sum of its tokens': log pi(x) = sum_t log pi(x_t | x_<t),
# which is minus the sum of the cross-entropies of pretraining. REINFORCE is maximum
# likelihood on the model's own samples, each weighted by its reward.
#
# The baseline. For any number b that does not depend on the sampled name,
#     E[b * grad log pi(x)] = b * sum_x pi(x) grad log pi(x) = b * sum_x grad pi(x)
#                           = b * grad (sum_x pi(x)) = b * grad 1 = 0
# so g_hat_b = (1/N) sum_i (R(x_i) - b) * grad log pi(x_i) has the same expectation: no bias.
# What changes is the noise. 96% of the pretrained policy's names score between 0.5 and 1
# (the histogram printed at the end), so without a baseline every sampled name is pushed
# up, and the direction that matters (8-letter names up, short ones down) is a small
# difference between large pushes. With b near the mean reward, names better than usual
# are pushed up and worse ones pushed down.
#
# The surrogate loss. Autograd differentiates a scalar, so we write one whose gradient is
# -g_hat_b (minus, because the optimiser minimises):
#     L(theta) = -(1/N) sum_i (R_i - b) * log pi(x_i) = (1/N) sum_i A_i * sum_t nll_it
# with the advantage A_i = R_i - b held constant and nll_it = -log pi(token t of name i).
# Its value means nothing (it is not J, and it changes with b); only its gradient does. The
# nlls of a name are summed, not averaged as in pretraining: the score is the gradient of
# log pi(name), and dividing it by the name's length would no longer estimate grad J.


def surrogate_loss(batch_nlls, advantages):
    """L = (1/N) sum_i A_i * sum_t nll_it, one fused node over every token of the batch."""
    n = len(batch_nlls)
    nodes = [nll for nlls in batch_nlls for nll in nlls]
    weights = [a / n for nlls, a in zip(batch_nlls, advantages) for _ in nlls]
    return weighted_sum(nodes, weights)


# === MEASURED: WHAT THE BASELINE DOES TO THE GRADIENT ESTIMATE ===
# On the pretrained policy, before any RL step, we sample VARIANCE_BATCHES batches of
# BATCH_SIZE names. For every name we compute its score s_i = grad log pi(x_i) (one backward
# pass of its summed nll, negated) and, from the very same names, each batch's estimate
#     without a baseline:  (1/N) sum_i R_i * s_i
#     with the baseline:   (1/N) sum_i (R_i - b) * s_i
# The total variance of an estimate is the sum over all 1,331 parameters of its variance
# across the 50 batches: how far one batch's gradient lands from the average one. Using the
# same names for both matters: two separate training runs (one with a baseline, one
# without) would differ in their samples and soon in their policies too, so the difference
# in their gradients would not be the baseline's doing alone. Here it is the only change.
#
# Which baseline: the moving average at the point where RL starts, which is its starting
# value b0, the mean reward of EVAL_SAMPLES names sampled separately (the "before" sample
# below). It is the baseline the first RL step uses, and it is independent of every name in
# these batches, so the zero-bias argument above holds exactly. For comparison the run also
# prints the batch mean as the baseline (b = mean of the batch's own rewards). That one
# includes R_i itself, so it is slightly biased: its expectation is (N-1)/N * grad J, the
# right direction shrunk by 1/N. The leave-one-out baseline (b_i = mean of the other N - 1
# rewards) removes that bias, and works out to exactly N/(N-1) times the batch-mean estimate.
# Signpost: RLOO (TRL's RLOOTrainer) uses that leave-one-out baseline over several samples
# per prompt; GRPO (TRL's GRPOTrainer) subtracts the group's mean reward and divides by its
# standard deviation; PPO learns a value network as the baseline.
#
# The premise of that proof, measured: the two mean gradients over all 800 names differ by
# exactly b * s_bar, where s_bar is the mean score, so a fixed baseline can add bias only
# through s_bar, and E[s] = 0 holds when the names are drawn from the very policy whose
# gradient is taken (on-policy). The run prints |s_bar|^2 / (trace(Cov(s)) / 800), the
# squared mean score over its expected size if E[s] = 0: about 1 then. The number b cancels
# from it, so this checks the sampling, not the baseline. It fails loudly when the premise
# fails: if the names were sampled at temperature 0.7 while the gradient is taken of the
# temperature-1 policy (an easy bug), the score's mean is no longer zero and the ratio jumps
# (to 18 and 21 in two draws we measured on this pretrained policy).
# What it cannot see is a baseline that depends on the name it scores. For a baseline that is
# a function of the name's own reward, E[(R - b(R)) * s] = grad E[R - b(R)] by the same
# log-derivative trick: the gradient of another objective. The extreme case, b = the name's
# own reward (a "group" of one name), leaves R - R = 0 and no gradient at all; the batch
# mean scales the gradient by (N - 1)/N, as said above, too little for 800 names to show. The
# tests compute both exactly, by enumerating every name of a short policy.


def measure_baseline_variance(model, params, baseline, end):
    n, num_params = BATCH_SIZE, len(params)
    estimates = {"none": [], "moving average": [], "batch mean": []}
    score_total, score_square_total, rewards_seen = [0.0] * num_params, 0.0, []
    for _ in range(VARIANCE_BATCHES):
        sum_r_s, sum_s, rewards = [0.0] * num_params, [0.0] * num_params, []
        for _ in range(n):
            letters, nlls = rollout(model, end)
            r = reward(len(letters))
            rewards.append(r)
            weighted_sum(nlls, [1.0] * len(nlls)).backward()   # grad of -log pi(name)
            score = [-p.grad for p in params]
            for p in params:
                p.grad = 0.0
            sum_r_s = [a + r * s for a, s in zip(sum_r_s, score)]
            sum_s = [a + s for a, s in zip(sum_s, score)]
            score_square_total += sum(s * s for s in score)
        batch_mean = sum(rewards) / n
        estimates["none"].append([a / n for a in sum_r_s])
        estimates["moving average"].append([(a - baseline * s) / n for a, s in zip(sum_r_s, sum_s)])
        estimates["batch mean"].append([(a - batch_mean * s) / n for a, s in zip(sum_r_s, sum_s)])
        score_total = [a + s for a, s in zip(score_total, sum_s)]
        rewards_seen += rewards

    def total_variance(vectors):
        # sum over parameters of the sample variance across batches (divisor: batches - 1)
        k = len(vectors)
        means = [sum(column) / k for column in zip(*vectors)]
        return sum(sum((x - m) ** 2 for x in column) / (k - 1)
                   for column, m in zip(zip(*vectors), means))

    variances = {name: total_variance(vectors) for name, vectors in estimates.items()}
    count = len(rewards_seen)
    score_mean = [s / count for s in score_total]
    mean_norm_sq = sum(s * s for s in score_mean)
    # trace of the sample covariance of the score: (sum |s_i|^2 - count * |s_bar|^2) / (count - 1)
    trace_cov = (score_square_total - count * mean_norm_sq) / (count - 1)
    return variances, mean_norm_sq / (trace_cov / count), sum(rewards_seen) / count


# === STAGE 2: POLICY-GRADIENT TRAINING ===
# Each step samples BATCH_SIZE names, scores them, and steps along g_hat_b through the
# surrogate loss. The baseline b is an exponential moving average of past batches' mean
# rewards, updated after the step: the batch it scores never contributes to it, so the
# estimate stays unbiased. It follows the policy as the rewards improve.
#
# Nothing here keeps the policy close to the pretrained one, and the reward cannot tell a
# name from a string of letters. That is why RL_LR is small: with RL_LR = 0.01 and all else
# the same, our run reached a mean reward of 0.991 (94% of the names had 8 letters), but
# the held-out loss per token rose from 2.33 to 3.32, worse than the uniform guess's 3.30:
# the names no longer looked like names (KL from the pretrained policy: 6.98 nats per name).
# At 0.005 the run ends by printing the price it does pay, in the same two numbers.
# The baseline matters for training, not only for the variance measurement: the same run
# with b = 0 throughout reached a mean reward of 0.810 after RL, against 0.908 with it.
# Signpost: RLHF with PPO (InstructGPT; TRL's PPOTrainer) subtracts from the reward a KL
# penalty toward the reference model that RL started from, and GRPO as DeepSeekMath
# introduced it adds a KL term to its loss. Production loops also sample many sequences at
# once on GPUs (TRL's GRPOTrainer can hand generation to vLLM); this loop samples one name
# at a time.


def train_policy(model, params, baseline, end):
    state = new_adam_state(params)
    curve, start = [], time.time()
    for step in range(NUM_STEPS):
        batch = [rollout(model, end) for _ in range(BATCH_SIZE)]
        rewards = [reward(len(letters)) for letters, _ in batch]
        advantages = [r - baseline for r in rewards]          # A_i = R_i - b
        surrogate_loss([nlls for _, nlls in batch], advantages).backward()
        adam_step(params, state, RL_LR)
        mean_reward = sum(rewards) / len(rewards)
        baseline = BASELINE_DECAY * baseline + (1.0 - BASELINE_DECAY) * mean_reward
        curve.append(mean_reward)
        if (step + 1) % 10 == 0 or step == 0:
            recent = curve[-10:]
            print(f"step {step + 1:4d}/{NUM_STEPS} | mean reward {sum(recent) / len(recent):.3f}"
                  f" | baseline {baseline:.3f} | {time.time() - start:.1f}s")
    return curve


# === INFERENCE ON PLAIN FLOATS ===
# Sampling for evaluation and scoring held-out names need no gradients, so they run on a
# snapshot of the weights as plain floats: the same arithmetic as policy_logits(), without
# building a graph (about 3 times faster for a forward pass in our measurement; a test
# checks that the two give the same logits). The snapshot of the pretrained policy also
# stays frozen as the reference the RL policy is compared with at the end.


def snapshot(model):
    return {name: [[p.data for p in row] for row in mat] for name, mat in model.items()}


def float_logits(weights, context, pos):
    x = [e for token in context for e in weights["wte"][token]] + weights["wpe"][pos] + [1.0]
    hidden = [math.tanh(sum(w * xi for w, xi in zip(row, x))) for row in weights["w1"]]
    hidden.append(1.0)
    return [sum(w * h for w, h in zip(row, hidden)) for row in weights["w2"]]


def float_log_probs(weights, letters, end):
    """log pi of each token of a name, its END included (cut at MAX_LEN, as in rollout)."""
    tokens = (letters + [end])[:MAX_LEN]
    context, log_probs = [end] * CONTEXT, []
    for pos, token in enumerate(tokens):
        logits = float_logits(weights, context, pos)
        exps, top = shifted_exps(logits)
        # log softmax(z)[y] = z_y - logsumexp(z) = z_y - m - log(sum_j exp(z_j - m)): no log
        # of a tiny probability is ever taken
        log_probs.append(logits[token] - top - math.log(sum(exps)))
        context = context[1:] + [token]
    return log_probs


def float_sample(weights, end):
    context, letters = [end] * CONTEXT, []
    for pos in range(MAX_LEN):
        exps, _ = shifted_exps(float_logits(weights, context, pos))
        token = random.choices(range(len(exps)), weights=exps)[0]
        if token == end:
            break
        letters.append(token)
        context = context[1:] + [token]
    return letters


def heldout_loss(weights, token_lists, end):
    # Mean per-token -log pi over names never trained on (each token counts equally)
    log_probs = [lp for letters in token_lists for lp in float_log_probs(weights, letters, end)]
    return -sum(log_probs) / len(log_probs)


# === PICTURES ===


def ascii_curve(series, width=50, height=8):
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
        rows.append(f"{level:6.3f} |{line}")
    rows.append("       +" + "-" * width)
    return "\n".join(rows)


def length_histograms(before, after, bar_width=30):
    """Two bar charts side by side: the share of sampled names of each length."""
    longest = max(before + after)
    shares = [[lengths.count(n) / len(lengths) for n in range(longest + 1)]
              for lengths in (before, after)]
    scale = bar_width / max(max(shares[0]), max(shares[1]))   # the longest bar fills the width
    rows = [f"length reward  {'before RL':<{bar_width + 9}}after RL"]
    for length in range(longest + 1):
        pair = [shares[0][length], shares[1][length]]
        bars = [("#" * round(share * scale)).ljust(bar_width) for share in pair]
        rows.append(f"{length:6d} {reward(length):6.3f}  {bars[0]} {pair[0]:6.1%}  "
                    f"{bars[1]} {pair[1]:6.1%}")
    return "\n".join(rows)


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("mean reward of 500 samples, after RL minus before", "reward_gain", ">", 0.1),
    ("gradient variance, baseline / none, same samples", "baseline_variance_ratio", "<", 0.5),
    ("mean score / its noise: names sampled on-policy", "score_mean_ratio", "<", 3.0),
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
    random.seed(42)  # every random draw below (init, data order, sampling) follows from this
    # Speed: the graph has no reference cycles (a node points only at the older nodes it was
    # computed from), so reference counting frees each step's graph the moment the step
    # ends. Python's cycle collector would keep rescanning the live nodes as millions are
    # created and find nothing to free, so it is switched off (no number changes).
    gc.disable()
    start = time.time()
    names = load_names()
    random.shuffle(names)   # the file is sorted by popularity
    train_names = names[:-HELDOUT_NAMES]
    seen = set(train_names)
    heldout_names = [n for n in names[-HELDOUT_NAMES:] if n not in seen]
    chars, end = build_vocab(names)
    stoi = {c: i for i, c in enumerate(chars)}

    def encode(name):
        return [stoi[c] for c in name]

    def decode(letters):
        return "".join(chars[t] for t in letters) or "(empty)"

    model, params = init_policy(vocab_size=len(chars) + 1)
    print(f"policy: {len(params)} parameters; pretraining on {PRETRAIN_STEPS} of "
          f"{len(train_names)} names")
    pretrain(model, params, train_names, encode, end)
    pretrained = snapshot(model)   # frozen copy: the reference for the end of the run
    heldout_tokens = [encode(n) for n in heldout_names]
    pretrained_loss = heldout_loss(pretrained, heldout_tokens, end)
    print(f"held-out loss per token after pretraining: {pretrained_loss:.4f} on "
          f"{len(heldout_names)} unseen names (uniform guess ln 27 = {math.log(27):.4f}) "
          f"| {time.time() - start:.1f}s")

    before = [float_sample(pretrained, end) for _ in range(EVAL_SAMPLES)]
    reward_before = sum(reward(len(x)) for x in before) / len(before)
    real_reward = sum(reward(len(n)) for n in names) / len(names)
    print(f"\nmean reward of {EVAL_SAMPLES} names from the pretrained policy: {reward_before:.4f}"
          f" (all {len(names)} real names: {real_reward:.4f})")

    print(f"\nGradient estimates on {VARIANCE_BATCHES} batches of {BATCH_SIZE} names from the "
          f"pretrained policy (the same names for every baseline):")
    variances, score_ratio, variance_reward = measure_baseline_variance(
        model, params, reward_before, end)
    for name, variance in variances.items():
        print(f"  baseline {name:<15} total variance {variance:10.4g}   "
              f"ratio to none {variance / variances['none']:.4f}")
    n = BATCH_SIZE
    rloo_ratio = variances["batch mean"] / variances["none"] * (n / (n - 1)) ** 2
    print(f"  leave-one-out = {n}/{n - 1} x batch mean, so its ratio is {rloo_ratio:.4f}")
    print(f"  moving-average baseline b = {reward_before:.4f} (mean reward of the "
          f"{VARIANCE_BATCHES * BATCH_SIZE} names in these batches: {variance_reward:.4f})")
    print(f"  mean score, squared, over its expected size if the names are sampled on-policy "
          f"(E[score] = 0, so a fixed baseline adds no bias): {score_ratio:.3f} (about 1 "
          f"on-policy; off-policy samples measured 18 and 21) | {time.time() - start:.1f}s")

    print(f"\nPolicy-gradient training: {NUM_STEPS} steps of {BATCH_SIZE} names, "
          f"baseline starting at {reward_before:.4f}")
    curve = train_policy(model, params, reward_before, end)
    if curve:
        print(f"\nMean reward per step (batches of {BATCH_SIZE}, averaged into buckets):")
        print(ascii_curve(curve))

    trained = snapshot(model)
    after = [float_sample(trained, end) for _ in range(EVAL_SAMPLES)]
    reward_after = sum(reward(len(x)) for x in after) / len(after)
    print(f"\nmean reward of {EVAL_SAMPLES} names: before RL {reward_before:.4f}, "
          f"after RL {reward_after:.4f}")
    print("\nLengths of the sampled names:")
    print(length_histograms([len(x) for x in before], [len(x) for x in after]))
    print("\nSamples before RL: " + ", ".join(decode(x) for x in before[:12]))
    print("Samples after RL:  " + ", ".join(decode(x) for x in after[:12]))

    # What RL cost the name model: KL(pi_RL || pi_pretrained) = E_{x ~ pi_RL}[log pi_RL(x) -
    # log pi_pretrained(x)], estimated on the names sampled after RL, and the held-out loss.
    kl = sum(sum(float_log_probs(trained, x, end)) - sum(float_log_probs(pretrained, x, end))
             for x in after) / len(after)
    trained_loss = heldout_loss(trained, heldout_tokens, end)
    print(f"\nKL(after RL || pretrained), per name: {kl:.3f} nats; held-out loss per token "
          f"{pretrained_loss:.4f} before RL, {trained_loss:.4f} after")
    print(f"total time {time.time() - start:.1f}s")

    results = {
        "reward_gain": reward_after - reward_before,
        "reward_before": reward_before,
        "reward_after": reward_after,
        "baseline_variance_ratio": variances["moving average"] / variances["none"],
        "variance_without_baseline": variances["none"],
        "variance_with_baseline": variances["moving average"],
        "batch_mean_variance_ratio": variances["batch mean"] / variances["none"],
        "score_mean_ratio": score_ratio,
        "pretrained_heldout_loss": pretrained_loss,
        "trained_heldout_loss": trained_loss,
        "kl_to_pretrained": kl,
        "num_params": len(params),
    }
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microreinforce.md")
    return results


if __name__ == "__main__":
    main()
