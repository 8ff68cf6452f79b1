"""microdiffusion: denoising diffusion (DDPM) on a 2D spiral, in plain Python.

A diffusion model learns to generate data by learning to undo noise. Take a data point and
mix in a little Gaussian noise, then a little more, a hundred times, until nothing of the
point is left: that is the forward process, and it needs no learning. Then train a network
to look at a noisy point and say which noise was added. To generate, start from pure noise
and run the film backwards: at every step subtract the noise the network predicts, add back
a smaller dose of fresh noise, and a point of the data distribution emerges at the end.

    spiral points -> add noise at a random step t -> MLP predicts the noise
                  -> squared error -> hand-derived gradients -> Adam step
    pure noise -> 100 steps of "remove predicted noise, add a little fresh noise" -> spiral

This is the algorithm of Ho et al. 2020 (DDPM), the core of diffusion image generators,
shrunk to two dimensions: a data point is an (x, y) coordinate instead of an image, and the
network is an MLP of 1,064 parameters instead of a U-Net. The network's backward pass is
derived by hand on plain floats (no autograd): a run pushes about 150,000 points through
the network (72,000 in training, 70,000 in sampling, 4,000 in the two held-out evaluations
and 4,000 in the check of the sampler), far too many for a scalar autograd graph.

Run: python foundational/microdiffusion.py    (about 13 s on the 2-core CI machine)
"""
import bisect
import math
import operator
import random
import time

# === HYPERPARAMETERS ===
# main() reads these when it runs, so a test can shrink a run by assigning new values.
NUM_DATA = 2000          # training points on the spiral
NUM_REFERENCE = 2000     # fresh spiral points, never trained on, that the samples are scored on
SPIRAL_TURNS = 1.5
SPIRAL_JITTER = 0.04     # std of the jitter; the radius runs from 0.25 to 1.25, arms 0.67 apart
T = 100                  # diffusion steps
BETA_START = 1e-4        # beta_1: the first step adds almost no noise
BETA_END = 0.1           # beta_T: chosen so that alpha_bar_T < 0.01 (see NOISE SCHEDULE)
TIME_EMBED_DIM = 8       # sinusoidal features of t fed to the network beside (x, y)
COORD_FREQUENCIES = (math.pi / 2, math.pi)  # Fourier features of x and y (see the MODEL)
HIDDEN_WIDTHS = (18, 18, 18)  # widths of the hidden layers
NUM_STEPS = 1500         # Adam steps
BATCH_SIZE = 48          # noisy points per step
LEARNING_RATE = 0.03     # decays linearly to 0 over the run
NUM_SAMPLES = 600        # points generated and measured
NUM_UNTRAINED_SAMPLES = 100  # points from the untrained network: the "no learning" score
NUM_CHECK_POINTS = 20    # points pushed through every reverse step to check it (see CHECKING)
LOG_EVERY = 250

# Adam constants (Kingma & Ba 2015 defaults).
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
ADAM_EPS = 1e-8


# === DATA: A SPIRAL IN THE PLANE ===
# An Archimedean spiral (radius grows in step with the angle) with a little Gaussian jitter.
# It is a good test for a generative model because its mean and variance say almost nothing
# about it: a Gaussian blob with the same mean and covariance matches both moments and
# still misses the shape entirely. Only a model that has learned where the arms are puts its
# points on them. The coordinates are centred and scaled (one factor for both axes) to an
# average variance of 1, so that "pure noise" N(0, I) and the data share one scale.
# Signpost: DDPM does the same for images by mapping pixel values from [0, 255] to [-1, 1].

def make_spiral(n):
    """n raw points on a spiral of SPIRAL_TURNS turns, radius growing from 0.25 to 1.25."""
    points = []
    span = 2 * math.pi * SPIRAL_TURNS
    for _ in range(n):
        s = random.random()                  # position along the arm, 0 = inner end
        angle = span * s
        radius = 0.25 + s
        points.append((radius * math.cos(angle) + random.gauss(0.0, SPIRAL_JITTER),
                       radius * math.sin(angle) + random.gauss(0.0, SPIRAL_JITTER)))
    return points


def normaliser(points):
    """Centre and scale (one factor for both axes, so the spiral keeps its proportions)."""
    n = len(points)
    cx = sum(p[0] for p in points) / n
    cy = sum(p[1] for p in points) / n
    spread = math.sqrt(sum((x - cx) ** 2 + (y - cy) ** 2 for x, y in points) / (2 * n))
    return lambda pts: [((x - cx) / spread, (y - cy) / spread) for x, y in pts]


