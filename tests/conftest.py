import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import REPO  # noqa: E402

from mcdpf.kernels import get_num_threads_limit  # noqa: E402

# numba reads its thread-pool size again whenever it compiles, by default from the CPU
# affinity at that moment, and refuses to compile if that differs from the pool it started.
# Fix the size for the session (numba's own value, read once here) so that a sandbox or
# launcher narrowing the affinity mid-session cannot fail a later in-process compile.
os.environ.setdefault("NUMBA_NUM_THREADS", str(get_num_threads_limit()))


@pytest.fixture
def repo():
    return REPO


@pytest.fixture(scope="session")
def script_numba_cache(tmp_path_factory):
    """``NUMBA_CACHE_DIR`` for the tests that run the Slurm script, which sets one of its own
    (default ``$HOME/.cache/mcdpf-numba``): one directory for the session, so the first
    such test compiles the kernels and the others load them."""
    return os.environ.get("NUMBA_CACHE_DIR") or str(tmp_path_factory.mktemp("numba"))


def pytest_ignore_collect(collection_path, config):
    """tests/mpi runs under mpiexec (tests/test_mpi_suites.py launches it)."""
    if collection_path.name == "mpi" and not config.getoption("--with-mpi", default=False):
        return True
    return None
