"""Fixtures of the MPI suites (``tests/test_mpi_suites.py`` runs them under mpiexec)."""

import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="session")
def mpi_session_path():
    """A directory every rank shares, removed once the last rank is done with it.

    Not under pytest's own ``tmp_path``: each rank's pytest removes the older numbered
    ``pytest-N`` directories when its session ends, so a rank that finished the last test
    first could remove rank 0's directory while another rank was still writing to it
    (pytest-mpi's ``mpi_tmp_path`` is rank 0's ``tmp_path``; seen in CI at 4 ranks).
    """
    comm = MPI.COMM_WORLD
    path = Path(comm.bcast(tempfile.mkdtemp(prefix="mcdpf-mpi-tests-")
                           if comm.rank == 0 else None))
    yield path
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def shared_subdirectory(parent: Path, name: str) -> Path:
    """``parent / name`` (made safe as a file name), created by rank 0 before any rank uses it."""
    comm = MPI.COMM_WORLD
    path = parent / re.sub(r"[^\w.-]+", "_", name)
    if comm.rank == 0:
        path.mkdir(parents=True, exist_ok=True)
    comm.Barrier()
    return path


@pytest.fixture(scope="module")
def mpi_module_path(mpi_session_path, request):
    """A directory every rank shares for one test module."""
    return shared_subdirectory(mpi_session_path, request.module.__name__)


@pytest.fixture
def mpi_tmp_path(mpi_module_path, request):
    """A directory every rank shares for one test; no rank leaves the test before the others.

    Replaces pytest-mpi's fixture of the same name (see ``mpi_session_path`` for why).
    """
    yield shared_subdirectory(mpi_module_path, request.node.nodeid.split("::", 1)[1])
    MPI.COMM_WORLD.Barrier()