# === NOISE SCHEDULE: THE FORWARD PROCESS ===
# One forward step shrinks a point a little and adds fresh Gaussian noise (data of unit
# variance stays at unit variance):
#     x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t          eps_t ~ N(0, I)
# beta_t (betas[t]) is the variance of the noise added at step t. It rises linearly from
# BETA_START to BETA_END: early steps blur the spiral gently, late ones wipe out what is left.
# Because a sum of independent Gaussians is Gaussian, all steps collapse into one formula:
#     x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps       eps ~ N(0, I)
#     alpha_t = 1 - beta_t          alpha_bar_t = alpha_1 * alpha_2 * ... * alpha_t
# (alphas[t], alpha_bars[t]). So training never simulates the chain: it jumps straight to
# any step t. alpha_bar_t is the share of the signal's variance still left at step t; the
# schedule must drive it near 0 by t = T, or sampling would start from a distribution
# (pure N(0, I)) that the network never saw. Here alpha_bar_T = 0.0056 (printed by main).
# Signpost: DDPM used T = 1000 and beta from 1e-4 to 0.02; we have 10x fewer steps, so each
# must add more noise. Improved DDPM (Nichol & Dhariwal 2021) replaced the linear schedule
# with a cosine one that adds noise more gradually.

def make_schedule():
    """betas, alphas and alpha_bars indexed by t = 0..T; t = 0 is the clean data."""
    betas = [0.0] + [BETA_START + (BETA_END - BETA_START) * (t - 1) / (T - 1)
                     for t in range(1, T + 1)]
    alphas = [1.0 - beta for beta in betas]
    alpha_bars = [1.0]
    for t in range(1, T + 1):
        alpha_bars.append(alpha_bars[-1] * alphas[t])
    return betas, alphas, alpha_bars


