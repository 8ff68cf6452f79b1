"""microvae: a variational autoencoder on points of a ring, gradients derived by hand.

An autoencoder squeezes each data point through a small code and rebuilds it. A variational
autoencoder (VAE) makes the code a probability distribution: the encoder maps a point x to
the mean and log-variance of a Gaussian over codes z, a code is *drawn* from that Gaussian,
and the decoder rebuilds x from the draw. A second term in the loss pulls every encoder
Gaussian toward one fixed prior, N(0, I). The reward for that pull is a generator: once the
codes of all the training points together fill the prior, a z drawn from N(0, I) mostly
decodes to something that looks like the data, and a straight line between two codes
decodes to a path between the two points. Mostly, not always: in this run 13% of the prior
samples land off the ring, 61 of those 67 drawn with |z| < 0.5, near the point where the
codes of every part of the ring meet (the run prints the split).

Three ideas carry the whole method, and each is written next to the variables that hold it:
the ELBO (the loss), the reparameterisation trick (how a gradient passes through a random
draw) and the closed-form KL divergence between two Gaussians. The data are 2D points on a
ring, so every picture of the data, the reconstructions and the generated samples fits in
the terminal. The network is small enough that its backward pass is derived by hand on plain
floats, one chain-rule step per line; the tests check every gradient against finite
differences. A second run from the same start with a much larger beta shows the other end of
the dial: the posterior collapses onto the prior and the decoder all but stops using z.

Run: python foundational/microvae.py    (about 7 s on the 2-core CI machine)
"""
import math
import operator
import random
import time

# === HYPERPARAMETERS ===
# main() reads these when it runs, so a test can shrink a run by assigning new values.
DATA_DIM = 2           # a data point is (x, y)
LATENT_DIM = 2         # a code z is 2 numbers: enough for a picture of the latent space
HIDDEN = 16            # tanh units in the encoder's and in the decoder's hidden layer
NUM_TRAIN = 1000       # training points on the ring
NUM_HELD_OUT = 500     # points never trained on; reconstructions and the KL are measured here
RING_RADIUS = 1.0
RADIAL_NOISE = 0.05    # std of the radius around RING_RADIUS: a thin ring
BETA = 0.1             # weight of the KL term in the main run (see THE LOSS)
COLLAPSE_BETA = 2.0    # the second run's beta: twice where collapse sets in (see BETA AS A DIAL)
BATCH_SIZE = 32
NUM_STEPS = 1200       # Adam steps per run; both runs take the same number
LEARNING_RATE = 0.01
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8   # Kingma & Ba's defaults
CURVE_WINDOW = 100     # recon_ratio compares the means of the first and last 100 steps
NUM_PRIOR_SAMPLES = 500
NUM_INTERP_PAIRS = 20  # held-out pairs whose codes are joined by a straight line
INTERP_POINTS = 11     # codes decoded along each line, ends included
LOG_EVERY = 250


# === DATA: POINTS ON A RING ===
# A ring is a one-dimensional curve living in two dimensions: a good first test of a
# generative model, because a Gaussian with the right mean and covariance (a blob centred on
# the hole) matches its first two moments and still looks nothing like it. A model that has
# learned the ring puts its samples on the ring; a blob puts most of them off it.

def make_ring(n):
    """n points at uniform angles, radius RING_RADIUS plus Gaussian noise of RADIAL_NOISE."""
    points = []
    for _ in range(n):
        angle = random.uniform(0.0, 2.0 * math.pi)
        radius = RING_RADIUS + random.gauss(0.0, RADIAL_NOISE)
        points.append([radius * math.cos(angle), radius * math.sin(angle)])
    return points


# === MODEL: ENCODER AND DECODER ===
# Encoder q(z|x): one tanh layer, then two linear heads.
#     h       = tanh(W_enc x + b_enc)
#     mu      = W_mu h + b_mu             (the centre of the Gaussian over codes)
#     log_var = W_lv h + b_lv             (its log-variance, one per latent dimension)
# The encoder outputs log sigma^2 rather than sigma: any real number is a valid log-variance,
# so the head needs no positivity constraint, and exp() of it is always > 0.
# Decoder: the mirror image, one tanh layer and a linear output.
#     g     = tanh(W_dec z + b_dec)
#     x_hat = W_out g + b_out             (the reconstruction of x)
# Signpost: image VAEs use convolutional encoders and decoders and far larger latents
# (Stable Diffusion's autoencoder maps a 512x512 image to a 64x64x4 latent); the
# probabilistic machinery below is the same.

def init_params():
    """Gaussian weights scaled by 1/sqrt(fan-in) and zero biases, so pre-activations start
    at about unit size (tanh neither saturated nor linear) and both heads start near
    mu = 0, log_var = 0: every q(z|x) begins close to the prior N(0, I) (the untrained
    model's KL, printed in the held-out table, is about 0.1 nats)."""
    def matrix(rows, cols):
        return [[random.gauss(0.0, 1.0 / math.sqrt(cols)) for _ in range(cols)]
                for _ in range(rows)]
    return {
        "W_enc": matrix(HIDDEN, DATA_DIM), "b_enc": [0.0] * HIDDEN,
        "W_mu": matrix(LATENT_DIM, HIDDEN), "b_mu": [0.0] * LATENT_DIM,
        "W_lv": matrix(LATENT_DIM, HIDDEN), "b_lv": [0.0] * LATENT_DIM,
        "W_dec": matrix(HIDDEN, LATENT_DIM), "b_dec": [0.0] * HIDDEN,
        "W_out": matrix(DATA_DIM, HIDDEN), "b_out": [0.0] * DATA_DIM,
    }


