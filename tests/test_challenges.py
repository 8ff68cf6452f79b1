"""Challenges: every answer in docs/challenges/ stays true while the scripts change.

Each script has a challenge file of three to five predict-then-run exercises. A challenge
names one change a learner makes to the script (text to find and its replacement, as a broken
version does), asks what will happen, and answers in a collapsed block with what the run
prints. The change and the answer's outcome are also written in two small fenced blocks that
these tests read:

    ```change
    replace: BETA = 0.1
    with: BETA = 0.0
    settings: full
    ```

    ```expect
    heldout_accuracy PASS
    kl_growth_z FAIL
    final_kl > 3
    ```

The slow test copies the script, makes the change, runs the copy as a user would (through the
same runner as the broken versions) and asserts every stated outcome: a criterion's verdict in
the table, or a range for any value main() returns. A criterion that fails must be one the
answer says fails, so the learner never meets a FAIL the answer did not mention. The fast
tests check that each change still applies to the script as it is now.
"""
import re

import pytest

from support import (ROOT, all_challenges, challenge_file, failed_checks, implemented_specs,
                     load_script, read_challenges, run_as_user, unmet_expectations)

FEWEST, MOST = 3, 5


@pytest.mark.parametrize("spec", implemented_specs(), ids=lambda s: s.name)
def test_every_script_has_challenges(spec):
    path = challenge_file(spec.path)
    assert path.exists(), f"{spec.path}: write {path.relative_to(ROOT)} (see CONTRIBUTING.md)"
    challenges = read_challenges(spec.path)
    assert FEWEST <= len(challenges) <= MOST, f"{path.name}: {len(challenges)} challenges"
    names = [c.name for c in challenges]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("spec", implemented_specs(), ids=lambda s: s.name)
def test_the_script_and_the_readme_point_to_the_challenges(spec):
    relative = str(challenge_file(spec.path).relative_to(ROOT))
    source = (ROOT / spec.path).read_text(encoding="utf-8")
    assert relative in source, f"{spec.path}: its closing lines should name {relative}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/challenges/" in readme


@pytest.mark.parametrize("spec", implemented_specs(), ids=lambda s: s.name)
def test_each_answer_is_hidden_until_asked(spec):
    # The outcome must sit inside the collapsed answer, after the question, or it spoils it.
    path = challenge_file(spec.path)
    if not path.exists():
        pytest.skip("no challenge file (test_every_script_has_challenges fails instead)")
    for section in re.split(r"^## ", path.read_text(encoding="utf-8"), flags=re.M)[1:]:
        title = section.splitlines()[0]
        change, details = section.find("```change"), section.find("<details>")
        expect, closing = section.find("```expect"), section.find("</details>")
        assert -1 < change < details < expect < closing, (
            f"{path.name}, '{title}': the change, then the question, then <details> holding "
            "the ```expect block")


@pytest.mark.parametrize("challenge", all_challenges(), ids=lambda c: c.id)
def test_challenge_still_applies(challenge):
    spec = next(s for s in implemented_specs() if s.path == challenge.script)
    source = (ROOT / challenge.script).read_text(encoding="utf-8")
    changed = challenge.apply(source)  # raises unless each text occurs exactly once
    assert changed != source
    compile(changed, challenge.script, "exec")
    module = load_script(challenge.script)
    for constant in challenge.settings:
        assert hasattr(module, constant), f"{challenge.id}: no module constant {constant}"
    criteria = {check.key for check in spec.checks}
    for key, verdict, _ in challenge.expectations:
        if verdict in ("PASS", "FAIL"):
            assert key in criteria, f"{challenge.id}: {key} is not one of the criteria"


@pytest.mark.slow
@pytest.mark.challenge
@pytest.mark.parametrize("challenge", all_challenges(), ids=lambda c: c.id)
def test_challenge_answer_holds(challenge, tmp_path):
    spec = next(s for s in implemented_specs() if s.path == challenge.script)
    source = (ROOT / challenge.script).read_text(encoding="utf-8")
    copy = tmp_path / (ROOT / challenge.script).name
    copy.write_text(challenge.apply(source), encoding="utf-8")
    (tmp_path / "run").mkdir()

    run = run_as_user(copy, tmp_path / "run", challenge.settings)
    report, unmet = unmet_expectations(challenge, spec.checks, run.measured)
    print(challenge.id)
    print("\n".join(report + failed_checks(spec.checks, run.measured)[0]))
    assert not unmet, f"{challenge.id}: the answer no longer holds: {unmet}"
    if any(verdict == "FAIL" for _, verdict, _ in challenge.expectations):
        assert "FAIL" in run.stdout, (
            f"{challenge.id}: the script's own table must show the FAIL the answer states")


def test_an_answer_that_does_not_hold_is_caught():
    from support import Challenge, Check
    checks = [Check("loss", "<", 2.5), Check("accuracy", ">", 0.9)]
    stated = Challenge("x/micro.py", "t", [("a", "b")], {},
                       [("loss", "FAIL", None), ("accuracy", "PASS", None), ("loss", ">", 3.0)])
    assert unmet_expectations(stated, checks, {"loss": 3.5, "accuracy": 0.95})[1] == []
    # the stated FAIL passes; the range misses; a NaN meets no range
    assert len(unmet_expectations(stated, checks, {"loss": 2.0, "accuracy": 0.95})[1]) == 2
    assert len(unmet_expectations(stated, checks, {"loss": float("nan"), "accuracy": 0.95})[1]) == 1
    # a criterion that fails without the answer saying so
    quiet = Challenge("x/micro.py", "t", [("a", "b")], {}, [("loss", ">", 3.0)])
    assert unmet_expectations(quiet, checks, {"loss": 3.5, "accuracy": 0.95})[1] == [
        ("loss", "FAIL", None)]
