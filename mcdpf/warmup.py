"""Compile the kernels once per machine, say so, and keep it out of the timed loop.

numba caches compiled kernels on disk (``NUMBA_CACHE_DIR``, else ``__pycache__`` beside
:mod:`mcdpf.kernels`). Without care every rank of the first job compiles the same
kernels at once, silently, for minutes on a loaded machine. Here:

- at set-up (:func:`prepare_kernels`, a set-up collective) rank 0 loads or compiles the
  kernels the run calls (:func:`run_units`, from its algorithm's ``kernels`` trait)
  first, holding a file lock on the cache (:func:`mcdpf.kernels.compile_lock`), so that
  other jobs on the machine wait too; when the cache is cold it prints
  ``mcdpf: compiling kernels, first run on this machine ...`` and its progress. The other
  ranks then load the cache (under the lock if it is still cold for them: another
  machine's cache directory);
- ``mcdpf warmup [CONFIG]`` (:func:`warmup_command`) does the same ahead of a job, e.g.
  at the start of a batch script;
- the time each rank spends in numba's compiler is its output attribute
  ``compile_seconds``; the part inside the training loop (a first-call specialisation)
  is taken out of ``loop_seconds`` and so out of steps/s.
"""

from __future__ import annotations

import sys
import time

from . import comm as comm_layer
from .algorithms import traits
from .kernels import cache_directory, cache_is_cold, compile_lock, warm_up
from .models import build_model
from .preparation import load_stream

PROGRESS_SECONDS = 10.0


class CompileProgress:
    """Rank 0's lines while kernels compile: one to start, then at most every 10 s."""

    def __init__(self):
        self.start = time.perf_counter()
        self.last = self.start
        self.tty = sys.stderr.isatty()
        print("mcdpf: compiling kernels, first run on this machine (once: later runs load "
              f"them from {cache_directory()}) ...", file=sys.stderr, flush=True)

    def __call__(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` warm-up units compiled."""
        now = time.perf_counter()
        if now - self.last < PROGRESS_SECONDS and done < total and not self.tty:
            return
        self.last = now
        end = "\n" if (done == total or not self.tty) else ""
        print(f"{chr(13) if self.tty else ''}mcdpf: compiling kernels: {done}/{total} units, "
              f"{now - self.start:.0f} s", end=end, file=sys.stderr, flush=True)


def compile_kernels(dtype, parallel: bool, announce: bool, units=None) -> bool:
    """Load the kernels of ``units`` for ``dtype``, compiling them first if the cache is cold.

    ``units``: warm-up units (:data:`mcdpf.kernels.KERNEL_UNITS`; ``None``: all).
    Compiling holds :func:`~mcdpf.kernels.compile_lock`; ``announce`` prints what
    happens. Returns whether the cache was cold.
    """
    if not cache_is_cold(parallel, units):
        warm_up(dtype, parallel, units=units)
        return False
    with compile_lock():
        cold = cache_is_cold(parallel, units)  # another process may have compiled meanwhile
        progress = CompileProgress() if cold and announce else None
        warm_up(dtype, parallel, progress, units)
    return cold


def run_units(config, model):
    """The warm-up units a run of ``config`` calls (its algorithm's ``kernels`` trait)."""
    kernels = traits(config.run.algorithm).kernels
    return None if kernels is None else tuple(dict.fromkeys(kernels(config, model)))


def prepare_kernels(comm, dtype, parallel: bool, announce: bool, units=None) -> None:
    """Set-up collective: rank 0 loads or compiles the kernels, then every other rank.

    ``units`` as :func:`compile_kernels` (:func:`run_units`: what the run calls);
    ``announce`` (rank 0's progress setting) prints the compile line and progress.
    """
    first = comm.Get_rank() == 0
    if first:
        compile_kernels(dtype, parallel, announce, units)
    comm_layer.idle_barrier(comm)  # the others wait (asleep) for rank 0's cache
    if not first:
        compile_kernels(dtype, parallel, False, units)


def warmup_command(config, announce: bool = True) -> float:
    """``mcdpf warmup [CONFIG]``: compile what a run of ``config`` needs (``None``: all).

    With a configuration, the units its run calls (:func:`run_units`, for the model its
    first node's data gives); without one, every unit of both model dtypes, serial
    kernels only (a run with ``run.threads > 1`` compiles its parallel twins at set-up).
    Returns the seconds it took.
    """
    start = time.perf_counter()
    if config is None:
        for dtype in ("float64", "float32"):
            compile_kernels(dtype, False, announce)
    else:
        stream, _ = load_stream(config, 1, 0)
        model = build_model(config.model, stream.input_dim)
        compile_kernels(config.model.dtype, config.run.threads > 1, announce,
                        run_units(config, model))
    return time.perf_counter() - start
