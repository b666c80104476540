"""The run directory: every file name of a run, and the output schema, in one place.

::

    RUN_DIR/
      node-0000.h5 ...              one output file per node (written by its own rank)
      config.json                   the resolved configuration, written when the run starts
      processes.json                rank, node, host and PID of every process of the last job
      resumes.json                  every resume: step, nodes left out, ranks, cause, time
      restarts.json                 every automatic restart (``mcdpf supervise``)
      checkpoints/node-0000-step-00000040.h5 ...
      ranks/rank-0000.json, .lock   liveness markers of a supervised job's ranks

The per-step records of a node (:data:`RECORDS`) and the attributes of its output file
(:data:`ATTRIBUTES`) are declared here once; the recorder, the writer, the report and the
documentation read these declarations.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import (
    atomic_text,
    is_complete,
    read_checkpoint,
    read_checkpoint_attributes,
    read_node_files,
    storage_error,
    write_checkpoint,
    write_node_file,
)
from .learner import diagnostics

CHECKPOINT_NAME = re.compile(r"node-(\d{4,})-step-(\d{8,})\.h5$")


class NoCheckpoint(InputError):
    """The run directory holds no complete checkpoint."""


@dataclass(frozen=True)
class Field:
    """One per-step record: its dtype, the value before the step is recorded, meaning."""

    dtype: type
    fill: float
    doc: str


RECORDS = {
    "target": Field(np.float64, np.nan, "label d[k,t] (NaN when skipped)"),
    "prediction": Field(np.float64, np.nan, "prediction made before the label"),
    "squared_error": Field(np.float64, np.nan, "(target - prediction)^2"),
    # the learner's diagnostics, declared once (mcdpf.learner.StepInfo)
    **{name: Field(np.dtype(spec.dtype).type, np.dtype(spec.dtype).type(default), spec.doc)
       for name, (spec, default) in diagnostics().items()},
    "skipped": Field(np.int8, 0, "1 if the node had no data (or had left) at this step"),
    "step_seconds": Field(np.float64, 0.0, "wall time of the step"),
}
ESTIMATES = "theta_estimates"  # (T, n_params) with run.record_estimates

ATTRIBUTES = {
    "node": "this node",
    "n_nodes": "nodes of the network",
    "algorithm": "run.algorithm",
    "steps": "time steps of the run",
    "config": "the resolved configuration (JSON)",
    "topology": "summary of the topology (JSON)",
    "model_kind": "lstm or linear",
    "theta_layout": "layout of theta_mean",
    "n_params": "length of theta_mean",
    "input_dim": "p",
    "scaling": "the data's scaling (JSON): \"none\", or per column offset and scale of X "
               "and of the target, original = offset + scale * value (mcdpf.read_run)",
    "dtype": "model.dtype",
    "mcdpf_version": "version that wrote the file",
    "loop_seconds": "seconds of the training loop (start-up and compilation excluded)",
    "startup_seconds": "seconds from start to the first step",
    "compile_seconds": "seconds in numba's compiler (compiling or loading cached kernels), at "
                       "set-up and in the loop; not part of loop_seconds",
    "empty_walks": "steps with an empty walk",
    "degenerate_steps": "steps with degenerate weights",
    "skipped_steps": "steps without data",
    "dropped_at": "-1, or the step this node left the network",
    "valid_until": "steps whose records are valid (the run's steps, or a lost node's last "
                   "checkpoint)",
    "walk_steps": "s, the random-walk steps per time step the run used (dpf; the value "
                  "filter.walk_steps = \"auto\" chose), 0 for an algorithm without a walk",
}


def empty_records(steps: int, n_params: int, record_estimates: bool) -> dict:
    """Preallocated per-step records of one node."""
    records = {name: np.full(steps, spec.fill, dtype=spec.dtype)
               for name, spec in RECORDS.items()}
    if record_estimates:
        records[ESTIMATES] = np.full((steps, n_params), np.nan)
    return records


def check_can_write(path: Path) -> None:
    """Refuse (``InputError``) a run directory that cannot be written.

    A file is created in it (or in its nearest existing parent) and removed: permissions
    alone do not tell (root; a read-only mount).
    """
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    if not existing.is_dir():
        raise InputError(f"{path}: cannot create the run directory ({existing} is not a "
                         "directory)")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".mcdpf-probe-"):
            pass
    except OSError as error:
        raise InputError(f"{path}: cannot write the run directory ({existing}: "
                         f"{error.strerror or error})") from None


class RunDirectory:
    """A run's directory: names of its files, reading and writing them.

    Parameters
    ----------
    path
        The directory (created when first written).
    """

    def __init__(self, path):
        self.path = Path(path)
        self._damaged: set[tuple[int, int]] = set()  # checkpoints whose digest failed

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    # ---------------------------------------------------------------- names
    def node_file(self, node: int) -> Path:
        """Output file of ``node``."""
        return self.path / f"node-{node:04d}.h5"

    def node_files(self) -> list[Path]:
        """Every node output file present, sorted."""
        return sorted(self.path.glob("node-*.h5"))

    @property
    def checkpoint_directory(self) -> Path:
        """``RUN_DIR/checkpoints``."""
        return self.path / "checkpoints"

    def checkpoint_file(self, node: int, step: int) -> Path:
        """Checkpoint of ``node`` after ``step`` completed steps."""
        return self.checkpoint_directory / f"node-{node:04d}-step-{step:08d}.h5"

    @property
    def config_file(self) -> Path:
        """``config.json``: the resolved configuration (``mcdpf train --resume RUN_DIR``)."""
        return self.path / "config.json"

    @property
    def processes_file(self) -> Path:
        """``processes.json``."""
        return self.path / "processes.json"

    @property
    def resumes_file(self) -> Path:
        """``resumes.json``."""
        return self.path / "resumes.json"

    @property
    def restarts_file(self) -> Path:
        """``restarts.json``."""
        return self.path / "restarts.json"

    @property
    def markers_directory(self) -> Path:
        """``RUN_DIR/ranks``: the liveness markers of a supervised job (``mcdpf supervise``)."""
        return self.path / "ranks"

    # ---------------------------------------------------------------- checks
    def check_writable(self, force: bool, resume: bool) -> None:
        """Refuse to overwrite an existing run unless ``force`` (or when resuming it)."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise InputError(f"{path}: output path exists and is not a directory")
        if resume:
            if not path.is_dir():
                raise InputError(f"{path}: no run directory to resume")
            check_can_write(path)
            return
        if not force and path.is_dir() and self.node_files():
            raise InputError(f"{path}: already holds a run (node-*.h5); choose another --out "
                             "or pass --force to overwrite it")
        check_can_write(path)

    def holds_run(self) -> bool:
        """Whether the directory holds (part of) a run: node files, checkpoints, processes."""
        return bool(self.node_files()) or self.checkpoint_directory.is_dir() \
            or self.processes_file.is_file()

    def prepare(self, force: bool, resume: bool) -> None:
        """Create the directory; with ``force`` (not resuming) empty a previous run's.

        Everything in a directory that holds a run goes - node files, checkpoints, resume
        history, and whatever else was put there, such as a report's plot - except what
        belongs to ``mcdpf supervise`` (``restarts.json``, the markers), which may be
        restarting this very run. A later ``--resume`` must never pick up another run's
        checkpoint or departures, and no file may look like this run's output.
        """
        try:
            if force and not resume and self.path.is_dir() and self.holds_run():
                kept = {self.restarts_file, self.markers_directory}
                for entry in self.path.iterdir():
                    if entry in kept:
                        continue
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise storage_error(self.path, error) from None

    # ---------------------------------------------------------------- outputs
    def write_node(self, node: int, records: dict, final: dict, attributes: dict) -> Path:
        """Write ``node``'s output file: its records, final datasets and attributes.

        The directory is not created again: a directory that vanished during the run is
        a :class:`~mcdpf.errors.StorageError`, as is a full disk.
        """
        path = self.node_file(node)
        write_node_file(path, {**records, **final}, attributes)
        return path

    def read_nodes(self):
        """Every node's :class:`~mcdpf.io.NodeRecord`, ordered by node."""
        if not self.path.is_dir():
            raise InputError(f"{self.path}: run directory not found")
        return read_node_files(self.path, self.node_files())

    def write_json(self, path: Path, value) -> None:
        """Write a JSON file of the run directory (whole, then renamed; ``StorageError``)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise storage_error(self.path, error) from None
        atomic_text(path, json.dumps(value, indent=1) + "\n")

    def read_json(self, path: Path, default):
        """A JSON file of the run directory, or ``default`` if absent."""
        if not path.is_file():
            return default
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: unreadable ({error})") from None

    def append_json(self, path: Path, entry: dict) -> None:
        """Append ``entry`` to a JSON list file."""
        self.write_json(path, [*self.read_json(path, []), entry])

    # ---------------------------------------------------------------- checkpoints
    def _named_checkpoint_steps(self, node: int) -> list[int]:
        """Steps of the files named as ``node``'s checkpoints, ascending (not opened)."""
        directory = self.checkpoint_directory
        if not directory.is_dir():
            return []
        steps = []
        for path in directory.iterdir():
            match = CHECKPOINT_NAME.match(path.name)
            if match and int(match.group(1)) == node:
                steps.append(int(match.group(2)))
        return sorted(steps)

    def checkpoint_steps(self, node: int) -> list[int]:
        """Steps of ``node``'s complete checkpoints, ascending (torn, foreign, damaged skipped)."""
        return [step for step in self._named_checkpoint_steps(node)
                if (node, step) not in self._damaged
                and is_complete(self.checkpoint_file(node, step))]

    def skip_checkpoint(self, node: int, step: int) -> None:
        """Leave ``node``'s checkpoint of ``step`` out from now on (its digest failed)."""
        self._damaged.add((node, step))

    def write_checkpoint(self, node: int, step: int, state: dict, records: dict,
                         attributes: dict, keep: int, named: list[int] | None = None
                         ) -> list[int]:
        """Write ``node``'s checkpoint of ``step``; keep only its newest ``keep``.

        The files kept are the newest by name (a file under its final name was written
        whole; reading them all to check would cost more than the checkpoint). ``named``:
        the steps of ``node``'s files before this one, if the caller keeps track of them
        (else the directory is listed). Returns the steps kept.
        """
        write_checkpoint(self.checkpoint_file(node, step), state, records,
                         {**attributes, "step": step, "node": node},
                         parents=False)  # a run directory that vanished is an error
        steps = sorted({*(self._named_checkpoint_steps(node) if named is None else named),
                        step})
        for old in steps[:-keep]:
            self.checkpoint_file(node, old).unlink(missing_ok=True)
        return steps[-keep:]

    def read_checkpoint(self, node: int, step: int) -> tuple[dict, dict, dict]:
        """``(learner state, records, attributes)`` of ``node``'s checkpoint of ``step``."""
        return read_checkpoint(self.checkpoint_file(node, step))

    def checkpoint_attributes(self, node: int, step: int) -> dict:
        """The attributes of ``node``'s checkpoint of ``step`` (its arrays are not read)."""
        return read_checkpoint_attributes(self.checkpoint_file(node, step))

    def network_size(self) -> int:
        """Nodes of the run's network, as its checkpoints record it (``InputError``: none)."""
        directory = self.checkpoint_directory
        for path in sorted(directory.iterdir()) if directory.is_dir() else []:
            if CHECKPOINT_NAME.match(path.name) and is_complete(path):
                return int(read_checkpoint_attributes(path)["n_nodes"])
        raise NoCheckpoint(f"{self.path}: no checkpoint to resume from (set "
                           "run.checkpoint_every to write them)")

    def read_resumes(self) -> list[dict]:
        """The resume history (``resumes.json``), checked: a list of ``{step, without, ...}``."""
        history = self.read_json(self.resumes_file, [])
        valid = isinstance(history, list) and all(
            isinstance(entry, dict) and isinstance(entry.get("step"), int)
            and isinstance(entry.get("without"), list)
            and all(isinstance(node, int) for node in entry["without"]) for entry in history)
        if not valid:
            raise InputError(f"{self.resumes_file}: not a list of resumes "
                             "({\"step\": S, \"without\": [nodes], ...})")
        return history


def read_run(run_dir):
    """Every node's outputs of a run directory, ordered by node."""
    return RunDirectory(run_dir).read_nodes()
