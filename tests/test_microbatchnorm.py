"""Fast checks specific to alignment/microbatchnorm.py.

Batch norm is built three ways in the script: from Value operations (the reference), as fused
nodes (what training uses) and as a backward pass derived by hand. Here all three are held to
central finite differences and to each other, and the other fused nodes (the batched
linear layer, mean, cross-entropy, the whole output side) to their naive forms. The rest
pins down what the measurements rely on: the running-statistics update, the float inference
pass against the Value graph, the train/eval switch, and the helpers behind the criteria.
"""
import math
import random

import pytest

from support import grads, load_script, values_of

SCRIPT = "alignment/microbatchnorm.py"
bn = load_script(SCRIPT)
Value = bn.Value
STEP = 1e-6
values = values_of(Value)


def close(a, b, tol=1e-9):
    assert len(a) == len(b)
    return all(math.isclose(x, y, rel_tol=tol, abs_tol=tol) for x, y in zip(a, b))


def random_column(rng, n, spread=2.0, offset=0.7):
    return [offset + rng.gauss(0.0, spread) for _ in range(n)]


def column_loss(bn_function, xs, gamma, beta, upstream):
    """L = sum_b c_b * y_b: a random linear use of the outputs, so every dy_b = c_b."""
    ys = bn_function(values(xs), Value(gamma), Value(beta))
    return sum(c * y.data for c, y in zip(upstream, ys))


def graph_grads(bn_function, xs, gamma, beta, upstream):
    column, g, b = values(xs), Value(gamma), Value(beta)
    ys = bn_function(column, g, b)
    bn.naive_dot(ys, values(upstream)).backward()
    return grads(column) + [g.grad, b.grad], [y.data for y in ys]


def finite_difference_grads(bn_function, xs, gamma, beta, upstream):
    out = []
    for i in range(len(xs)):
        up = xs[:i] + [xs[i] + STEP] + xs[i + 1:]
        down = xs[:i] + [xs[i] - STEP] + xs[i + 1:]
        out.append((column_loss(bn_function, up, gamma, beta, upstream)
                    - column_loss(bn_function, down, gamma, beta, upstream)) / (2 * STEP))
    for which in ("gamma", "beta"):
        g_up, b_up = (gamma + STEP, beta) if which == "gamma" else (gamma, beta + STEP)
        g_down, b_down = (gamma - STEP, beta) if which == "gamma" else (gamma, beta - STEP)
        out.append((column_loss(bn_function, xs, g_up, b_up, upstream)
                    - column_loss(bn_function, xs, g_down, b_down, upstream)) / (2 * STEP))
    return out


# --- fused nodes against their naive forms --------------------------------------------------

@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_batch_equals_naive_dots_in_values_and_gradients(with_bias):
    rng = random.Random(2)
    raw_w = [[rng.gauss(0, 1) for _ in range(5)] for _ in range(4)]
    raw_b = [rng.gauss(0, 1) for _ in range(4)]
    raw_x = [[rng.gauss(0, 1) for _ in range(5)] for _ in range(3)]
    mix = [[rng.gauss(0, 1) for _ in range(4)] for _ in range(3)]   # a random downstream use

    def build():
        return ([values(r) for r in raw_w], values(raw_b), [values(r) for r in raw_x])

    w1, b1, x1 = build()
    out1 = bn.linear_batch(x1, w1, b1 if with_bias else None)
    w2, b2, x2 = build()
    out2 = [[bn.naive_dot(row, x) + (b if with_bias else 0.0) for row, b in zip(w2, b2)]
            for x in x2]
    for out in (out1, out2):
        total = Value(0.0)
        for row, m in zip(out, mix):
            total = total + bn.naive_dot(row, values(m))
        total.backward()
    assert close([o.data for row in out1 for o in row], [o.data for row in out2 for o in row])
    flat = [v for rows in (w1, x1) for row in rows for v in row] + b1
    flat2 = [v for rows in (w2, x2) for row in rows for v in row] + b2
    assert close(grads(flat), grads(flat2))


