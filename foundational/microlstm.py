"""microlstm: the LSTM's cell state, and why it remembers what a plain RNN forgets.

A recurrent network that must answer with something it read many steps ago has to carry it
in its state through every step in between, and training it means sending the error back
through every one of those steps. foundational/micrornn.py measured what happens to that
error in a plain RNN: each step back multiplies it by a matrix and a tanh slope, and it
fades geometrically. The LSTM (Hochreiter and Schmidhuber, 1997; the forget gate from Gers,
Schmidhuber and Cummins, 2000) adds a second state, the cell c_t, that is updated by
addition rather than by a matrix:

    c_t = f_t * c_{t-1} + i_t * g_t        (f = forget gate, i = input gate, g = candidate)
    h_t = o_t * tanh(c_t)                  (o = output gate)

Going back one step along the cell multiplies the error by f_t alone, a number the network
learns and can hold near 1. This file trains a plain RNN, the GRU of micrornn and an LSTM of
the same hidden size on one task whose answer was read far back, and measures both the
accuracy and the gradient along the state, step by step:

    task: "c 3 0 2 ... 1 ?" -> answer "c"   (the first token, after `delay` distractors)
       -> RNN | GRU | LSTM (forward and backward derived by hand, on plain floats)
       -> Adam -> accuracy per delay, ||dL/dc_t|| per step, forget-gate bias 1 against 0

What the default run shows: trained on delays 1 to 20, the LSTM and the GRU answer every
held-out sequence right at delay 20, while the plain RNN stays near chance (0.21 to 0.32,
chance 0.25) at every delay, even 2. The RNN is not unable to hold a letter: trained on delays 1 to
5 only, it scores 1.000 at delay 10 and 0.775 at 20 (challenge 1). What it cannot do is
learn from the long sequences, where the share of the answer's gradient that reaches the
first step is 8.6e-7 before training. In the untrained LSTM the same share, along the cell,
is 2.7e-2 with the forget-gate bias at 1 and 1.4e-4 with it at 0.

Attribution: the LSTM of Hochreiter and Schmidhuber (1997, "Long Short-Term Memory"), whose
experiments include this kind of task (a first symbol to be recalled after a long noisy lag);
the forget gate of Gers, Schmidhuber and Cummins (2000, "Learning to Forget"); the forget-gate
bias of 1 recommended by Jozefowicz, Zaremba and Sutskever (2015, "An Empirical Exploration of
Recurrent Network Architectures"); the GRU of Cho et al. (2014), as in micrornn.py.

Run: python foundational/microlstm.py    (about 14 s on the 2-core CI machine)
"""
import copy
import math
import operator
import random
import time

# === HYPERPARAMETERS ===
# The same settings for the three models, so that the only difference is the cell.
N_HIDDEN = 8          # the same hidden size for all three (parameter counts are printed)
NUM_LETTERS = 4       # the first token is one of 4 letters: chance accuracy is 1/4
NUM_NOISE = 4         # distractor tokens, drawn at random for each position
MAX_DELAY = 20        # training delays are drawn uniformly from 1..MAX_DELAY
EVAL_DELAYS = (2, 5, 10, 20)   # the sweep: accuracy is measured at each of these delays
INIT_STD = 0.2        # Gaussian init: about PyTorch's default scale for 8 hidden units
                      # (uniform in +-1/sqrt(8), standard deviation 1/sqrt(24) = 0.20)
FORGET_BIAS = 1.0     # LSTM forget-gate bias at init: f = sigmoid(1) = 0.73 (Jozefowicz 2015)
UPDATE_GATE_BIAS = -2.0   # GRU update-gate bias at init, as in micrornn.py
LEARNING_RATE = 0.02
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8   # PyTorch's Adam defaults
NUM_STEPS = 500       # Adam steps per model
BATCH_SIZE = 8        # sequences per step
EVAL_EXAMPLES = 200   # held-out sequences per delay for the accuracy
NUM_PROBE = 50        # held-out sequences at the longest delay for the gradient flow
CHECK_DELAY = 4       # sequence used for the finite-difference check of each backward pass
DATA_SEED = 7         # every model trains on the same stream of sequences from this seed
EVAL_SEED = 1234      # and is scored on the same held-out sequences
LOG_EVERY = 100

