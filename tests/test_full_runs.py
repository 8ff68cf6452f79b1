"""Full runs: every implemented script, run once as a user would, meets every criterion.

Each script runs in a subprocess from an empty temporary working directory with the default
settings, under the spec's 600 s slowest-machine guard. The checks come from
docs/implementation.md and are asserted on the measurements this same run returned.
"""
import pytest

from support import ROOT, failed_checks, implemented_specs, run_as_user


@pytest.mark.slow
@pytest.mark.parametrize("spec", implemented_specs(), ids=lambda s: s.name)
def test_full_run_meets_every_criterion(spec, tmp_path):
    assert spec.checks, f"{spec.path} has no criteria in docs/implementation.md"
    run = run_as_user(ROOT / spec.path, tmp_path)
    report, failures = failed_checks(spec.checks, run.measured)
    print("\n".join(report))
    assert not failures, "\n".join(line for line in report if line.endswith("FAIL"))