def zeros_like(params):
    return {name: [[0.0] * len(value[0]) for _ in value] if isinstance(value[0], list)
            else [0.0] * len(value) for name, value in params.items()}


def dot(w, x):
    return sum(map(operator.mul, w, x))


def linear(W, b, x):
    """W x + b, one dot product per output."""
    return [dot(row, x) + bias for row, bias in zip(W, b)]


def encode(params, x):
    """Return (h, mu, log_var): the hidden layer and the two heads of q(z|x)."""
    h = [math.tanh(a) for a in linear(params["W_enc"], params["b_enc"], x)]
    return h, linear(params["W_mu"], params["b_mu"], h), linear(params["W_lv"], params["b_lv"], h)


def decode(params, z):
    """Return (g, x_hat): the decoder's hidden layer and its reconstruction."""
    g = [math.tanh(a) for a in linear(params["W_dec"], params["b_dec"], z)]
    return g, linear(params["W_out"], params["b_out"], g)


# === THE REPARAMETERISATION TRICK ===
# Training needs d(loss)/d(mu) and d(loss)/d(log_var), but z is a random draw from
# N(mu, sigma^2), and "draw a sample" has no derivative. The trick is to draw the randomness
# first, from a distribution with no parameters, and build z from it with plain arithmetic:
#     eps ~ N(0, I)                        (eps, drawn before the forward pass)
#     sigma = exp(0.5 * log_var)           (sigma)
#     z = mu + sigma * eps                 (z)
# z has exactly the distribution N(mu, sigma^2), but now it is a smooth function of mu and
# log_var with eps held fixed, so the chain rule goes straight through it:
#     dz/dmu = 1        dz/dlog_var = 0.5 * sigma * eps
# Intuition: eps says "how many standard deviations from the centre", and the encoder
# decides where the centre is and how long a standard deviation is.

def reparameterise(mu, log_var, eps):
    """Return (sigma, z) with z = mu + sigma * eps."""
    sigma = [math.exp(0.5 * lv) for lv in log_var]
    return sigma, [m + s * e for m, s, e in zip(mu, sigma, eps)]


def reparameterise_backward(sigma, eps, d_z):
    """Carry dL/dz back to dL/dmu and dL/dlog_var through z = mu + sigma * eps."""
    d_mu = list(d_z)                                                    # dz/dmu = 1
    d_log_var = [dz * 0.5 * s * e for dz, s, e in zip(d_z, sigma, eps)]  # 0.5 sigma eps
    return d_mu, d_log_var


# === THE LOSS: THE NEGATIVE ELBO ===
# For every x, the evidence lower bound (ELBO) is
#     log p(x) >= E_{z ~ q(z|x)}[ log p(x|z) ] - KL( q(z|x) || p(z) )
# and training maximises it, i.e. minimises its negative. The two terms:
#  1. Reconstruction. With a Gaussian decoder p(x|z) = N(x_hat, s^2 I), -log p(x|z) is
#     ||x - x_hat||^2 / (2 s^2) plus a constant. We use the squared error itself,
#         recon = sum_d (x_hat[d] - x[d])^2                    (recon)
#     and estimate the expectation over z with the single draw z = mu + sigma * eps.
#  2. KL to the prior p(z) = N(0, I). For a diagonal Gaussian it has a closed form, no
#     sampling needed (per latent dimension j, with sigma_j^2 = exp(log_var_j)):
#         KL = -0.5 * sum_j (1 + log_var_j - mu_j^2 - exp(log_var_j))     (kl)
#     It is 0 exactly when mu = 0 and log_var = 0, i.e. when q(z|x) IS the prior, and it
#     grows as the encoder moves a point's code away from 0 or narrows it.
# The loss of one point is
#     loss = recon + beta * kl                                  (loss, beta = BETA)
# and a batch averages it. Multiplying the true negative ELBO by 2 s^2 gives exactly this
# form (plus a constant) with beta = 2 s^2, so beta = 0.1 is the ELBO of a decoder that
# assumes noise of std s = sqrt(0.05) = 0.22 on each coordinate of x.
#
# KL in nats, averaged over data points, bounds how much z can tell the decoder about x (the
# mutual information between x and z under the encoder is at most the average KL). That is
# why the KL is the "rate" of the code and why a KL near 0 means z carries nothing.

def reconstruction_error(x_hat, x):
    return sum((a - b) ** 2 for a, b in zip(x_hat, x))


def kl_divergence(mu, log_var):
    """KL( N(mu, exp(log_var)) || N(0, I) ) in nats, summed over latent dimensions."""
    return -0.5 * sum(1.0 + lv - m * m - math.exp(lv) for m, lv in zip(mu, log_var))


