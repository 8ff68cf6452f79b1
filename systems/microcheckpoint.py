"""microcheckpoint: gradient checkpointing, trading recomputation for activation memory.

Backpropagation needs, for every layer, the input that layer saw in the forward pass: the
gradient of tanh(W h + b) with respect to W is built from h. So plain training keeps every
layer's input alive from the moment the forward pass makes it until the backward pass uses
it, and for a deep network that stash of activations, not the weights, is what runs out of
memory. Gradient checkpointing (Chen, Xu, Zhang and Guestrin, 2016, "Training Deep Nets with
Sublinear Memory Cost") keeps only every k-th activation, the checkpoints, and during the
backward pass rebuilds the ones in between by running the forward pass again from the
nearest checkpoint, one segment at a time. The gradients are the same to the last bit; the
price is extra forward computation, and the memory falls from L activations to about
L/k + k, which is smallest, about 2 sqrt(L), at k = sqrt(L).

This script trains a 64-layer stack of small residual tanh layers on a regression task with
a hand-derived backward pass (checked against finite differences), under three schedules at
once: store everything, checkpoints every sqrt(L) layers, and one checkpoint only. Then it
sweeps k from 1 to L, counts the peak number of stored activations and the extra layer
evaluations of each, and checks both counts against formulas derived below.

What is simulated: memory is a meter of activation slots (one slot = one layer boundary's
batch of vectors); Python frees nothing and gains nothing in speed or bytes from it. The
clock is counted in layer evaluations. Real systems (PyTorch's torch.utils.checkpoint,
Megatron-LM's activation recomputation) do the same bookkeeping on GPU tensors.

Run: python systems/microcheckpoint.py    (about 2 s on the 2-core CI machine)
"""
import math
import operator
import random
import time

# === HYPERPARAMETERS ===
# Deep and narrow on purpose: the lesson is about depth L, and a width of 4 keeps each layer
# cheap enough in pure Python that 64 of them, trained and swept over every k, fit in seconds.
DEPTH = 64           # L: number of layers; sqrt(64) = 8
WIDTH = 4            # every layer maps 4 numbers to 4 numbers
BATCH = 16           # the fixed training set, used whole at every step (full-batch descent)
NUM_STEPS = 40       # optimiser steps, run under each of the three training schedules
LEARNING_RATE = 0.03  # plain gradient descent; at 0.05 the loss jumps back up at seed 2
INIT_STD = 0.1       # layer weights ~ N(0, 0.1^2 / WIDTH): each layer starts as a small nudge
READOUT_STD = 0.1    # readout weights ~ N(0, 0.1^2): first predictions near 0
FD_PARAMS = 24       # parameters checked against central finite differences
FD_EPS = 1e-5        # finite-difference step
LOG_EVERY = 10       # progress line every 10 steps


# === THE ACTIVATION METER: WHAT THIS SCRIPT SIMULATES ===
# An "activation" here is h_i, the input of layer i for the whole batch (BATCH vectors of
# WIDTH floats); h_0 is the data itself. The meter holds them in numbered slots: store(i)
# keeps h_i, load(i) reads it back, free(i) lets it go. It counts the largest number of slots
# held at once (the peak) and every layer evaluation (the clock).
# What the count leaves out: the one or two working vectors a layer is reading and writing
# at that moment (and the gradient flowing back), which every schedule needs alike; PyTorch
# likewise separates tensors "saved for backward" from the ones in flight.
# A freed slot of raw memory is soon reused for other data, so a program that still reads it
# gets garbage. Here it reads NaN, which poisons every number computed from it: a bug that
# reads freed memory shows up as a NaN gradient and fails the criteria table, not a crash.


class ActivationMeter:
    def __init__(self):
        self.slots = {}
        self.peak = 0
        self.layer_evals = 0    # forward layer evaluations, the first pass and any recompute

    def store(self, i, h):
        self.slots[i] = h
        self.peak = max(self.peak, len(self.slots))

    def load(self, i):
        if i in self.slots:
            return self.slots[i]
        return [[math.nan] * WIDTH for _ in range(BATCH)]   # freed memory: garbage

    def free(self, i):
        self.slots.pop(i, None)


