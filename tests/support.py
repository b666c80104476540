"""Helpers for tests that run the command line in subprocesses."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The mpiexec installed beside this Python (the mpich wheel's) matches mpi4py's MPI;
# fall back to the one on PATH (a site MPI on a cluster).
_BESIDE = Path(sys.executable).with_name("mpiexec")
MPIEXEC = str(_BESIDE) if _BESIDE.exists() else (shutil.which("mpiexec") or "mpiexec")
# Generous bound: it catches hangs, it does not time anything.
HANG_TIMEOUT = 300


def mcdpf_command(*args):
    return [sys.executable, "-m", "mcdpf", *map(str, args)]


def run(command, timeout=HANG_TIMEOUT, cwd=None, input_text=None, env=None):
    """``command`` with this environment, plus ``env`` (a mapping) on top."""
    env = {**os.environ, **(env or {})}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or REPO, env=env, input=input_text)


def run_mpi(ranks, *args, timeout=HANG_TIMEOUT, cwd=None, env=None):
    """`mpiexec -n ranks python -m mcdpf ARGS`."""
    return run([MPIEXEC, "-n", str(ranks), *mcdpf_command(*args)], timeout=timeout, cwd=cwd,
               env=env)


COMPARED = ("prediction", "squared_error", "theta_mean", "ess", "particles_held",
            "particles_received", "bytes_sent", "theta_estimates", "skipped")


def assert_same_outputs(a_dir, b_dir, ranks):
    """The outputs of two run directories agree bit for bit (timings aside)."""
    for node in range(ranks):
        with h5py.File(a_dir / f"node-{node:04d}.h5") as a, \
                h5py.File(b_dir / f"node-{node:04d}.h5") as b:
            for key in COMPARED:
                np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=f"{node} {key}")