def test_fused_mean_equals_naive_mean():
    raw = [0.3, -1.2, 2.5, 4.0]
    a, b = values(raw), values(raw)
    fused = bn.mean(a)
    naive = sum(b[1:], b[0]) * (1.0 / len(b))
    (fused * 3.0).backward()
    (naive * 3.0).backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(a), grads(b))


def naive_cross_entropy(logits, target):
    top = max(z.data for z in logits)
    exps = [(z - top).exp() for z in logits]
    total = sum(exps[1:], exps[0])
    return -((exps[target] / total).log())


def output_side(hidden_rows, w, b, targets, fused):
    """The batch's mean loss, from output_loss() or from its unfused form (naive ops)."""
    if fused:
        return bn.output_loss(hidden_rows, w, b, targets)
    losses = [naive_cross_entropy([bn.naive_dot(row, x) + bias for row, bias in zip(w, b)], t)
              for x, t in zip(hidden_rows, targets)]
    return sum(losses[1:], losses[0]) * (1.0 / len(losses))


def test_output_loss_equals_the_unfused_output_side_and_finite_differences():
    rng = random.Random(5)
    raw_w = [[rng.gauss(0, 1) for _ in range(4)] for _ in range(5)]
    raw_b = [rng.gauss(0, 1) for _ in range(5)]
    raw_h = [[rng.gauss(0, 1) for _ in range(4)] for _ in range(3)]
    targets = [2, 0, 4]

    def build():
        return [values(r) for r in raw_w], values(raw_b), [values(r) for r in raw_h]

    measured = []
    for fused in (True, False):
        w, b, h = build()
        loss = output_side(h, w, b, targets, fused)
        loss.backward()
        measured.append((loss.data, grads([v for rows in (w, h) for r in rows for v in r] + b)))
    (loss_f, grads_f), (loss_n, grads_n) = measured
    assert math.isclose(loss_f, loss_n, rel_tol=1e-12)
    assert close(grads_f, grads_n)
    # central finite differences of the fused node's value, for every input
    flat = [v for rows in (raw_w, raw_h) for r in rows for v in r] + raw_b
    n_w, n_h = len(raw_w) * 4, len(raw_h) * 4

    def loss_at(numbers):
        w = [values(numbers[i * 4:i * 4 + 4]) for i in range(5)]
        h = [values(numbers[n_w + i * 4:n_w + i * 4 + 4]) for i in range(3)]
        return bn.output_loss(h, w, values(numbers[n_w + n_h:]), targets).data

    numeric = []
    for i in range(len(flat)):
        up, down = list(flat), list(flat)
        up[i] += STEP
        down[i] -= STEP
        numeric.append((loss_at(up) - loss_at(down)) / (2 * STEP))
    assert close(grads_f, numeric, tol=1e-6)


def test_cross_entropy_is_stable_for_huge_logits():
    loss = bn.cross_entropy(values([1000.0, 1001.0, 999.0, -1000.0]), 1)
    assert math.isclose(loss.data, math.log(1 + math.exp(-1) + math.exp(-2)), rel_tol=1e-12)
    assert math.isfinite(bn.cross_entropy(values([5000.0, -5000.0]), 1).data)


# --- batch norm: three forms, one function --------------------------------------------------

COLUMNS = [(6, 2.0, 0.7), (32, 1.0, -3.0), (2, 0.5, 0.0), (5, 0.05, 10.0)]