def add_noise(x0, eps, alpha_bar):
    """The closed form: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
    keep, mix = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    return (keep * x0[0] + mix * eps[0], keep * x0[1] + mix * eps[1])


# === TIME EMBEDDING ===
# One network serves every step, so it must be told t: at t = 5 the input is a spiral with a
# faint haze and the noise is small; at t = 95 the input is nearly all noise. Sinusoids of
# several frequencies give each t a distinct fingerprint of bounded numbers:
#     emb(t) = [sin(w_0 t), cos(w_0 t), ..., sin(w_{k-1} t), cos(w_{k-1} t)]
#     w_i = TIME_EMBED_BASE^(-i / k)          k = TIME_EMBED_DIM / 2
# The fastest sinusoid (w_0 = 1, a period of 6.3 steps) separates neighbouring steps; the
# slowest (a period of about 330 steps, longer than the chain) changes steadily from t = 1 to
# T and tells early from late. Signpost: this is the Transformer's positional encoding,
# which DDPM's U-Net reuses (with base 10,000) and then passes through a small MLP.
TIME_EMBED_BASE = 2 * T


def time_embedding(t):
    half = TIME_EMBED_DIM // 2
    features = []
    for i in range(half):
        w = TIME_EMBED_BASE ** (-i / half)
        features += [math.sin(w * t), math.cos(w * t)]
    return features


# === MODEL: AN MLP ON PLAIN FLOATS ===
# h_0 = u = [x, y, fourier(x, y), emb(t)]       (18 numbers in, see network_input)
# h_k = relu(W_k h_{k-1} + b_k)                 for every hidden layer k = 1 .. L-1
# eps_hat = W_L h_{L-1} + b_L                   (2 numbers out: the predicted noise)
# With HIDDEN_WIDTHS = (18, 18, 18) that is 18*18+18 + 2 * (18*18+18) + 18*2+2 = 1,064
# parameters and 1,008 multiply-adds per point.
# Two choices, each measured on this task (shape ratio, see MEASUREMENT; lower is better):
# - Fourier features. Each ReLU unit of the first layer splits the plane along a straight
#   line, and a spiral needs a great many lines. Sines and cosines of the coordinates,
#     fourier(x, y) = [sin(w x), cos(w x), sin(w y), cos(w y) for w in COORD_FREQUENCIES],
#   hand the first layer ready-made waves with periods of 2 and 4 (after normalisation the
#   arms lie about 1.2 apart). In our runs of 2,500 Adam steps they took the shape ratio
#   from 0.60-0.65 to 0.33-0.40 for about 10% more compute. At today's 1,500 steps it
#   measured 0.33 to 0.43 at seeds 42 to 46 (0.35 at 42), and 0.47 in a run with another
#   random stream: a spread of about 0.15 from run to run.
#   The same trick lets NeRF's MLPs draw fine detail (Tancik et al. 2020 explain why).
# - Depth. Without the Fourier features (and with an earlier jitter of 0.02 and learning
#   rate of 0.02), three layers of 18 reached in 2,500 steps the shape ratio that two layers
#   of 24 (the same 864 multiply-adds) reached in 5,000 (0.62 and 0.63). Intuition: every
#   extra ReLU layer can fold the plane once more.
# Every tensor is a list of rows (a bias is a matrix with one row), so Adam treats them alike.
# Signpost: image models predict the noise with a U-Net (convolutions that shrink and regrow
# the image, with skip connections and attention; t enters every block) or, lately, with a
# transformer over image patches. Its output has the shape of its input, as ours does.

def init_params():
    """He initialisation for ReLU layers: weights ~ N(0, 2 / fan_in), biases 0.

    Keys W1, b1, W2, b2, ... in layer order; W_k has one row per output unit."""
    sizes = [2 + 4 * len(COORD_FREQUENCIES) + TIME_EMBED_DIM] + list(HIDDEN_WIDTHS) + [2]
    params = {}
    for k in range(1, len(sizes)):
        fan_in, fan_out = sizes[k - 1], sizes[k]
        std = math.sqrt(2.0 / fan_in)
        params[f"W{k}"] = [[random.gauss(0.0, std) for _ in range(fan_in)]
                           for _ in range(fan_out)]
        params[f"b{k}"] = [[0.0] * fan_out]
    return params


def network_input(x, y, t_features):
    """u = [x, y, sin(w x), cos(w x), sin(w y), cos(w y) for each w, emb(t)]."""
    u = [x, y]
    for w in COORD_FREQUENCIES:
        u += [math.sin(w * x), math.cos(w * x), math.sin(w * y), math.cos(w * y)]
    return u + t_features


def forward(params, inputs):
    """A batch of points through the MLP, one layer at a time.

    inputs[b] = u_b. Returns (activations, outputs): activations[k][b] = h_k of point b for
    k = 0 .. L-1, outputs[b] = eps_hat of point b."""
    mul = operator.mul
    num_layers = len(params) // 2
    activations = [inputs]
    for k in range(1, num_layers):
        layer = list(zip(params[f"W{k}"], params[f"b{k}"][0]))   # looked up once per batch
        activations.append([[max(0.0, b + sum(map(mul, row, h))) for row, b in layer]
                            for h in activations[-1]])
    layer = list(zip(params[f"W{num_layers}"], params[f"b{num_layers}"][0]))
    outputs = [[b + sum(map(mul, row, h)) for row, b in layer] for h in activations[-1]]
    return activations, outputs


# === TRAINING OBJECTIVE AND ITS HAND-DERIVED GRADIENT ===
# DDPM's "simple" loss: pick a data point x_0, a step t uniform in 1..T and noise eps, build
# x_t in one jump with the closed form, and ask the network for eps back:
#     L = 1 / (2B) * sum_b || eps_b - eps_hat(x_t_b, t_b) ||^2        (B = batch size)
# (the mean over the batch and over the two coordinates). A network that always answers
# eps_hat = 0 scores L = E[eps^2] = 1, the "learned nothing" line for the loss.
# Why predict the noise and not x_0? They carry the same information (the closed form turns
# one into the other), but the noise has unit scale at every t, which keeps the regression
# target well-conditioned. Ho et al. report better samples from predicting the noise than
# from predicting x_0 or the mean of x_{t-1}.
#
# The backward pass (chain rule; delta_k = dL/dz_k where z_k = W_k h_{k-1} + b_k):
#     delta_L = dL/d eps_hat = (eps_hat - eps) / B
#     delta_k = (W_{k+1}^T delta_{k+1}) * [h_k > 0]      ReLU passes gradient only where on
#     dW_k = sum_b delta_k h_{k-1}^T                     db_k = sum_b delta_k
# [z_k > 0] is read off h_k: relu(z) is positive exactly where z is.

def outer_sum(deltas, inputs):
    """sum over the batch of delta_b input_b^T, and of delta_b: a weight and a bias gradient.

    Transposing both lists first turns the sum over the batch into one dot product per
    weight, a fast loop in plain Python."""
    delta_cols = list(zip(*deltas))
    input_cols = list(zip(*inputs))
    weight_grad = [[sum(map(operator.mul, dc, ic)) for ic in input_cols] for dc in delta_cols]
    return weight_grad, [[sum(dc) for dc in delta_cols]]


def loss_and_grads(params, inputs, targets):
    """Mean squared error of the predicted noise over a batch, and its gradient per tensor.

    inputs[b] = u_b = network_input() of a noisy point, targets[b] = the eps that was added."""
    batch = len(inputs)
    num_layers = len(params) // 2
    mul = operator.mul
    activations, outputs = forward(params, inputs)    # activations[k][b] = h_k of example b
    errors = [[o - e for o, e in zip(out, eps)] for out, eps in zip(outputs, targets)]
    loss = 0.0
    for err in errors:
        loss += err[0] * err[0] + err[1] * err[1]
    deltas = [None] * (num_layers + 1)                # deltas[k][b] = delta_k of example b
    deltas[num_layers] = [[e / batch for e in err] for err in errors]
    for k in range(num_layers - 1, 0, -1):
        # W^T as a list of columns, so that W^T delta is one dot product per input unit.
        columns = list(zip(*params[f"W{k + 1}"]))
        deltas[k] = [[sum(map(mul, col, delta)) if h > 0.0 else 0.0
                      for col, h in zip(columns, hs)]
                     for delta, hs in zip(deltas[k + 1], activations[k])]
    grads = {}
    for k in range(1, num_layers + 1):
        grads[f"W{k}"], grads[f"b{k}"] = outer_sum(deltas[k], activations[k - 1])
    return loss / (2 * batch), grads


# === OPTIMISER: ADAM ===
# Per parameter, with g = gradient and s = step number:
#     m = b1 m + (1 - b1) g          v = b2 v + (1 - b2) g^2
#     p -= lr * (m / (1 - b1^s)) / (sqrt(v / (1 - b2^s)) + eps)
# Adam rescales each weight's step by its own gradient size. The loss here is very noisy
# (each batch mixes easy late steps and hard early ones), and a learning rate that decays to
# zero lets the last few hundred steps average that noise out instead of chasing it.

def adam_update(params, grads, m, v, step, lr):
    c1 = 1.0 - ADAM_BETA1 ** step
    c2 = 1.0 - ADAM_BETA2 ** step
    b1, b2, eps, sqrt = ADAM_BETA1, ADAM_BETA2, ADAM_EPS, math.sqrt
    for name in params:
        for p_row, g_row, m_row, v_row in zip(params[name], grads[name], m[name], v[name]):
            # One row at a time, as list comprehensions; [:] updates the lists in place.
            m_row[:] = [b1 * m_i + (1.0 - b1) * g for m_i, g in zip(m_row, g_row)]
            v_row[:] = [b2 * v_i + (1.0 - b2) * g * g for v_i, g in zip(v_row, g_row)]
            p_row[:] = [p - lr * (m_i / c1) / (sqrt(v_i / c2) + eps)
                        for p, m_i, v_i in zip(p_row, m_row, v_row)]


# === SAMPLING: THE REVERSE PROCESS ===
# Start from x_T ~ N(0, I) and step t = T, T-1, ..., 1 (DDPM's Algorithm 2):
#     x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_hat(x_t, t)) / sqrt(alpha_t)
#               + sigma_t z                                             z ~ N(0, I)
# The first line is the mean of p(x_{t-1} | x_t): remove the share of the predicted noise
# that step t added, then undo step t's shrinking by sqrt(alpha_t). Adding sigma_t z makes
# the step a draw from the Gaussian p(x_{t-1} | x_t) that the model describes, not a jump to
# its mean: the reverse process is a random walk that the network steers.
# Variance choice: sigma_t^2 = beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t),
# the variance of the true posterior q(x_{t-1} | x_t, x_0). Ho et al. report that this and
# sigma_t^2 = beta_t give similar samples; beta_tilde is 0 at t = 1, so the last step adds no
# noise. Signpost: image models take larger strides: DDIM (Song et al. 2021) samples
# deterministically in tens of steps instead of the 1,000 it was trained with, Improved DDPM
# learns sigma_t, and classifier-free guidance (Ho & Salimans 2022) mixes a conditioned and an
# unconditioned noise prediction to follow the condition (a class, a text prompt) more
# closely. Stable Diffusion runs this whole loop on the latent codes of an autoencoder
# instead of on pixels, which makes every step cheaper.

def reverse_coefficients(t, schedule):
    """(beta_t / sqrt(1 - alpha_bar_t), 1 / sqrt(alpha_t), sigma_t): the numbers step t uses."""
    betas, alphas, alpha_bars = schedule
    noise_scale = betas[t] / math.sqrt(1.0 - alpha_bars[t])
    sigma = math.sqrt(betas[t] * (1.0 - alpha_bars[t - 1]) / (1.0 - alpha_bars[t]))
    return noise_scale, 1.0 / math.sqrt(alphas[t]), sigma


def reverse_step(params, points, t, schedule, fresh_noise):
    """One step of the reverse process: every x_t in points to its x_{t-1}.

    fresh_noise[b] is the z of point b; it is passed in so that the step can be checked
    against the formula with the same z (see reverse_step_error below)."""
    # forward() alone, once per step for all points: sampling needs no gradient, so nothing
    # is kept for a backward pass (PyTorch runs this loop under torch.no_grad()).
    emb = time_embedding(t)
    noise_scale, inv_sqrt_alpha, sigma = reverse_coefficients(t, schedule)
    eps_hats = forward(params, [network_input(x, y, emb) for x, y in points])[1]
    return [((x - noise_scale * ex) * inv_sqrt_alpha + sigma * zx,
             (y - noise_scale * ey) * inv_sqrt_alpha + sigma * zy)
            for (x, y), (ex, ey), (zx, zy) in zip(points, eps_hats, fresh_noise)]


def sample(params, n, schedule, snapshot_steps=()):
    """Generate n points. Returns (points, {t: points at step t for t in snapshot_steps})."""
    points = [(random.gauss(0.0, 1.0), random.gauss(0.0, 1.0)) for _ in range(n)]
    snapshots = {T: points} if T in snapshot_steps else {}
    for t in range(T, 0, -1):
        fresh_noise = [(random.gauss(0.0, 1.0), random.gauss(0.0, 1.0)) for _ in points]
        points = reverse_step(params, points, t, schedule, fresh_noise)
        if t - 1 in snapshot_steps:
            snapshots[t - 1] = points
    return points, snapshots


# === CHECKING THE SAMPLER AGAINST THE POSTERIOR ===
# The samples can look right while a step is wrong (a coefficient read at the neighbouring
# t moves them only a little), so one step is also checked against DDPM's posterior, written
# out a second way. Given x_t and a guess of x_0, the forward process says where x_{t-1} was
# (Ho et al. eq. 7):
#     q(x_{t-1} | x_t, x_0) = N(c0 x_0 + ct x_t, beta_tilde_t)
#     c0 = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)
#     ct = sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
# and the network's noise guess gives x_0 by inverting the forward process's closed form:
#     x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat(x_t, t)) / sqrt(alpha_bar_t)
# A reverse step must be a draw from N(c0 x0_hat + ct x_t, beta_tilde_t). The reference below
# rebuilds every beta and alpha_bar from the schedule's definition (not from make_schedule),
# shows the network the time features it was trained with, and uses the same z. Algebra
# turns it into the sampler's update, so the two agree to rounding (the run prints 1.9e-13;
# dividing by sqrt(alpha_bar_T) = 0.075 magnifies the rounding); a sampler that reads a
# coefficient at the wrong step, shows the network the wrong t, or leaves out the fresh
# noise is off by 0.008 or more, and its samples can still pass the four rows above.

def reference_step(params, point, t, z):
    """x_{t-1} from x_t = point by the posterior formula above (one point, plain floats)."""
    def beta(s):
        return BETA_START + (BETA_END - BETA_START) * (s - 1) / (T - 1)
    alpha_bar_t = math.prod(1.0 - beta(s) for s in range(1, t + 1))
    alpha_bar_prev = math.prod(1.0 - beta(s) for s in range(1, t))
    eps_hat = forward(params, [network_input(*point, time_embedding(t))])[1][0]
    c0 = math.sqrt(alpha_bar_prev) * beta(t) / (1.0 - alpha_bar_t)
    ct = math.sqrt(1.0 - beta(t)) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)
    std = math.sqrt(beta(t) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t))
    return [c0 * (x - math.sqrt(1.0 - alpha_bar_t) * e) / math.sqrt(alpha_bar_t)
            + ct * x + std * zi for x, e, zi in zip(point, eps_hat, z)]


def reverse_step_error(params, points, schedule):
    """Largest gap, over every t = T .. 1 and every point, between the sampler's step and
    reference_step from the same x_t with the same z. A non-finite step is an infinite gap.
    Its own random stream, so that adding the check changes no other number of the run."""
    rng = random.Random(0)
    worst = 0.0
    for t in range(T, 0, -1):
        fresh_noise = [(rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)) for _ in points]
        stepped = reverse_step(params, points, t, schedule, fresh_noise)
        for point, z, got in zip(points, fresh_noise, stepped):
            want = reference_step(params, point, t, z)
            gaps = [abs(a - b) for a, b in zip(got, want)]
            # checked before max(), which would skip a NaN that is not first
            if not all(math.isfinite(gap) for gap in gaps):
                return math.inf
            worst = max(worst, *gaps)
    return worst


# === MEASUREMENT: MOMENTS AND SHAPE ===
# Two questions about the generated points, each answered with a number:
#   1. Moments: per axis, is the mean where the data's mean is (gap in data standard
#      deviations), and is the spread right (ratio of variances)?
#   2. Shape: do the points lie on the spiral? For each generated point take the distance
#      to its nearest neighbour among NUM_REFERENCE fresh spiral points, and average. Alone
#      that number has no scale, so divide it by the same average for points drawn from a
#      Gaussian blob with the data's own mean and covariance. The blob passes both moment
#      checks by construction, so a ratio well below 1 is credit that moments cannot earn.

def moments(points):
    """Per-axis means, per-axis variances and the x-y covariance."""
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    vx = sum((p[0] - mx) ** 2 for p in points) / n
    vy = sum((p[1] - my) ** 2 for p in points) / n
    cxy = sum((p[0] - mx) * (p[1] - my) for p in points) / n
    return (mx, my), (vx, vy), cxy


def gaussian_blob(n, reference):
    """n points from the Gaussian with the reference's mean and covariance.

    With the covariance's Cholesky factor L = [[a, 0], [b, c]] (L L^T = covariance), the
    point mean + L z for z ~ N(0, I) has exactly that mean and covariance."""
    (mx, my), (vx, vy), cxy = moments(reference)
    a = math.sqrt(vx)
    b = cxy / a
    c = math.sqrt(vy - b * b)
    blob = []
    for _ in range(n):
        z1, z2 = random.gauss(0.0, 1.0), random.gauss(0.0, 1.0)
        blob.append((mx + a * z1, my + b * z1 + c * z2))
    return blob


def mean_nearest_distance(points, reference):
    """Average over points of the distance to the closest reference point.

    The same answer as comparing every point with every reference point, found faster: with
    the reference sorted by x, the search walks outwards from the point's own x and stops on
    each side once the x gap alone is at least the best distance so far (the points beyond
    it are no closer)."""
    reference = sorted(reference)
    xs = [rx for rx, _ in reference]
    total = 0.0
    for px, py in points:
        best = math.inf
        start = bisect.bisect_left(xs, px)
        for side in (reference[start:], reversed(reference[:start])):
            for rx, ry in side:
                if (px - rx) ** 2 >= best:
                    break
                best = min(best, (px - rx) ** 2 + (py - ry) ** 2)
        total += math.sqrt(best)
    return total / len(points)


def measure(points, reference, blob_distance):
    """The criteria's numbers for one set of generated points."""
    (mx, my), (vx, vy), _ = moments(points)
    (rmx, rmy), (rvx, rvy), _ = moments(reference)
    distance = mean_nearest_distance(points, reference)
    return {
        "mean_error": max(abs(mx - rmx) / math.sqrt(rvx), abs(my - rmy) / math.sqrt(rvy)),
        "variance_ratio_min": min(vx / rvx, vy / rvy),
        "variance_ratio_max": max(vx / rvx, vy / rvy),
        "nearest_distance": distance,
        "shape_distance_ratio": distance / blob_distance,
    }


