"""A run's results in memory, in scaled and in the data's original units.

``mcdpf.read_run(RUN_DIR)`` reads a finished run (or an interrupted one whose outputs
were written: each node's records are valid up to its ``valid_until``) into a
:class:`Run`: per node (:class:`NodeRun`) the targets, predictions and errors of every
step, both as the learner saw them (``*_scaled``: the source's scaling applied, e.g. to
[-1, 1]) and in the data's original units (the plain names), the records (ESS, bytes,
particle counts, timings, ...), the final estimate, departures; per network the stacked
arrays and the MSE; and the resolved configuration.

Original units come from the scaling each node file stores (attribute ``scaling``,
:class:`~mcdpf.streams.Scaling`): ``original = offset + scale * scaled``. Data that are
not scaled (``"none"``: generated data, stream files, the caller's streams) are in their
original units already. A file written before the scaling was recorded has no original
units (``units == "unknown"``, the original arrays are ``None``).

``mcdpf export RUN_DIR --csv FILE`` (:func:`export_csv`) writes one row per node and
step.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .rundir import RunDirectory
from .rundir import read_run as read_node_records
from .streams import Scaling


def finite_mean(values: np.ndarray) -> float:
    """Mean of the finite entries (NaN marks skipped steps); NaN if there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan

CSV_COLUMNS = ("node", "step", "target", "prediction", "error", "squared_error",
               "target_scaled", "prediction_scaled", "error_scaled", "squared_error_scaled",
               "skipped")


def units_of(scaling: Scaling | None) -> str:
    """``"original"`` (data not scaled), ``"scaled"`` or ``"unknown"`` (not recorded)."""
    if scaling is None:
        return "unknown"
    return "scaled" if scaling.scaled else "original"


@dataclass(frozen=True)
class NodeRun:
    """One node's results (arrays of length ``T``, NaN where the node had no data).

    Attributes
    ----------
    node
        The node.
    targets_scaled, predictions_scaled
        Labels and the predictions made before them, as the learner saw them.
    scaling
        The map to the data's units (:class:`~mcdpf.streams.Scaling`); ``None`` if the
        file predates the record.
    records
        Every per-step record of the node file (``ess``, ``bytes_sent``,
        ``particles_held``, ``skipped``, ``step_seconds``, ...; :mod:`mcdpf.rundir`).
    theta_mean
        The final parameter estimate.
    valid_until
        Steps whose records are valid (``T``, or a lost node's last checkpoint).
    dropped_at
        The step the node left the network, or ``None``.
    attributes
        Every attribute of the node file.
    """

    node: int
    targets_scaled: np.ndarray
    predictions_scaled: np.ndarray
    scaling: Scaling | None
    records: dict
    theta_mean: np.ndarray
    valid_until: int
    dropped_at: int | None
    attributes: dict = field(repr=False)

    @property
    def units(self) -> str:
        """What the plain (unsuffixed) arrays are in: :func:`units_of`."""
        return units_of(self.scaling)

    @property
    def errors_scaled(self) -> np.ndarray:
        """``target - prediction`` as the learner saw them."""
        return self.targets_scaled - self.predictions_scaled

    @property
    def targets(self) -> np.ndarray | None:
        """Labels in the data's original units (``None``: unknown)."""
        return None if self.scaling is None else \
            self.scaling.target_to_original(self.targets_scaled)

    @property
    def predictions(self) -> np.ndarray | None:
        """Predictions in the data's original units (``None``: unknown)."""
        return None if self.scaling is None else \
            self.scaling.target_to_original(self.predictions_scaled)

    @property
    def errors(self) -> np.ndarray | None:
        """``target - prediction`` in the data's original units (``None``: unknown)."""
        return None if self.scaling is None else self.targets - self.predictions

    @property
    def mse_scaled(self) -> float:
        """Mean squared error in scaled units (as ``mcdpf report``'s ``mse``)."""
        return finite_mean(self.errors_scaled ** 2)

    @property
    def mse(self) -> float:
        """Mean squared error in the data's original units (NaN: unknown)."""
        return math.nan if self.scaling is None else finite_mean(self.errors ** 2)