@pytest.mark.parametrize("n,spread,offset", COLUMNS)
@pytest.mark.parametrize("form", ["batchnorm_from_ops", "batchnorm_fused"])
def test_batchnorm_gradients_match_finite_differences(form, n, spread, offset):
    rng = random.Random(n)
    xs = random_column(rng, n, spread, offset)
    gamma, beta = 1.3, -0.4
    upstream = [rng.gauss(0, 1) for _ in range(n)]
    function = getattr(bn, form)
    analytic, _ = graph_grads(function, xs, gamma, beta, upstream)
    numeric = finite_difference_grads(function, xs, gamma, beta, upstream)
    for a, b in zip(analytic, numeric):
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6), (a, b)


@pytest.mark.parametrize("n,spread,offset", COLUMNS)
def test_fused_batchnorm_equals_batchnorm_from_ops(n, spread, offset):
    rng = random.Random(10 + n)
    xs = random_column(rng, n, spread, offset)
    upstream = [rng.gauss(0, 1) for _ in range(n)]
    fused_grads, fused_out = graph_grads(bn.batchnorm_fused, xs, 0.8, 0.3, upstream)
    ops_grads, ops_out = graph_grads(bn.batchnorm_from_ops, xs, 0.8, 0.3, upstream)
    assert close(fused_out, ops_out, 1e-12)
    assert close(fused_grads, ops_grads, 1e-9)


@pytest.mark.parametrize("n,spread,offset", COLUMNS)
def test_hand_derived_backward_equals_the_graph(n, spread, offset):
    rng = random.Random(20 + n)
    xs = random_column(rng, n, spread, offset)
    dys = [rng.gauss(0, 1) for _ in range(n)]
    dxs, dgamma, dbeta = bn.batchnorm_backward_by_hand(xs, 1.7, dys)
    from_graph, _ = graph_grads(bn.batchnorm_from_ops, xs, 1.7, 0.2, dys)
    assert close(dxs + [dgamma, dbeta], from_graph, 1e-9)
    # What the three terms promise: the x-gradients sum to 0, and their dot product with
    # x_hat is 0 up to eps: exactly gamma * s * dgamma * eps / (var + eps).
    mu, var = bn.column_stats(xs)
    s = (var + bn.BN_EPS) ** -0.5
    x_hat = [(x - mu) * s for x in xs]
    scale = max(abs(d) for d in dxs)
    assert abs(sum(dxs)) < 1e-9 * scale * n
    along_x_hat = sum(d * h for d, h in zip(dxs, x_hat))
    assert along_x_hat == pytest.approx(1.7 * s * dgamma * bn.BN_EPS / (var + bn.BN_EPS),
                                        rel=1e-6, abs=1e-9 * scale * n)


def test_batchnorm_output_has_mean_beta_and_spread_gamma():
    rng = random.Random(3)
    xs = random_column(rng, 32, 3.0, 5.0)
    out = [y.data for y in bn.batchnorm_fused(values(xs), Value(2.0), Value(-1.0))]
    mu, var = bn.column_stats(out)
    assert mu == pytest.approx(-1.0, abs=1e-12)
    assert var == pytest.approx(4.0, rel=1e-5)   # gamma^2 * var / (var + eps)


def test_batchnorm_ignores_the_scale_of_its_input():
    # y(c * x) = y(x) for c > 0 (exactly when eps = 0): the weights feeding batch norm can grow
    # without changing what the layer computes.
    rng = random.Random(4)
    xs = random_column(rng, 16)
    base = [y.data for y in bn.batchnorm_fused(values(xs), Value(1.0), Value(0.0))]
    scaled = [y.data for y in bn.batchnorm_fused(values([7.0 * x for x in xs]),
                                                 Value(1.0), Value(0.0))]
    assert close(base, scaled, 1e-5)


def test_a_batch_of_one_outputs_beta_whatever_the_input():
    for x in (-3.0, 0.2, 50.0):
        (y,) = bn.batchnorm_fused([Value(x)], Value(1.5), Value(0.25))
        assert y.data == pytest.approx(0.25, abs=1e-12)


