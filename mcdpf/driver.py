"""Training driver: set-up with agreed verdicts, the online loop, checkpoints, outputs.

:func:`setup_node` loads and validates everything one rank needs (topology, its data,
the model, faults, the output directory); it raises :class:`~mcdpf.errors.InputError`
and touches no communicator. :func:`agree_setup` then runs the set-up collectives: every
rank learns whether any rank failed, all agree on the number of steps ``T`` and, when
resuming, on the newest checkpoint that every rank has. :func:`run_node` runs the online
loop, where the only communication is neighbour exchanges inside the learners (plus a
graph rebuild at each node-loss event), and writes this rank's HDF5 file.
"""

from __future__ import annotations

import json
import os
import signal
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
from .io import (
    checkpoint_steps,
    node_file_name,
    read_checkpoint,
    read_stream_file,
    write_checkpoint,
    write_node_file,
)
from .models import build_model
from .report import finite_mean
from .streams import handle_nonfinite, node_stream
from .topology import build_topology

# Resolved-configuration keys that may change between a run and its resumption: they do
# not affect the results (an injected crash or kill must be removable to resume at all).
RESUMABLE_CHANGES = {("run", "out"), ("run", "progress_seconds"), ("run", "checkpoint_every"),
                     ("faults", "crash"), ("faults", "kill")}


class InjectedFault(RuntimeError):
    """Raised on purpose by ``faults.crash``."""


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
    resume: bool = False


def default_out_dir(config) -> Path:
    """``run.out``, else ``runs/<config file stem>``."""
    if config.run.out is not None:
        return Path(config.run.out)
    stem = Path(config.source).stem if config.source != "<defaults>" else "run"
    return Path("runs") / stem