# === THE TASK: RECALL THE FIRST TOKEN ===
# A sequence is one letter, then `delay` distractors, then the query token "?", and the model
# must answer the letter when it reads "?":
#     c 3 0 2 2 1 ?   ->   c
# Nothing after the first token says anything about the answer, so a model that has not kept
# the letter in its state for delay + 1 steps can only guess (1 in 4). The distractors are
# drawn at random, so the state is pushed around at every step and must be held against it.
# This is a small version of Hochreiter and Schmidhuber's experiment with noisy sequences and
# long time lags. Training draws each sequence's delay from 1..MAX_DELAY: the short ones teach
# a model to write the letter and read it out, the long ones to hold it.
LETTERS = "abcd"
NOISE_CHARS = "0123"
QUERY = NUM_LETTERS + NUM_NOISE       # token ids: letters 0..3, noise 4..7, query 8
VOCAB = NUM_LETTERS + NUM_NOISE + 1
ITOS = LETTERS[:NUM_LETTERS] + NOISE_CHARS[:NUM_NOISE] + "?"


def make_example(rng, delay):
    letter = rng.randrange(NUM_LETTERS)
    noise = [NUM_LETTERS + rng.randrange(NUM_NOISE) for _ in range(delay)]
    return [letter] + noise + [QUERY], letter


def show(tokens):
    return " ".join(ITOS[t] for t in tokens)


# === MODEL PARAMETERS ===
# A model is a dict of matrices (lists of rows) and vectors of plain floats. The input is one
# token, a one-hot vector, so W_x x_t is the column of W_x for that token: a lookup (as in
# micrornn.py), so it costs no multiplication. Every cell reads out the same way at the end:
# logits = W_hy h_T + b_y, one score per letter.


def matrix(rows, cols):
    # Random so that units differ, small so that tanh and sigmoid start in their steep middle
    return [[random.gauss(0.0, INIT_STD) for _ in range(cols)] for _ in range(rows)]


GATES = {"rnn": ("h",), "gru": ("z", "r", "h"), "lstm": ("i", "f", "g", "o")}


def init_model(kind, forget_bias=FORGET_BIAS):
    model = {}
    for gate in GATES[kind]:
        model[f"W_x{gate}"] = matrix(N_HIDDEN, VOCAB)
        model[f"W_h{gate}"] = matrix(N_HIDDEN, N_HIDDEN)
        model[f"b_{gate}"] = [0.0] * N_HIDDEN
    if kind == "gru":
        # The GRU of micrornn.py: its update gate starts mostly keeping (0.88 per step)
        model["b_z"] = [UPDATE_GATE_BIAS] * N_HIDDEN
    if kind == "lstm":
        # Forget-gate bias 1: at the start every unit keeps sigmoid(1) = 0.73 of its cell per
        # step instead of sigmoid(0) = 0.5. Over 20 steps that is 0.73^20 = 1.8e-3 of the
        # first write left against 0.5^20 = 9.5e-7: memory starts out possible, and training
        # learns where to forget. Signpost: PyTorch's nn.LSTM initialises every weight and
        # bias from U(-1/sqrt(hidden), 1/sqrt(hidden)); a forget bias of 1 is set by hand.
        model["b_f"] = [forget_bias] * N_HIDDEN
    model["W_hy"] = matrix(NUM_LETTERS, N_HIDDEN)
    model["b_y"] = [0.0] * NUM_LETTERS
    return model


def num_parameters(model):
    return sum(len(row) if isinstance(row, list) else 1
               for block in model.values() for row in block)


def zeros_like(model):
    return {key: [[0.0] * len(block[0]) for _ in block] if isinstance(block[0], list)
            else [0.0] * len(block) for key, block in model.items()}


def sigmoid(a):
    # Computed so that exp() never overflows: e^a / (1 + e^a) for negative a
    if a >= 0:
        return 1.0 / (1.0 + math.exp(-a))
    e = math.exp(a)
    return e / (1.0 + e)


def matvec(rows, vector):
    return [sum(map(operator.mul, row, vector)) for row in rows]


