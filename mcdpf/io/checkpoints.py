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

Every checkpoint carries a digest of its contents (attribute ``digest``: BLAKE2b over
every dataset's name, shape and bytes and every attribute's name and value), computed
from the arrays in memory before they are written and checked by :func:`read_checkpoint`
against what was read back: one flipped bit in θ, a log-weight, a particle id, a random
generator state or the step is a :class:`DamagedCheckpoint`. A stored digest rather than
HDF5's fletcher32 filter, because fletcher32 covers only chunked datasets' data, not the
attributes (random generator states, step, configuration), and a filter error surfaces
as an unspecific ``OSError``. A checkpoint without ``digest`` (written before digests)
is read unchecked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError
from .atomic import atomic_hdf5, storage_error

RECORDS_TABLE = "records_table"
DIGEST = "digest"


class DamagedCheckpoint(InputError):
    """A checkpoint whose contents do not match its digest (or cannot be read)."""


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


def contents_digest(arrays: dict, attributes: dict) -> str:
    """BLAKE2b (hex) of datasets (name, shape, bytes) and attributes (name, JSON value).

    Attributes are compared as plain values (an ``int`` written is an ``int64`` read
    back); ``digest`` itself is left out.
    """
    digest = hashlib.blake2b(digest_size=32)
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}{array.shape}".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    plain = {name: _plain(value) for name, value in attributes.items() if name != DIGEST}
    digest.update(json.dumps(plain, sort_keys=True).encode())
    return digest.hexdigest()


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
                     attributes: dict, parents: bool = True) -> Path:
    """Write one checkpoint atomically and durably (:class:`~mcdpf.errors.StorageError`).

    Its directory is created, and with ``parents`` the directories above it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=parents, exist_ok=True)
    except OSError as error:
        raise storage_error(path, error) from None
    arrays, learner_scalars = {}, {}
    _split(learner_state, "learner", arrays, learner_scalars)
    if records is not None:
        arrays[RECORDS_TABLE] = _records_table(records, arrays)
    attributes = {**attributes, "learner_json": json.dumps(learner_scalars), "complete": 1}
    attributes[DIGEST] = contents_digest(arrays, attributes)
    with atomic_hdf5(path, durable=True) as handle:
        for name, array in arrays.items():
            handle.create_dataset(name, data=array)
        for name, value in attributes.items():
            handle.attrs[name] = value
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
    """``(learner_state, records, attributes)`` of one checkpoint, its digest verified.

    Raises :class:`DamagedCheckpoint` (naming the file) if it cannot be read or its
    contents do not match its digest.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as handle:
            arrays = {}
            handle.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                              if isinstance(item, h5py.Dataset) else None)
            attributes = _attributes(handle)
            state = json.loads(attributes["learner_json"])
    except (OSError, KeyError, ValueError) as error:
        raise DamagedCheckpoint(f"{path}: unreadable checkpoint ({error})") from None
    stored = attributes.get(DIGEST)
    if stored is not None and stored != contents_digest(arrays, attributes):
        raise DamagedCheckpoint(f"{path}: damaged checkpoint (its contents do not match "
                                "its digest)")
    prefix = "learner/"
    state.update({name[len(prefix):]: value for name, value in arrays.items()
                  if name.startswith(prefix)})
    prefix = "records/"
    records = {name[len(prefix):]: value for name, value in arrays.items()
               if name.startswith(prefix)}
    if RECORDS_TABLE in arrays:
        table = arrays[RECORDS_TABLE]
        records.update({name: np.ascontiguousarray(table[name]) for name in table.dtype.names})
    return state, records, attributes
