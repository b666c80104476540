"""Helpers for tests that run the command line in subprocesses."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The mpiexec installed beside this Python (the mpich wheel's) matches mpi4py's MPI;
# fall back to the one on PATH (a site MPI on a cluster).
_BESIDE = Path(sys.executable).with_name("mpiexec")
MPIEXEC = str(_BESIDE) if _BESIDE.exists() else (shutil.which("mpiexec") or "mpiexec")
# Generous bound: it catches hangs, it does not time anything.
HANG_TIMEOUT = 300


def mcdpf_command(*args):
    return [sys.executable, "-m", "mcdpf", *map(str, args)]


def run(command, timeout=HANG_TIMEOUT, cwd=None, input_text=None):
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or REPO, env=env, input=input_text)


def run_mpi(ranks, *args, timeout=HANG_TIMEOUT, cwd=None):
    """`mpiexec -n ranks python -m mcdpf ARGS`."""
    return run([MPIEXEC, "-n", str(ranks), *mcdpf_command(*args)], timeout=timeout, cwd=cwd)