def test_fused_training_graph_equals_graph_from_ops_and_is_smaller(monkeypatch):
    random.seed(0)
    net = bn.build_network(bn.initial_weights(), use_bn=True)
    params = bn.parameters(net)
    batch = [((0, 0, 5), 13), ((0, 5, 13), 13), ((5, 13, 13), 1), ((13, 13, 1), 0)]
    fused, fused_stats = bn.batch_loss(net, batch)
    fused.backward()
    fused_grads = grads(params)
    for p in params:
        p.grad = 0.0
    monkeypatch.setattr(bn, "BN_FUSED", False)
    from_ops, ops_stats = bn.batch_loss(net, batch)
    from_ops.backward()
    assert from_ops.data == pytest.approx(fused.data, rel=1e-12)
    assert close(grads(params), fused_grads, 1e-9)
    # The batch statistics agree to rounding, not bit for bit: the fused batch norm takes its
    # mean and variance with sum(), the one from ops adds one + at a time, and since Python
    # 3.12 sum() of floats is compensated. Its outputs then differ in the last bits, and so do
    # the next layer's inputs and statistics. On 3.10 and 3.11 they happen to be identical.
    for (fused_mu, fused_var), (ops_mu, ops_var) in zip(fused_stats, ops_stats):
        assert close(fused_mu, ops_mu, 1e-12) and close(fused_var, ops_var, 1e-12)
    assert bn.count_nodes(from_ops) > 1.5 * bn.count_nodes(fused)


# --- the whole networks ---------------------------------------------------------------------

@pytest.mark.parametrize("use_bn", [False, True])
def test_whole_network_gradient_matches_finite_differences(use_bn):
    random.seed(1)
    net = bn.build_network(bn.initial_weights(), use_bn=use_bn)
    batch = [((0, 0, 5), 13), ((0, 5, 13), 13), ((5, 13, 13), 1), ((3, 9, 1), 0),
             ((0, 0, 0), 20)]
    loss, _ = bn.batch_loss(net, batch)
    loss.backward()
    rng = random.Random(5)
    # Parameters from every part of the network the loss uses: the embedding of a letter in
    # the batch, each hidden layer's weights and its biases (plain) or gammas and betas (BN),
    # the output layer.
    chosen = rng.sample(net["embed"][13], 3)
    for layer in net["layers"]:
        chosen += rng.sample([p for row in layer["weights"] for p in row], 6)
        for key in ("biases", "gammas", "betas"):
            chosen += rng.sample(layer.get(key, []), 3) if key in layer else []
    chosen += rng.sample([p for row in net["out_weights"] for p in row], 6)
    chosen += rng.sample(net["out_biases"], 3)
    for p in chosen:
        analytic, original = p.grad, p.data
        p.data = original + 1e-5
        up = bn.batch_loss(net, batch)[0].data
        p.data = original - 1e-5
        down = bn.batch_loss(net, batch)[0].data
        p.data = original
        assert math.isclose(analytic, (up - down) / 2e-5, rel_tol=1e-4, abs_tol=1e-8)
    assert sum(abs(p.grad) > 1e-6 for p in chosen) > 0.8 * len(chosen)


@pytest.mark.parametrize("use_bn", [False, True])
def test_float_forward_equals_the_value_graph_in_training_mode(use_bn):
    random.seed(2)
    net = bn.build_network(bn.initial_weights(), use_bn=use_bn)
    batch = [((0, 0, 5), 13), ((0, 5, 13), 13), ((5, 13, 13), 1), ((13, 13, 1), 0)]
    loss, batch_stats = bn.batch_loss(net, batch)
    log_probs, summary, used = bn.forward_floats(bn.snapshot(net), batch)
    assert bn.mean_loss(log_probs, batch) == pytest.approx(loss.data, rel=1e-12)
    assert len(summary) == bn.NUM_HIDDEN_LAYERS
    if use_bn:
        for (m1, v1), (m2, v2) in zip(batch_stats, used):
            assert close(m1, m2, 1e-12) and close(v1, v2, 1e-12)


