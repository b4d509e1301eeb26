"""pytest wiring for the system tests; the helpers themselves are in helpers.py."""
import pytest

from helpers import cleanup_processes


@pytest.fixture(autouse=True)
def _reap_processes():
    """Every test ends with no process of its own left running."""
    yield
    cleanup_processes()