# === MODEL: A DEEP STACK OF RESIDUAL TANH LAYERS ===
# Layer i maps its input h (one vector of the batch) to
#     a = W_i h + b_i,   s = tanh(a),   out = h + s
# The residual "h +" keeps a 64-layer stack trainable: at init each layer is the identity
# plus a small nudge, so neither the signal nor the gradient dies on its way through.
# A readout turns the last activation h_L into one prediction per example,
#     y_hat = v . h_L + c,   loss = mean over the batch of (y_hat - y)^2.


def init_params():
    std = INIT_STD / math.sqrt(WIDTH)
    layers = [{"W": [[random.gauss(0.0, std) for _ in range(WIDTH)] for _ in range(WIDTH)],
               "b": [0.0] * WIDTH} for _ in range(DEPTH)]
    # Why small weights: 64 layers of (I + W) multiply up. With std 0.3 / sqrt(WIDTH) and a
    # readout of std 1 / sqrt(WIDTH) the first loss was 33 (and descent at learning rate 0.1
    # diverged); at these sizes it starts at 0.42 and falls (seeds 1, 2: from 0.38, 0.20).
    readout = {"v": [random.gauss(0.0, READOUT_STD) for _ in range(WIDTH)],
               "c": [0.0]}
    return {"layers": layers, "readout": readout}


def layer_forward(layer, hs, meter):
    """One layer on the whole batch: out = h + tanh(W h + b) for every vector h in hs."""
    meter.layer_evals += 1
    out = []
    for h in hs:
        pre = [sum(map(operator.mul, row, h)) + bias for row, bias in zip(layer["W"], layer["b"])]
        out.append([x + math.tanh(a) for x, a in zip(h, pre)])
    return out


# The backward pass of one layer, derived by hand. With g = dLoss/d(out) for one example:
#     d out / d h  = I + diag(1 - s^2) W      (the residual adds the identity)
#     da           = g * (1 - s^2)            (tanh'(a) = 1 - tanh(a)^2, elementwise)
#     dLoss/dW    += outer(da, h)             dLoss/db += da
#     dLoss/dh     = g + W^T da
# It needs the layer's input h and nothing else: s is recomputed from h here (one matrix
# product), so h is the one activation each layer must find in memory when its turn comes.


def layer_backward(layer, hs, gs, grad):
    """Accumulate this layer's weight gradients into grad; return dLoss/d(input) per example."""
    W, b = layer["W"], layer["b"]
    columns = list(zip(*W))
    g_in = []
    for h, g in zip(hs, gs):
        pre = [sum(map(operator.mul, row, h)) + bias for row, bias in zip(W, b)]
        da = [gj * (1.0 - math.tanh(a) ** 2) for gj, a in zip(g, pre)]
        for r, dar in enumerate(da):
            grad_row = grad["W"][r]
            for c, hc in enumerate(h):
                grad_row[c] += dar * hc
            grad["b"][r] += dar
        g_in.append([gj + sum(map(operator.mul, col, da)) for gj, col in zip(g, columns)])
    return g_in


def loss_and_output_grad(readout, h_last, ys, grads):
    """MSE loss of the readout; its weight gradients go into grads; returns dLoss/dh_L."""
    v, c = readout["v"], readout["c"][0]
    n = len(ys)
    loss, g_out = 0.0, []
    for h, y in zip(h_last, ys):
        err = sum(map(operator.mul, v, h)) + c - y
        loss += err * err / n
        # d(err^2 / n)/d y_hat = 2 err / n, and y_hat = v . h + c
        scale = 2.0 * err / n
        for j, hj in enumerate(h):
            grads["v"][j] += scale * hj
        grads["c"][0] += scale
        g_out.append([scale * vj for vj in v])
    return loss, g_out