def preactivation(model, gate, h, token):
    # a = W_hg h_{t-1} + W_xg x_t + b_g   for one gate: one number per hidden unit
    W_x, b = model[f"W_x{gate}"], model[f"b_{gate}"]
    return [a + W_x[j][token] + b[j] for j, a in enumerate(matvec(model[f"W_h{gate}"], h))]


# === THE THREE CELLS: FORWARD ===
# Each step function maps (state, token) to the new state and returns what its backward pass
# will need (a cache). The RNN and the GRU are micrornn.py's, written on plain floats.


def rnn_step(model, h, token):
    # h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h)
    h_new = [math.tanh(a) for a in preactivation(model, "h", h, token)]
    return h_new, (token, h, h_new)


def gru_step(model, h, token):
    # z_t = sigmoid(W_xz x_t + W_hz h + b_z)   update gate: how much to rewrite
    # r_t = sigmoid(W_xr x_t + W_hr h)         reset gate: how much old state the candidate sees
    # n_t = tanh(W_xh x_t + W_hh (r_t * h))    candidate
    # h_t = (1 - z_t) * h + z_t * n_t          a dial between keeping and writing
    # (micrornn's GRU has no b_r or b_h; here they exist but start at 0 and are trained.)
    z = [sigmoid(a) for a in preactivation(model, "z", h, token)]
    r = [sigmoid(a) for a in preactivation(model, "r", h, token)]
    reset_h = [r_j * h_j for r_j, h_j in zip(r, h)]
    n = [math.tanh(a) for a in preactivation(model, "h", reset_h, token)]
    h_new = [(1.0 - z_j) * h_j + z_j * n_j for z_j, h_j, n_j in zip(z, h, n)]
    return h_new, (token, h, z, r, reset_h, n)


def lstm_step(model, state, token):
    h, c = state
    i = [sigmoid(a) for a in preactivation(model, "i", h, token)]     # input gate: write?
    f = [sigmoid(a) for a in preactivation(model, "f", h, token)]     # forget gate: keep?
    g = [math.tanh(a) for a in preactivation(model, "g", h, token)]   # candidate to write
    o = [sigmoid(a) for a in preactivation(model, "o", h, token)]     # output gate: show?
    # c_t = f_t * c_{t-1} + i_t * g_t: the old cell, scaled by the forget gate, plus the new
    # write. No matrix touches c on its way from one step to the next: that is the design.
    c_new = [f_j * c_j + i_j * g_j for f_j, c_j, i_j, g_j in zip(f, c, i, g)]
    tanh_c = [math.tanh(v) for v in c_new]
    # h_t = o_t * tanh(c_t): what the rest of the network (and the next step's gates) sees
    h_new = [o_j * t_j for o_j, t_j in zip(o, tanh_c)]
    # Signpost: PyTorch's nn.LSTM computes the same four gates (in the order i, f, g, o) with
    # two bias vectors per gate (b_ih and b_hh, which only ever enter as their sum), and
    # stores the four gates' weights stacked, as one (4 * hidden) x input matrix.
    return (h_new, c_new), (token, h, c, i, f, g, o, tanh_c)


STEPS = {"rnn": rnn_step, "gru": gru_step, "lstm": lstm_step}


def forward(model, kind, tokens):
    """Run a cell over the tokens from a zero state; return the logits and every step's cache."""
    state = [0.0] * N_HIDDEN
    if kind == "lstm":
        state = ([0.0] * N_HIDDEN, [0.0] * N_HIDDEN)
    caches = []
    for token in tokens:
        state, cache = STEPS[kind](model, state, token)
        caches.append(cache)
    h = state[0] if kind == "lstm" else state
    logits = [a + b for a, b in zip(matvec(model["W_hy"], h), model["b_y"])]
    return logits, h, caches


def cross_entropy(logits, target):
    # L = logsumexp(z) - z_y; dL/dz_j = softmax(z)_j - [j == y]
    top = max(logits)
    exps = [math.exp(z - top) for z in logits]
    total = sum(exps)
    loss = top + math.log(total) - logits[target]
    return loss, [e / total - (j == target) for j, e in enumerate(exps)]