def heldout_loss(params, noisy_inputs, targets):
    """The training loss on noisy reference points the network never saw (no gradient)."""
    total = 0.0
    for out, eps in zip(forward(params, noisy_inputs)[1], targets):
        total += (out[0] - eps[0]) ** 2 + (out[1] - eps[1]) ** 2
    return total / (2 * len(targets))


# === ASCII PLOTS ===

def scatter(points, width=30, height=15, extent=2.4):
    """Density plot of points in the square [-extent, extent]^2; points outside are skipped.

    A cell's character grows with its count relative to the busiest cell:  . : o @"""
    counts = [[0] * width for _ in range(height)]
    for x, y in points:
        col = int((x + extent) / (2 * extent) * width)
        row = int((extent - y) / (2 * extent) * height)   # y grows upwards on screen
        if 0 <= col < width and 0 <= row < height:
            counts[row][col] += 1
    busiest = max(max(r) for r in counts) or 1
    shades = " .:o@"
    return ["|" + "".join(shades[math.ceil(4 * c / busiest)] for c in r) + "|" for r in counts]


def side_by_side(titles, plots):
    width = len(plots[0][0])
    lines = ["  ".join(f"{title:<{width}}" for title in titles)]
    lines += ["  ".join(rows) for rows in zip(*plots)]
    return "\n".join(lines)