def zero_grads(params):
    return {"layers": [{"W": [[0.0] * WIDTH for _ in range(WIDTH)], "b": [0.0] * WIDTH}
                       for _ in params["layers"]],
            "readout": {"v": [0.0] * WIDTH, "c": [0.0]}}


def flatten(tree):
    """Every number of a params or grads tree, in a fixed order."""
    out = []
    for layer in tree["layers"]:
        for row in layer["W"]:
            out.extend(row)
        out.extend(layer["b"])
    out.extend(tree["readout"]["v"])
    out.extend(tree["readout"]["c"])
    return out


# === STORE EVERYTHING: THE BASELINE ===
# The forward pass stores h_0, ..., h_{L-1} (the input of every layer); the backward pass
# walks down the stack, each layer reads its input and frees it. h_L is used at once for
# the loss and needs no slot. Peak: L activations. Extra layer evaluations: 0.


def store_everything_gradients(params, xs, ys, meter):
    layers = params["layers"]
    grads = zero_grads(params)
    h = xs
    for i, layer in enumerate(layers):
        meter.store(i, h)
        h = layer_forward(layer, h, meter)
    loss, g = loss_and_output_grad(params["readout"], h, ys, grads["readout"])
    for i in reversed(range(len(layers))):
        g = layer_backward(layers[i], meter.load(i), g, grads["layers"][i])
        meter.free(i)
    return loss, grads


# === CHECKPOINTING EVERY K LAYERS ===
# Cut the L layers into n = ceil(L/k) segments [s, e) of k layers (the last one has
# r = L - (n-1)k layers, 1 <= r <= k). The forward pass keeps only each segment's input
# h_s, the checkpoint, and lets every other activation go as soon as the next layer has
# read it. The backward pass takes the segments from last to first; for each one it
#   1. recomputes h_{s+1}, ..., h_{e-1} from the checkpoint h_s   (e - s - 1 layer evaluations)
#   2. runs the segment's layers backward, freeing each input after use, the checkpoint last.
# The segment's output h_e is never recomputed: the backward needs the inputs of the layers,
# and the gradient arriving at h_e was already computed by the segment after it.
# Signpost: PyTorch's torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
# wraps one segment: it saves fn's inputs instead of the tensors fn would save, and reruns
# fn in the backward pass (the non-reentrant variant stops rerunning as soon as it has
# rebuilt what the backward needs). checkpoint_sequential(functions, segments, input,
# use_reentrant=False) cuts a Sequential into `segments` pieces (n here, not k) like this
# loop, except that it runs the last piece normally, keeping its activations: they would be
# rebuilt first anyway, so that saves r - 1 evaluations at no cost in peak. PyTorch asks for
# use_reentrant to be passed explicitly and recommends False; recent versions warn when it
# is left out.


def checkpointed_gradients(params, xs, ys, k, meter):
    layers = params["layers"]
    L = len(layers)
    grads = zero_grads(params)
    h = xs
    meter.store(0, h)                           # h_0 is the first checkpoint
    for i, layer in enumerate(layers):
        h = layer_forward(layer, h, meter)
        if (i + 1) % k == 0 and i + 1 < L:      # h_{i+1} starts a segment: keep it
            meter.store(i + 1, h)
    loss, g = loss_and_output_grad(params["readout"], h, ys, grads["readout"])
    for s in reversed(range(0, L, k)):
        e = min(s + k, L)
        h = meter.load(s)
        for i in range(s, e - 1):                # rebuild the segment's inner activations
            h = layer_forward(layers[i], h, meter)
            meter.store(i + 1, h)
        for i in reversed(range(s, e)):
            g = layer_backward(layers[i], meter.load(i), g, grads["layers"][i])
            meter.free(i)
    return loss, grads


