import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import REPO  # noqa: E402


@pytest.fixture
def repo():
    return REPO


def pytest_ignore_collect(collection_path, config):
    """tests/mpi runs under mpiexec (tests/test_mpi_suites.py launches it)."""
    if collection_path.name == "mpi" and not config.getoption("--with-mpi", default=False):
        return True
    return None