def kl_backward(mu, log_var):
    """dKL/dmu_j = mu_j and dKL/dlog_var_j = 0.5 * (exp(log_var_j) - 1).

    The KL pulls every mean toward 0 and every variance toward 1 (the gradient on log_var
    is zero exactly at sigma = 1): it is a spring tying q(z|x) to the prior.
    """
    return list(mu), [0.5 * (math.exp(lv) - 1.0) for lv in log_var]


# === BACKWARD PASS: THE CHAIN RULE BY HAND ===
# The forward pass of one point, and the backward pass that retraces it:
#     x -> h -> (mu, log_var) -> z -> g -> x_hat -> recon          and  (mu, log_var) -> kl
# Each function below takes dL/d(its output) and returns dL/d(its input), adding the
# gradients of its weights into `grads`. Two facts do all the work:
#     y = W x + b   gives   dL/dW += dL/dy (outer) x,  dL/db += dL/dy,  dL/dx = W^T dL/dy
#     y = tanh(a)   gives   dL/da = dL/dy * (1 - y^2)
# W^T is needed once per point for four matrices; `columns` transposes them once per batch.

def columns(W):
    return [list(col) for col in zip(*W)]


def transposes(params):
    return {name: columns(params[name]) for name in ("W_out", "W_dec", "W_mu", "W_lv")}


def add_outer(G, d, x):
    """G += d (outer) x: the weight gradient of a linear layer."""
    for i, di in enumerate(d):
        G[i] = [gij + di * xj for gij, xj in zip(G[i], x)]


def add_into(total, d):
    for i, di in enumerate(d):
        total[i] += di


def decoder_backward(cols, grads, z, g, d_x_hat):
    """From dL/dx_hat to dL/dz through x_hat = W_out g + b_out, g = tanh(W_dec z + b_dec)."""
    add_outer(grads["W_out"], d_x_hat, g)
    add_into(grads["b_out"], d_x_hat)
    d_g_pre = [dot(col, d_x_hat) * (1.0 - gi * gi) for col, gi in zip(cols["W_out"], g)]
    add_outer(grads["W_dec"], d_g_pre, z)
    add_into(grads["b_dec"], d_g_pre)
    return [dot(col, d_g_pre) for col in cols["W_dec"]]


def encoder_backward(cols, grads, x, h, d_mu, d_log_var):
    """From dL/dmu and dL/dlog_var to the encoder's weights (x itself needs no gradient)."""
    add_outer(grads["W_mu"], d_mu, h)
    add_into(grads["b_mu"], d_mu)
    add_outer(grads["W_lv"], d_log_var, h)
    add_into(grads["b_lv"], d_log_var)
    # h feeds both heads, so its gradient is the sum of what each head sends back.
    d_h_pre = [(dot(cm, d_mu) + dot(cl, d_log_var)) * (1.0 - hi * hi)
               for cm, cl, hi in zip(cols["W_mu"], cols["W_lv"], h)]
    add_outer(grads["W_enc"], d_h_pre, x)
    add_into(grads["b_enc"], d_h_pre)


def loss_and_grad(params, batch, noise, beta):
    """Mean loss over the batch, its two parts, and the gradient of the mean loss.

    noise[i] is the eps of point batch[i]; passing it in (instead of drawing it here) is the
    reparameterisation trick made explicit, and lets the tests hold eps fixed while they
    nudge a weight. Returns (loss, recon, kl, grads), each a mean over the batch.
    """
    grads = zeros_like(params)
    cols = transposes(params)
    scale = 1.0 / len(batch)            # d(mean)/d(one point's loss)
    total_recon = total_kl = 0.0
    for x, eps in zip(batch, noise):
        h, mu, log_var = encode(params, x)
        sigma, z = reparameterise(mu, log_var, eps)
        g, x_hat = decode(params, z)
        total_recon += reconstruction_error(x_hat, x)
        total_kl += kl_divergence(mu, log_var)
        # recon = sum_d (x_hat - x)^2   ->   dL/dx_hat = 2 (x_hat - x), scaled by 1/B.
        d_x_hat = [2.0 * (a - b) * scale for a, b in zip(x_hat, x)]
        d_z = decoder_backward(cols, grads, z, g, d_x_hat)
        d_mu, d_log_var = reparameterise_backward(sigma, eps, d_z)
        # mu and log_var also feed the KL term directly: add beta * dKL/d(.) / B.
        kl_d_mu, kl_d_log_var = kl_backward(mu, log_var)
        d_mu = [a + beta * scale * b for a, b in zip(d_mu, kl_d_mu)]
        d_log_var = [a + beta * scale * b for a, b in zip(d_log_var, kl_d_log_var)]
        encoder_backward(cols, grads, x, h, d_mu, d_log_var)
    recon, kl = total_recon * scale, total_kl * scale
    return recon + beta * kl, recon, kl, grads


