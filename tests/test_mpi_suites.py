"""Run the MPI test suites (tests/mpi) under mpiexec at 1, 2, 3 and 4 ranks."""

import sys

import pytest
from support import MPIEXEC, REPO, run


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_mpi_suite(ranks):
    result = run([MPIEXEC, "-n", str(ranks), sys.executable, "-m", "pytest", "--with-mpi",
                  "-q", "-p", "no:cacheprovider", "-x", str(REPO / "tests" / "mpi")])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
