"""Training driver: set-up with agreed verdicts, the online loop, per-rank outputs.

:func:`setup_node` loads and validates everything one rank needs (topology, its data,
the model, the output directory); it raises :class:`~mcdpf.errors.InputError` and
touches no communicator. :func:`agree_setup` then runs the set-up collectives: every rank
learns whether any rank failed and all agree on the number of steps ``T``.
:func:`run_node` runs the online loop, where the only communication is neighbour
exchanges inside the learners, and writes this rank's HDF5 file.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from . import comm as comm_layer
from .algorithms import (
    COMMUNICATING,
    NEEDS_ALL_STREAMS,
    LearnerContext,
    build_learner,
    check_algorithm_inputs,
)
from .errors import InputError
from .io import node_file_name, read_stream_file, write_node_file
from .models import build_model
from .streams import handle_nonfinite, node_stream
from .topology import build_topology


@dataclass
class NodeSetup:
    """What one rank loaded and validated before the run."""

    config: object
    topology: object
    node: int
    stream: object
    skipped: np.ndarray
    model: object
    out_dir: Path
    warnings: list[str] = field(default_factory=list)
    node_streams: list | None = None
    node_skipped: list | None = None


def default_out_dir(config) -> Path:
    """``run.out``, else ``runs/<config file stem>``."""
    if config.run.out is not None:
        return Path(config.run.out)
    stem = Path(config.source).stem if config.source != "<defaults>" else "run"
    return Path("runs") / stem


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse to overwrite an existing run unless ``force``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: output path exists and is not a directory")
    if not force and out_dir.is_dir() and any(out_dir.glob("node-*.h5")):
        raise InputError(f"{out_dir}: already holds a run (node-*.h5); choose another --out "
                         "or pass --force to overwrite it")


def load_stream(config, nodes: int, node: int):
    """This node's stream (float64) and its skipped-step mask."""
    data = config.data
    if data.source == "file":
        stream = read_stream_file(data.path, node, nodes)
        label = f"{data.path}: node{node}"
    else:
        stream = node_stream(data, config.run.steps, nodes, node)
        label = f"data.source = \"{data.source}\""
    return handle_nonfinite(stream, data.nonfinite, label)


def setup_node(config, nodes: int, node: int, out_dir: Path, force: bool) -> NodeSetup:
    """Validate and load everything rank ``node`` needs; raise :class:`InputError`."""
    topology = build_topology(config.topology, nodes)
    check_out_dir(out_dir, force)
    stream, skipped = load_stream(config, nodes, node)
    model = build_model(config.model, stream.input_dim)
    check_algorithm_inputs(config, model)
    node_streams = node_skipped = None
    if config.run.algorithm in NEEDS_ALL_STREAMS:
        loaded = [(stream, skipped) if j == node else load_stream(config, nodes, j)
                  for j in range(nodes)]
        node_streams = [s.astype(model.dtype) for s, _ in loaded]
        node_skipped = [mask for _, mask in loaded]
    if config.run.algorithm == "dpf" and config.filter.migration == "balanced" \
            and not np.allclose(topology.transition.sum(axis=0), 1.0):
        warnings = ["filter.migration = \"balanced\" on a walk that is not doubly "
                    "stochastic: node particle counts drift from N before resampling"]
    else:
        warnings = []
    return NodeSetup(config=config, topology=topology, node=node,
                     stream=stream.astype(model.dtype), skipped=skipped, model=model,
                     out_dir=out_dir, warnings=warnings + topology.warnings(),
                     node_streams=node_streams, node_skipped=node_skipped)


def agree_setup(comm, setup: NodeSetup | None, error: str | None) -> tuple[str | None, int]:
    """Set-up collectives: the first error of any rank, else the agreed step count."""
    error = comm_layer.agree_on_error(comm, error)
    if error:
        return error, 0
    config = setup.config
    length = setup.stream.steps
    shortest = comm_layer.agree_min(comm, length)
    longest = comm_layer.agree_max(comm, length)
    steps = config.run.steps
    problem = None
    if steps is None and shortest != longest:
        problem = (f"node streams have different lengths ({shortest} .. {longest} steps); "
                   f"set run.steps <= {shortest} to run that many")
    elif steps is not None and steps > shortest:
        problem = f"run.steps = {steps} exceeds the shortest node stream ({shortest} steps)"
    error = comm_layer.agree_on_error(comm, problem)
    return error, (steps if steps is not None else shortest)


class Recorder:
    """Per-step records of one node, kept in preallocated arrays."""

    def __init__(self, steps: int, n_params: int, record_estimates: bool):
        self.steps = steps
        self.data = {
            "target": np.full(steps, np.nan),
            "prediction": np.full(steps, np.nan),
            "squared_error": np.full(steps, np.nan),
            "ess": np.zeros(steps),
            "particles_held": np.zeros(steps, dtype=np.int64),
            "particles_received": np.zeros(steps, dtype=np.int64),
            "particles_sent": np.zeros(steps, dtype=np.int64),
            "bytes_sent": np.zeros(steps, dtype=np.int64),
            "resampled": np.zeros(steps, dtype=np.int8),
            "degenerate": np.zeros(steps, dtype=np.int8),
            "empty_walk": np.zeros(steps, dtype=np.int8),
            "skipped": np.zeros(steps, dtype=np.int8),
            "step_seconds": np.zeros(steps),
        }
        if record_estimates:
            self.data["theta_estimates"] = np.zeros((steps, n_params))

    def record(self, t, target, prediction, info, seconds, skipped, estimate) -> None:
        """Store step ``t``."""
        d = self.data
        if not skipped:
            d["target"][t] = target
            d["prediction"][t] = prediction
            d["squared_error"][t] = (target - prediction) ** 2
        d["skipped"][t] = skipped
        d["ess"][t] = info.ess
        d["particles_held"][t] = info.held
        d["particles_received"][t] = info.received
        d["particles_sent"][t] = info.sent
        d["bytes_sent"][t] = info.bytes_sent
        d["resampled"][t] = info.resampled
        d["degenerate"][t] = info.degenerate
        d["empty_walk"][t] = info.empty_walk
        d["step_seconds"][t] = seconds
        if "theta_estimates" in d:
            d["theta_estimates"][t] = estimate


