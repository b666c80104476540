"""HDF5 stream files: one group per node, ``node0 ... node{K-1}``.

Each group holds ``d`` (T,) labels, ``X`` (total_columns, p) all sequences' columns
concatenated, and ``offsets`` (T + 1,) int64, so that sequence ``t`` is
``X[offsets[t]:offsets[t + 1]]``. Real-valued ``X`` and ``d`` of any float or integer type
are accepted and converted to float64.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError
from ..streams import Stream, check_stream
from .atomic import atomic_hdf5

STREAM_DATASETS = ("d", "X", "offsets")


def _open(path: str | Path) -> h5py.File:
    if not Path(path).is_file():
        raise InputError(f"{path}: stream file not found")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise InputError(f"{path}: not a readable HDF5 file ({error})") from None


def read_stream_file(path: str | Path, node: int, nodes: int) -> Stream:
    """Read and validate node ``node``'s stream from a file that must have ``nodes`` groups."""
    with _open(path) as handle:
        groups = sorted(name for name in handle.keys() if name.startswith("node"))
        expected = [f"node{k}" for k in range(nodes)]
        missing = [g for g in expected if g not in handle]
        if missing:
            raise InputError(f"{path}: missing group '{missing[0]}' (a stream file for {nodes} "
                             f"nodes has groups node0 .. node{nodes - 1})")
        extra = sorted(set(groups) - set(expected))
        if extra:
            raise InputError(f"{path}: group '{extra[0]}' has no node: the topology has "
                             f"{nodes} nodes")
        group = handle[f"node{node}"]
        if not isinstance(group, h5py.Group):
            raise InputError(f"{path}: node{node} is not a group")
        arrays = {}
        for name in STREAM_DATASETS:
            item = group.get(name)
            if not isinstance(item, h5py.Dataset):
                raise InputError(f"{path}: node{node}/{name} is missing (a node group holds "
                                 "d, X and offsets)")
            if item.dtype.kind not in "fiu":
                raise InputError(f"{path}: node{node}/{name} has dtype {item.dtype}, expected "
                                 "numbers")
            arrays[name] = item[()]
    return check_stream(arrays["X"], arrays["offsets"], arrays["d"],
                        f"{path}: node{node}")


def write_stream_file(path: str | Path, streams: list[Stream]) -> None:
    """Write one group per node; atomic (temporary name, then rename)."""
    with atomic_hdf5(path) as handle:
        for node, stream in enumerate(streams):
            group = handle.create_group(f"node{node}")
            group.create_dataset("d", data=np.asarray(stream.targets, dtype=np.float64))
            group.create_dataset("X", data=np.asarray(stream.columns, dtype=np.float64))
            group.create_dataset("offsets", data=np.asarray(stream.offsets, dtype=np.int64))
