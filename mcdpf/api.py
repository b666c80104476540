"""The public Python API (DESIGN §7): ``mcdpf.train`` and its :class:`RunResult`.

``mcdpf.train(config, comm, stream=None, out=None)`` trains this rank's node; every rank
of ``comm`` calls it. ``stream`` (this rank's :class:`~mcdpf.streams.Stream`) replaces
``[data]``; ``out`` (or ``run.out``) writes the run directory exactly as ``mcdpf train``
does, otherwise nothing is written. The step-by-step API for live data is
:class:`mcdpf.Node`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class RunResult:
    """This node's results of :func:`train`.

    Attributes
    ----------
    datasets, attributes
        Everything the node's output file holds (:mod:`mcdpf.rundir`).
    out_dir
        The run directory, or ``None`` when nothing was written.
    """

    datasets: dict
    attributes: dict
    out_dir: Path | None

    @property
    def predictions(self) -> np.ndarray:
        """Prediction of every step, made before its label (T,)."""
        return self.datasets["prediction"]

    @property
    def targets(self) -> np.ndarray:
        """The labels (T,), NaN where the node had no data."""
        return self.datasets["target"]

    @property
    def squared_error(self) -> np.ndarray:
        """``(target - prediction)^2`` of every step (T,)."""
        return self.datasets["squared_error"]

    @property
    def theta_mean(self) -> np.ndarray:
        """The final parameter estimate (n_params,), float64."""
        return self.datasets["theta_mean"]

    @property
    def bytes_sent(self) -> np.ndarray:
        """Bytes this node sent at every step (T,)."""
        return self.datasets["bytes_sent"]

    @property
    def steps_per_second(self) -> float:
        """Time steps per second of this node's training loop."""
        seconds = float(self.attributes["loop_seconds"])
        return self.attributes["steps"] / seconds if seconds > 0 else float("inf")

    def report(self) -> dict:
        """This node's entry of ``mcdpf report --json``."""
        from .report import node_summary

        return node_summary(self.attributes["node"], self.datasets, self.attributes)


def train(config, comm, stream=None, out=None, *, force: bool = False) -> RunResult:
    """Train this rank's node of the network that ``config`` describes.

    Parameters
    ----------
    config
        A :class:`~mcdpf.config.Config` (:func:`mcdpf.load_config`).
    comm
        Intracommunicator whose ranks are the nodes (``COMM_WORLD``, a ``Dup()``, a
        ``Split()`` part); every rank calls :func:`train`.
    stream
        This rank's :class:`~mcdpf.streams.Stream`; ``None`` reads ``[data]``.
    out
        Run directory to write (as ``mcdpf train --out``); default ``run.out``, and
        without either nothing is written.
    force
        Overwrite an existing run in ``out``.

    The first rank of ``comm`` prints the progress line of ``mcdpf train`` to standard
    error every ``run.progress_seconds`` (0: never) and at the end.

    Raises
    ------
    InputError
        The same one-line message on every rank.
    """
    from .driver import train as drive

    target = out if out is not None else config.run.out
    records = drive(comm, config, Path(target) if target is not None else None, force=force,
                    stream=stream, write=target is not None, progress=True)
    out_dir = records["out_dir"]
    return RunResult(datasets=records["datasets"], attributes=records["attributes"],
                     out_dir=Path(out_dir) if out_dir is not None else None)
