"""Fixtures and hooks every test file shares."""
import gc

import pytest

from support import implemented_specs

# A shortened run (a broken version or challenge with settings) is guessed to cost this share
# of its script's budget; only the order of the tests depends on the guess.
SHORTENED_SHARE = 0.3


@pytest.fixture(autouse=True)
def garbage_collector_back_on():
    # Scripts that build Value graphs switch Python's cycle collector off in main() (their
    # graphs hold no cycles; see CONTRIBUTING.md). A test that calls main() in this process
    # must not leave it off for the tests after it.
    yield
    gc.enable()


def pytest_collection_modifyitems(config, items):
    """Run the longest tests first.

    The slow tests are whole script runs of 1 to 60 s each, and the suite runs on one worker
    per core with work stealing (`--dist worksteal` in pyproject.toml): a worker that runs out
    of tests takes half of another's queue. If a long run came last, one worker would sit
    idle while the other finished it; with the longest first, the last tests left to share
    are the fast checks. The guess is each script's budget in docs/implementation.md (a share
    of it for a shortened run); the fast tests keep their order after the slow ones.
    """
    budgets = {spec.path: spec.budget_seconds for spec in implemented_specs()}

    def guessed_seconds(item):
        if item.get_closest_marker("slow") is None or not hasattr(item, "callspec"):
            return 0.0
        params = item.callspec.params
        run = params.get("broken") or params.get("challenge")
        if run is not None:
            share = SHORTENED_SHARE if run.settings else 1.0
            return share * budgets.get(run.script, 0.0)
        spec = params.get("spec")
        return budgets.get(spec.path, 0.0) if spec is not None else 0.0

    items.sort(key=guessed_seconds, reverse=True)  # stable: equal guesses keep their order
