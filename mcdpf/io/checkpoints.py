"""Checkpoint files: everything one node needs to continue bit-identically.

A checkpoint holds the learner's arrays (particles, weights, ids, estimates, covariances)
under ``learner/``, its scalars (counters, random generator states) as JSON (never
pickle), optionally the per-step records so far, and attributes (the resolved
configuration, the step, ...). The per-step records are one table (``records_table``, a
compound dataset with one field per record: one HDF5 object instead of one per record,
which is most of what a small checkpoint costs); records of more than one value per step
(``theta_estimates``) are datasets under ``records/``. A checkpoint is written to a
temporary name, flushed, fsynced and renamed, so a file under its final name is always
complete (it also carries ``complete = 1``); a kill mid-write leaves only a ``.tmp`` file
that readers ignore. Where checkpoints live is the run directory's business
(:mod:`mcdpf.rundir`).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError
from .atomic import atomic_hdf5

RECORDS_TABLE = "records_table"


def _split(values: dict, prefix: str, arrays: dict, scalars: dict) -> None:
    for name, value in values.items():
        if isinstance(value, np.ndarray):
            arrays[f"{prefix}/{name}"] = value
        else:
            scalars[name] = value


def _records_table(records: dict, arrays: dict) -> np.ndarray:
    """The one-value-per-step records as one structured array; the others into ``arrays``."""
    columns = {name: value for name, value in records.items() if value.ndim == 1}
    for name, value in records.items():
        if name not in columns:
            arrays[f"records/{name}"] = value
    lengths = {value.shape[0] for value in columns.values()}
    table = np.empty(lengths.pop() if lengths else 0,
                     dtype=[(name, value.dtype) for name, value in columns.items()])
    for name, value in columns.items():
        table[name] = value
    return table


def write_checkpoint(path, learner_state: dict, records: dict | None,
                     attributes: dict) -> Path:
    """Write one checkpoint atomically and durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays, learner_scalars = {}, {}
    _split(learner_state, "learner", arrays, learner_scalars)
    if records is not None:
        arrays[RECORDS_TABLE] = _records_table(records, arrays)
    with atomic_hdf5(path, durable=True) as handle:
        for name, array in arrays.items():
            handle.create_dataset(name, data=array)
        for name, value in attributes.items():
            handle.attrs[name] = value
        handle.attrs["learner_json"] = json.dumps(learner_scalars)
        handle.attrs["complete"] = 1
    return path


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a readable checkpoint that was finished."""
    try:
        with h5py.File(path, "r") as handle:
            return int(handle.attrs.get("complete", 0)) == 1
    except (OSError, ValueError):
        return False


def _attributes(handle) -> dict:
    return {name: (value.decode() if isinstance(value, bytes) else value)
            for name, value in handle.attrs.items()}


def read_checkpoint_attributes(path) -> dict:
    """The attributes of one checkpoint (without reading its arrays)."""
    try:
        with h5py.File(path, "r") as handle:
            return _attributes(handle)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable checkpoint ({error})") from None


def read_checkpoint(path) -> tuple[dict, dict, dict]:
    """``(learner_state, records, attributes)`` of one checkpoint."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            state = json.loads(handle.attrs["learner_json"])
            state.update({name: handle["learner"][name][()] for name in handle["learner"]})
            records = {name: handle["records"][name][()]
                       for name in handle.get("records", {})}
            if RECORDS_TABLE in handle:
                table = handle[RECORDS_TABLE][()]
                records.update({name: np.ascontiguousarray(table[name])
                                for name in table.dtype.names})
            attributes = _attributes(handle)
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"{path}: unreadable checkpoint ({error})") from None
    return state, records, attributes