# === BACKWARD PASSES, DERIVED BY HAND ===
# Backpropagation through time, one step at a time from the last to the first. Going in,
# each step knows dL/d(its new state); it adds its parameters' gradients and passes
# dL/d(previous state) on. A weight used at every step collects one term per step. Every
# line is the chain rule on the forward line it mirrors; the tests (and the script itself,
# in its criteria table) check every parameter's gradient against finite differences.
# The `norms` list records the norm of dL/d(state) at every step: the gradient flow.


def add_gate_grads(grads, gate, token, da, h_prev):
    # a = W_h h_prev + W_x[:, token] + b   =>   dW_h += da h_prev^T, dW_x[:, token] += da,
    # db += da, and dh_prev += W_h^T da (returned by transposed_matvec below)
    W_h, W_x, b = grads[f"W_h{gate}"], grads[f"W_x{gate}"], grads[f"b_{gate}"]
    for j, d in enumerate(da):
        if d:
            W_h[j] = [w + d * x for w, x in zip(W_h[j], h_prev)]
            W_x[j][token] += d
            b[j] += d


def transposed_matvec(rows, da):
    # W^T da without building W^T: sum of the rows weighted by da
    out = [0.0] * len(rows[0])
    for row, d in zip(rows, da):
        if d:
            out = [o + d * w for o, w in zip(out, row)]
    return out


def rnn_backward(model, caches, dh, grads):
    norms = []
    for token, h_prev, h in reversed(caches):
        norms.append(math.sqrt(sum(v * v for v in dh)))      # ||dL/dh_t||
        da = [d * (1.0 - y * y) for d, y in zip(dh, h)]       # tanh' = 1 - tanh^2
        add_gate_grads(grads, "h", token, da, h_prev)
        # dh_{t-1} = W_hh^T (dh_t * (1 - h_t^2)): one matrix and one slope per step back
        dh = transposed_matvec(model["W_hh"], da)
    return norms[::-1]


def gru_backward(model, caches, dh, grads):
    norms = []
    for token, h_prev, z, r, reset_h, n in reversed(caches):
        norms.append(math.sqrt(sum(v * v for v in dh)))      # ||dL/dh_t||
        # h = (1 - z) h_prev + z n: dh/dz = n - h_prev, dh/dn = z, dh/dh_prev = 1 - z
        da_z = [d * (n_j - hp) * z_j * (1.0 - z_j) for d, n_j, hp, z_j in zip(dh, n, h_prev, z)]
        da_n = [d * z_j * (1.0 - n_j * n_j) for d, z_j, n_j in zip(dh, z, n)]
        add_gate_grads(grads, "z", token, da_z, h_prev)
        add_gate_grads(grads, "h", token, da_n, reset_h)
        d_reset = transposed_matvec(model["W_hh"], da_n)      # dL/d(r * h_prev)
        da_r = [d * hp * r_j * (1.0 - r_j) for d, hp, r_j in zip(d_reset, h_prev, r)]
        add_gate_grads(grads, "r", token, da_r, h_prev)
        # h_prev reaches h four ways: directly (1 - z), through r * h_prev, through z, through r
        direct = [d * (1.0 - z_j) + dr * r_j for d, z_j, dr, r_j in zip(dh, z, d_reset, r)]
        via_z = transposed_matvec(model["W_hz"], da_z)
        via_r = transposed_matvec(model["W_hr"], da_r)
        dh = [a + b + c for a, b, c in zip(direct, via_z, via_r)]
    return norms[::-1]


