"""pytest wiring for the system tests; the helpers themselves are in helpers.py."""
import pytest

from helpers import cleanup_processes


@pytest.fixture(autouse=True)
def _reap_processes():
    """Every test ends with no process of its own left running."""
    yield
    cleanup_processes()


@pytest.fixture(autouse=True, scope="session")
def _reap_persistent_processes():
    """Processes started with persistent=True end with the session at the latest."""
    yield
    cleanup_processes(everything=True)


def pytest_collection_modifyitems(config, items):
    """RETE_TEST_ORDER=reverse runs every module's tests in reverse order
    (modules themselves in reverse too): a test that passes only after the
    ones before it (state left in a module-scoped fixture) shows up. Tests
    must pass in any order; `make test` runs them in file order, spread over
    pytest-xdist workers a module at a time."""
    import os
    if os.environ.get("RETE_TEST_ORDER") == "reverse":
        items.reverse()
