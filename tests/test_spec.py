"""The spec, the scripts and the README agree with each other."""
from pathlib import Path

import pytest

from support import ROOT, TIERS, implemented_specs, load_script, read_spec, script_checks


def test_spec_lists_all_planned_scripts():
    specs = read_spec()
    assert len(specs) >= 21
    assert len({s.path for s in specs}) == len(specs)
    for spec in specs:
        assert spec.status in ("implemented", "planned"), spec.path
        assert spec.budget_seconds > 0, spec.path
        assert spec.checks, f"{spec.path} needs measurable criteria"


def test_every_script_on_disk_is_implemented_in_the_spec():
    on_disk = {str(p.relative_to(ROOT)) for tier in TIERS for p in (ROOT / tier).glob("*.py")}
    implemented = {s.path for s in implemented_specs()}
    assert on_disk == implemented


def test_total_budget_leaves_room_in_ci():
    # CI has 45 minutes for everything and runs the slow tests on two workers. The full runs
    # at their budgets may take at most a third of it, 15 minutes of wall time on 2 cores,
    # which leaves the rest for the broken versions, the challenges and the fast tests.
    assert sum(s.budget_seconds for s in read_spec()) <= 2 * 15 * 60


@pytest.mark.parametrize("spec", implemented_specs(), ids=lambda s: s.name)
def test_script_prints_the_same_criteria_as_the_spec(spec):
    module = load_script(spec.path)
    assert script_checks(module) == set(spec.checks)


@pytest.mark.parametrize("spec", implemented_specs(), ids=lambda s: s.name)
def test_readme_lists_the_script(spec):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"`{spec.path}`" in readme or Path(spec.path).name in readme