class Progress:
    """Progress line on the first rank, at a modest rate (display only)."""

    def __init__(self, enabled: bool, interval: float, steps: int):
        self.enabled = enabled and interval > 0
        self.interval = interval
        self.steps = steps
        self.tty = sys.stderr.isatty()
        self.last = time.perf_counter()
        self.start = self.last

    def update(self, t: int, squared_error: np.ndarray) -> None:
        """Print a line if ``interval`` seconds have passed."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < self.interval and t + 1 < self.steps:
            return
        self.last = now
        done = t + 1
        mse = np.nanmean(squared_error[:done]) if np.any(np.isfinite(squared_error[:done])) \
            else float("nan")
        rate = done / max(now - self.start, 1e-9)
        line = (f"mcdpf: step {done}/{self.steps}  node-0 running MSE {mse:.5g}  "
                f"{rate:.1f} steps/s")
        end = "\n" if (not self.tty or done == self.steps) else ""
        print(("\r" if self.tty else "") + line, end=end, file=sys.stderr, flush=True)


def train(comm, config, out_dir: Path | None = None, *, force: bool = False,
          progress: bool = False, started: float | None = None, warn: bool = True) -> dict:
    """Train this rank's node: the library entry point behind ``mcdpf train``.

    Every rank of ``comm`` calls it with the same configuration. Bad inputs on any rank
    raise :class:`InputError` with the same message on every rank. Returns this node's
    records (``datasets``, ``attributes``) as written to its output file.
    """
    started = time.perf_counter() if started is None else started
    rank, size = comm.Get_rank(), comm.Get_size()
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(config)
    setup, error = None, None
    try:
        setup = setup_node(config, size, rank, out_dir, force)
    except InputError as problem:
        error = str(problem)
    error, steps = agree_setup(comm, setup, error)
    if error:
        raise InputError(error)
    if rank == 0 and warn:
        for warning in setup.warnings:
            print(f"mcdpf: warning: {warning}", file=sys.stderr, flush=True)
        if force:
            for stale in out_dir.glob("node-*.h5"):
                stale.unlink()
    return run_node(comm, setup, steps, started, progress and rank == 0)


def run_node(comm, setup: NodeSetup, steps: int, started: float,
             progress_enabled: bool) -> dict:
    """Train one node for ``steps`` steps and write its output file; return its records."""
    from .kernels import warm_up

    config = setup.config
    node = setup.node
    neighbourhood = None
    if config.run.algorithm in COMMUNICATING:
        neighbourhood = comm_layer.Neighbourhood(comm, setup.topology.neighbours(node))
    context = LearnerContext(config=config, model=setup.model, topology=setup.topology,
                             node=node, neighbourhood=neighbourhood,
                             node_streams=setup.node_streams, node_skipped=setup.node_skipped)
    learner = build_learner(config.run.algorithm, context)
    warm_up(setup.model.dtype)
    recorder = Recorder(steps, setup.model.n_params, config.run.record_estimates)
    progress = Progress(progress_enabled, config.run.progress_seconds, steps)
    stream = setup.stream
    loop_start = time.perf_counter()
    startup_seconds = loop_start - started
    for t in range(steps):
        step_start = time.perf_counter()
        skipped = bool(setup.skipped[t])
        columns = None if skipped else stream.sequence(t)
        target = None if skipped else float(stream.targets[t])
        prediction = learner.predict(columns)
        info = learner.update(target)
        recorder.record(t, target, prediction, info, time.perf_counter() - step_start,
                        skipped, learner.estimate)
        progress.update(t, recorder.data["squared_error"])
    loop_seconds = time.perf_counter() - loop_start
    if neighbourhood is not None:
        neighbourhood.free()
    return write_outputs(setup, steps, recorder, learner, loop_seconds, startup_seconds)


def write_outputs(setup: NodeSetup, steps, recorder, learner, loop_seconds,
                  startup_seconds) -> dict:
    """Write this rank's ``node-NNNN.h5``; return what was written."""
    config = setup.config
    datasets = dict(recorder.data)
    datasets["theta_mean"] = np.asarray(learner.estimate, dtype=np.float64)
    neighbours = np.array(setup.topology.neighbours(setup.node), dtype=np.int64)
    datasets["neighbours"] = neighbours
    attributes = {
        "node": setup.node,
        "n_nodes": setup.topology.nodes,
        "algorithm": config.run.algorithm,
        "steps": steps,
        "config": config.to_json(),
        "topology": json.dumps(setup.topology.describe()),
        "model_kind": setup.model.kind,
        "theta_layout": setup.model.layout(),
        "n_params": setup.model.n_params,
        "input_dim": setup.stream.input_dim,
        "dtype": str(setup.model.dtype),
        "mcdpf_version": __version__,
        "loop_seconds": loop_seconds,
        "startup_seconds": startup_seconds,
        "empty_walks": int(recorder.data["empty_walk"].sum()),
        "degenerate_steps": int(recorder.data["degenerate"].sum()),
        "skipped_steps": int(recorder.data["skipped"].sum()),
    }
    setup.out_dir.mkdir(parents=True, exist_ok=True)
    write_node_file(setup.out_dir / node_file_name(setup.node), datasets, attributes)
    return {"datasets": datasets, "attributes": attributes, "out_dir": setup.out_dir}