# === PEAK MEMORY AND RECOMPUTATION BY FORMULA ===
# With n = ceil(L/k) segments and the last one r = L - (n-1)k layers long:
#
# Recompute: segment [s, e) rebuilds e - s - 1 activations, so over all segments
#     R(L, k) = sum over segments of (length - 1) = L - n = L - ceil(L/k).
# k = 1 recomputes nothing; k = L recomputes L - 1 layers, almost one whole extra forward.
#
# Peak: while segment j (0-based, s = jk) runs backward, the meter holds the checkpoints
# h_0, h_k, ..., h_s that are still waiting (j + 1 of them; the later ones were freed with
# their segments) plus the segment's m_j - 1 rebuilt inner activations: j + m_j in all.
# That is largest either for the last segment, (n - 1) + r, or for the one before it,
# (n - 2) + k. The forward pass holds only the n checkpoints, never more than that. So
#     M(L, k) = n - 1 + max(r, k - 1),
# which for k dividing L is L/k + k - 1: the checkpoints plus one segment. Its minimum over
# k is at k = sqrt(L), 2 sqrt(L) - 1 = 15 slots at L = 64, against L = 64 for storing
# everything (k = 1 gives M = L, R = 0: every activation is its own checkpoint).
# Chen et al. state it as O(sqrt(n)) memory for one extra forward pass; they also show that
# applying the idea recursively inside segments brings memory down to O(log n) at
# O(n log n) extra forward computation.