# === OPTIMISER: ADAM ===
# Per parameter, with g its gradient and t the step number:
#     m = b1 m + (1 - b1) g        v = b2 v + (1 - b2) g^2
#     p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
# The two divisions undo the bias of m and v starting at zero. Dividing m by sqrt(v) makes
# each parameter's step about lr in size whatever the scale of its own raw gradient.

def adam_step(params, grads, m, v, t, lr):
    step_size = lr / (1.0 - ADAM_BETA1 ** t)
    inv_root_c2 = 1.0 / math.sqrt(1.0 - ADAM_BETA2 ** t)
    b1, b2 = ADAM_BETA1, ADAM_BETA2
    for name, value in params.items():
        is_matrix = isinstance(value[0], list)
        rows = zip(value, grads[name], m[name], v[name]) if is_matrix else \
            [(value, grads[name], m[name], v[name])]
        for p_row, g_row, m_row, v_row in rows:
            for j, gj in enumerate(g_row):
                m_row[j] = b1 * m_row[j] + (1.0 - b1) * gj
                v_row[j] = b2 * v_row[j] + (1.0 - b2) * gj * gj
                p_row[j] -= step_size * m_row[j] / (math.sqrt(v_row[j]) * inv_root_c2 + ADAM_EPS)


# === BETA AS A DIAL ===
# beta is the price of one nat of code. The reconstruction term rewards what the code tells
# the decoder; the KL term charges beta per nat of it (per point, on average).
#   beta small: codes may be narrow and far apart. Reconstructions are sharp, the KL is
#       large, and little forces the codes to fill the prior, so prior draws can land where
#       no training point put its code. With BETA = 0 this script ends with a KL of 9.2
#       nats per point (and rising) and prior samples 0.74 of the blob's distance from the
#       data, against 2.0 nats and 0.27 at BETA = 0.1.
#   beta large: every q(z|x) is pulled onto N(0, I). Codes overlap, reconstructions blur.
# Past some beta, coding is not worth its price at all. Ignoring z, the best decoder outputs
# the data mean and pays the data's total variance, about RING_RADIUS^2 = 1 per point (the
# collapse run's held-out reconstruction error, printed, is 1.01). For
# Gaussian data with variance lam along a direction, the least squared error reachable with
# R nats of information about it is D(R) = lam * exp(-2R) (the Gaussian rate-distortion
# function). Each further nat saves less than the one before: the first saves
# lam * (1 - e^-2) = 0.86 lam, and the most any nat can save is the slope at R = 0,
# -dD/dR = 2 lam. Minimising D(R) + beta R therefore codes anything only while
# beta < 2 * lam (then R = 0.5 ln(2 lam / beta)). The ring's
# variance is about 0.5 in every direction, which puts the edge near beta = 1 (the average
# KL is at least the information z carries, so a VAE pays at least that price). The ring is
# not Gaussian, so this is a guide rather than a proof; runs of this script with BETA set to
# 0.5, 0.7 and 1.0 ended with a KL of 0.84, 0.44 and 0.02 nats per point.
# COLLAPSE_BETA = 2 sits well past the edge: that run's posterior collapses. Every q(z|x)
# becomes (almost exactly) the prior, z carries next to nothing about x, and the decoder
# learns to all but ignore z and output the data mean, the best guess without information.
# The run prints both: the KL per point, and where the decoder sends z as it sweeps the prior.
# Signpost: collapse also strikes at beta = 1, the plain ELBO, when the decoder is strong
# enough to model the data without z. Bowman et al. (2016) met it in a sentence VAE with an
# LSTM decoder and countered it by raising the KL weight from 0 during training ("KL
# annealing") and by dropping some of the decoder's input words.

# === TRAINING ===
# The batches and every eps are drawn once, before either run, so the main run and the
# collapse run see the same points and the same noise from the same initial weights: beta
# is the only difference between them.

def make_schedule(num_train):
    """For every step: which training points form the batch, and each point's eps."""
    return [([random.randrange(num_train) for _ in range(BATCH_SIZE)],
             [[random.gauss(0.0, 1.0) for _ in range(LATENT_DIM)] for _ in range(BATCH_SIZE)])
            for _ in range(NUM_STEPS)]


def mean(values):
    return sum(values) / len(values)


def train(params, data, schedule, beta, label, start):
    m, v = zeros_like(params), zeros_like(params)
    recons, kls = [], []
    for t, (indices, noise) in enumerate(schedule, 1):
        _, recon, kl, grads = loss_and_grad(params, [data[i] for i in indices], noise, beta)
        adam_step(params, grads, m, v, t, LEARNING_RATE)
        recons.append(recon)
        kls.append(kl)
        if t == 1 or t % LOG_EVERY == 0 or t == len(schedule):
            window = min(t, LOG_EVERY)
            print(f"{label} step {t:5d}/{len(schedule)} | recon {mean(recons[-window:]):.4f} "
                  f"| kl {mean(kls[-window:]):.4f} | {time.time() - start:.1f}s")
    return recons, kls


# === MEASUREMENTS ===
# Every number below is computed on plain floats with the encoder's mean code (no eps)
# unless it says otherwise, on held-out points or on fresh draws from the prior.
#
# "Looks like the data" is measured as a distance: from a generated point to its nearest
# training point. A raw distance has no scale, so it is divided by the same mean distance for
# points drawn from the blob: a Gaussian with the data's mean and covariance. A ratio of 1
# means the samples are no closer to the ring than the blob is.