def ascii_chart(values, width=60, height=10):
    """Plot values as a block chart: each column is the mean of a run of consecutive values."""
    per_col = max(1, math.ceil(len(values) / width))
    cols = [sum(values[i:i + per_col]) / len(values[i:i + per_col])
            for i in range(0, len(values), per_col)]
    low, high = min(cols), max(cols)
    span = (high - low) or 1.0
    lines = []
    for level in range(height, 0, -1):
        cutoff = low + span * (level - 0.5) / height
        label = f"{low + span * level / height:7.3f} |" if level in (height, 1) else "        |"
        lines.append(label + "".join("#" if c >= cutoff else " " for c in cols))
    lines.append("        +" + "-" * len(cols))
    return "\n".join(lines)


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
CRITERIA = [
    ("mean gap, largest axis (data std devs)", "mean_error", "<", 0.2),
    ("variance ratio, smallest axis", "variance_ratio_min", ">=", 0.8),
    ("variance ratio, largest axis", "variance_ratio_max", "<=", 1.2),
    ("nearest-point distance / Gaussian blob's", "shape_distance_ratio", "<", 0.6),
    ("sampler step vs posterior formula, largest gap", "reverse_step_error", "<", 1e-9),
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


# === MAIN: TRAIN, SAMPLE, MEASURE ===

def noisy_batch(data, n, schedule, embeddings):
    """n training examples: network inputs u (from a noisy point x_t) and the noise eps added."""
    alpha_bars = schedule[2]
    inputs, targets = [], []
    for _ in range(n):
        x0 = random.choice(data)
        t = random.randint(1, T)
        eps = (random.gauss(0.0, 1.0), random.gauss(0.0, 1.0))
        inputs.append(network_input(*add_noise(x0, eps, alpha_bars[t]), embeddings[t]))
        targets.append(eps)
    return inputs, targets


def main():
    random.seed(42)
    start = time.time()
    schedule = make_schedule()
    alpha_bar_T = schedule[2][T]
    embeddings = [None] + [time_embedding(t) for t in range(1, T + 1)]
    raw_data = make_spiral(NUM_DATA)
    normalise = normaliser(raw_data)
    data = normalise(raw_data)
    reference = normalise(make_spiral(NUM_REFERENCE))
    print(f"{NUM_DATA} training points on a {SPIRAL_TURNS}-turn spiral, {NUM_REFERENCE} fresh "
          f"reference points | T = {T}, beta {BETA_START:g} -> {BETA_END:g}, "
          f"alpha_bar_T = {alpha_bar_T:.4f}")
    # The forward process at work: the same training points at a few steps of the chain
    # (a chain shorter than 30 steps shows only the steps it has).
    shown = sorted({t for t in (10, 30) if t < T} | {T})
    print("\nthe forward process: data at t = 0, then noised in one jump to t = "
          + ", ".join(str(t) for t in shown))
    noised = {t: [add_noise(p, (random.gauss(0.0, 1.0), random.gauss(0.0, 1.0)),
                            schedule[2][t]) for p in data[:1000]] for t in shown}
    print(side_by_side(["t = 0 (data)"] + [f"t = {t}" for t in noised],
                       [scatter(data[:1000], 22, 11)] +
                       [scatter(noised[t], 22, 11) for t in noised]))

    params = init_params()
    untrained = {name: [row[:] for row in rows] for name, rows in params.items()}
    num_params = sum(len(row) for rows in params.values() for row in rows)
    m = {name: [[0.0] * len(row) for row in rows] for name, rows in params.items()}
    v = {name: [[0.0] * len(row) for row in rows] for name, rows in params.items()}
    heldout_inputs, heldout_targets = noisy_batch(reference, NUM_REFERENCE, schedule,
                                                  embeddings)
    untrained_loss = heldout_loss(params, heldout_inputs, heldout_targets)
    print(f"\nMLP with {num_params} parameters | untrained held-out loss {untrained_loss:.4f} "
          f"(answering eps_hat = 0 would score 1.0)\n")

    losses = []
    for step in range(1, NUM_STEPS + 1):
        inputs, targets = noisy_batch(data, BATCH_SIZE, schedule, embeddings)
        loss, grads = loss_and_grads(params, inputs, targets)
        lr = LEARNING_RATE * (1.0 - (step - 1) / NUM_STEPS)
        adam_update(params, grads, m, v, step, lr)
        losses.append(loss)
        if step == 1 or step % LOG_EVERY == 0 or step == NUM_STEPS:
            recent = losses[-LOG_EVERY:]
            print(f"step {step:5d}/{NUM_STEPS} | loss {sum(recent) / len(recent):.4f} | "
                  f"{time.time() - start:.1f}s")
    print(f"\ntraining loss per step (column = mean of {math.ceil(len(losses) / 60)} steps; "
          f"eps_hat = 0 scores 1.0):")
    print(ascii_chart(losses))
    trained_loss = heldout_loss(params, heldout_inputs, heldout_targets)
    print(f"held-out loss (noisy fresh spiral points): trained {trained_loss:.4f} | "
          f"untrained {untrained_loss:.4f} | eps_hat = 0 scores 1.0")

    snapshot_steps = (T, 3 * T // 4, T // 2, T // 4, T // 10, 0)
    samples, snapshots = sample(params, NUM_SAMPLES, schedule, snapshot_steps)
    print(f"\nthe reverse process: {NUM_SAMPLES} points from pure noise to samples "
          f"({time.time() - start:.1f}s)")
    print(side_by_side([f"t = {t}" for t in snapshot_steps[:3]],
                       [scatter(snapshots[t], 22, 11) for t in snapshot_steps[:3]]))
    print(side_by_side([f"t = {t}" for t in snapshot_steps[3:]],
                       [scatter(snapshots[t], 22, 11) for t in snapshot_steps[3:]]))
    untrained_samples = sample(untrained, NUM_UNTRAINED_SAMPLES, schedule)[0]
    print("\n" + side_by_side(["training data", "generated (trained)"],
                              [scatter(data[:NUM_SAMPLES]), scatter(samples)]))

    # Three yardsticks scored exactly like the samples: fresh spiral points (what a perfect
    # generator would score), the untrained network's samples (no learning) and the blob.
    blob = gaussian_blob(NUM_SAMPLES, reference)
    blob_distance = mean_nearest_distance(blob, reference)
    rows = {"spiral points": measure(normalise(make_spiral(NUM_SAMPLES)), reference,
                                     blob_distance),
            "trained model": measure(samples, reference, blob_distance),
            "untrained model": measure(untrained_samples, reference, blob_distance),
            "Gaussian blob": measure(blob, reference, blob_distance)}
    print(f"\n{'':<16} {'mean gap':>9} {'var min':>8} {'var max':>8} {'nearest':>8} "
          f"{'shape':>7}")
    for label, r in rows.items():
        print(f"{label:<16} {r['mean_error']:>9.4f} {r['variance_ratio_min']:>8.3f} "
              f"{r['variance_ratio_max']:>8.3f} {r['nearest_distance']:>8.4f} "
              f"{r['shape_distance_ratio']:>7.3f}")
    step_gap = reverse_step_error(params, reference[:NUM_CHECK_POINTS], schedule)
    print(f"\nthe sampler's step against the posterior formula, {NUM_CHECK_POINTS} points at "
          f"every t: largest gap {step_gap:.3g}")
    print(f"done in {time.time() - start:.1f}s")

    results = {key: round(value, 6) for key, value in rows["trained model"].items()}
    for prefix, label in (("untrained_", "untrained model"), ("blob_", "Gaussian blob"),
                          ("data_", "spiral points")):
        for key, value in rows[label].items():
            results[prefix + key] = round(value, 6)
    results["reverse_step_error"] = step_gap
    results["alpha_bar_T"] = round(alpha_bar_T, 6)
    results["final_loss"] = round(sum(losses[-LOG_EVERY:]) / len(losses[-LOG_EVERY:]), 6)
    results["heldout_loss"] = round(trained_loss, 6)
    results["untrained_heldout_loss"] = round(untrained_loss, 6)
    results["num_params"] = num_params
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microdiffusion.md")
    return results


if __name__ == "__main__":
    main()
