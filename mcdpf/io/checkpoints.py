"""Per-rank checkpoints: ``RUN_DIR/checkpoints/node-0000-step-00000040.h5``.

A checkpoint holds everything a rank needs to continue bit-identically: the learner's
arrays (particles, weights, ids, estimates, covariances), its counters and random
generator states (JSON, never pickle), the records of the steps done so far, and the
resolved configuration. It is written to a temporary name, flushed, fsynced and renamed,
so a file under its final name is always complete (it also carries ``complete = 1``);
a kill mid-write leaves only a ``.tmp`` file that resume ignores. Each rank keeps its
newest ``keep`` checkpoints; the driver chooses ``keep`` so that the newest step every
rank has is always among them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np

from ..errors import InputError
from .atomic import atomic_hdf5

NAME = re.compile(r"node-(\d{4,})-step-(\d{8,})\.h5$")


def checkpoint_directory(run_dir) -> Path:
    """``RUN_DIR/checkpoints``."""
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir, node: int, step: int) -> Path:
    """File of ``node``'s checkpoint after ``step`` completed steps."""
    return checkpoint_directory(run_dir) / f"node-{node:04d}-step-{step:08d}.h5"


def _split(values: dict, prefix: str, arrays: dict, scalars: dict) -> None:
    for name, value in values.items():
        if isinstance(value, np.ndarray):
            arrays[f"{prefix}/{name}"] = value
        else:
            scalars[name] = value


def write_checkpoint(run_dir, node: int, step: int, learner_state: dict, records: dict,
                     attributes: dict, keep: int = 2) -> Path:
    """Write atomically; then drop this node's checkpoints older than the newest ``keep``."""
    path = checkpoint_path(run_dir, node, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays, learner_scalars = {}, {}
    _split(learner_state, "learner", arrays, learner_scalars)
    _split(records, "records", arrays, {})
    with atomic_hdf5(path, durable=True) as handle:
        for name, array in arrays.items():
            handle.create_dataset(name, data=array)
        for name, value in attributes.items():
            handle.attrs[name] = value
        handle.attrs["learner_json"] = json.dumps(learner_scalars)
        handle.attrs["step"] = step
        handle.attrs["node"] = node
        handle.attrs["complete"] = 1
    for old in checkpoint_steps(run_dir, node)[:-keep]:
        checkpoint_path(run_dir, node, old).unlink(missing_ok=True)
    return path


def _is_complete(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as handle:
            return int(handle.attrs.get("complete", 0)) == 1
    except (OSError, ValueError):
        return False


def checkpoint_steps(run_dir, node: int) -> list[int]:
    """Steps of ``node``'s complete checkpoints, ascending (torn or foreign files skipped)."""
    directory = checkpoint_directory(run_dir)
    if not directory.is_dir():
        return []
    steps = []
    for path in directory.iterdir():
        match = NAME.match(path.name)
        if match and int(match.group(1)) == node and _is_complete(path):
            steps.append(int(match.group(2)))
    return sorted(steps)


def read_checkpoint(run_dir, node: int, step: int) -> tuple[dict, dict, dict]:
    """``(learner_state, records, attributes)`` of one checkpoint."""
    path = checkpoint_path(run_dir, node, step)
    try:
        with h5py.File(path, "r") as handle:
            state = json.loads(handle.attrs["learner_json"])
            state.update({name: handle["learner"][name][()] for name in handle["learner"]})
            records = {name: handle["records"][name][()] for name in handle["records"]}
            attributes = {name: (value.decode() if isinstance(value, bytes) else value)
                          for name, value in handle.attrs.items()}
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"{path}: unreadable checkpoint ({error})") from None
    return state, records, attributes