@dataclass(frozen=True)
class Run:
    """A run directory's results (:func:`read_run`).

    Attributes
    ----------
    path
        The run directory.
    config
        The resolved configuration (``{section: {key: value}}``).
    algorithm, n_nodes, steps
        What ran, on how many nodes, for how many steps.
    nodes
        One :class:`NodeRun` per node, ordered by node.
    resumes, restarts
        ``resumes.json`` and ``restarts.json`` (lists, empty without them).
    """

    path: Path
    config: dict
    algorithm: str
    n_nodes: int
    steps: int
    nodes: list[NodeRun]
    resumes: list = field(default_factory=list)
    restarts: list = field(default_factory=list)

    def __getitem__(self, node: int) -> NodeRun:
        return self.nodes[node]

    @property
    def units(self) -> str:
        """The nodes' common :func:`units_of`, or ``"mixed"`` if their data differ."""
        units = {node.units for node in self.nodes}
        return units.pop() if len(units) == 1 else "mixed"

    def _stacked(self, name: str) -> np.ndarray | None:
        arrays = [getattr(node, name) for node in self.nodes]
        return None if any(a is None for a in arrays) else np.vstack(arrays)

    @property
    def targets(self) -> np.ndarray | None:
        """(K, T) labels in original units (``None``: unknown for some node)."""
        return self._stacked("targets")

    @property
    def predictions(self) -> np.ndarray | None:
        """(K, T) predictions in original units (``None``: unknown for some node)."""
        return self._stacked("predictions")

    @property
    def targets_scaled(self) -> np.ndarray:
        """(K, T) labels as the learners saw them."""
        return self._stacked("targets_scaled")

    @property
    def predictions_scaled(self) -> np.ndarray:
        """(K, T) predictions as the learners saw them."""
        return self._stacked("predictions_scaled")

    @property
    def network_mse_scaled(self) -> float:
        """Mean over nodes of the MSE in scaled units (``mcdpf report``'s ``network_mse``)."""
        return float(np.mean([node.mse_scaled for node in self.nodes]))

    @property
    def network_mse(self) -> float:
        """Mean over nodes of the MSE in original units (NaN: unknown)."""
        return float(np.mean([node.mse for node in self.nodes]))


def scaling_of(attributes: dict) -> Scaling | None:
    """A node file's :class:`~mcdpf.streams.Scaling` (``None``: not recorded)."""
    if "scaling" not in attributes:
        return None
    try:
        return Scaling.from_json(attributes["scaling"])
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"node {attributes.get('node')}: unreadable scaling attribute "
                         f"({error})") from None


def node_run(record) -> NodeRun:
    """A :class:`NodeRun` from a node file's :class:`~mcdpf.io.NodeRecord`."""
    datasets, attributes = record.datasets, record.attributes
    main = {"target", "prediction", "theta_mean"}
    dropped = int(attributes.get("dropped_at", -1))
    return NodeRun(node=record.node, targets_scaled=datasets["target"],
                   predictions_scaled=datasets["prediction"], scaling=scaling_of(attributes),
                   records={name: value for name, value in datasets.items()
                            if name not in main},
                   theta_mean=datasets["theta_mean"],
                   valid_until=int(attributes.get("valid_until", attributes["steps"])),
                   dropped_at=None if dropped < 0 else dropped, attributes=attributes)


def read_run(run_dir) -> Run:
    """A run directory's results in memory (DESIGN §10), in scaled and original units.

    Parameters
    ----------
    run_dir
        A directory written by ``mcdpf train``, ``mcdpf.train(..., out=...)`` or
        ``mcdpf compare`` (one of its ``ALGORITHM/seed-S`` directories).

    Returns
    -------
    Run
        Per node (``run.nodes[k]`` or ``run[k]``) and per network.

    Raises
    ------
    InputError
        Not a run directory, a node file missing or unreadable.
    """
    directory = RunDirectory(run_dir)
    records = read_node_records(run_dir)
    first = records[0]
    return Run(path=Path(run_dir), config=first.config, algorithm=first.attributes["algorithm"],
               n_nodes=int(first.attributes["n_nodes"]), steps=int(first.attributes["steps"]),
               nodes=[node_run(record) for record in records],
               resumes=directory.read_resumes(),
               restarts=directory.read_json(directory.restarts_file, []))


def _cell(value) -> str:
    """A CSV cell: integers as such, floats as the shortest exact decimal, NaN empty."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    return repr(value) if math.isfinite(value) else ""


def export_rows(run: Run):
    """Rows of :data:`CSV_COLUMNS`, node by node, step by step."""
    for node in run.nodes:
        scaled = (node.targets_scaled, node.predictions_scaled, node.errors_scaled,
                  node.errors_scaled ** 2)
        steps = node.targets_scaled.shape[0]
        if node.scaling is None:
            original = (np.full(steps, np.nan),) * 4
        else:
            original = (node.targets, node.predictions, node.errors, node.errors ** 2)
        skipped = node.records["skipped"]
        for t in range(steps):
            yield (node.node, t, *(a[t] for a in original), *(a[t] for a in scaled),
                   skipped[t])


def export_csv(run_dir, path) -> Run:
    """Write ``mcdpf export``'s CSV (:data:`CSV_COLUMNS`, NaN as an empty cell)."""
    run = read_run(run_dir)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in export_rows(run):
            writer.writerow([_cell(value) for value in row])
    return run


def units_sentence(units: str, method: str | None) -> str:
    """Which units an MSE of the node files' values is in, for the report's text."""
    if units == "original":
        return "the data's original units (not scaled)"
    if units == "scaled":
        where = " (each series to [-1, 1])" if method == "minmax" else ""
        return f"scaled units: data.scaling = \"{method}\"{where}"
    if units == "unknown":
        return "the learner's units (the run predates the scaling record)"
    return "scaled units on some nodes, original on others"