def peak_formula(L, k):
    n = -(-L // k)                # ceil(L / k) in integer arithmetic
    r = L - (n - 1) * k
    return n - 1 + max(r, k - 1)


def recompute_formula(L, k):
    return L - (-(-L // k))


def sqrt_schedule(L):
    return max(1, round(math.sqrt(L)))


# === TRAINING DATA AND A PLAIN LOSS FOR FINITE DIFFERENCES ===
# A fixed smooth function of 4 inputs, learnt from BATCH fixed points in [-1, 1]^4. The task
# only has to be a real one: the point is that every schedule follows the same loss curve.


def target(x):
    return math.sin(2.0 * x[0]) * x[1] + 0.5 * x[2] * x[3]


def plain_loss(params, xs, ys):
    """The forward pass alone, no meter kept: what finite differences perturb."""
    h = xs
    for layer in params["layers"]:
        h = layer_forward(layer, h, ActivationMeter())
    v, c = params["readout"]["v"], params["readout"]["c"][0]
    return sum((sum(map(operator.mul, v, hb)) + c - y) ** 2 for hb, y in zip(h, ys)) / len(ys)


def parameter_slots(params):
    """(container, index) of every parameter, in flatten() order, so one can be nudged."""
    slots = []
    for layer in params["layers"]:
        for row in layer["W"]:
            slots.extend((row, j) for j in range(len(row)))
        slots.extend((layer["b"], j) for j in range(WIDTH))
    slots.extend((params["readout"]["v"], j) for j in range(WIDTH))
    slots.append((params["readout"]["c"], 0))
    return slots


def finite_difference_error(params, xs, ys, grads, rng):
    """Largest |analytic - central difference| over FD_PARAMS random parameters."""
    flat_grads = flatten(grads)
    slots = parameter_slots(params)
    worst = 0.0
    for index in rng.sample(range(len(slots)), FD_PARAMS):
        container, j = slots[index]
        original = container[j]
        container[j] = original + FD_EPS
        up = plain_loss(params, xs, ys)
        container[j] = original - FD_EPS
        down = plain_loss(params, xs, ys)
        container[j] = original
        error = abs(flat_grads[index] - (up - down) / (2 * FD_EPS))
        worst = math.nan if math.isnan(error) or math.isnan(worst) else max(worst, error)
    return worst


# === HELPERS ===


def nan_aware_max(numbers):
    """The largest number, or NaN if any is NaN (Python's max(0.0, nan) is 0.0).

    A gradient computed from a freed slot is NaN; a plain max() would drop it and report
    a difference of 0, so the NaN is carried to the criteria table, where it fails."""
    numbers = list(numbers)
    return math.nan if any(math.isnan(x) for x in numbers) else max(numbers, default=0.0)


def max_difference(a, b):
    return nan_aware_max(abs(x - y) for x, y in zip(a, b))


def sgd_step(params, grads):
    # p <- p - lr * dLoss/dp for every parameter. Plain descent keeps the lesson on memory;
    # any optimiser would see the same gradients under every schedule.
    for p_layer, g_layer in zip(params["layers"], grads["layers"]):
        for p_row, g_row in zip(p_layer["W"], g_layer["W"]):
            for j, gj in enumerate(g_row):
                p_row[j] -= LEARNING_RATE * gj
        for j, gj in enumerate(g_layer["b"]):
            p_layer["b"][j] -= LEARNING_RATE * gj
    for name in ("v", "c"):
        for j, gj in enumerate(grads["readout"][name]):
            params["readout"][name][j] -= LEARNING_RATE * gj


def copy_params(params):
    # A deep copy, so the three schedules train three separate models from one start.
    return {"layers": [{"W": [row[:] for row in layer["W"]], "b": layer["b"][:]}
                       for layer in params["layers"]],
            "readout": {"v": params["readout"]["v"][:], "c": params["readout"]["c"][:]}}


def ascii_chart(ks, memory, recompute, L, best_ks, sqrt_k, height=16):
    """Peak memory (#) and extra layer evaluations (o) against k, one column per k."""
    # Both series are counts in units of one layer (slots held, layers re-run), so they
    # share one vertical axis from 0 to L; "*" marks a column where the two fall together.
    top = max(max(memory), max(recompute), 1)
    grid = [[" "] * len(ks) for _ in range(height + 1)]
    for col, (m, r) in enumerate(zip(memory, recompute)):
        row_m, row_r = round(m / top * height), round(r / top * height)
        grid[height - row_r][col] = "o"
        grid[height - row_m][col] = "*" if row_m == row_r else "#"
    lines = []
    for row, cells in enumerate(grid):
        level = top * (height - row) / height
        lines.append(f"{level:>6.1f} |" + "".join(cells))
    lines.append("       +" + "-" * len(ks))
    marks = "".join("^" if k in best_ks else " " for k in ks)
    lines.append("        " + marks + "  ^ = least peak memory")
    ticks = "".join("|" if k == sqrt_k else (str(k // 10) if k % 10 == 0 else " ") for k in ks)
    lines.append("        " + ticks + f"  k (tens; | = sqrt(L) = {sqrt_k})")
    return lines


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("max |grad - store-everything grad|, every k", "max_grad_difference", "<", 1e-12),
    ("max |loss - store-everything loss|, training", "loss_curve_difference", "<", 1e-12),
    ("k with peak memory != formula M(L, k)", "memory_formula_mismatches", "==", 0),
    ("k with extra layer evals != formula R(L, k)", "recompute_formula_mismatches", "==", 0),
    ("peak memory, sqrt(L) schedule / store-everything", "sqrt_memory_ratio", "<", 0.3),
    ("max |analytic - finite-difference gradient|", "finite_difference_error", "<", 1e-7),
]
COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
           "==": operator.eq}


def print_criteria(results):
    print(f"\n{'criterion':<50} {'measured':>12} {'threshold':>14}  result")
    for description, key, op, target in CRITERIA:
        value = results[key]
        threshold = results[target] if isinstance(target, str) else target
        # A non-finite value fails every row: NaN compares False with anything, but
        # inf would pass a ">" row, so finiteness is checked explicitly.
        finite = math.isfinite(value) and math.isfinite(threshold)
        verdict = "PASS" if finite and COMPARE[op](value, threshold) else "FAIL"
        print(f"{description:<50} {value:>12.6g} {op:>2} {threshold:<11.6g}  {verdict}")


# === MAIN ===


def train_three_schedules(params, xs, ys, start):
    """Train three copies of the same model in lockstep, one per schedule.

    Each step computes each copy's gradient under its own schedule and takes the same SGD
    step with it. If checkpointing is exact, the three copies never part ways."""
    sqrt_k = sqrt_schedule(DEPTH)
    schedules = [("store everything", None), (f"k = {sqrt_k} (sqrt L)", sqrt_k),
                 (f"k = {DEPTH} (one checkpoint)", DEPTH)]
    copies = [copy_params(params) for _ in schedules]
    curves = [[] for _ in schedules]
    grad_difference = 0.0
    print(f"{'step':>5} " + " ".join(f"{name:>26}" for name, _ in schedules))
    for step in range(1, NUM_STEPS + 1):
        flat = []
        for copy, (_, k), curve in zip(copies, schedules, curves):
            meter = ActivationMeter()
            if k is None:
                loss, grads = store_everything_gradients(copy, xs, ys, meter)
            else:
                loss, grads = checkpointed_gradients(copy, xs, ys, k, meter)
            curve.append(loss)
            flat.append(flatten(grads))
            sgd_step(copy, grads)
        grad_difference = nan_aware_max([grad_difference, max_difference(flat[0], flat[1]),
                                         max_difference(flat[0], flat[2])])
        if step == 1 or step % LOG_EVERY == 0 or step == NUM_STEPS:
            print(f"{step:>5} " + " ".join(f"{curve[-1]:>26.12f}" for curve in curves)
                  + f" | {time.time() - start:.1f}s")
    loss_difference = nan_aware_max(abs(a - b) for other in curves[1:]
                                    for a, b in zip(curves[0], other))
    return copies[0], curves[0], loss_difference, grad_difference


def main():
    random.seed(42)  # weights, data and the finite-difference sample all follow from this
    start = time.time()
    params = init_params()
    xs = [[random.uniform(-1.0, 1.0) for _ in range(WIDTH)] for _ in range(BATCH)]
    ys = [target(x) for x in xs]
    n_params = len(flatten(params))
    print(f"{DEPTH} residual tanh layers of width {WIDTH}, {n_params} parameters, "
          f"{BATCH} training points (full batch)\n")

    # --- the hand-derived backward pass against finite differences ---
    # Checkpointing can only be as right as the backward pass it replays, so that is checked
    # first, independently of any schedule: (L(p + eps) - L(p - eps)) / 2 eps against the
    # analytic gradient, for a random sample of weights, biases and readout entries.
    meter = ActivationMeter()
    _, grads = store_everything_gradients(params, xs, ys, meter)
    fd_error = finite_difference_error(params, xs, ys, grads, random.Random(7))
    print(f"hand-derived gradient vs central finite differences ({FD_PARAMS} parameters, "
          f"step {FD_EPS:g}): largest difference {fd_error:.2e}\n")

    # --- training under three schedules at once ---
    print(f"Training {NUM_STEPS} steps of gradient descent, the same start for each schedule "
          f"(loss = mean squared error):")
    trained, curve, loss_difference, train_grad_difference = train_three_schedules(
        params, xs, ys, start)
    print(f"the loss fell from {curve[0]:.4f} to {curve[-1]:.4f}; largest difference between "
          f"the schedules' losses {loss_difference:.3g}, gradients {train_grad_difference:.3g}")

    # --- every k from 1 to L, on the trained weights ---
    # Each k gets a fresh meter, one gradient on the trained weights, and three checks: its
    # gradient against storing everything, its peak against M(L, k), its extra layer
    # evaluations against R(L, k). Trained weights rather than the initial ones, so the
    # gradients compared are those of a model that has moved away from its random start.
    print(f"\nSweep: checkpoints every k layers, k = 1..{DEPTH}, one gradient each")
    reference_meter = ActivationMeter()
    _, reference = store_everything_gradients(trained, xs, ys, reference_meter)
    reference_flat = flatten(reference)
    ks = list(range(1, DEPTH + 1))
    memory, recompute, differences = [], [], []
    memory_mismatches = recompute_mismatches = 0
    for k in ks:
        meter = ActivationMeter()
        _, grads = checkpointed_gradients(trained, xs, ys, k, meter)
        extra = meter.layer_evals - DEPTH
        memory.append(meter.peak)
        recompute.append(extra)
        differences.append(max_difference(flatten(grads), reference_flat))
        memory_mismatches += meter.peak != peak_formula(DEPTH, k)
        recompute_mismatches += extra != recompute_formula(DEPTH, k)
    sweep_grad_difference = nan_aware_max(differences)
    print(f"done in {time.time() - start:.1f}s")

    # The square-root schedule: k = round(sqrt(L)), the k that balances the two terms of
    # L/k + k - 1 (checkpoints against one rebuilt segment).
    sqrt_k = sqrt_schedule(DEPTH)
    least = min(memory)
    best_ks = [k for k, m in zip(ks, memory) if m == least]
    shown = sorted({1, 2, 4, sqrt_k, best_ks[0], best_ks[-1], 16, 32, DEPTH} & set(ks))
    print(f"\n{'k':>4} {'segments':>9} {'peak slots':>11} {'M(L,k)':>7} {'floats':>7} "
          f"{'extra evals':>12} {'R(L,k)':>7} {'extra / L':>10} {'max |grad diff|':>16}")
    for k in shown:
        i = k - 1
        print(f"{k:>4} {-(-DEPTH // k):>9} {memory[i]:>11} {peak_formula(DEPTH, k):>7} "
              f"{memory[i] * BATCH * WIDTH:>7} {recompute[i]:>12} "
              f"{recompute_formula(DEPTH, k):>7} {recompute[i] / DEPTH:>10.3f} "
              f"{differences[i]:>16.3g}")
    print(f"(store everything: peak {reference_meter.peak} slots, 0 extra evaluations; "
          f"a slot is {BATCH} x {WIDTH} = {BATCH * WIDTH} floats)")
    print(f"\nPeak activation slots (#) and extra layer evaluations (o) against k, L = {DEPTH}:")
    for line in ascii_chart(ks, memory, recompute, DEPTH, best_ks, sqrt_k):
        print(line)
    # The memory curve is flat near its bottom: every k from best_ks[0] to best_ks[-1] holds
    # the same number of slots, and sqrt(L) sits among them. Past it, the segment being
    # rebuilt dominates and memory climbs back towards L while the recomputation keeps rising.
    print(f"least peak memory {least} slots at k = {best_ks[0]}..{best_ks[-1]}; "
          f"sqrt(L) = {sqrt_k} holds {memory[sqrt_k - 1]} slots and recomputes "
          f"{recompute[sqrt_k - 1]} layers ({recompute[sqrt_k - 1] / DEPTH:.0%} of a forward)")
    # Signpost: Korthikanti et al. (2022, "Reducing Activation Recomputation in Large
    # Transformer Models") recompute selectively instead: inside each transformer layer only
    # the attention parts whose activations are large (they grow with the square of the
    # sequence length) but cheap to recompute. Megatron-LM exposes both: recompute
    # granularity "full" (whole layers; with the "uniform" method, in chunks of
    # recompute_num_layers, as here) or "selective".

    results = {
        "max_grad_difference": nan_aware_max([sweep_grad_difference, train_grad_difference]),
        "loss_curve_difference": loss_difference,
        "memory_formula_mismatches": memory_mismatches,
        "recompute_formula_mismatches": recompute_mismatches,
        "sqrt_memory_ratio": memory[sqrt_k - 1] / reference_meter.peak,
        "finite_difference_error": fd_error,
        "store_everything_peak": reference_meter.peak,
        "sqrt_schedule_peak": memory[sqrt_k - 1],
        "sqrt_schedule_recompute": recompute[sqrt_k - 1],
        "least_peak": least,
        "least_peak_k_low": best_ks[0],
        "least_peak_k_high": best_ks[-1],
        "initial_loss": curve[0],
        "final_loss": curve[-1],
    }
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microcheckpoint.md")
    return results


if __name__ == "__main__":
    main()