def lstm_backward(model, caches, dh, grads):
    norms = []
    dc = [0.0] * N_HIDDEN    # dL/dc_t arriving from step t + 1 (none after the last step)
    for token, h_prev, c_prev, i, f, g, o, tanh_c in reversed(caches):
        # c_t reaches the loss two ways: through h_t = o tanh(c_t) and through c_{t+1}
        dc = [d_c + d_h * o_j * (1.0 - t * t) for d_c, d_h, o_j, t in zip(dc, dh, o, tanh_c)]
        norms.append(math.sqrt(sum(v * v for v in dc)))      # ||dL/dc_t||
        # c_t = f c_{t-1} + i g: dc/df = c_{t-1}, dc/di = g, dc/dg = i; h = o tanh(c)
        da_i = [d * g_j * i_j * (1.0 - i_j) for d, g_j, i_j in zip(dc, g, i)]
        da_f = [d * cp * f_j * (1.0 - f_j) for d, cp, f_j in zip(dc, c_prev, f)]
        da_g = [d * i_j * (1.0 - g_j * g_j) for d, i_j, g_j in zip(dc, i, g)]
        da_o = [d * t * o_j * (1.0 - o_j) for d, t, o_j in zip(dh, tanh_c, o)]
        dh = [0.0] * N_HIDDEN
        for gate, da in (("i", da_i), ("f", da_f), ("g", da_g), ("o", da_o)):
            add_gate_grads(grads, gate, token, da, h_prev)
            dh = [a + b for a, b in zip(dh, transposed_matvec(model[f"W_h{gate}"], da))]
        # dc_{t-1} = dc_t * f_t: the whole step back along the cell is one multiplication by
        # the forget gate. Where the network holds f near 1, the gradient arrives intact.
        dc = [d * f_j for d, f_j in zip(dc, f)]
    return norms[::-1]


BACKWARDS = {"rnn": rnn_backward, "gru": gru_backward, "lstm": lstm_backward}


def loss_and_grads(model, kind, tokens, target, grads):
    """Forward, loss at the last step, backward; adds into grads and returns (loss, norms)."""
    logits, h, caches = forward(model, kind, tokens)
    loss, d_logits = cross_entropy(logits, target)
    for j, d in enumerate(d_logits):
        grads["b_y"][j] += d
        grads["W_hy"][j] = [w + d * x for w, x in zip(grads["W_hy"][j], h)]
    dh = transposed_matvec(model["W_hy"], d_logits)
    return loss, BACKWARDS[kind](model, caches, dh, grads)


# === CHECKING THE BACKWARD PASS AGAINST FINITE DIFFERENCES ===
# A hand-derived gradient is only as good as its check. Nudge each parameter by +-EPS, rerun
# the forward pass, and compare (L(p + EPS) - L(p - EPS)) / (2 EPS) with the backward pass's
# number. The reference uses the forward pass only, so it is independent of the derivation.
FD_EPS = 1e-5


def backward_check(kind, rng):
    """Largest |analytic - numeric| over every parameter, over the largest |numeric|."""
    model = init_model(kind)
    tokens, target = make_example(rng, CHECK_DELAY)
    grads = zeros_like(model)
    loss_and_grads(model, kind, tokens, target, grads)
    worst_gap, largest = 0.0, 0.0
    for key, block in model.items():
        rows = block if isinstance(block[0], list) else [block]
        grad_rows = grads[key] if isinstance(block[0], list) else [grads[key]]
        for row, grad_row in zip(rows, grad_rows):
            for j, original in enumerate(row):
                row[j] = original + FD_EPS
                up = cross_entropy(forward(model, kind, tokens)[0], target)[0]
                row[j] = original - FD_EPS
                down = cross_entropy(forward(model, kind, tokens)[0], target)[0]
                row[j] = original
                numeric = (up - down) / (2 * FD_EPS)
                gap = abs(grad_row[j] - numeric)
                # NaN-aware: a NaN anywhere makes the whole check NaN (it fails the table)
                if math.isnan(gap):
                    return float("nan")
                worst_gap, largest = max(worst_gap, gap), max(largest, abs(numeric))
    return worst_gap / largest if largest > 0 else float("nan")


# === TRAINING: ADAM ON MINI-BATCHES ===
# Each step averages the gradients of BATCH_SIZE sequences, each of a delay drawn from
# 1..MAX_DELAY, and takes one Adam step at a constant learning rate. All models draw their
# sequences from the same seeded stream, so they see exactly the same data in the same order.
# Signpost: RNN training usually clips the gradient norm (torch.nn.utils.clip_grad_norm_);
# with Adam's per-parameter scaling and sequences of at most 22 steps this run does without.


