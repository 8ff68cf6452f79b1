"""Broken versions: every criterion table must tell a broken script from a working one.

Each entry in docs/implementation.md lists broken versions of its script: the classic bugs of
its algorithm (a mask off by one, a gradient stopped, a sign flipped), each written as text
in the script and its replacement. A criterion table that a broken version passes proves
nothing to the learner who reads it, so the slow test here copies the script, puts the bug
in, runs the copy as a user would and asserts that:
- it runs to the end (a crash is not a verdict a learner can read; a NaN must reach the
  table, where it fails);
- its own printed table says FAIL, and at least one of the spec's checks fails on what its
  main() returned;
- when the entry shortens the run (its settings column), the failing check is one that the
  working script passes at the same settings, so the short run still separates the two.

The fast tests check that every broken version still applies: each replaced text occurs
exactly once in the script, so a later edit cannot silently turn a broken version off.
"""
import hashlib
import json
import os

import pytest

from support import (ROOT, all_broken_versions, failed_checks, implemented_specs,
                     load_script, run_as_user)

MINIMUM_PER_SCRIPT = 2


@pytest.mark.parametrize("spec", implemented_specs(), ids=lambda s: s.name)
def test_every_script_lists_broken_versions(spec):
    assert len(spec.broken) >= MINIMUM_PER_SCRIPT, (
        f"{spec.path}: list at least {MINIMUM_PER_SCRIPT} broken versions in its entry")
    names = [b.name for b in spec.broken]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("broken", all_broken_versions(), ids=lambda b: b.id)
def test_broken_version_still_applies(broken):
    source = (ROOT / broken.script).read_text(encoding="utf-8")
    changed = broken.apply(source)  # raises unless each text occurs exactly once
    assert changed != source
    compile(changed, broken.script, "exec")
    module = load_script(broken.script)
    for constant in broken.settings:
        assert hasattr(module, constant), f"{broken.id}: no module constant {constant}"
    assert broken.scores, f"{broken.id}: record in the entry what it scores"


def working_failures(spec, settings, tmp_path_factory):
    """The checks (as text) the working script fails at the given shortened settings.

    Several broken versions of a script share one setting, so the working run is made once and
    its verdicts kept in a file that every worker of this session reads (the folder above a
    worker's own temporary folder is the session's), keyed by the script's text and settings.
    """
    basetemp = tmp_path_factory.getbasetemp()
    shared = basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp
    source = (ROOT / spec.path).read_bytes()
    key = hashlib.sha256(source + repr(sorted(settings.items())).encode()).hexdigest()[:16]
    cached = shared / f"working-{spec.name}-{key}.json"
    if cached.exists():
        return set(json.loads(cached.read_text(encoding="utf-8")))
    run = run_as_user(ROOT / spec.path, tmp_path_factory.mktemp("working"), settings)
    failing = sorted(str(check) for check in failed_checks(spec.checks, run.measured)[1])
    partial = cached.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps(failing), encoding="utf-8")
    os.replace(partial, cached)  # a worker never reads a half-written file
    return set(failing)


@pytest.mark.slow
@pytest.mark.broken
@pytest.mark.parametrize("broken", all_broken_versions(), ids=lambda b: b.id)
def test_broken_version_fails_a_criterion(broken, tmp_path, tmp_path_factory):
    spec = next(s for s in implemented_specs() if s.path == broken.script)
    source = (ROOT / broken.script).read_text(encoding="utf-8")
    copy = tmp_path / ("broken_" + (ROOT / broken.script).name)
    copy.write_text(broken.apply(source), encoding="utf-8")
    (tmp_path / "run").mkdir()

    run = run_as_user(copy, tmp_path / "run", broken.settings)
    report, failures = failed_checks(spec.checks, run.measured)
    print(f"{broken.id} (entry records: {broken.scores})")
    print("\n".join(report))
    assert failures, f"{broken.id} passes every criterion"
    assert "FAIL" in run.stdout, f"{broken.id}: the script's own table must say FAIL"
    if broken.settings:
        separating = ({str(check) for check in failures}
                      - working_failures(spec, broken.settings, tmp_path_factory))
        assert separating, (f"{broken.id}: at {broken.settings} the working script fails the "
                            f"same checks, so the short run does not separate them")
