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

An entry also lists its broken versions: copies of the script with one classic bug put in,
each of which must fail at least one criterion (tests/test_broken_versions.py runs them):

    | broken version | replace | with | settings | what it scores |
    |---|---|---|---|---|
    | causal mask dropped | `keys[:t + 1]` | `keys` | full | `masked_max_error` 0.41: FAIL |

Rows with the same name are one broken version with several edits, applied in order. Inside
a cell, ⏎ stands for a line break (a markdown cell holds one line). Each
`replace` text must occur exactly once in the script, so an edit to the script cannot silently
turn a broken version off. `settings` is `full` (the script as a user runs it) or module
constants to shorten the run, such as `NUM_STEPS=200, SAMPLES=(1, 2)`.

The challenges in docs/challenges/<script>.md are changes of the same kind, each with the
outcome its answer states (tests/test_challenges.py reads them with read_challenges()).
"""
import ast
import importlib.util
import json
import math
import operator
import os
import re
import subprocess
import sys
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
NEWLINE = "\u23ce"  # ⏎ in a broken version's cell stands for a line break
CHECK = re.compile(r"`(\w+) (<=|>=|==|<|>) ([\w.+-]+)`")


@dataclass(frozen=True)
class Check:
    key: str
    op: str
    target: object  # a float threshold, or the name of another measured key

    def evaluate(self, measured):
        """Return (left value, right value, passed) for a dict of measured values.

        A non-finite value fails every check: NaN compares False with anything, but inf would
        pass a ">" check, so finiteness is asked for explicitly (as each script's table does).
        """
        left = measured[self.key]
        right = measured[self.target] if isinstance(self.target, str) else self.target
        finite = math.isfinite(left) and math.isfinite(right)
        return left, right, finite and bool(OPERATORS[self.op](left, right))

    def __str__(self):
        target = self.target if isinstance(self.target, str) else f"{self.target:g}"
        return f"{self.key} {self.op} {target}"


@dataclass
class Change:
    """Edits to a copy of a script, and the module constants its run is given."""
    script: str               # e.g. "systems/microkv.py"
    name: str                 # what was changed, as the entry or challenge names it
    edits: list               # (text in the script, its replacement), applied in order
    settings: dict            # module constants to set before main(); {} means full settings

    @property
    def id(self):
        return Path(self.script).stem + ": " + self.name

    def apply(self, source):
        """The script's source with every edit made; each text must occur exactly once."""
        for old, new in self.edits:
            count = source.count(old)
            if count != 1:
                raise ValueError(f"{self.id}: `{old}` occurs {count} times in {self.script}, "
                                 "not once")
            source = source.replace(old, new)
        return source


@dataclass
class BrokenVersion(Change):
    scores: str = ""          # what the entry records that it scored


@dataclass
class Challenge(Change):
    """One exercise in docs/challenges/<script>.md: a change and the outcome its answer states.

    Each expectation is (key, verdict, threshold): verdict PASS or FAIL names a criterion of the
    spec (all of its checks pass, or at least one fails); an operator compares any value that
    main() returns with the threshold.
    """
    expectations: list = field(default_factory=list)


@dataclass
class ScriptSpec:
    path: str                 # e.g. "foundational/microgpt.py"
    status: str               # "implemented" or "planned"
    budget_seconds: float
    title: str = ""           # the one-line description after the heading's path
    checks: list = field(default_factory=list)
    broken: list = field(default_factory=list)

    @property
    def name(self):
        return Path(self.path).stem


def _table_cells(line):
    """A markdown table row split into cells; `\\|` stands for a pipe inside a cell."""
    row = line.strip().strip("|").replace("\\|", "\0")
    return [cell.strip().replace("\0", "|") for cell in row.split("|")]


def _code(cell):
    """The text inside a cell's code span: `text` or `` text `` (for text holding a backtick)."""
    for fence in ("`` ", "`"):
        closing = fence[::-1]
        if cell.startswith(fence) and cell.endswith(closing) and len(cell) > 2 * len(fence) - 1:
            return cell[len(fence):len(cell) - len(closing)]
    raise ValueError(f"expected a code span, found {cell!r}")


def _parse_settings(text):
    """`full` is {}; otherwise `NAME=value, NAME=value` with Python literals as values."""
    text = text.strip().strip("`")
    if text == "full":
        return {}
    call = ast.parse(f"dict({text})", mode="eval").body
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


def _tables(body):
    """Each markdown table in an entry as (header cells, list of row cells)."""
    tables, current = [], None
    for line in body.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = _table_cells(line)
        if current is None:
            current = (cells, [])
            tables.append(current)
        elif not all(set(c) <= set("-: ") for c in cells):
            current[1].append(cells)
    return tables


def _parse_broken(script, rows):
    versions = {}
    for name, old, new, settings, scores in rows:
        version = versions.get(name)
        if version is None:
            version = versions[name] = BrokenVersion(script, name, [],
                                                     _parse_settings(settings))
        elif _parse_settings(settings) != version.settings:
            raise ValueError(f"{script}: rows of '{name}' give different settings")
        version.edits.append((_code(old).replace(NEWLINE, "\n"),
                              _code(new).replace(NEWLINE, "\n")))
        version.scores = " ".join(part for part in (version.scores, scores) if part)
    return list(versions.values())


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
        checks, broken = [], []
        for header, rows in _tables(body):
            if header[0] == "criterion":
                for cells in rows:
                    for found in CHECK.finditer(cells[-1]):
                        key, op, target = found.groups()
                        checks.append(Check(key, op, _parse_target(target)))
            elif header[0] == "broken version":
                broken.extend(_parse_broken(match.group(1), rows))
        specs.append(ScriptSpec(match.group(1), status.group(1), float(budget.group(1)),
                                match.group(2).strip(), checks, broken))
    return specs


def implemented_specs():
    return [s for s in read_spec() if s.status == "implemented"]


def all_broken_versions():
    return [b for s in implemented_specs() for b in s.broken]


CHALLENGES = ROOT / "docs" / "challenges"
FENCE = re.compile(r"^```(change|expect)\n(.*?)^```", re.M | re.S)
EXPECTATION = re.compile(r"^(\w+) (PASS|FAIL|<=|>=|<|>)(?: ([-+\w.]+))?$")


def challenge_file(script):
    return CHALLENGES / (Path(script).stem + ".md")


def _parse_change(script, title, block):
    edits, settings, pending = [], {}, None
    for line in block.splitlines():
        field_name, _, value = line.partition(": ")
        value = value.replace(NEWLINE, "\n")
        if field_name == "replace" and pending is None:
            pending = value
        elif field_name == "with" and pending is not None:
            edits.append((pending, value))
            pending = None
        elif field_name == "settings":
            settings = _parse_settings(value)
        else:
            raise ValueError(f"{script}, challenge '{title}': cannot read `{line}` (expected "
                             "replace:, with: and settings: lines)")
    if pending is not None or not edits:
        raise ValueError(f"{script}, challenge '{title}': each replace: needs its with:")
    return edits, settings


def _parse_expectations(script, title, block):
    expectations = []
    for line in block.strip().splitlines():
        found = EXPECTATION.match(line.strip())
        verdict_line = found and found.group(2) in ("PASS", "FAIL")
        if not found or bool(verdict_line) == bool(found.group(3)):
            raise ValueError(f"{script}, challenge '{title}': cannot read `{line}` (expected "
                             "`key PASS`, `key FAIL` or `key < number`)")
        key, verdict, number = found.groups()
        expectations.append((key, verdict, float(number) if number else None))
    return expectations


def read_challenges(script):
    """The challenges of one script, in file order; [] if it has no challenge file.

    Each `## ` section is one challenge with one ```change block (replace:/with: lines, ⏎ for
    a line break, and a settings: line) and one ```expect block (one expectation a line).
    """
    path = challenge_file(script)
    if not path.exists():
        return []
    challenges = []
    for section in re.split(r"^## ", path.read_text(encoding="utf-8"), flags=re.M)[1:]:
        title = section.splitlines()[0].strip()
        blocks = {}
        for kind, block in FENCE.findall(section):
            if kind in blocks:
                raise ValueError(f"{path.name}, '{title}': more than one ```{kind} block")
            blocks[kind] = block
        if set(blocks) != {"change", "expect"}:
            raise ValueError(f"{path.name}, '{title}': needs a ```change and an ```expect block")
        edits, settings = _parse_change(script, title, blocks["change"])
        challenges.append(Challenge(script, title, edits, settings,
                                    _parse_expectations(script, title, blocks["expect"])))
    return challenges


def all_challenges():
    return [c for s in implemented_specs() for c in read_challenges(s.path)]


def unmet_expectations(challenge, checks, measured):
    """Each expectation as a report line, and those the measured values do not meet.

    A criterion the run fails must be among those the challenge says FAIL: an answer that
    leaves out a FAIL the learner will see in the table is not the whole answer.
    """
    report, unmet = [], []
    failing = {check.key for check in failed_checks(checks, measured)[1]}
    for key, verdict, number in challenge.expectations:
        if verdict in ("PASS", "FAIL"):
            met = (key in failing) == (verdict == "FAIL")
            shown = f"{key}: measured {measured.get(key)!r}, criterion " + (
                "fails" if key in failing else "passes")
        else:
            value = measured[key]
            met = math.isfinite(value) and OPERATORS[verdict](value, number)
            shown = f"{key} = {value!r} (stated {verdict} {number:g})"
        report.append(f"{shown} -> {'as stated' if met else 'NOT AS STATED'}")
        if not met:
            unmet.append((key, verdict, number))
    stated_failing = {key for key, verdict, _ in challenge.expectations if verdict == "FAIL"}
    for key in sorted(failing - stated_failing):
        report.append(f"{key}: criterion fails, but the answer does not say so -> NOT AS STATED")
        unmet.append((key, "FAIL", None))
    return report, unmet


RUNNER = ROOT / "tests" / "run_script.py"
RUN_TIMEOUT_SECONDS = 600  # the spec's slowest-machine guard for one run


@dataclass
class Run:
    stdout: str
    measured: dict


def run_as_user(script_path, tmp_path, settings=None):
    """Run a script's main() in a subprocess from an empty working directory, as a user would.

    Returns what it printed and the dict main() returned. The run must exit cleanly (a crash
    is not a verdict a learner can read), print its criteria table, and leave the working
    directory empty.
    """
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    results_path = tmp_path / "results.json"
    command = [sys.executable, str(RUNNER), str(script_path), str(results_path)]
    if settings:
        command.append(repr(settings))
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_SECONDS, env=dict(os.environ))
    assert proc.returncode == 0, (f"{script_path} failed:\n{proc.stdout[-3000:]}\n"
                                  f"{proc.stderr[-3000:]}")
    assert list(workdir.iterdir()) == [], "a run must not write into its working directory"
    assert "criterion" in proc.stdout, "the run must end with its criteria table"
    # json writes NaN and Infinity as bare words and reads them back as floats.
    return Run(proc.stdout, json.loads(results_path.read_text(encoding="utf-8")))


def failed_checks(checks, measured):
    """Each check as a report line, and the checks that failed."""
    report, failures = [], []
    for check in checks:
        left, right, passed = check.evaluate(measured)
        report.append(f"{check}: measured {left!r} vs {right!r} -> {'pass' if passed else 'FAIL'}")
        if not passed:
            failures.append(check)
    return report, failures


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