def check_out_dir(out_dir: Path, force: bool, resume: bool) -> None:
    """Refuse to overwrite an existing run unless ``force`` (or when resuming it)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: output path exists and is not a directory")
    if resume:
        if not out_dir.is_dir():
            raise InputError(f"{out_dir}: no run directory to resume")
        return
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


def check_faults(faults, topology) -> None:
    """Fault nodes in range; every node-loss event leaves a connected network."""
    for kind in ("drop", "crash", "kill"):
        for node, _ in getattr(faults, kind) or []:
            if node >= topology.nodes:
                raise InputError(f"faults.{kind}: node {node} does not exist (nodes 0.."
                                 f"{topology.nodes - 1})")
    network = topology
    for step, dropped in drop_schedule(faults):
        try:
            network = network.without(dropped)
        except InputError as error:
            raise InputError(f"faults.drop at step {step}: {error}") from None


def drop_schedule(faults) -> list[tuple[int, list[int]]]:
    """``[(step, [nodes leaving at that step]), ...]`` in step order."""
    events: dict[int, list[int]] = {}
    for node, step in faults.drop or []:
        events.setdefault(step, []).append(node)
    return sorted(events.items())


def setup_node(config, nodes: int, node: int, out_dir: Path, force: bool,
               resume: bool = False) -> NodeSetup:
    """Validate and load everything rank ``node`` needs; raise :class:`InputError`."""
    topology = build_topology(config.topology, nodes)
    check_faults(config.faults, topology)
    check_out_dir(out_dir, force, resume)
    stream, skipped = load_stream(config, nodes, node)
    model = build_model(config.model, stream.input_dim)
    check_algorithm_inputs(config, model)
    node_streams = node_skipped = None
    if config.run.algorithm in NEEDS_ALL_STREAMS:
        loaded = [(stream, skipped) if j == node else load_stream(config, nodes, j)
                  for j in range(nodes)]
        node_streams = [s.astype(model.dtype) for s, _ in loaded]
        node_skipped = [mask.copy() for _, mask in loaded]
        for j, step in config.faults.drop or []:
            node_skipped[j][step:] = True
    warnings = list(topology.warnings())
    if config.data.source == "file" and config.data.partition is not None:
        warnings.append(f"data.partition = \"{config.data.partition}\" is ignored: a stream "
                        "file holds one stream per node")
    if config.run.algorithm == "dpf" and config.filter.migration == "balanced" \
            and not np.allclose(topology.transition.sum(axis=0), 1.0):
        warnings.append("filter.migration = \"balanced\" on a walk that is not doubly "
                        "stochastic: node particle counts drift from N before resampling")
    return NodeSetup(config=config, topology=topology, node=node,
                     stream=stream.astype(model.dtype), skipped=skipped, model=model,
                     out_dir=out_dir, warnings=warnings, node_streams=node_streams,
                     node_skipped=node_skipped, resume=resume)


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
    steps = steps if steps is not None else shortest
    if problem is None:
        for kind in ("drop", "crash", "kill"):
            late = [pair for pair in getattr(config.faults, kind) or [] if pair[1] >= steps]
            if late:
                problem = f"faults.{kind}: step {late[0][1]} is not before run end ({steps})"
                break
    error = comm_layer.agree_on_error(comm, problem)
    return error, steps


def different_keys(saved: dict, current: dict) -> list[str]:
    """``section.key (saved vs current)`` for every key that differs and may not."""
    changes = []
    for section, table in current.items():
        for key, value in table.items():
            if (section, key) in RESUMABLE_CHANGES:
                continue
            old = saved.get(section, {}).get(key)
            if old != value:
                changes.append(f"{section}.{key} ({json.dumps(old)} vs {json.dumps(value)})")
    return changes


def checkpoints_to_keep(setup: NodeSetup) -> int:
    """How many checkpoints a rank keeps so that one step is common to every rank.

    Ranks of a communicating algorithm drift apart by at most about the graph diameter in
    time steps (each neighbour exchange holds a node to its neighbours' pace), so the
    newest checkpoint of the slowest rank is within ``diameter + 1 + every`` steps of the
    fastest rank's. Independent algorithms resume every rank from its own newest.
    """
    if setup.config.run.algorithm not in COMMUNICATING:
        return 2
    every = setup.config.run.checkpoint_every
    return 2 + -(-(setup.topology.diameter + 1) // max(every, 1))


def agree_resume(comm, setup: NodeSetup, steps: int) -> tuple[str | None, int, tuple | None]:
    """Set-up collectives for ``--resume``: the checkpoint to continue from, checked.

    Communicating algorithms continue from the newest step that every rank has; ranks of
    an algorithm without communication are independent and continue from their own newest
    (from the start if a rank was stopped before its first checkpoint).
    """
    mine = checkpoint_steps(setup.out_dir, setup.node)
    own = mine[-1] if mine else -1
    independent = setup.config.run.algorithm not in COMMUNICATING
    common = comm_layer.agree_max(comm, own) if independent else comm_layer.agree_min(comm, own)
    newest = own if independent else common
    problem, loaded = None, None
    if common < 0:
        problem = (f"{setup.out_dir}: no checkpoint that every rank has (set "
                   "run.checkpoint_every to write them)")
    elif independent and newest < 0:
        pass  # this rank restarts from step 0
    elif newest not in mine:
        problem = f"{setup.out_dir}: node {setup.node} lacks the checkpoint of step {newest}"
    else:
        try:
            loaded = read_checkpoint(setup.out_dir, setup.node, newest)
            attributes = loaded[2]
            if int(attributes["n_nodes"]) != setup.topology.nodes:
                problem = (f"{setup.out_dir}: the checkpoint was written by a "
                           f"{attributes['n_nodes']}-node run; this job has "
                           f"{setup.topology.nodes} ranks")
            else:
                changes = different_keys(json.loads(attributes["config"]),
                                         setup.config.to_dict())
                if changes:
                    problem = (f"{setup.out_dir}: cannot resume with a different "
                               f"configuration: {', '.join(changes[:3])}")
                elif newest >= steps:
                    problem = (f"{setup.out_dir}: the checkpoint is at step {newest}, not "
                               f"before the run's end ({steps})")
        except InputError as error:
            problem = str(error)
    error = comm_layer.agree_on_error(comm, problem)
    return error, newest, loaded


def train(comm, config, out_dir: Path | None = None, *, force: bool = False,
          resume: bool = False, progress: bool = False, started: float | None = None,
          warn: bool = True) -> dict:
    """Train this rank's node: the library entry point behind ``mcdpf train``.

    Every rank of ``comm`` calls it with the same configuration. Bad inputs on any rank
    raise :class:`InputError` with the same message on every rank. With ``resume`` the
    run continues from the newest checkpoint that every rank has in ``out_dir``. Returns
    this node's records (``datasets``, ``attributes``) as written to its output file.
    """
    started = time.perf_counter() if started is None else started
    rank, size = comm.Get_rank(), comm.Get_size()
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(config)
    setup, error = None, None
    try:
        setup = setup_node(config, size, rank, out_dir, force, resume)
    except InputError as problem:
        error = str(problem)
    error, steps = agree_setup(comm, setup, error)
    if error:
        raise InputError(error)
    checkpoint = None
    if resume:
        error, _, checkpoint = agree_resume(comm, setup, steps)
        if error:
            raise InputError(error)
    processes = comm_layer.process_table(comm)
    if rank == 0:
        if warn:
            for warning in setup.warnings:
                print(f"mcdpf: warning: {warning}", file=sys.stderr, flush=True)
        if force and not resume:
            for stale in out_dir.glob("node-*.h5"):
                stale.unlink()
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "processes.json").write_text(json.dumps(processes, indent=1) + "\n")
    return run_node(comm, setup, steps, started, progress and rank == 0, checkpoint)


class Recorder:
    """Per-step records of one node, kept in preallocated arrays."""

    def __init__(self, steps: int, n_params: int, record_estimates: bool):
        self.data = {
            "target": np.full(steps, np.nan),
            "prediction": np.full(steps, np.nan),
            "squared_error": np.full(steps, np.nan),
            "ess": np.full(steps, np.nan),
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
            self.data["theta_estimates"] = np.full((steps, n_params), np.nan)

    def record(self, t, target, prediction, info, seconds, estimate) -> None:
        """Store step ``t`` (``info`` None: the node did not take part)."""
        d = self.data
        d["step_seconds"][t] = seconds
        if info is None:
            d["skipped"][t] = 1
            return
        if target is None:
            d["skipped"][t] = 1
        else:
            d["target"][t] = target
            d["prediction"][t] = prediction
            d["squared_error"][t] = (target - prediction) ** 2
        d["ess"][t] = info.ess
        d["particles_held"][t] = info.held
        d["particles_received"][t] = info.received
        d["particles_sent"][t] = info.sent
        d["bytes_sent"][t] = info.bytes_sent
        d["resampled"][t] = info.resampled
        d["degenerate"][t] = info.degenerate
        d["empty_walk"][t] = info.empty_walk
        if "theta_estimates" in d:
            d["theta_estimates"][t] = estimate


class Progress:
    """Progress line on the first rank, at a modest rate (display only)."""

    def __init__(self, enabled: bool, interval: float, steps: int, first: int):
        self.enabled = enabled and interval > 0
        self.interval = interval
        self.steps = steps
        self.first = first
        self.tty = sys.stderr.isatty()
        self.last = time.perf_counter()
        self.start = self.last

    def update(self, t: int, squared_error: np.ndarray) -> None:
        """Print a line if ``interval`` seconds have passed, and at the end."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < self.interval and t + 1 < self.steps:
            return
        self.last = now
        done = t + 1
        mse = finite_mean(squared_error[:done])
        rate = (done - self.first) / max(now - self.start, 1e-9)
        line = (f"mcdpf: step {done}/{self.steps}  node-0 running MSE {mse:.5g}  "
                f"{rate:.1f} steps/s")
        end = "\n" if (not self.tty or done == self.steps) else ""
        print(("\r" if self.tty else "") + line, end=end, file=sys.stderr, flush=True)


class Network:
    """The graph as the run goes: neighbourhood rebuilt at every node-loss event."""

    def __init__(self, comm, setup: NodeSetup, start_step: int):
        self.comm = comm
        self.node = setup.node
        self.communicating = setup.config.run.algorithm in COMMUNICATING
        self.events = dict(drop_schedule(setup.config.faults))
        self.topology = setup.topology
        for step, dropped in self.events.items():
            if step < start_step:
                self.topology = self.topology.without(dropped)
        self.neighbourhood = self._connect()

    def _connect(self):
        if not self.communicating:
            return None
        return comm_layer.Neighbourhood(self.comm, self.topology.neighbours(self.node))

    @property
    def active(self) -> bool:
        """Whether this node is still in the network."""
        return self.node not in self.topology.removed

    def advance(self, step: int, learner) -> None:
        """Apply the node-loss events of ``step`` (a collective over all ranks)."""
        if step not in self.events:
            return
        self.topology = self.topology.without(self.events[step])
        if self.neighbourhood is not None:
            self.neighbourhood.free()
        self.neighbourhood = self._connect()
        if self.active and hasattr(learner, "rewire"):
            learner.rewire(self.topology, self.neighbourhood)

    def close(self) -> None:
        """Free the graph communicator."""
        if self.neighbourhood is not None:
            self.neighbourhood.free()


def inject_faults(faults, node: int, step: int) -> None:
    """``faults.crash`` raises, ``faults.kill`` SIGKILLs this process, at their steps."""
    if [node, step] in (faults.crash or []):
        raise InjectedFault(f"faults.crash: injected failure of node {node} at step {step}")
    if [node, step] in (faults.kill or []):
        print(f"mcdpf: rank {node}: faults.kill: killing this process (SIGKILL) at step "
              f"{step}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def run_node(comm, setup: NodeSetup, steps: int, started: float, progress_enabled: bool,
             checkpoint: tuple | None = None) -> dict:
    """Train one node for ``steps`` steps and write its output file; return its records."""
    from .kernels import warm_up

    config = setup.config
    node = setup.node
    start_step = int(checkpoint[2]["step"]) if checkpoint else 0
    network = Network(comm, setup, start_step)
    context = LearnerContext(config=config, model=setup.model, topology=network.topology,
                             node=node, neighbourhood=network.neighbourhood,
                             node_streams=setup.node_streams, node_skipped=setup.node_skipped)
    learner = build_learner(config.run.algorithm, context)
    recorder = Recorder(steps, setup.model.n_params, config.run.record_estimates)
    previous_loop_seconds = 0.0
    if checkpoint:
        state, records, attributes = checkpoint
        learner.restore(state)
        recorder.data.update({name: records[name] for name in recorder.data})
        previous_loop_seconds = float(attributes["loop_seconds"])
    warm_up(setup.model.dtype)
    progress = Progress(progress_enabled, config.run.progress_seconds, steps, start_step)
    stream = setup.stream
    every = config.run.checkpoint_every
    loop_start = time.perf_counter()
    startup_seconds = loop_start - started
    for t in range(start_step, steps):
        step_start = time.perf_counter()
        network.advance(t, learner)
        inject_faults(config.faults, node, t)
        if not network.active:
            recorder.record(t, None, None, None, 0.0, None)
            continue
        skipped = bool(setup.skipped[t])
        columns = None if skipped else stream.sequence(t)
        target = None if skipped else float(stream.targets[t])
        prediction = learner.predict(columns)
        if target is not None and not np.isfinite(prediction):
            raise FloatingPointError(f"node {node}, step {t}: non-finite prediction "
                                     f"{prediction} from finite data")
        info = learner.update(target)
        recorder.record(t, target, prediction, info, time.perf_counter() - step_start,
                        learner.estimate)
        progress.update(t, recorder.data["squared_error"])
        if every and (t + 1) % every == 0 and t + 1 < steps:
            elapsed = previous_loop_seconds + time.perf_counter() - loop_start
            write_checkpoint(setup.out_dir, node, t + 1, learner.state(), recorder.data,
                             {"config": config.to_json(), "n_nodes": setup.topology.nodes,
                              "loop_seconds": elapsed, "mcdpf_version": __version__},
                             keep=checkpoints_to_keep(setup))
    loop_seconds = previous_loop_seconds + time.perf_counter() - loop_start
    network.close()
    return write_outputs(setup, steps, recorder, learner, loop_seconds, startup_seconds)


def write_outputs(setup: NodeSetup, steps, recorder, learner, loop_seconds,
                  startup_seconds) -> dict:
    """Write this rank's ``node-NNNN.h5``; return what was written."""
    config = setup.config
    datasets = dict(recorder.data)
    datasets["theta_mean"] = np.asarray(learner.estimate, dtype=np.float64)
    datasets["neighbours"] = np.array(setup.topology.neighbours(setup.node), dtype=np.int64)
    dropped = [step for node, step in config.faults.drop or [] if node == setup.node]
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
        "dropped_at": min(dropped) if dropped else -1,
    }
    setup.out_dir.mkdir(parents=True, exist_ok=True)
    write_node_file(setup.out_dir / node_file_name(setup.node), datasets, attributes)
    return {"datasets": datasets, "attributes": attributes, "out_dir": setup.out_dir}
