"""Fixtures every test file shares."""
import gc

import pytest


@pytest.fixture(autouse=True)
def garbage_collector_back_on():
    # Scripts that build Value graphs switch Python's cycle collector off in main() (their
    # graphs hold no cycles; see CONTRIBUTING.md). A test that calls main() in this process
    # must not leave it off for the tests after it.
    yield
    gc.enable()
