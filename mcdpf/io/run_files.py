"""Per-node output files: datasets (per-step records, the final estimate) and attributes.

Each file is written by its own rank only, atomically. What the datasets and attributes
are is declared once, in :mod:`mcdpf.rundir`; this module only writes and reads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError
from .atomic import atomic_hdf5


def write_node_file(path: str | Path, datasets: dict[str, np.ndarray],
                    attributes: dict[str, object]) -> None:
    """Write one node's outputs atomically (temporary name, flush, rename)."""
    with atomic_hdf5(path) as handle:
        for name, array in datasets.items():
            handle.create_dataset(name, data=array)
        for name, value in attributes.items():
            handle.attrs[name] = value


@dataclass(frozen=True)
class NodeRecord:
    """One node's outputs as read back from its file."""

    node: int
    datasets: dict[str, np.ndarray]
    attributes: dict[str, object]

    @property
    def config(self) -> dict:
        """The resolved configuration the run used."""
        return json.loads(self.attributes["config"])


def read_node_files(run_dir: str | Path, files: list[Path]) -> list[NodeRecord]:
    """Read a run's node output files, ordered by node; check that none is missing."""
    if not files:
        raise InputError(f"{run_dir}: no node-*.h5 files (not a run directory, or the run "
                         "did not finish)")
    records = []
    for file in files:
        try:
            with h5py.File(file, "r") as handle:
                datasets = {name: handle[name][()] for name in handle
                            if isinstance(handle[name], h5py.Dataset)}
                attributes = {name: _plain(value) for name, value in handle.attrs.items()}
        except OSError as error:
            raise InputError(f"{file}: not a readable HDF5 file ({error})") from None
        if "node" not in attributes or "prediction" not in datasets:
            raise InputError(f"{file}: not an mcdpf node output file")
        records.append(NodeRecord(node=int(attributes["node"]), datasets=datasets,
                                  attributes=attributes))
    records.sort(key=lambda r: r.node)
    nodes = {int(r.attributes["n_nodes"]) for r in records}
    if len(nodes) != 1 or len(records) != nodes.pop():
        raise InputError(f"{run_dir}: incomplete run: {len(records)} node files for a "
                         f"{int(records[0].attributes['n_nodes'])}-node network")
    return records


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
