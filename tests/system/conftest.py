"""pytest wiring for the system tests; the helpers themselves are in helpers.py.

Every process a test starts through helpers.start_process() is stopped
(SIGTERM first) and its log scanned for sanitizer reports when the test ends;
a report, or a crash, fails the test (an error at teardown naming the
process). See docs/testing.md."""
import pytest

from helpers import cleanup_processes


@pytest.fixture(autouse=True)
def _reap_processes():
    """Every test ends with no process of its own left running, and with no
    sanitizer report from any process it started (or from a module fixture's
    process that is still running)."""
    yield
    cleanup_processes()


@pytest.fixture(autouse=True, scope="module")
def _reap_persistent_processes():
    """Processes started with persistent=True (module fixtures) are stopped
    and scanned when their module ends; the report then fails the module's
    last test."""
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