def adam_step(model, grads, adam_m, adam_v, step):
    correct_m, correct_v = 1.0 - BETA1 ** (step + 1), 1.0 - BETA2 ** (step + 1)
    for key, block in model.items():
        rows = block if isinstance(block[0], list) else [block]
        is_matrix = isinstance(block[0], list)
        g_rows = grads[key] if is_matrix else [grads[key]]
        m_rows = adam_m[key] if is_matrix else [adam_m[key]]
        v_rows = adam_v[key] if is_matrix else [adam_v[key]]
        for row, g_row, m_row, v_row in zip(rows, g_rows, m_rows, v_rows):
            for j, g in enumerate(g_row):
                g /= BATCH_SIZE
                # m = b1 m + (1 - b1) g ; v = b2 v + (1 - b2) g^2 ; p -= lr m_hat / sqrt(v_hat)
                m_row[j] = BETA1 * m_row[j] + (1.0 - BETA1) * g
                v_row[j] = BETA2 * v_row[j] + (1.0 - BETA2) * g * g
                row[j] -= (LEARNING_RATE * (m_row[j] / correct_m)
                           / (math.sqrt(v_row[j] / correct_v) + ADAM_EPS))


def train(model, kind, label, start):
    # A fresh generator from the same seed for every model: the same sequences, in the same
    # order, so that the cells are the only difference between the runs.
    data = random.Random(DATA_SEED)
    adam_m, adam_v = zeros_like(model), zeros_like(model)
    losses = []
    for step in range(NUM_STEPS):
        grads, total = zeros_like(model), 0.0
        for _ in range(BATCH_SIZE):
            tokens, target = make_example(data, data.randint(1, MAX_DELAY))
            total += loss_and_grads(model, kind, tokens, target, grads)[0]
        adam_step(model, grads, adam_m, adam_v, step)
        losses.append(total / BATCH_SIZE)
        if (step + 1) % LOG_EVERY == 0 or step + 1 == NUM_STEPS:
            recent = losses[-LOG_EVERY:]
            print(f"{label:<14} step {step + 1:4d}/{NUM_STEPS} | loss "
                  f"{sum(recent) / len(recent):.4f} | {time.time() - start:.1f}s")
    return losses


# How fast each model learned: the first step at which the mean training loss over the last
# LEARNED_WINDOW steps falls below LEARNED_LOSS (a loss of 0.1 means the right letter gets
# about 0.9 of the probability), or -1 if it never does.
LEARNED_WINDOW = 20
LEARNED_LOSS = 0.1


def steps_to_learn(losses):
    for step in range(LEARNED_WINDOW, len(losses) + 1):
        if sum(losses[step - LEARNED_WINDOW:step]) / LEARNED_WINDOW < LEARNED_LOSS:
            return step
    return -1


def accuracy(model, kind, examples):
    # The answer is the letter with the highest score; the query step's logits are the only
    # ones read, as in training.
    hits = 0
    for tokens, target in examples:
        logits = forward(model, kind, tokens)[0]
        hits += max(range(NUM_LETTERS), key=logits.__getitem__) == target
    return hits / len(examples)


# === MEASURING GRADIENT FLOW THROUGH TIME ===
# Put the loss on the answer of a sequence at the longest delay, backpropagate, and read the
# norm of the gradient with respect to the state at every step: dL/dc_t for the LSTM's cell,
# dL/dh_t for the RNN and the GRU (as micrornn.py does). The ratio to the last step's norm
# says how much of the learning signal from the answer still reaches step t. Step 1 is where
# the letter was read: it is the one that matters for this task.


def gradient_profile(model, kind, examples):
    """Mean over examples of ||dL/dstate_t|| / ||dL/dstate_T|| for t = 1..T."""
    length = len(examples[0][0])
    profile = [0.0] * length
    for tokens, target in examples:
        norms = loss_and_grads(model, kind, tokens, target, zeros_like(model))[1]
        for t, norm in enumerate(norms):
            # A last-step norm of 0 (a loss with no gradient at all) would divide by zero;
            # NaN is then the honest answer, and it fails the table.
            profile[t] += (norm / norms[-1] if norms[-1] > 0 else float("nan")) / len(examples)
    return profile


# === PICTURES ===


