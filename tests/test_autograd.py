"""Every script's Value class against the canonical interface (docs/autograd-interface.md).

Each operation is checked against central finite differences at several points, the test
vectors are read from the interface document itself, and backward() must survive graphs far
deeper than Python's recursion limit.
"""
import math
import re

import pytest

from support import ROOT, implemented_specs, load_script

VALUE_SCRIPTS = [s for s in implemented_specs() if hasattr(load_script(s.path), "Value")]
STEP = 1e-6


@pytest.fixture(params=VALUE_SCRIPTS, ids=lambda s: s.name)
def Value(request):
    return load_script(request.param.path).Value


# Each entry: name -> (function of Values and plain numbers, points to test it at).
UNARY = {
    "neg": (lambda a: -a, [-1.3, 0.4, 2.0]),
    "pow3": (lambda a: a ** 3, [-1.3, 0.4, 2.0]),
    "pow-0.5": (lambda a: a ** -0.5, [0.3, 1.7]),
    "tanh": (lambda a: a.tanh(), [-2.0, -0.1, 0.7]),
    "exp": (lambda a: a.exp(), [-3.0, 0.0, 1.5]),
    "relu": (lambda a: a.relu(), [-1.0, 0.5, 2.5]),
    "log": (lambda a: a.log(), [1e-3, 0.5, 4.0]),
    "log-clamped": (lambda a: a.log(), [-2.0, -1e-3]),  # flat below the 1e-10 clamp
    "radd": (lambda a: 3.0 + a, [-1.0, 2.0]),
    "rsub": (lambda a: 3.0 - a, [-1.0, 2.0]),
    "rmul": (lambda a: 3.0 * a, [-1.0, 2.0]),
    "rtruediv": (lambda a: 3.0 / a, [-1.5, 2.0]),
}
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "truediv": lambda a, b: a / b,
    "composite": lambda a, b: ((a * b).tanh() + (a - b).exp() * 0.1) / (b * b + 1.0),
}
BINARY_POINTS = [(0.7, -1.2), (-2.0, 0.5), (1.5, 2.5)]


def numeric_derivative(f, x):
    """Central difference (f(x + h) - f(x - h)) / 2h of a function of one float."""
    return (f(x + STEP) - f(x - STEP)) / (2 * STEP)


def assert_close(actual, expected, tol=1e-5):
    assert math.isclose(actual, expected, rel_tol=tol, abs_tol=tol), (actual, expected)


@pytest.mark.parametrize("op", UNARY, ids=str)
def test_unary_operation_matches_finite_differences(Value, op):
    f, points = UNARY[op]
    for x in points:
        a = Value(x)
        out = f(a)
        out.backward()
        assert_close(out.data, f(Value(x)).data)
        assert_close(a.grad, numeric_derivative(lambda t: f(Value(t)).data, x))


@pytest.mark.parametrize("op", BINARY, ids=str)
def test_binary_operation_matches_finite_differences(Value, op):
    f = BINARY[op]
    for x, y in BINARY_POINTS:
        a, b = Value(x), Value(y)
        f(a, b).backward()
        assert_close(a.grad, numeric_derivative(lambda t: f(Value(t), Value(y)).data, x))
        assert_close(b.grad, numeric_derivative(lambda t: f(Value(x), Value(t)).data, y))


def interface_test_vectors():
    text = (ROOT / "docs" / "autograd-interface.md").read_text(encoding="utf-8")
    section = text.split("## Test vectors", 1)[1]
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", section, re.M)
    return [(expr, float(v), float(ga), float(gb)) for expr, v, ga, gb in rows]


def test_interface_document_has_test_vectors():
    assert len(interface_test_vectors()) >= 20


@pytest.mark.parametrize("vector", interface_test_vectors(), ids=lambda v: v[0])
def test_interface_test_vector(Value, vector):
    expression, value, grad_a, grad_b = vector
    a, b = Value(2.0), Value(-3.0)
    out = eval(expression, {}, {"a": a, "b": b})  # expressions come from our own doc
    out.backward()
    assert_close(out.data, value, 1e-6)
    assert_close(a.grad, grad_a, 1e-6)
    assert_close(b.grad, grad_b, 1e-6)


def test_backward_survives_graphs_deeper_than_the_recursion_limit(Value):
    x = Value(1.0)
    out = x
    for _ in range(50_000):
        out = out * 1.0 + 0.0
    out.backward()
    assert x.grad == 1.0


def recursive_topological_order(root):
    """The short recursive sort that docs/autograd-interface.md warns against."""
    order, visited = [], set()

    def visit(node):
        if node not in visited:
            visited.add(node)
            for child in node._children:
                visit(child)
            order.append(node)

    visit(root)
    return order


def test_the_documented_deep_graph_breaks_a_recursive_sort_but_not_backward(Value):
    # The example in docs/autograd-interface.md: a loss summed with Python's sum().
    losses = [Value(0.5) * 2 for _ in range(5000)]
    total = sum(losses)
    with pytest.raises(RecursionError):
        recursive_topological_order(total)
    total.backward()
    assert total.data == 5000.0
    assert all(loss.grad == 1.0 for loss in losses)


def test_shared_node_accumulates_gradient_once_per_use(Value):
    x = Value(3.0)
    y = x * x            # x used twice by one node
    z = y + x * 2.0      # and once more elsewhere
    z.backward()
    assert z.data == 15.0
    assert x.grad == 2 * 3.0 + 2.0
