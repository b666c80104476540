"""Liveness markers of a supervised job's ranks: which rank died, which ended, which was stopped.

``mcdpf supervise`` starts ``mcdpf train --markers DIR``; every rank then keeps two files
in ``DIR`` (:class:`RankMarker`), named by its rank in the job:

``rank-RRRR.lock``
    locked (``flock``) by the rank's process for its whole life. The kernel releases the
    lock when the process ends, however it ends -- ``kill -9`` and the out-of-memory
    killer included -- so a free lock is a process that is gone.
``rank-RRRR.json``
    ``{rank, pid, host, state, ...}``; ``state`` is ``running`` from the start, then
    ``finished`` (with the exit code: 0, or 2 for a refused input), ``error`` (the rank
    failed with an exception and aborts the job) or ``terminated`` (the rank received
    SIGTERM, SIGINT or SIGHUP: a preemption, a time limit, a stop of the whole job).

A rank whose lock is free while its state still says ``running`` died without a word
(:func:`rank_state` reads the lock first, then the state, so a rank that finishes
between the two reads is not mistaken for a dead one). The signals are taken by a
watcher thread (:meth:`RankMarker.watch_signals`), so a rank blocked inside an MPI call
still records them and exits at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path

RUNNING, FINISHED, ERROR, TERMINATED = "running", "finished", "error", "terminated"
DEAD, MISSING = "dead", "missing"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def marker_file(directory: Path, rank: int) -> Path:
    """The JSON marker of ``rank``."""
    return Path(directory) / f"rank-{rank:04d}.json"


def lock_file(directory: Path, rank: int) -> Path:
    """The lock file of ``rank``."""
    return Path(directory) / f"rank-{rank:04d}.lock"


class RankMarker:
    """This process's marker: holds its lock and records its state.

    Parameters
    ----------
    directory
        The markers directory (created if needed).
    rank
        This process's rank in the job (as the launcher announced it).
    """

    def __init__(self, directory, rank: int):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = marker_file(directory, rank)
        self._lock = open(lock_file(directory, rank), "a")  # held until the process ends
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.info = {"rank": rank, "pid": os.getpid(), "host": socket.gethostname()}
        self.set(RUNNING)

    def set(self, state: str, **details) -> None:
        """Record ``state`` (and ``details``), replacing the file whole."""
        self.info = {**self.info, "state": state, **details}
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(self.info) + "\n")
        os.replace(temporary, self.path)

    def watch_signals(self) -> None:
        """Take SIGTERM, SIGINT and SIGHUP in a thread: record ``terminated`` and exit.

        Call before any other thread starts (MPI's, numba's): the signals are blocked in
        this thread, and so in every thread started after it, but the watcher's.
        """
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        threading.Thread(target=self._watch, name="mcdpf-signals", daemon=True).start()

    def _watch(self) -> None:
        number = signal.sigwait(STOP_SIGNALS)
        name = signal.Signals(number).name
        self.set(TERMINATED, signal=name)
        print(f"mcdpf: rank {self.info['rank']}: stopped by {name}", file=sys.stderr,
              flush=True)
        os._exit(128 + number)


def rank_state(directory, rank: int) -> str:
    """``missing`` (no marker yet), ``dead``, or the state the rank recorded.

    ``dead``: the rank's lock is free but its state says ``running``.
    """
    path = marker_file(directory, rank)
    if not path.is_file():
        return MISSING
    alive = _locked(lock_file(directory, rank))
    try:
        state = json.loads(path.read_text()).get("state", RUNNING)
    except (OSError, ValueError):
        state = RUNNING  # being replaced: the rank is alive and writing it
    return DEAD if state == RUNNING and not alive else state


def _locked(path: Path) -> bool:
    """Whether a process holds the lock of ``path``."""
    try:
        with open(path, "a") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(probe, fcntl.LOCK_UN)
            return False
    except OSError:
        return False


def rank_states(directory, ranks: int) -> list[str]:
    """:func:`rank_state` of ranks ``0 .. ranks-1``."""
    return [rank_state(directory, rank) for rank in range(ranks)]


def clear(directory) -> None:
    """Remove every marker of ``directory`` (before a new job starts)."""
    directory = Path(directory)
    if directory.is_dir():
        for path in directory.glob("rank-*"):
            path.unlink(missing_ok=True)