def test_untrained_bn_network_in_inference_mode_scores_like_the_plain_one():
    random.seed(3)
    weights = bn.initial_weights()
    plain = bn.snapshot(bn.build_network(weights, use_bn=False))
    normed = bn.snapshot(bn.build_network(weights, use_bn=True))
    examples = [((0, 0, 5), 13), ((0, 5, 13), 13), ((5, 13, 13), 1)]
    a, _, _ = bn.forward_floats(plain, examples)
    b, _, _ = bn.forward_floats(normed, examples, bn.running_stats(normed))
    assert bn.mean_loss(a, examples) == pytest.approx(bn.mean_loss(b, examples), rel=1e-5)


def test_inference_mode_does_not_depend_on_the_rest_of_the_batch():
    random.seed(4)
    net = bn.build_network(bn.initial_weights(), use_bn=True)
    snap = bn.snapshot(net)
    # Running statistics that are not the defaults, so the check is not trivial
    fixed = [([0.3] * bn.HIDDEN, [2.0] * bn.HIDDEN) for _ in range(bn.NUM_HIDDEN_LAYERS)]
    example = ((5, 13, 13), 1)
    others_a = [((0, 0, 3), 4), ((1, 2, 3), 5)]
    others_b = [((9, 9, 9), 9), ((0, 0, 0), 7), ((4, 4, 4), 2)]
    eval_a = bn.forward_floats(snap, [example] + others_a, fixed)[0][0]
    eval_b = bn.forward_floats(snap, [example] + others_b, fixed)[0][0]
    assert eval_a == eval_b
    train_a = bn.forward_floats(snap, [example] + others_a)[0][0]
    train_b = bn.forward_floats(snap, [example] + others_b)[0][0]
    assert max(abs(x - y) for x, y in zip(train_a, train_b)) > 1e-3


def test_running_statistics_update_by_hand():
    net = {"layers": [{"running_mean": [0.0, 1.0], "running_var": [1.0, 4.0]}]}
    batch_stats = [([2.0, -1.0], [3.0, 0.5])]   # biased batch variances
    bn.update_running_stats(net, batch_stats)
    b = bn.BATCH_SIZE
    assert bn.BN_MOMENTUM == 0.1
    assert net["layers"][0]["running_mean"] == pytest.approx([0.2, 0.9 - 0.1])
    assert net["layers"][0]["running_var"] == pytest.approx(
        [0.9 + 0.1 * 3.0 * b / (b - 1), 0.9 * 4.0 + 0.1 * 0.5 * b / (b - 1)])


# --- the helpers behind the criteria --------------------------------------------------------

def test_stat_errors_by_hand():
    truth = [([1.0, 0.0], [4.0, 1.0])]
    estimate = [([2.0, 0.5], [5.0, 0.5])]
    mean_error, var_error = bn.stat_errors(estimate, truth)
    assert mean_error == pytest.approx((1.0 / 2.0 + 0.5 / 1.0) / 2)
    assert var_error == pytest.approx((1.0 / 4.0 + 0.5 / 1.0) / 2)


def test_steps_to_target(monkeypatch):
    monkeypatch.setattr(bn, "TARGET_WINDOW", 2)
    monkeypatch.setattr(bn, "TARGET_LOSS", 2.0)
    assert bn.steps_to_target([3.0, 3.0, 1.5, 2.6, 1.0]) == 5   # only (2.6 + 1.0) / 2 < 2
    assert bn.steps_to_target([3.0, 1.5, 2.6]) == 4             # 2.25 and 2.05: never
    assert bn.steps_to_target([1.0, 1.0]) == 2


def test_column_stats_uses_the_biased_variance():
    mu, var = bn.column_stats([1.0, 2.0, 3.0, 6.0])
    assert mu == 3.0
    assert var == pytest.approx((4 + 1 + 0 + 9) / 4)
