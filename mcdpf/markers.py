"""Markers of a supervised job's ranks: which rank died, which ended, which was stopped.

``mcdpf supervise`` launches every rank under a guard (:mod:`mcdpf.guard`) and passes
``--markers DIR`` to ``mcdpf train``. Two small JSON files per rank, named by its rank in
the job, record what happened to it:

``guard-RRRR.json``, written by the guard, the parent of the rank's process:
    ``running`` while the rank runs, then ``exited`` (with its exit code),
    ``terminated`` (the rank was stopped by SIGTERM, SIGINT, SIGHUP or SIGUSR1: it
    ended by the signal, or exited ``128 + signal`` after saving (:mod:`mcdpf.shutdown`),
    or the guard passed such a signal on: a preemption, a time limit, a stop of the
    whole job) or ``died`` (the
    rank was killed by any other signal: ``kill -9``, the out-of-memory killer, a
    segmentation fault). A guard whose rank died stays alive, so the launcher does not
    end the job: the other ranks wait in their exchanges until the supervisor stops it.
``rank-RRRR.json``, written by the rank itself:
    ``running``, then ``finished`` (with the exit code: 0, or 2 for a refused input), or
    ``error`` just before a rank that failed with an exception aborts the job (the
    launcher then ends every process at once, guards included).

:func:`rank_state` merges the two. Nothing here depends on timing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

RUNNING, FINISHED, ERROR, TERMINATED, DEAD, MISSING = (
    "running", "finished", "error", "terminated", "dead", "missing")
EXITED, DIED = "exited", "died"  # the guard's words for finished and dead
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


def launcher_rank() -> int:
    """This process's rank as the MPI launcher announced it (0 when not launched)."""
    for variable in RANK_VARIABLES:
        value = os.environ.get(variable)
        if value is not None and value.isdigit():
            return int(value)
    return 0


def rank_file(directory, rank: int) -> Path:
    """The marker the rank writes."""
    return Path(directory) / f"rank-{rank:04d}.json"


def guard_file(directory, rank: int) -> Path:
    """The marker the rank's guard writes."""
    return Path(directory) / f"guard-{rank:04d}.json"


class Marker:
    """One marker file, replaced whole at every change.

    Parameters
    ----------
    path
        The file (its directory is created if needed).
    info
        What the marker always says (rank, pids, host).
    """

    def __init__(self, path: Path, **info):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:  # best effort, as :meth:`set`
            pass
        self.info = {**info, "host": socket.gethostname()}
        self.set(RUNNING)

    def set(self, state: str, **details) -> None:
        """Record ``state`` (and ``details``).

        Best effort: on a full or read-only disk the marker keeps its previous state (the
        run itself then stops with a :class:`~mcdpf.errors.StorageError`).
        """
        self.info = {**self.info, "state": state, **details}
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            temporary.write_text(json.dumps(self.info) + "\n")
            os.replace(temporary, self.path)
        except OSError:
            temporary.unlink(missing_ok=True)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def rank_state(directory, rank: int) -> str:
    """What happened to ``rank``, from both of its markers.

    ``error``, ``dead``, ``terminated``, ``finished``, ``running`` or ``missing`` (no
    marker yet), in this order of precedence.
    """
    mine = _read(rank_file(directory, rank)).get("state")
    guard = _read(guard_file(directory, rank))
    guarded = guard.get("state")
    if mine == ERROR or (guarded == EXITED and guard.get("exit_code") not in (0, 2)):
        return ERROR
    if guarded == DIED:
        return DEAD
    if guarded == TERMINATED:
        return TERMINATED
    if mine == FINISHED or guarded == EXITED:
        return FINISHED
    return RUNNING if RUNNING in (mine, guarded) else MISSING


def rank_states(directory, ranks: int) -> list[str]:
    """:func:`rank_state` of ranks ``0 .. ranks-1``."""
    return [rank_state(directory, rank) for rank in range(ranks)]


def clear(directory) -> None:
    """Remove every marker of ``directory`` (before a new job starts)."""
    directory = Path(directory)
    if directory.is_dir():
        for path in [*directory.glob("rank-*"), *directory.glob("guard-*")]:
            path.unlink(missing_ok=True)
