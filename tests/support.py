"""Shared helpers for the tests and the benchmark: read the spec, load scripts, check criteria.

docs/implementation.md is the single source of the success criteria and runtime budgets.
Each script entry there looks like this:

    ### `foundational/microgpt.py`: autoregressive language model
    - **Status:** implemented
    - **Budget:** 30 s
    | criterion | check |
    |---|---|
    | final training loss | `final_loss < 2.5` |

A check is `<key> <op> <number or other key>`. The tests assert every check on the values a
real run of the script returned, so the document and the tests cannot drift apart.
"""
import importlib.util
import math
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "docs" / "implementation.md"
TIERS = ("foundational", "alignment", "systems")

OPERATORS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}

HEADING = re.compile(r"^### `((?:foundational|alignment|systems)/\w+\.py)`:? *(.*)$", re.M)
CHECK = re.compile(r"`(\w+) (<=|>=|==|<|>) ([\w.+-]+)`")


@dataclass(frozen=True)
class Check:
    key: str
    op: str
    target: object  # a float threshold, or the name of another measured key

    def evaluate(self, measured):
        """Return (left value, right value, passed) for a dict of measured values."""
        left = measured[self.key]
        right = measured[self.target] if isinstance(self.target, str) else self.target
        return left, right, bool(OPERATORS[self.op](left, right))

    def __str__(self):
        target = self.target if isinstance(self.target, str) else f"{self.target:g}"
        return f"{self.key} {self.op} {target}"


@dataclass
class ScriptSpec:
    path: str                 # e.g. "foundational/microgpt.py"
    status: str               # "implemented" or "planned"
    budget_seconds: float
    title: str = ""           # the one-line description after the heading's path
    checks: list = field(default_factory=list)

    @property
    def name(self):
        return Path(self.path).stem


def _parse_target(text):
    try:
        return float(text)
    except ValueError:
        return text


def read_spec(spec_path=SPEC):
    """Parse docs/implementation.md into a list of ScriptSpec, in document order."""
    text = spec_path.read_text(encoding="utf-8")
    headings = list(HEADING.finditer(text))
    specs = []
    for i, match in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        body = text[match.end():end]
        # An entry ends at the next heading of any level.
        next_heading = re.search(r"^#{1,3} ", body, re.M)
        if next_heading:
            body = body[:next_heading.start()]
        status = re.search(r"\*\*Status:\*\*\s*(\w+)", body)
        budget = re.search(r"\*\*Budget:\*\*\s*([\d.]+)\s*s\b", body)
        if not (status and budget):
            raise ValueError(f"{match.group(1)}: entry needs **Status:** and **Budget:** lines")
        checks = []
        for line in body.splitlines():
            if not line.startswith("|"):
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            for found in CHECK.finditer(cells[-1]):
                key, op, target = found.groups()
                checks.append(Check(key, op, _parse_target(target)))
        specs.append(ScriptSpec(match.group(1), status.group(1), float(budget.group(1)),
                                match.group(2).strip(), checks))
    return specs


def implemented_specs():
    return [s for s in read_spec() if s.status == "implemented"]


def load_script(relative_path, module_name=None):
    """Import a script as a module without running its main()."""
    path = ROOT / relative_path
    name = module_name or "nomagic_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_checks(module):
    """The (key, op, target) triples a script's own CRITERIA table prints."""
    checks = set()
    for _description, key, op, target in module.CRITERIA:
        checks.add(Check(key, op, float(target) if not isinstance(target, str) else target))
    return checks


# --- Helpers the scripts' own tests share (fused nodes against their naive forms) ---


def values_of(value_class):
    """A function that turns plain numbers into a list of the given script's Values."""
    return lambda xs: [value_class(x) for x in xs]


def grads(vs):
    return [v.grad for v in vs]


def close(a, b, tol=1e-9):
    return all(math.isclose(x, y, rel_tol=tol, abs_tol=tol) for x, y in zip(a, b))


def naive_softmax(logits):
    """Softmax built from a script's own Value operations: the form its fused node replaces."""
    top = max(z.data for z in logits)
    exps = [(z - top).exp() for z in logits]
    total = exps[0]
    for e in exps[1:]:
        total = total + e
    return [e / total for e in exps]
