"""microdropout: watch a network memorise a small training set, then stop it three ways.

Give a model far more capacity than its data needs and it will learn the training examples
by heart: the training loss keeps falling while the loss on names it has never seen turns
round and climbs. The distance between those two curves is overfitting, and the tools that
keep it small are regularisers. This script trains one small character-level network on a
deliberately tiny training set (300 names) three times, from the same initial weights and on
the same mini-batches, so that the only difference between the runs is the regulariser:

    plain          Adam, nothing else: the baseline that overfits
    dropout        every hidden unit is switched off with probability p at each example
    weight decay   AdamW: every weight shrinks a little toward zero at each step

and it watches the plain run with early stopping, the regulariser that costs nothing: keep
the checkpoint where the validation loss was lowest, and stop once it has not improved for a
few evaluations. The names come in three disjoint sets: 300 to train on, 500 validation
names that the curves and early stopping watch, and 2,000 held-out names that no run and no
choice ever sees until the end. Every loss the criteria compare between methods is measured
on the held-out names, beside a bigram table and an untrained network, so a regulariser only
passes if it makes the network better at new names, not merely worse at old ones. The gaps
subtract each run's loss on its training names, early stopping is judged on the validation
names it watches, and two rows check the mechanics: each unit's mean dropout factor over the
masks the run drew, and that early stopping did stop early.

Signpost: the runs here are in the regime where regularisation matters most, a big model and
little data seen many times over. Large language-model pretraining is the opposite regime
(most of the text is seen once or a few times), and it often uses little or no dropout:
nanoGPT's training script defaults to dropout 0.0 for pretraining, and OpenAI's released GPT-2
code has no dropout layer at all (the 0.1 often quoted for GPT-2 is the default of Hugging
Face's GPT2Config). Weight decay, on the other hand, is almost everywhere, through AdamW.

Run: python alignment/microdropout.py    (about 16 s on the 2-core CI machine)
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
CONTEXT = 3          # the model sees the previous 3 characters
HIDDEN = 48          # one wide tanh layer
W1_STD, W2_STD = 0.5, 0.01   # initial weight scales (see the MODEL section)
TRAIN_NAMES = 300    # deliberately small, so that memorising it is easy
VALID_NAMES = 500    # watched during training: the curves and early stopping use these
HELDOUT_NAMES = 2000  # never trained on, never used to choose anything: the criteria
NUM_STEPS = 300      # Adam steps per run; the plain run overfits from about step 140 on
BATCH_SIZE = 32      # predictions (context -> next character) per step
LEARNING_RATE = 0.01
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8   # PyTorch's Adam and AdamW defaults
DROPOUT_P = 0.3      # probability that a hidden unit is switched off for one example
WEIGHT_DECAY = 0.5   # AdamW's lambda: each step multiplies a weight by 1 - lr * lambda = 0.995
EVAL_EVERY = 20      # steps between two evaluations (training and validation loss)
PATIENCE = 3         # early stopping gives up after this many evaluations without a new best

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


# === TOKENIZER AND EXAMPLES ===
# Characters are tokens: the 26 letters, plus one boundary token (written . below) that pads
# the context before a name starts and is also the target after its last letter (so the model
# learns where names end). Each name of n letters gives n + 1 examples, each a pair
# (the previous CONTEXT tokens, the next token): "ava" gives
#     (. . .) -> a    (. . a) -> v    (. a v) -> a    (a v a) -> .
# The model sees only those 3 tokens, never the rest of the name.


def examples_of(names, stoi, boundary):
    pairs = []
    for name in names:
        context = [boundary] * CONTEXT
        for token in [stoi[c] for c in name] + [boundary]:
            pairs.append((tuple(context), token))
            context = context[1:] + [token]
    return pairs


def group_by_context(pairs):
    # Evaluation needs one forward pass per distinct context, not per example: the 2,000
    # held-out names give about 14,000 examples but only about 2,500 distinct contexts.
    groups = {}
    for context, target in pairs:
        targets = groups.setdefault(context, {})
        targets[target] = targets.get(target, 0) + 1
    return list(groups.items()), len(pairs)


# === AUTOGRAD: THE VALUE CLASS ===
# A Value wraps one float and remembers which Values it was computed from (`_children`) and
# the derivative of its output with respect to each of them (`_local_grads`). backward() walks
# the graph from the loss to the leaves and applies the chain rule at every edge:
#     dL/d(child) += dL/d(node) * d(node)/d(child)
# The class is the collection's canonical one (docs/autograd-interface.md), copied from
# foundational/microgpt.py.


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
# - hidden_unit(): scale * tanh(sum of its inputs), one hidden unit as one node
# - head_loss(): output layer, softmax cross-entropy and the mean over a batch, one node
# - dot(): a whole dot product as one node (naive_dot is its unfused form)
# - cross_entropy(): log-softmax plus negative log-likelihood as one node
# - mean(): the mean of a batch's losses as one node
# Training uses the first two; head_loss_unfused() builds the same loss from the last three,
# and the tests check every fused node against its unfused form.
# See docs/autograd-interface.md for the full canonical interface.

# === FUSED NODES ===
# y = sum_i w_i x_i has the local derivatives dy/dw_i = x_i and dy/dx_i = w_i, so the whole
# dot product can be one node with all of them, instead of one node per + and per *. It is
# the same arithmetic and the same gradients with far fewer Python objects; naive_dot is the
# unfused form, kept for comparison (the tests check that both agree).


def naive_dot(weights, inputs):
    total = weights[0] * inputs[0]
    for w, x in zip(weights[1:], inputs[1:]):
        total = total + w * x
    return total


def dot(weights, inputs):
    return Value(sum(w.data * x.data for w, x in zip(weights, inputs)),
                 (*weights, *inputs),
                 (*[x.data for x in inputs], *[w.data for w in weights]))


def cross_entropy(logits, target):
    # L = -log softmax(z)[y] = logsumexp(z) - z_y    (z = logits, y = target)
    # dL/dz_j = p_j - [j == y]; the largest logit is subtracted before exp() so it cannot
    # overflow (it cancels in the softmax).
    top = max(z.data for z in logits)
    exps = [math.exp(z.data - top) for z in logits]
    total = sum(exps)
    return Value(top + math.log(total) - logits[target].data, tuple(logits),
                 tuple(e / total - (j == target) for j, e in enumerate(exps)))


def mean(values):
    # y = (1/n) sum_i x_i, dy/dx_i = 1/n: one node instead of a chain of n additions
    n = len(values)
    return Value(sum(v.data for v in values) / n, tuple(values), (1.0 / n,) * n)


def hidden_unit(inputs, scale=1.0, t=None):
    # One hidden unit as one node: h = scale * tanh(sum_i x_i), so dh/dx_i = scale * (1 - t^2)
    # with t = tanh(sum_i x_i). Its inputs are 3 table weights and the bias; scale is 1, or
    # 1 / (1 - p) for a unit that survived dropout. Unfused it is a sum node, a tanh node and
    # a multiplication node. hidden_layer() passes t in, computed for all units at once.
    if t is None:
        t = math.tanh(sum(x.data for x in inputs))
    slope = scale * (1.0 - t * t)
    return Value(scale * t, tuple(inputs), (slope,) * len(inputs))


# The biggest fused node here is the whole output side of a batch: output layer, softmax
# cross-entropy and the mean over the batch, one node. For example b with hidden vector h_b
# (dropped units count as 0) and target y_b:
#     z_bi = sum_j W2[i][j] h_bj + b2_i,   p_b = softmax(z_b),   L = (1/B) sum_b -log p_b[y_b]
#     d_bi = dL/dz_bi = (p_bi - [i == y_b]) / B
#     dL/dW2[i][j] = sum_b d_bi h_bj,   dL/db2_i = sum_b d_bi,   dL/dh_bj = sum_i d_bi W2[i][j]
# All of these are known once the forward pass is done, so they are this node's local
# derivatives. Built from dot(), cross_entropy() and mean() instead (head_loss_unfused, the
# same numbers), each example adds 27 dot nodes with up to 98 edges each; fused, a weight is
# one edge per batch, not one per example, and the arithmetic runs on plain floats. main()
# prints what that buys on the first batch: 9,003 edges instead of 91,712 in our run.
# Signpost: this is how tensor libraries work anyway. PyTorch's autograd records one node per
# tensor operation, so a linear layer over a whole batch is one node, and its cross_entropy
# is log_softmax and nll_loss combined.


def head_loss(w2, batch_hidden, targets):
    """Mean cross-entropy of a batch as one node. batch_hidden: (units, Values) per example."""
    weights = [[p.data for p in row] for row in w2]
    batch, mul = len(targets), operator.mul
    dense, errors, total_loss = [], [], 0.0
    for (units, hidden), target in zip(batch_hidden, targets):
        h = [0.0] * HIDDEN
        for j, value in zip(units, hidden):
            h[j] = value.data
        logits = [sum(map(mul, row, h)) + row[-1] for row in weights]
        top = max(logits)
        exps = [math.exp(z - top) for z in logits]
        norm = sum(exps)
        total_loss += top + math.log(norm) - logits[target]
        errors.append([(e / norm - (i == target)) / batch for i, e in enumerate(exps)])
        dense.append(h)
    error_cols, hidden_cols = list(zip(*errors)), list(zip(*dense))
    children, local_grads = [], []
    for row, d_col in zip(w2, error_cols):
        children.extend(row)
        local_grads.extend([sum(map(mul, d_col, h_col)) for h_col in hidden_cols])
        local_grads.append(sum(d_col))                                  # the bias b2_i
    weight_cols = list(zip(*weights))
    for (units, hidden), d in zip(batch_hidden, errors):
        children.extend(hidden)
        local_grads.extend([sum(map(mul, d, weight_cols[j])) for j in units])
    return Value(total_loss / batch, tuple(children), tuple(local_grads))


def head_loss_unfused(w2, batch_hidden, targets):
    """The same loss from the smaller fused nodes: one dot node per logit per example."""
    losses = []
    for (units, hidden), target in zip(batch_hidden, targets):
        one = Value(1.0)      # the bias is the weight on a constant input of 1
        logits = [dot([row[j] for j in units] + [row[-1]], hidden + [one]) for row in w2]
        losses.append(cross_entropy(logits, target))
    return mean(losses)


# === MODEL: A MAKEMORE-STYLE MLP ===
# The previous 3 tokens go in, 27 logits for the next token come out:
#     h_j = tanh(b1_j + W1[0][c0][j] + W1[1][c1][j] + W1[2][c2][j])    48 hidden units
#     z_i = b2_i + sum_j W2[i][j] * h_j                                 27 logits
# W1 holds one table per context position: row W1[pos][token] is the 48 weights that token
# sends to the hidden units when it stands at that position. That is a linear layer applied
# to a one-hot input (a dot product with a one-hot vector just picks one weight), so the
# first layer costs 3 look-ups per unit instead of a dot product. Signpost: makemore's MLP
# first maps each token to a small learned embedding shared by all positions and multiplies
# the concatenated embeddings by W1; its product of the two is exactly such a table per
# position, only constrained to low rank. With one-hot tables the model has about 5,300
# weights for about 2,200 training predictions: more than enough to memorise them.
# Initialisation: W1 entries with std 0.5 put a hidden unit's input sum (3 look-ups) at std
# about 0.9, where tanh is neither flat nor saturated; W2 starts small so every logit starts
# near 0 and the untrained loss is close to ln(27) = 3.30 (the run prints the measured value).


def gaussian_rows(rows, cols, std):
    return [[Value(random.gauss(0.0, std)) for _ in range(cols)] for _ in range(rows)]


def init_model(vocab_size):
    model = {
        "w1": [gaussian_rows(vocab_size, HIDDEN, W1_STD) for _ in range(CONTEXT)],
        "b1": [Value(0.0) for _ in range(HIDDEN)],
        "w2": gaussian_rows(vocab_size, HIDDEN + 1, W2_STD),    # last column: the bias b2
    }
    for row in model["w2"]:
        row[-1].data = 0.0
    weights = [p for table in model["w1"] for row in table for p in row]
    weights += [p for row in model["w2"] for p in row[:-1]]
    biases = model["b1"] + [row[-1] for row in model["w2"]]
    # Weight decay shrinks the weights, not the biases: a bias only shifts a unit, and pulling
    # it toward zero buys little. (nanoGPT makes the same split: its weight matrices and
    # embeddings decay, its biases and norm gains do not.)
    return model, weights + biases, [True] * len(weights) + [False] * len(biases)


# === DROPOUT: TRAIN MODE AND EVAL MODE ===
# In train mode each hidden unit is switched off, independently and afresh for every example,
# with probability p. No unit can then rely on a particular partner being present, so the
# network cannot build fragile, co-adapted combinations of units that fit single examples;
# every example trains a different thinned network, and the full network used at evaluation
# behaves roughly like an average of all of them.
# Inverted dropout: the surviving units are multiplied by 1 / (1 - p) during training. A unit
# is kept with probability 1 - p, so its expected output is (1 - p) * h / (1 - p) = h: on
# average the next layer sees the same input in train mode as in eval mode, so evaluation
# uses the network as it is, every unit on and nothing rescaled (main() prints both means).
# The 2014 dropout paper instead scaled the weights by 1 - p at test time; PyTorch's
# nn.Dropout is inverted dropout, and model.train() / model.eval() is its switch between the
# two modes. Forgetting model.eval() before evaluating is a classic bug: dropout stays on and
# every evaluation scores a different random thinned network.
# A dropped unit's output is 0, so it adds nothing to the logits and none of its weights gets
# a gradient from that example. The forward pass therefore skips it: `kept` lists the units
# that survive, and eval mode is kept = None (all of them, scale 1).


def draw_mask(p):
    return [j for j in range(HIDDEN) if random.random() >= p]


def hidden_layer(model, context, kept=None, scale=1.0):
    """(unit indices, unit Values) for one context. kept: surviving units (None = eval mode)."""
    # inputs_of[j] = (W1[0][c0][j], W1[1][c1][j], W1[2][c2][j], b1[j]): all unit j adds up
    rows = [model["w1"][pos][token] for pos, token in enumerate(context)] + [model["b1"]]
    inputs_of = list(zip(*rows))
    # Every unit's tanh(sum), a row of plain floats at a time (the same additions, in the
    # same order, as hidden_unit() makes one unit at a time)
    floats = [[p.data for p in row] for row in rows]
    totals = floats[0]
    for row in floats[1:]:
        totals = list(map(operator.add, totals, row))
    tanhs = list(map(math.tanh, totals))
    units = range(HIDDEN) if kept is None else kept
    return list(units), [hidden_unit(inputs_of[j], scale, tanhs[j]) for j in units]


# === EVALUATION ON PLAIN FLOATS ===
# Evaluation needs no gradients, so it runs on plain floats copied out of the Values, which is
# many times faster than building a graph. The same copy is the checkpoint early stopping
# keeps.


def snapshot(model):
    return {"w1": [[[p.data for p in row] for row in table] for table in model["w1"]],
            "b1": [p.data for p in model["b1"]],
            "w2": [[p.data for p in row] for row in model["w2"]]}


def float_hidden(weights, context):
    # the same h_j = tanh(b1_j + W1[0][c0][j] + W1[1][c1][j] + W1[2][c2][j]), a row at a time
    total = weights["b1"]
    for pos, token in enumerate(context):
        total = list(map(operator.add, total, weights["w1"][pos][token]))
    return list(map(math.tanh, total))


def float_logits(weights, hidden):
    # z_i = sum_j W2[i][j] h_j + b2_i (map() stops at the shorter list, before the bias)
    return [sum(map(operator.mul, row, hidden)) + row[-1] for row in weights["w2"]]


def mean_losses(weights, *grouped_sets):
    """Per-character cross-entropy in eval mode (total -log p(target) / number of examples),
    for each set given; a context that several sets share runs through the network once."""
    # (in our run 557 of the 920 training contexts are also among the 1,280 validation
    # contexts, and 779 among the 2,505 held-out ones)
    scored, losses = {}, []
    for groups, count in grouped_sets:
        total = 0.0
        for context, targets in groups:
            if context not in scored:
                logits = float_logits(weights, float_hidden(weights, context))
                top = max(logits)
                scored[context] = (top + math.log(sum(map(math.exp, [z - top for z in logits]))),
                                   logits)
            log_total, logits = scored[context]
            total += sum(n * (log_total - logits[t]) for t, n in targets.items())
        losses.append(total / count)
    return losses


def bigram_loss(train_pairs, grouped, vocab_size):
    # The simplest model worth beating: P(next | previous character), counted on the same
    # 300 training names with add-one smoothing (every pair counted once more than it occurs,
    # so an unseen pair costs a finite loss).
    counts = [[1] * vocab_size for _ in range(vocab_size)]
    for context, target in train_pairs:
        counts[context[-1]][target] += 1
    groups, count = grouped
    total = 0.0
    for context, targets in groups:
        row = counts[context[-1]]
        total -= sum(n * math.log(row[t] / sum(row)) for t, n in targets.items())
    return total / count


# === OPTIMISER: ADAM, AND ADAMW'S DECOUPLED WEIGHT DECAY ===
# Adam keeps per weight a running mean of its gradient (m) and of its squared gradient (v),
# and steps by lr * m_hat / (sqrt(v_hat) + eps): each weight moves at about the same pace
# whatever the size of its gradient.
# Weight decay pulls every weight toward zero a little at each step, so a weight stays large
# only if the loss keeps asking for it: the network is pushed toward the smallest weights
# that fit the data, which tend to be smoother functions that memorise less.
# The classic way to write it is an L2 penalty, (lambda / 2) * w^2 added to the loss, i.e.
# lambda * w added to the gradient. With plain SGD that is exactly the same as shrinking w.
# With Adam it is not: the extra lambda * w goes into m and v and is then divided by
# sqrt(v_hat) like the rest of the gradient, so a weight whose gradients are large is barely
# decayed, and one whose gradients are tiny is decayed hard. Loshchilov and Hutter
# ("Decoupled Weight Decay Regularization", the AdamW paper) take the decay out of the
# gradient and apply it to the weight directly:
#     w <- w - lr * lambda * w                         (decoupled decay, the same for all)
#     w <- w - lr * m_hat / (sqrt(v_hat) + eps)        (Adam step on the loss gradient only)
# (The paper scales the decay by the learning-rate schedule's multiplier; PyTorch's
# torch.optim.AdamW multiplies each weight by 1 - lr * weight_decay before the Adam step, as
# here, and its default weight_decay is 0.01.) Now every decayed weight shrinks by the same
# fraction per step, whatever its gradient history. main() prints the difference on two toy
# weights; decoupled=False below is the L2-in-Adam form, kept for that comparison.


def adam_step(params, decays, moments, t, weight_decay, decoupled=True):
    """One Adam(W) step on every parameter, then zero the gradients. t counts from 1."""
    m, v = moments
    decay = LEARNING_RATE * weight_decay
    # Bias correction: m and v start at 0, so early averages are divided by 1 - beta^t
    m_scale, v_scale = 1.0 / (1.0 - BETA1 ** t), 1.0 / (1.0 - BETA2 ** t)
    grads = [p.grad for p in params]
    if weight_decay and decoupled:
        for p, decays_p in zip(params, decays):
            if decays_p:
                p.data -= decay * p.data        # AdamW: shrink the weight itself
    elif weight_decay:                          # L2 in Adam: the decay becomes gradient
        grads = [g + weight_decay * p.data if decays_p else g
                 for g, p, decays_p in zip(grads, params, decays)]
    # The same arithmetic for every weight, so it runs as list comprehensions over all of them
    m[:] = [BETA1 * m_i + (1.0 - BETA1) * g for m_i, g in zip(m, grads)]
    v[:] = [BETA2 * v_i + (1.0 - BETA2) * g * g for v_i, g in zip(v, grads)]
    for p, m_i, v_i in zip(params, m, v):
        p.data -= LEARNING_RATE * m_i * m_scale / (math.sqrt(v_i * v_scale) + ADAM_EPS)
        p.grad = 0.0     # backward() adds into .grad, so clear it for the next step


# === TRAINING: ONE RUN ===
# Every run starts from the same initial weights and sees the same mini-batches in the same
# order (both drawn once in main()), so any difference between the runs is the regulariser's.
# Every EVAL_EVERY steps the run measures, in eval mode, its loss on all the training names
# and on the validation names, and keeps a copy of its weights (a checkpoint).
# A dropout run also adds up, per hidden unit, the factor each training example's mask gave
# it (1/(1 - p) if kept, 0 if dropped): averaged over the run, every unit's factor should be
# close to 1, which is what lets eval mode use the network unscaled (main() checks it).


def train_run(label, model, params, decays, start_weights, batches, train_pairs, eval_sets,
              dropout_p=0.0, weight_decay=0.0):
    for p, value in zip(params, start_weights):
        p.data, p.grad = value, 0.0
    moments = ([0.0] * len(params), [0.0] * len(params))
    scale = 1.0 / (1.0 - dropout_p)
    curve, checkpoints = {"step": [], "train": [], "valid": []}, {}
    factor_sums, masks_drawn = [0.0] * HIDDEN, 0
    batch_losses, start = [], time.time()
    for step in range(1, NUM_STEPS + 1):
        batch_hidden, targets = [], []
        for index in batches[step - 1]:
            context, target = train_pairs[index]
            kept = draw_mask(dropout_p) if dropout_p else None
            if kept is not None:
                masks_drawn += 1
                for j in kept:
                    factor_sums[j] += scale
            batch_hidden.append(hidden_layer(model, context, kept, scale))
            targets.append(target)
        loss = head_loss(model["w2"], batch_hidden, targets)   # mean of -log p(target)
        loss.backward()
        adam_step(params, decays, moments, step, weight_decay)
        batch_losses.append(loss.data)
        if step % EVAL_EVERY:
            continue
        checkpoints[step] = snapshot(model)
        curve["step"].append(step)
        train_loss, valid_loss = mean_losses(checkpoints[step], eval_sets["train"],
                                             eval_sets["valid"])
        curve["train"].append(train_loss)
        curve["valid"].append(valid_loss)
        if step % (5 * EVAL_EVERY) == 0 or step == NUM_STEPS:
            recent = batch_losses[-5 * EVAL_EVERY:]
            print(f"{label:<12} step {step:4d}/{NUM_STEPS} | batch loss "
                  f"{sum(recent) / len(recent):.3f} | train {curve['train'][-1]:.3f} | "
                  f"valid {curve['valid'][-1]:.3f} | {time.time() - start:.1f}s")
    factors = [total / masks_drawn for total in factor_sums] if masks_drawn else None
    return curve, checkpoints, factors


# === EARLY STOPPING: REGULARISATION BY THE CLOCK ===
# The weights start small and simple and grow more specialised the longer they train, so
# the number of steps is itself a limit on how much the network can memorise. Early stopping
# sets it from the validation loss: remember the checkpoint with the lowest loss so far, give
# up after PATIENCE evaluations in a row without a new low, and restore that checkpoint. The
# patience is there because the validation loss is noisy: stopping at its first rise could
# quit during a bump on the way down. Nothing in the model or the loss changes, and the run
# is shorter, not longer. Keras's EarlyStopping callback does this (its `patience` and
# `restore_best_weights` arguments); a real training loop breaks out at the stopping step,
# while here every run continues to NUM_STEPS so the plot can show what comes after it.


def early_stop(curve, patience):
    """(step at which training stops or None, step whose checkpoint is restored)."""
    best, best_step, waited = float("inf"), curve["step"][0], 0
    for step, loss in zip(curve["step"], curve["valid"]):
        if loss < best:
            best, best_step, waited = loss, step, 0
        else:
            waited += 1
            if waited == patience:
                return step, best_step
    return None, best_step      # patience never ran out: the run trains to the end


# === PICTURES AND MEASUREMENTS ===
# The curves as text, the graph sizes of the fused and unfused output side, the decay that
# AdamW and L2-in-Adam give the same two weights, and the hidden layer's average size in the
# two dropout modes.


def ascii_plot(series, steps, height=12):
    """Several curves on one grid; each (symbol, values) pair is drawn with its symbol."""
    low = min(min(values) for _, values in series)
    high = max(max(values) for _, values in series)
    span = (high - low) or 1.0
    width = len(series)      # each curve has its own column per evaluation: none hides another
    grid = [[" "] * (width * len(steps)) for _ in range(height)]
    for offset, (symbol, values) in enumerate(series):
        for col, value in enumerate(values):
            grid[round((high - value) / span * (height - 1))][width * col + offset] = symbol
    rows = [f"{high - span * r / (height - 1):6.2f} |{''.join(cells)}"
            for r, cells in enumerate(grid)]
    rows.append("       +" + "-" * (width * len(steps)))
    rows.append(f"        step {steps[0]} to {steps[-1]}, {width} columns per {steps[0]} steps")
    return "\n".join(rows)


def graph_size(root):
    """(nodes, edges) of the graph behind root; an edge is one stored local derivative."""
    seen, stack, edges = set(), [root], 0
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            edges += len(node._children)
            stack.extend(node._children)
    return len(seen), edges


def compare_heads(model, params, batch):
    """Forward and backward of one batch, with the fused head and with the unfused one."""
    measured = []
    for head in (head_loss, head_loss_unfused):
        start = time.time()
        # a fresh hidden layer for each: backward() leaves gradients in every node it visits
        hidden = [hidden_layer(model, context) for context, _ in batch]
        loss = head(model["w2"], hidden, [target for _, target in batch])
        loss.backward()
        measured.append((time.time() - start, graph_size(loss), loss.data,
                         [p.grad for p in params]))
        for p in params:
            p.grad = 0.0
    (fused_time, fused_size, fused_loss, fused_grads), (time_unfused, size_unfused,
                                                        loss_unfused, grads_unfused) = measured
    worst = max(abs(a - b) for a, b in zip(fused_grads, grads_unfused))
    print(f"One batch, forward + backward with the fused output node: {fused_time * 1000:.0f} "
          f"ms, {fused_size[0]:,} nodes, {fused_size[1]:,} edges;\nbuilt from dot(), "
          f"cross_entropy() and mean(): {time_unfused * 1000:.0f} ms, {size_unfused[0]:,} "
          f"nodes, {size_unfused[1]:,} edges.\nLosses {fused_loss:.6f} and "
          f"{loss_unfused:.6f}, largest gradient difference {worst:.1e}\n")


def decay_demo():
    """Two weights at 1.0 for 100 steps: one with large noisy loss gradients, one with none."""
    # AdamW shrinks both by the same factor, (1 - lr * lambda)^100 = 0.606 for the idle one
    # (the noisy one also moves with its gradients: 0.595 in our run). L2 in Adam divides the
    # decay by sqrt(v): the weight with gradients of size 10 keeps 0.935, while the idle one,
    # whose only gradient is the decay itself, is pushed at the full Adam pace and keeps 0.224.
    shrunk = {}
    for decoupled in (True, False):
        noisy, idle = Value(1.0), Value(1.0)
        moments = ([0.0, 0.0], [0.0, 0.0])
        for t in range(1, 101):
            noisy.grad = 10.0 if t % 2 else -10.0   # large gradients that keep flipping sign
            adam_step([noisy, idle], [True, True], moments, t, WEIGHT_DECAY, decoupled)
        shrunk[decoupled] = (noisy.data, idle.data)
    return shrunk


def activation_means(weights, grouped, factors, p):
    """Mean |hidden activation| over contexts: eval mode, and train mode averaged over the
    masks the training run drew (each unit times its mean factor), with and without the
    1/(1 - p) rescale."""
    # Masks do not depend on the input, so averaged over the run's masks train mode gives
    # unit j the output factors[j] * h_j: the same as eval mode if factors[j] is 1.
    eval_sum = train_sum = unscaled_sum = 0.0
    for context, _ in grouped[0]:
        hidden = [abs(h) for h in float_hidden(weights, context)]
        eval_sum += sum(hidden)
        train_sum += sum(f * h for f, h in zip(factors, hidden))
        unscaled_sum += sum(f * (1.0 - p) * h for f, h in zip(factors, hidden))
    n = len(grouped[0]) * HIDDEN
    return eval_sum / n, train_sum / n, unscaled_sum / n


def worst_unit_mismatch(factors):
    """Largest |factor - 1| over the hidden units; NaN if any factor is not finite."""
    if not all(math.isfinite(f) for f in factors):
        return math.nan
    return max(abs(f - 1.0) for f in factors)


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("plain run overfits: held-out minus train loss", "plain_gap", ">", 0.45),
    ("gap with dropout, vs plain", "dropout_gap", "<", "plain_gap"),
    ("gap with weight decay, vs plain", "weight_decay_gap", "<", "plain_gap"),
    ("held-out loss with dropout, vs plain", "dropout_heldout_loss", "<", "plain_heldout_loss"),
    ("held-out loss with weight decay, vs plain", "weight_decay_heldout_loss", "<",
     "plain_heldout_loss"),
    ("held-out loss with dropout, vs bigram table", "dropout_heldout_loss", "<",
     "bigram_heldout_loss"),
    ("held-out loss with weight decay, vs bigram table", "weight_decay_heldout_loss", "<",
     "bigram_heldout_loss"),
    ("held-out loss with weight decay, vs early stopping", "weight_decay_heldout_loss", "<",
     "early_stopped_heldout_loss"),
    ("early stopping: validation regret", "early_stop_regret", "<", 0.01),
    ("held-out loss, early stopped vs plain at the end", "early_stopped_heldout_loss", "<",
     "plain_heldout_loss"),
    ("early stopping: steps saved (it stopped)", "early_stop_steps_saved", ">", 0),
    ("dropout: worst unit's train/eval mean factor - 1", "dropout_unit_mismatch", "<", 0.05),
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
    random.seed(42)
    # Speed: the graph has no reference cycles (a node points only at the older nodes it was
    # computed from), so reference counting frees each step's graph the moment the step
    # ends. Python's cycle collector would keep rescanning the live nodes as millions are
    # created and find nothing to free, so it is switched off (no number changes).
    gc.disable()
    names = load_names()
    random.shuffle(names)
    chars = sorted(set("".join(names)))
    stoi = {c: i for i, c in enumerate(chars)}
    boundary, vocab_size = len(chars), len(chars) + 1
    train_names = names[:TRAIN_NAMES]
    # names.txt repeats a few names; a validation name that is also a training name, or a
    # held-out name that is either, is dropped, so the three sets share no name.
    seen = set(train_names)
    valid_names = [n for n in names[TRAIN_NAMES:TRAIN_NAMES + VALID_NAMES] if n not in seen]
    seen.update(valid_names)
    heldout_names = [n for n in names[-HELDOUT_NAMES:] if n not in seen]
    train_pairs = examples_of(train_names, stoi, boundary)
    eval_sets = {"train": group_by_context(train_pairs),
                 "valid": group_by_context(examples_of(valid_names, stoi, boundary))}
    heldout = group_by_context(examples_of(heldout_names, stoi, boundary))

    # The three runs share these: every run starts from start_weights and replays `batches`
    # (indices into the training predictions, drawn with replacement). The batches are drawn
    # up front, so the dropout run's extra random draws (its masks) cannot shift them.
    model, params, decays = init_model(vocab_size)
    start_weights = [p.data for p in params]
    batches = [[random.randrange(len(train_pairs)) for _ in range(BATCH_SIZE)]
               for _ in range(NUM_STEPS)]
    untrained = snapshot(model)
    untrained_train, untrained_heldout = mean_losses(untrained, eval_sets["train"], heldout)
    bigram = bigram_loss(train_pairs, heldout, vocab_size)
    print(f"{len(train_names)} training names ({len(train_pairs)} predictions), "
          f"{len(valid_names)} validation names, {len(heldout_names)} held-out names "
          f"({heldout[1]} predictions);\n{len(params)} parameters. Untrained network: train "
          f"{untrained_train:.3f}, held-out {untrained_heldout:.3f} (ln 27 = {math.log(27):.3f})"
          f";\nbigram table counted on the training names: held-out {bigram:.3f}\n")

    compare_heads(model, params, [train_pairs[i] for i in batches[0]])

    runs = {}
    for label, dropout_p, weight_decay in (("plain", 0.0, 0.0), ("dropout", DROPOUT_P, 0.0),
                                           ("weight decay", 0.0, WEIGHT_DECAY)):
        runs[label] = train_run(label, model, params, decays, start_weights, batches,
                                train_pairs, eval_sets, dropout_p, weight_decay)

    # --- the curves ---
    curves = {label: curve for label, (curve, _, _) in runs.items()}
    steps = curves["plain"]["step"]
    symbols = (("plain", "P"), ("dropout", "D"), ("weight decay", "W"))
    for part, title in (("train", "training names"), ("valid", "validation names")):
        print(f"\nLoss per character on the {title} (eval mode; P plain, D dropout, "
              f"W weight decay):")
        print(ascii_plot([(symbol, curves[label][part]) for label, symbol in symbols], steps))

    # --- early stopping on the plain run ---
    # The regret is what early stopping loses against an oracle that knew the whole curve.
    # Restoring matters: the weights at the stopping step have already drifted past the best.
    # And it must stop: with a patience longer than the run it would train every step and
    # then pick the best checkpoint, which is checkpoint selection, not early stopping (its
    # regret would be 0 by construction). The steps it saves are a criterion.
    plain = curves["plain"]
    stop_step, restored = early_stop(plain, PATIENCE)   # stop_step None: it never stopped
    stopped_at = stop_step or NUM_STEPS
    steps_saved = NUM_STEPS - stopped_at
    restored_valid = plain["valid"][steps.index(restored)]
    lowest = min(plain["valid"])
    regret = restored_valid - lowest
    stop_valid = plain["valid"][steps.index(stopped_at)]
    stops = (f"stops at step {stopped_at} of {NUM_STEPS}" if stop_step else
             f"never stops: patience never runs out within {NUM_STEPS} steps")
    print(f"\nEarly stopping (patience {PATIENCE}) on the plain run {stops} (validation "
          f"{stop_valid:.3f})\nand restores the checkpoint of step "
          f"{restored} (validation {restored_valid:.3f}); the lowest validation loss of the\n"
          f"whole run is {lowest:.3f}, at step {steps[plain['valid'].index(lowest)]}. Other "
          f"patiences would restore:")
    choices = [str(early_stop(plain, patience)[1]) for patience in range(1, 6)]
    print("  patience 1 to 5: steps " + ", ".join(choices))

    # --- the losses the criteria compare: eval mode, on the training and held-out names ---
    # The untrained row is the warning: its gap is 0, because it is equally bad everywhere.
    # A small gap alone proves nothing; the held-out loss must also go down.
    results = {}
    print(f"\n{'':<16}{'train':>8}{'held-out':>10}{'gap':>8}")
    finals = [(label, checkpoints[NUM_STEPS]) for label, (_, checkpoints, _) in runs.items()]
    finals.append(("early stopped", runs["plain"][1][restored]))
    finals.append(("untrained", untrained))
    for label, weights in finals:
        train_loss, heldout_loss = mean_losses(weights, eval_sets["train"], heldout)
        print(f"{label:<16}{train_loss:8.3f}{heldout_loss:10.3f}{heldout_loss - train_loss:8.3f}")
        key = label.replace(" ", "_")
        results[f"{key}_train_loss"] = train_loss
        results[f"{key}_heldout_loss"] = heldout_loss
        results[f"{key}_gap"] = heldout_loss - train_loss
    print(f"{'bigram table':<16}{bigram_loss(train_pairs, eval_sets['train'], vocab_size):8.3f}"
          f"{bigram:10.3f}")

    # --- train mode and eval mode see the same hidden layer on average ---
    # Over the masks the dropout run drew (one per training example, 9,600 in all), each
    # unit's mean factor should be 1: kept in a share 1 - p of them, times 1/(1 - p). With
    # 9,600 masks a unit's share has a standard deviation of sqrt(0.7 * 0.3 / 9600) = 0.0047,
    # so the worst of 48 units is off by about 0.02. One mask reused for every example gives
    # factors of 1/(1 - p) and 0 (off by 0.43 and 1); no rescale gives about 0.7 (off by 0.3).
    factors = runs["dropout"][2]
    eval_mean, train_mean, unscaled_mean = activation_means(
        runs["dropout"][1][NUM_STEPS], eval_sets["valid"], factors, DROPOUT_P)
    mismatch = worst_unit_mismatch(factors)
    print(f"\nDropout run, mean |hidden activation| over the validation contexts:")
    for label, value in (("eval mode (all units on, nothing rescaled)", eval_mean),
                         ("train mode, averaged over the run's masks", train_mean),
                         ("train mode without the 1/(1 - p) rescale", unscaled_mean)):
        print(f"  {label:<44} {value:.4f}")
    print(f"  (each unit's mean factor over the run's masks: {min(factors):.3f} to "
          f"{max(factors):.3f}, worst unit off by {mismatch:.3f})")

    # --- why AdamW decouples the decay ---
    shrunk = decay_demo()
    print(f"\nTwo weights from 1.0, 100 steps, lambda = {WEIGHT_DECAY}: one with loss "
          f"gradients of +-10, one with none.\n  AdamW:      {shrunk[True][0]:.3f} and "
          f"{shrunk[True][1]:.3f}\n  L2 in Adam: {shrunk[False][0]:.3f} and "
          f"{shrunk[False][1]:.3f}")

    results.update({
        "early_stop_regret": regret,
        "early_stop_step": stopped_at,
        "early_stop_steps_saved": steps_saved,
        "dropout_unit_mismatch": mismatch,
        "early_stop_restored_step": restored,
        "early_stop_regret_without_restore": stop_valid - lowest,
        "bigram_heldout_loss": bigram,
        "activation_eval_mode": eval_mean,
        "activation_train_mode": train_mean,
        "activation_no_rescale": unscaled_mean,
        "num_params": len(params),
    })
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microdropout.md")
    return results


if __name__ == "__main__":
    main()