def nearest_distance(point, data):
    return min(math.dist(point, other) for other in data)


def mean_nearest_distance(points, data):
    return mean([nearest_distance(p, data) for p in points])


def gaussian_blob(data, n):
    """n draws from N(mean of data, covariance of data), via the 2x2 Cholesky factor."""
    mx, my = mean([p[0] for p in data]), mean([p[1] for p in data])
    cxx = mean([(p[0] - mx) ** 2 for p in data])
    cyy = mean([(p[1] - my) ** 2 for p in data])
    cxy = mean([(p[0] - mx) * (p[1] - my) for p in data])
    # cov = L L^T with L = [[a, 0], [b, c]]
    a = math.sqrt(cxx)
    b = cxy / a
    c = math.sqrt(max(cyy - b * b, 0.0))
    blob = []
    for _ in range(n):
        u, w = random.gauss(0.0, 1.0), random.gauss(0.0, 1.0)
        blob.append([mx + a * u, my + b * u + c * w])
    return blob


def decode_prior(params, prior_codes):
    return [decode(params, z)[1] for z in prior_codes]


def spread(points):
    """Root-mean-square distance of the points from their centroid."""
    cx, cy = mean([p[0] for p in points]), mean([p[1] for p in points])
    return math.sqrt(mean([(p[0] - cx) ** 2 + (p[1] - cy) ** 2 for p in points]))


def off_ring_share(points, data, tolerance):
    """Share of points farther than `tolerance` from every training point."""
    return mean([nearest_distance(p, data) > tolerance for p in points])


def radial_std(points):
    """Standard deviation of the points' distances from the origin (the ring's thickness)."""
    radii = [math.hypot(*p) for p in points]
    centre = mean(radii)
    return math.sqrt(mean([(r - centre) ** 2 for r in radii]))


def sector_counts(points, num_sectors=12):
    """How many points fall in each of num_sectors equal wedges of angle around the origin."""
    counts = [0] * num_sectors
    for x, y in points:
        counts[int((math.atan2(y, x) + math.pi) / (2 * math.pi) * num_sectors) % num_sectors] += 1
    return counts


def interpolation_path(params, x_from, x_to):
    """Decode INTERP_POINTS codes evenly spaced on the line between two encoder means."""
    mu_from, mu_to = encode(params, x_from)[1], encode(params, x_to)[1]
    path = []
    for k in range(INTERP_POINTS):
        frac = k / (INTERP_POINTS - 1)
        path.append(decode(params, [a + (b - a) * frac for a, b in zip(mu_from, mu_to)])[1])
    return path


def interpolation_stats(params, pairs, train_data):
    """Three numbers about the decoded paths.
    Ends: the mean distance from a path's two ends to the two points it joins, divided by the
    mean distance between the two points of a pair (0 when every path starts and ends on its
    points; 0.5 or more when both ends of each path decode to one spot, as with a decoder
    that ignores z). A ratio of means, so that a pair of close points cannot dominate it.
    On-data: the mean distance from the path's points to the nearest training point.
    On-data and smoothness are means over the pairs. Smoothness: the largest step along a
    path as a share of the path's length (with 10 steps, 0.1 is perfectly even; a jump
    pushes it toward 1)."""
    end_gaps, pair_distances, distances, shares = [], [], [], []
    for x_from, x_to in pairs:
        path = interpolation_path(params, x_from, x_to)
        end_gaps.append((math.dist(path[0], x_from) + math.dist(path[-1], x_to)) / 2)
        pair_distances.append(math.dist(x_from, x_to))
        distances.append(mean_nearest_distance(path, train_data))
        steps = [math.dist(a, b) for a, b in zip(path, path[1:])]
        # A path of length 0 (a decoder that ignores z) counts as the worst case, 1.
        shares.append(max(steps) / sum(steps) if sum(steps) > 0 else 1.0)
    return mean(end_gaps) / mean(pair_distances), mean(distances), mean(shares)


def measure(params, train_data, held_out, prior_codes, interp_pairs, blob_distance):
    """Everything the criteria and the report need from one trained (or untrained) model."""
    codes = [encode(params, x) for x in held_out]
    kl = mean([kl_divergence(mu, log_var) for _, mu, log_var in codes])
    reconstructions = [decode(params, mu)[1] for _, mu, _ in codes]
    samples = decode_prior(params, prior_codes)
    end_gap, interp_distance, max_step = interpolation_stats(params, interp_pairs, train_data)
    return {
        "kl": kl,
        "heldout_recon": mean([reconstruction_error(r, x)
                               for r, x in zip(reconstructions, held_out)]),
        "sample_distance_ratio": mean_nearest_distance(samples, train_data) / blob_distance,
        "interpolation_end_gap": end_gap,
        "interpolation_max_step": max_step,
        "interpolation_distance_ratio": interp_distance / blob_distance,
        "sample_spread": spread(samples),
        "mean_sigma": [mean([math.exp(0.5 * lv[j]) for _, _, lv in codes])
                       for j in range(LATENT_DIM)],
        "reconstructions": reconstructions,
        "samples": samples,
    }


