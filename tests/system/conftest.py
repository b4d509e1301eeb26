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