def gradient_bars(profiles, low_exp=-8, high_exp=0, per_decade=2):
    """One line per step, one bar per model, on a log scale (per_decade characters per 10x)."""
    # A log scale because the RNN's gradient falls by orders of magnitude: on a linear scale
    # every bar but the last few would be empty.
    width = (high_exp - low_exp) * per_decade
    labels = list(profiles)
    head = "".join(f"{f'{label}: 1e{low_exp} to 1e{high_exp}':<{width + 12}}" for label in labels)
    lines = ["       " + head.rstrip()]
    for t in range(len(profiles[labels[0]])):
        cells = []
        for label in labels:
            value = profiles[label][t]
            level = math.log10(value) if value > 0 else low_exp
            bar = "#" * round(min(width, max(0.0, (level - low_exp) * per_decade)))
            cells.append(f"|{bar:<{width}}| {value:.1e}")
        lines.append(f"t={t + 1:<4} " + "  ".join(cells))
    return "\n".join(lines)


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("LSTM accuracy at the longest delay", "lstm_accuracy_long", ">=", 0.9),
    ("LSTM minus RNN accuracy at the longest delay", "lstm_rnn_margin_long", ">=", 0.3),
    ("untrained LSTM ||dL/dc_1|| / ||dL/dc_T||", "lstm_cell_gradient_ratio_untrained", ">=",
     0.003),
    ("backward vs finite differences (worst model)", "backward_check_error", "<", 1e-6),
]
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
           "==": operator.eq}


def print_criteria(results):
    print(f"\n{'criterion':<48} {'measured':>12} {'threshold':>14}  result")
    for description, key, op, target in CRITERIA:
        value = results[key]
        threshold = results[target] if isinstance(target, str) else target
        # A non-finite value fails every row: NaN compares False with anything, but
        # inf would pass a ">" row, so finiteness is checked explicitly.
        finite = math.isfinite(value) and math.isfinite(threshold)
        verdict = "PASS" if finite and COMPARE[op](value, threshold) else "FAIL"
        print(f"{description:<48} {value:>12.6g} {op:>2} {threshold:<11.6g}  {verdict}")


# === MAIN ===