# === ASCII PICTURES ===

def scatter(points, width=31, height=15, extent=1.5, marks=None):
    """A density plot of 2D points in [-extent, extent]^2: '.', ':', then '#' as the count
    of points in a cell grows. A character cell is about twice as tall as it is wide, so the
    grid has about twice as many columns as rows. `marks` overlays labelled points."""
    grid = [[0] * width for _ in range(height)]

    def cell(p):
        col = round((p[0] + extent) / (2 * extent) * (width - 1))
        row = round((extent - p[1]) / (2 * extent) * (height - 1))
        return (row, col) if 0 <= row < height and 0 <= col < width else None

    for p in points:
        spot = cell(p)
        if spot:
            grid[spot[0]][spot[1]] += 1
    lines = [["#" if c >= 6 else ":" if c >= 3 else "." if c else " " for c in row]
             for row in grid]
    for label, p in (marks or []):
        spot = cell(p)
        if spot:
            lines[spot[0]][spot[1]] = label
    return ["".join(line) for line in lines]


def side_by_side(titles, panels, gap=3):
    width = len(panels[0][0])
    print((" " * gap).join(f"{t:<{width}}" for t in titles))
    for rows in zip(*panels):
        print((" " * gap).join(rows))


def ascii_chart(values, width=60, height=8):
    """Plot a series as a block chart; each column is the mean of a run of consecutive values.
    Row k from the bottom (k = 0 .. height - 1) fills the columns that reach
    low + k * (high - low) / (height - 1), so the labels are the lowest and highest column."""
    per_col = max(1, math.ceil(len(values) / width))
    cols = [mean(values[i:i + per_col]) for i in range(0, len(values), per_col)]
    low, high = min(cols), max(cols)
    step = ((high - low) or 1.0) / (height - 1)
    lines = []
    for level in range(height - 1, -1, -1):
        cutoff = low + step * level - 1e-12 * (abs(low) + abs(high))
        label = f"{low + step * level:7.3f} |" if level in (height - 1, 0) else "        |"
        lines.append(label + "".join("#" if c >= cutoff else " " for c in cols))
    lines.append("        +" + "-" * len(cols))
    return "\n".join(lines)


