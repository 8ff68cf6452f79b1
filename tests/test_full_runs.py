"""Full runs: every implemented script, run once as a user would, meets every criterion.

Each script runs in a subprocess from an empty temporary working directory with the default
settings, under the spec's 600 s slowest-machine guard. The checks come from
docs/implementation.md and are asserted on the measurements this same run returned.
"""
import json
import os
import subprocess
import sys

import pytest

from support import ROOT, implemented_specs

RUNNER = ROOT / "tests" / "run_script.py"
TIMEOUT_SECONDS = 600


@pytest.mark.slow
@pytest.mark.parametrize("spec", implemented_specs(), ids=lambda s: s.name)
def test_full_run_meets_every_criterion(spec, tmp_path):
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    results_path = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(ROOT / spec.path), str(results_path)],
        cwd=workdir, capture_output=True, text=True, timeout=TIMEOUT_SECONDS,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, f"{spec.path} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert list(workdir.iterdir()) == [], "a run must not write into its working directory"
    assert "criterion" in proc.stdout, "the run must end with its criteria table"

    measured = json.loads(results_path.read_text(encoding="utf-8"))
    assert spec.checks, f"{spec.path} has no criteria in docs/implementation.md"
    report, failures = [], []
    for check in spec.checks:
        left, right, passed = check.evaluate(measured)
        report.append(f"{check}: measured {left!r} vs {right!r} -> {'pass' if passed else 'FAIL'}")
        if not passed:
            failures.append(report[-1])
    print("\n".join(report))
    assert not failures, "\n".join(failures)
