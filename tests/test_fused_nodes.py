"""Every script's standard fused nodes against their naive forms, on values and gradients.

Many scripts copy microgpt's fused nodes: dot() beside naive_dot(), softmax(),
cross_entropy() and rms_scale()/rmsnorm(). Each is checked here, for every implemented
script that defines it, against the same computation built from the script's own Value
operations (and cross_entropy() against central finite differences too). Nodes that only one
script has are tested in that script's own test file.
"""
import math
import random

import pytest

from support import close, grads, implemented_specs, load_script, naive_softmax, values_of

MODULES = {s.name: load_script(s.path) for s in implemented_specs()}


def scripts_with(*names):
    """The scripts whose Value class and every named function exist."""
    return [name for name, module in MODULES.items()
            if hasattr(module, "Value") and all(hasattr(module, n) for n in names)]


@pytest.mark.parametrize("name", scripts_with("dot", "naive_dot"))
def test_fused_dot_equals_naive_dot_in_value_and_gradients(name):
    script = MODULES[name]
    values = values_of(script.Value)
    rng = random.Random(1)
    w1, x1 = values(rng.gauss(0, 1) for _ in range(16)), values(rng.gauss(0, 1) for _ in range(16))
    w2, x2 = values(v.data for v in w1), values(v.data for v in x1)
    fused, naive = script.dot(w1, x1), script.naive_dot(w2, x2)
    (fused * 1.7).backward()
    (naive * 1.7).backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(w1) + grads(x1), grads(w2) + grads(x2))
    assert len(fused._children) == 32


@pytest.mark.parametrize("name", scripts_with("softmax", "naive_dot"))
def test_fused_softmax_equals_naive_softmax(name):
    script = MODULES[name]
    values = values_of(script.Value)
    rng = random.Random(2)
    raw = [rng.gauss(0, 2) for _ in range(6)]
    mix = [rng.gauss(0, 1) for _ in range(6)]  # a random downstream use of the outputs
    z1, z2 = values(raw), values(raw)
    p1, p2 = script.softmax(z1), naive_softmax(z2)
    script.naive_dot(p1, values(mix)).backward()
    script.naive_dot(p2, values(mix)).backward()
    assert close([p.data for p in p1], [p.data for p in p2])
    assert close(grads(z1), grads(z2))


@pytest.mark.parametrize("name", scripts_with("cross_entropy"))
def test_fused_cross_entropy_equals_naive_and_finite_differences(name):
    script = MODULES[name]
    values = values_of(script.Value)
    raw, target = [0.3, -1.2, 2.2, 0.0, 0.9], 3
    z1, z2 = values(raw), values(raw)
    fused = script.cross_entropy(z1, target)
    naive = -(naive_softmax(z2)[target].log())
    fused.backward()
    naive.backward()
    assert math.isclose(fused.data, naive.data, rel_tol=1e-12)
    assert close(grads(z1), grads(z2))
    for j in range(len(raw)):
        def loss_at(t):
            shifted = raw[:j] + [t] + raw[j + 1:]
            return script.cross_entropy(values(shifted), target).data
        numeric = (loss_at(raw[j] + 1e-6) - loss_at(raw[j] - 1e-6)) / 2e-6
        assert math.isclose(z1[j].grad, numeric, rel_tol=1e-5, abs_tol=1e-7)


@pytest.mark.parametrize("name", scripts_with("rmsnorm", "rms_scale", "naive_dot"))
def test_fused_rmsnorm_equals_naive_rmsnorm(name):
    script = MODULES[name]
    values = values_of(script.Value)
    rng = random.Random(3)
    raw = [rng.gauss(0, 1) for _ in range(16)]
    mix = values(rng.gauss(0, 1) for _ in range(16))
    x1, x2 = values(raw), values(raw)
    y1 = script.rmsnorm(x1)
    mean_square = script.naive_dot(x2, x2) / len(x2)
    scale = (mean_square + 1e-5) ** -0.5
    y2 = [xi * scale for xi in x2]
    script.naive_dot(y1, mix).backward()
    script.naive_dot(y2, values(m.data for m in mix)).backward()
    assert close([y.data for y in y1], [y.data for y in y2])
    assert close(grads(x1), grads(x2))