# === SUCCESS CRITERIA ===
# (what was measured, key in main()'s result, comparison, threshold or another key)
# main() prints what the untrained model and the collapse run score on the same held-out
# measurements, beside the main run's values. Two notes:
# - The KL's high end is 5 nats: with BETA = 0 (no KL term) the KL reaches 9.2 and keeps
#   rising, so that is what a missing or broken KL term looks like.
# - Collapse is checked as "the collapse run keeps under 1% of the main run's KL". The
#   average KL bounds the information z carries about x, so the check says the collapsed
#   code carries at most 1% of the main run's KL in nats. A bare collapsed_kl < final_kl
#   would be passed by any larger beta (BETA = 0.7 gives 0.44 nats: smaller, but not
#   collapsed); a fixed number of nats would say nothing about scale. beta = 1.0 ends at
#   0.02 nats, right at the line, and COLLAPSE_BETA = 2 at about 0.001.
# - The interpolation rows ask that a path start and end on the two points it joins and stay
#   on the ring in between. How evenly it is paced (the largest step as a share of its
#   length, printed) is no criterion: a decoder that barely moves paces its path evenly.
CRITERIA = [
    ("recon error, last 100 steps / first 100 steps", "recon_ratio", "<", 0.5),
    ("KL per held-out point (nats), low end", "final_kl", ">", 0.5),
    ("KL per held-out point (nats), high end", "final_kl", "<", 5.0),
    ("interpolation: path ends' gap / pair distance", "interpolation_end_gap", "<", 0.2),
    ("interpolation: distance to data / blob's", "interpolation_distance_ratio", "<", 0.5),
    ("prior samples: distance to data / blob's", "sample_distance_ratio", "<", 0.5),
    ("collapse run's KL vs 1% of final_kl", "collapsed_kl", "<", "final_kl_one_percent"),
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

def copy_params(params):
    return {name: [row[:] if isinstance(row, list) else row for row in value]
            for name, value in params.items()}


def print_pictures(held_out, run, params, interp_pairs):
    side_by_side(["held-out data", "their reconstructions", "decoded prior samples"],
                 [scatter(held_out), scatter(run["reconstructions"]), scatter(run["samples"])])
    # Two interpolation paths: the first held-out pair (an ordinary one) and the pair whose
    # points are farthest apart. The line between two codes is straight, and this model lays
    # the ring out around z = 0 (see the decoder sweep below), so the line between codes of
    # opposite points passes near z = 0 and its decoded path cuts across the hole.
    widest = max(interp_pairs, key=lambda pair: math.dist(*pair))
    panels = []
    for pair in (interp_pairs[0], widest):
        path = interpolation_path(params, *pair)
        panels.append(scatter(held_out, marks=[("0123456789A"[k], p) for k, p in enumerate(path)]))
    print(f"\nInterpolation: {INTERP_POINTS} codes evenly spaced on the line between the mean "
          f"codes of two held-out\npoints, decoded (0 -> A) and drawn over the held-out data")
    side_by_side(["the first held-out pair", f"the farthest-apart of {len(interp_pairs)} pairs"],
                 panels)


# Why VAE samples come out blurry, yet cover the data.
# Blurry: for a given code z, the output that minimises the expected squared error is the
# *average* of the points x whose codes could have produced z (a mean minimises squared
# error). The KL keeps every q(z|x) wide (the run prints the mean sigma per latent
# dimension), so the codes of neighbouring points overlap and the decoder returns their
# average. This run shows it twice: the reconstructions form a thinner ring than the data
# (the radial noise is averaged away), and z = 0, the densest point of the prior, where the
# codes of all angles meet, decodes near the centre of the ring, so the prior samples drawn
# near z = 0 land inside the hole (the run splits the off-ring samples by |z|). With images
# the same averaging of several plausible outputs is what a viewer sees as blur.
# Covering: every training point must be reconstructed from its own code, so every part of
# the ring owns a region of code space, and the KL packs those regions into the prior;
# prior draws therefore land on every part of the ring (the wedge table).

def print_blur_and_coverage(held_out, train_data, run, prior_codes):
    tolerance = 4 * RADIAL_NOISE
    print(f"\nBlurry but covering. Share of points farther than {tolerance:.2f} "
          f"(4 x the radial noise)\nfrom every training point:")
    print(f"  held-out data {off_ring_share(held_out, train_data, tolerance):6.1%}   "
          f"reconstructions {off_ring_share(run['reconstructions'], train_data, tolerance):6.1%}"
          f"   prior samples {off_ring_share(run['samples'], train_data, tolerance):6.1%}")
    # Where do the off-ring samples come from? Split the prior draws by their distance from
    # z = 0, the centre of the prior.
    for low, high in ((0.0, 0.5), (0.5, 1.0), (1.0, math.inf)):
        chosen = [x for z, x in zip(prior_codes, run["samples"]) if low <= math.hypot(*z) < high]
        if chosen:
            print(f"  prior draws with {low:.1f} <= |z| < {high:.1f}: {len(chosen):3d}, of which "
                  f"{off_ring_share(chosen, train_data, tolerance):6.1%} land off the ring")
    print(f"Thickness of the ring (std of the radius): held-out data "
          f"{radial_std(held_out):.3f}, reconstructions {radial_std(run['reconstructions']):.3f}")
    data_counts, sample_counts = sector_counts(held_out), sector_counts(run["samples"])
    print("Share of points in each 30-degree wedge of angle (data | prior samples):")
    for k, (d, c) in enumerate(zip(data_counts, sample_counts)):
        d_share, c_share = d / len(held_out), c / len(run["samples"])
        print(f"  {k * 30 - 180:5d} deg  {d_share:5.1%} {'#' * round(d_share * 200):<30}"
              f"| {c_share:5.1%} {'#' * round(c_share * 200)}")


def print_decoder_sweep(params, collapsed, train_data, main_run, collapse_run):
    print(f"\nWhat the decoder does with z: decoded points as z walks along each latent axis")
    print(f"  {'z':>12}   {'beta ' + str(BETA):>16}   {'beta ' + str(COLLAPSE_BETA):>16}")
    for axis in range(LATENT_DIM):
        for value in (-2.0, -1.0, 0.0, 1.0, 2.0):
            z = [0.0] * LATENT_DIM
            z[axis] = value
            a, b = decode(params, z)[1], decode(collapsed, z)[1]
            z_text = "(" + ", ".join(f"{v:4.1f}" for v in z) + ")"
            print(f"  {z_text:>12}   ({a[0]:6.3f}, {a[1]:6.3f})   ({b[0]:6.3f}, {b[1]:6.3f})")
    centre = [mean([s[d] for s in collapse_run["samples"]]) for d in range(DATA_DIM)]
    data_mean = [mean([p[d] for p in train_data]) for d in range(DATA_DIM)]
    print(f"Spread of {NUM_PRIOR_SAMPLES} decoded prior samples (rms distance from their "
          f"centre):\n  beta {BETA}: {main_run['sample_spread']:.3f}, beta {COLLAPSE_BETA}: "
          f"{collapse_run['sample_spread']:.3f}")
    print(f"The collapsed decoder's samples sit around ({centre[0]:.3f}, {centre[1]:.3f}); "
          f"the data mean is ({data_mean[0]:.3f}, {data_mean[1]:.3f}).")


def main():
    random.seed(42)
    start = time.time()
    train_data = make_ring(NUM_TRAIN)
    held_out = make_ring(NUM_HELD_OUT)
    initial = init_params()
    # Every random draw happens here, before training: both runs share all of them.
    schedule = make_schedule(len(train_data))
    prior_codes = [[random.gauss(0.0, 1.0) for _ in range(LATENT_DIM)]
                   for _ in range(NUM_PRIOR_SAMPLES)]
    interp_pairs = [(held_out[2 * k], held_out[2 * k + 1]) for k in range(NUM_INTERP_PAIRS)]
    blob_distance = mean_nearest_distance(gaussian_blob(train_data, NUM_PRIOR_SAMPLES),
                                          train_data)
    num_params = sum(len(v) * len(v[0]) if isinstance(v[0], list) else len(v)
                     for v in initial.values())
    print(f"{len(train_data)} training and {len(held_out)} held-out points on a ring; "
          f"{num_params} parameters; {LATENT_DIM}-dimensional codes")
    print(f"blob baseline: a point drawn from the data's Gaussian lies {blob_distance:.3f} "
          f"from the nearest\ntraining point on average\n")

    untrained = measure(initial, train_data, held_out, prior_codes, interp_pairs,
                        blob_distance)
    params = copy_params(initial)
    recons, kls = train(params, train_data, schedule, BETA, f"beta {BETA}", start)
    print()
    collapsed = copy_params(initial)
    c_recons, c_kls = train(collapsed, train_data, schedule, COLLAPSE_BETA,
                            f"beta {COLLAPSE_BETA}", start)
    main_run = measure(params, train_data, held_out, prior_codes, interp_pairs, blob_distance)
    collapse_run = measure(collapsed, train_data, held_out, prior_codes, interp_pairs,
                           blob_distance)

    # The error falls by more than an order of magnitude, so its curve is drawn on a log
    # scale: a linear axis would show one tall first column and a flat line after it.
    print(f"\nlog10 of the reconstruction error per step, beta {BETA}:")
    print(ascii_chart([math.log10(r) for r in recons]))
    print(f"KL per point per step (nats), beta {BETA}:")
    print(ascii_chart(kls))
    print(f"KL per point per step (nats), beta {COLLAPSE_BETA}:")
    print(ascii_chart(c_kls))

    print(f"\n{'held-out measurement':<38} {'untrained':>10} {'beta ' + str(BETA):>10} "
          f"{'beta ' + str(COLLAPSE_BETA):>10}")
    for label, key in (("KL per point (nats)", "kl"),
                       ("reconstruction error from the mean code", "heldout_recon"),
                       ("prior samples: distance to data / blob's", "sample_distance_ratio"),
                       ("interpolation: end gap / pair distance", "interpolation_end_gap"),
                       ("interpolation: largest step / length", "interpolation_max_step"),
                       ("interpolation: distance to data / blob's",
                        "interpolation_distance_ratio")):
        print(f"{label:<38} {untrained[key]:>10.4f} {main_run[key]:>10.4f} "
              f"{collapse_run[key]:>10.4f}")
    # Which criteria would a model pass without learning anything? Say so, so that a reader
    # does not take those passes as evidence.
    free = [key for _, key, op, target in CRITERIA if key in untrained
            and not isinstance(target, str) and COMPARE[op](untrained[key], target)]
    if free:
        print(f"note: the untrained model already passes {', '.join(free)}: on its own that\n"
              f"row is no evidence of learning.")
    print(f"mean sigma per latent dimension, beta {BETA}: " + ", ".join(
        f"{s:.3f}" for s in main_run["mean_sigma"]))

    print()
    print_pictures(held_out, main_run, params, interp_pairs)
    print_blur_and_coverage(held_out, train_data, main_run, prior_codes)
    print_decoder_sweep(params, collapsed, train_data, main_run, collapse_run)

    results = {
        "recon_ratio": mean(recons[-CURVE_WINDOW:]) / mean(recons[:CURVE_WINDOW]),
        "final_kl": main_run["kl"],
        "interpolation_end_gap": main_run["interpolation_end_gap"],
        "interpolation_max_step": main_run["interpolation_max_step"],
        "collapsed_interpolation_end_gap": collapse_run["interpolation_end_gap"],
        "untrained_interpolation_end_gap": untrained["interpolation_end_gap"],
        "interpolation_distance_ratio": main_run["interpolation_distance_ratio"],
        "sample_distance_ratio": main_run["sample_distance_ratio"],
        "collapsed_kl": collapse_run["kl"],
        "final_kl_one_percent": 0.01 * main_run["kl"],
        "heldout_recon": main_run["heldout_recon"],
        "collapsed_heldout_recon": collapse_run["heldout_recon"],
        "collapsed_recon_ratio": mean(c_recons[-CURVE_WINDOW:]) / mean(c_recons[:CURVE_WINDOW]),
        "sample_spread": main_run["sample_spread"],
        "collapsed_sample_spread": collapse_run["sample_spread"],
        "untrained_kl": untrained["kl"],
        "untrained_sample_distance_ratio": untrained["sample_distance_ratio"],
        "untrained_interpolation_max_step": untrained["interpolation_max_step"],
        "untrained_interpolation_distance_ratio": untrained["interpolation_distance_ratio"],
    }
    results = {key: round(value, 6) for key, value in results.items()}
    print(f"\ndone in {time.time() - start:.1f}s")
    print_criteria(results)
    print("\nNext: predict what a change will do, then run it: docs/challenges/microvae.md")
    return results


if __name__ == "__main__":
    main()