def main():
    random.seed(42)  # every initial weight below follows from it; the data has its own seeds
    start = time.time()
    example_rng = random.Random(0)
    tokens, target = make_example(example_rng, 6)
    print(f"Task: read '{show(tokens)}', answer '{ITOS[target]}'. Training delays 1.."
          f"{MAX_DELAY}; chance accuracy 1/{NUM_LETTERS} = {1 / NUM_LETTERS:.2f}")

    # 1. The backward passes against finite differences, before anything is trained on them.
    # A wrong derivative still trains something (often worse, sometimes not visibly), so
    # the check comes first and is a row of the criteria table.
    check_rng = random.Random(EVAL_SEED + 1)
    check_errors = {kind: backward_check(kind, check_rng) for kind in ("rnn", "gru", "lstm")}
    print("Backward pass vs finite differences, every parameter (largest gap / largest "
          "gradient): " + ", ".join(f"{k.upper()} {e:.1e}" for k, e in check_errors.items()))

    # 2. Train the three cells, and the LSTM again with its forget-gate bias at 0.
    runs = {"RNN": ("rnn", FORGET_BIAS), "GRU": ("gru", FORGET_BIAS),
            "LSTM": ("lstm", FORGET_BIAS), "LSTM (b_f=0)": ("lstm", 0.0)}
    models, initial, learned_at = {}, {}, {}
    for label, (kind, bias) in runs.items():
        model = init_model(kind, bias)
        initial[label] = copy.deepcopy(model)   # kept to measure the untrained gradient flow
        print(f"{label}: {num_parameters(model)} parameters")
        learned_at[label] = steps_to_learn(train(model, kind, label, start))
        models[label] = (model, kind)

    # 3. The sweep: accuracy at each delay, on the same held-out sequences for every model.
    # Every model trained on all delays up to MAX_DELAY at once, so a row of the table is one
    # model tested at several delays, not several models.
    eval_rng = random.Random(EVAL_SEED)
    eval_sets = {d: [make_example(eval_rng, d) for _ in range(EVAL_EXAMPLES)]
                 for d in EVAL_DELAYS}
    table = {label: {d: accuracy(model, kind, eval_sets[d]) for d in EVAL_DELAYS}
             for label, (model, kind) in models.items()}
    print(f"\nAccuracy on {EVAL_EXAMPLES} held-out sequences per delay (chance "
          f"{1 / NUM_LETTERS:.2f}):")
    print(f"  {'delay':<14}" + "".join(f"{d:>7}" for d in EVAL_DELAYS))
    for label, row in table.items():
        print(f"  {label:<14}" + "".join(f"{row[d]:>7.3f}" for d in EVAL_DELAYS))

    # 4. Gradient flow at the longest delay, trained and untrained.
    long = max(EVAL_DELAYS)
    probes = eval_sets[long][:NUM_PROBE]
    profiles = {label: gradient_profile(model, kind, probes)
                for label, (model, kind) in models.items()}
    fresh = {label: gradient_profile(initial[label], kind, probes)
             for label, (kind, _) in runs.items()}
    print(f"\nGradient flow at delay {long} (T = {long + 2} steps): ||dL/dstate_t|| / "
          f"||dL/dstate_T|| for the loss on the answer, mean over {len(probes)} held-out "
          "sequences; the state is c_t for the LSTM, h_t for the others (log scale)")
    # What to look for: the RNN's bars shrink by orders of magnitude towards step 1 (in the
    # default run 9.1e-6 is left there); the LSTM's, measured along its cell, far less.
    shown = {"RNN": profiles["RNN"], "GRU": profiles["GRU"], "LSTM": profiles["LSTM"]}
    print(gradient_bars(shown))
    for label in runs:
        print(f"  {label:<14} step 1 / step T: trained {profiles[label][0]:.2e}, "
              f"untrained {fresh[label][0]:.2e}")

    print(f"\nForget-gate bias 1 against 0: accuracy at delay {long} "
          f"{table['LSTM'][long]:.3f} against {table['LSTM (b_f=0)'][long]:.3f}; untrained "
          f"gradient at step 1 {fresh['LSTM'][0]:.1e} against {fresh['LSTM (b_f=0)'][0]:.1e}")
    print(f"First step whose mean loss over the last {LEARNED_WINDOW} steps is below "
          f"{LEARNED_LOSS} (-1: never): "
          + ", ".join(f"{label} {step}" for label, step in learned_at.items()))
    print(f"Total time {time.time() - start:.1f}s")

    results = {
        "lstm_accuracy_long": table["LSTM"][long],
        "rnn_accuracy_long": table["RNN"][long],
        "gru_accuracy_long": table["GRU"][long],
        "lstm_bias0_accuracy_long": table["LSTM (b_f=0)"][long],
        "lstm_rnn_margin_long": table["LSTM"][long] - table["RNN"][long],
        "lstm_cell_gradient_ratio": profiles["LSTM"][0],
        "rnn_gradient_ratio": profiles["RNN"][0],
        "gru_gradient_ratio": profiles["GRU"][0],
        "lstm_bias0_cell_gradient_ratio": profiles["LSTM (b_f=0)"][0],
        "lstm_cell_gradient_ratio_untrained": fresh["LSTM"][0],
        "lstm_bias0_cell_gradient_ratio_untrained": fresh["LSTM (b_f=0)"][0],
        "gru_gradient_ratio_untrained": fresh["GRU"][0],
        "lstm_steps_to_learn": learned_at["LSTM"],
        "lstm_bias0_steps_to_learn": learned_at["LSTM (b_f=0)"],
        "gru_steps_to_learn": learned_at["GRU"],
        "rnn_steps_to_learn": learned_at["RNN"],
        "rnn_num_params": num_parameters(models["RNN"][0]),
        "gru_num_params": num_parameters(models["GRU"][0]),
        "lstm_num_params": num_parameters(models["LSTM"][0]),
        "rnn_gradient_ratio_untrained": fresh["RNN"][0],
        "backward_check_error": max(check_errors.values())
        if not any(math.isnan(e) for e in check_errors.values()) else float("nan"),
        "lstm_backward_check_error": check_errors["lstm"],
    }
    for label, row in table.items():
        for d in EVAL_DELAYS:
            results[f"accuracy_{label.split()[0].lower()}"
                    f"{'_bias0' if 'b_f' in label else ''}_delay{d}"] = row[d]
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microlstm.md")
    return results


if __name__ == "__main__":
    main()
