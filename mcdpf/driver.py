"""Training driver: set-up, resume, the online loop over a stream, checkpoints, outputs.

:func:`train` is what ``mcdpf train`` and :func:`mcdpf.train` run on every rank:
:mod:`~mcdpf.preparation` loads and validates (with agreed verdicts),
:mod:`~mcdpf.resume` picks the checkpoint to continue from, then :func:`run_node` feeds
the node's stream step by step to a :class:`~mcdpf.node.Node` (the only per-step
communication is the neighbour exchanges inside its learner, plus a graph rebuild at each
node-loss event), records every step, writes checkpoints, and writes this rank's output
file into the :class:`~mcdpf.rundir.RunDirectory`.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from . import __version__
from . import comm as comm_layer
from .algorithms import traits, walk_steps_used
from .elastic import Membership, ResumePlan, plan_resume
from .errors import InputError
from .kernels import warm_up
from .node import Node
from .preparation import agree_setup, all_streams, default_out_dir, prepare_node
from .report import finite_mean
from .resume import agree_resume, checkpoints_to_keep
from .rundir import ESTIMATES, RunDirectory, empty_records


class InjectedFault(RuntimeError):
    """Raised on purpose by ``faults.crash``."""


def train(comm, config, out_dir: Path | None = None, *, force: bool = False,
          resume: bool = False, without: tuple[int, ...] = (), cause: str = "manual",
          progress: bool = False, started: float | None = None, warn: bool = True,
          stream=None, write: bool = True) -> dict:
    """Train this rank's node; every rank of ``comm`` calls it with the same configuration.

    Bad inputs on any rank raise :class:`InputError` with the same message on every rank.
    With ``resume`` the run continues from the newest checkpoint that every rank has in
    ``out_dir``; ``without`` (node numbers) continues it on the other nodes, which must
    be the ranks of ``comm`` (:mod:`mcdpf.elastic`), and records the resume with
    ``cause`` in ``resumes.json``. ``stream`` (this rank's
    :class:`~mcdpf.streams.Stream`) replaces ``[data]``. Without ``write`` no file is
    written (no outputs, no checkpoints). Returns this node's records (``datasets``,
    ``attributes``, ``out_dir``) as written to its output file.
    """
    started = time.perf_counter() if started is None else started
    rank, size = comm.Get_rank(), comm.Get_size()
    run_dir = None
    if write:
        run_dir = RunDirectory(out_dir if out_dir is not None else default_out_dir(config))
    plan = ResumePlan(Membership.whole(size))
    if resume:
        plan = comm_layer.agreed(comm, lambda: _plan(run_dir, size, without, force))
    setup, error = None, None
    try:
        setup = prepare_node(config, plan.membership.network_size,
                             plan.membership.node_of(rank), run_dir, force, resume, stream)
    except InputError as problem:
        error = str(problem)
    error, steps = agree_setup(comm, setup, error)
    if error:
        raise InputError(error)
    setup.membership = plan.membership
    resumption = None
    if resume:
        error, resumption = agree_resume(comm, setup, steps, plan)
        if error:
            raise InputError(error)
        setup.drops = plan.drops(config.faults.drop, resumption.drop_step)
    if rank == 0 and run_dir is not None:
        run_dir.prepare(force, resume)
    if resume:
        comm_layer.agreed(comm, lambda: record_resume(setup, plan, resumption.drop_step, steps,
                                                      cause) if rank == 0 else None)
    processes = [{**process, "node": plan.membership.node_of(process["rank"])}
                 for process in comm_layer.process_table(comm)]
    if rank == 0:
        if warn:
            for warning in setup.warnings:
                print(f"mcdpf: warning: {warning}", file=sys.stderr, flush=True)
        if run_dir is not None:
            run_dir.write_json(run_dir.processes_file, processes)
    return run_node(comm, setup, steps, started, progress and rank == 0, resumption)


def _plan(run_dir, ranks: int, without, force: bool) -> ResumePlan:
    if run_dir is None:
        raise InputError("resume needs a run directory")
    run_dir.check_writable(force, resume=True)
    return plan_resume(run_dir, ranks, tuple(without))


def record_resume(setup, plan, step: int, steps: int, cause: str) -> None:
    """Write the output file of every node left out, then append to ``resumes.json``.

    A node left out now (or earlier, if its file is missing) gets its file from its
    newest checkpoint at or before the step it left (:func:`write_departed_outputs`).
    """
    run_dir = setup.run_dir
    leaving = {**plan.departures, **{node: step for node in plan.without}}
    for node, left_at in sorted(leaving.items()):
        if node in plan.without or not run_dir.node_file(node).is_file():
            write_departed_outputs(setup, node, left_at, steps)
    run_dir.append_json(run_dir.resumes_file, {
        "step": step, "without": list(plan.without), "ranks": len(plan.membership.members),
        "nodes": list(plan.membership.members), "cause": cause,
        "time": datetime.now(UTC).isoformat(timespec="seconds")})


class Recorder:
    """Per-step records of one node, in the arrays the output schema declares."""

    def __init__(self, steps: int, n_params: int, record_estimates: bool):
        self.data = empty_records(steps, n_params, record_estimates)

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
        if ESTIMATES in d:
            d[ESTIMATES][t] = estimate


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


def inject_faults(faults, node: int, step: int, rank: int) -> None:
    """``faults.crash`` raises, ``faults.kill`` SIGKILLs this process, at their steps."""
    if [node, step] in (faults.crash or []):
        raise InjectedFault(f"faults.crash: injected failure of node {node} at step {step}")
    if [node, step] in (faults.kill or []):
        print(f"mcdpf: rank {rank}: faults.kill: killing the process of node {node} "
              f"(SIGKILL) at step {step}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


class Checkpointer:
    """Writes one node's checkpoints into its run directory, keeping the newest ``keep``.

    Synchronous by default: :meth:`save` returns when the file is on disk under its final
    name. With ``asynchronous`` (``run.checkpoint_async``) :meth:`save` copies the state
    and records and hands them to a writer thread, which writes the file the same way
    (temporary name, fsync, rename: a file under its final name is always complete);
    at most one checkpoint is in flight (the next :meth:`save` waits for it), and a
    failure of the writer is raised by the next :meth:`save` or :meth:`close`.

    Parameters
    ----------
    run_dir
        The :class:`~mcdpf.rundir.RunDirectory`.
    node
        The node whose checkpoints these are.
    keep
        Checkpoints kept (:func:`~mcdpf.resume.checkpoints_to_keep`).
    asynchronous
        Write from a thread.
    """

    def __init__(self, run_dir, node: int, keep: int, asynchronous: bool = False):
        self.run_dir = run_dir
        self.node = node
        self.keep = keep
        self.asynchronous = asynchronous
        self._named: list[int] | None = None  # this node's checkpoint files, once listed
        self._work: queue.Queue = queue.Queue(maxsize=1)
        self._failure: BaseException | None = None
        self._writer = None
        if asynchronous:
            self._writer = threading.Thread(target=self._write_queued, daemon=True,
                                            name=f"mcdpf-checkpoints-{node}")
            self._writer.start()

    def save(self, step: int, state: dict, records: dict, attributes: dict) -> None:
        """Write the checkpoint of ``step`` (after ``step`` completed steps)."""
        if not self.asynchronous:
            self._write(step, state, records, attributes)
            return
        self._wait()
        self._work.put((step, _copied(state), _copied(records), dict(attributes)))

    def _write(self, step, state, records, attributes) -> None:
        # The directory is listed once (files of an earlier job included), then tracked:
        # listing it at every save would read every node's files each time.
        self._named = self.run_dir.write_checkpoint(self.node, step, state, records,
                                                    attributes, self.keep, self._named)

    def _write_queued(self) -> None:
        while (item := self._work.get()) is not None:
            try:
                self._write(*item)
            except BaseException as failure:  # raised again on the main thread
                self._failure = failure
            finally:
                self._work.task_done()
        self._work.task_done()

    def _wait(self) -> None:
        self._work.join()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def close(self) -> None:
        """Wait until every checkpoint saved is on disk; stop the writer thread."""
        if self._writer is not None:
            self._wait()
            self._work.put(None)
            self._writer.join()
            self._writer = None


def _copied(values: dict) -> dict:
    """A copy of a dictionary of arrays and scalars that later steps cannot change."""
    return {name: value.copy() if isinstance(value, np.ndarray) else value
            for name, value in values.items()}


def departure_step(drops, node: int) -> int | None:
    """The first step at which ``node`` is out of the network (``None``: never)."""
    steps = [step for index, step in drops or [] if index == node]
    return min(steps) if steps else None


def run_node(comm, setup, steps: int, started: float, progress_enabled: bool,
             resumption=None) -> dict:
    """Train one node for ``steps`` steps and write its output file; return its records.

    ``resumption`` (:class:`~mcdpf.resume.Resumption`) continues from a checkpoint. A
    node that has left the network writes one checkpoint at its departure step and
    idles; faults injected into it after it left are ignored.
    """
    config = setup.config
    node_index = setup.node
    start_step = resumption.start_step if resumption else 0
    loaded = resumption is not None and resumption.state is not None
    measurements = all_streams(comm, setup) \
        if traits(config.run.algorithm)["needs_all_streams"] else None
    node = Node(config, comm, setup.stream.input_dim, topology=setup.topology,
                measurements=measurements, start_step=start_step,
                state=resumption.state if loaded else None, drops=setup.drops,
                membership=setup.membership)
    recorder = Recorder(steps, setup.model.n_params, config.run.record_estimates)
    previous_loop_seconds = 0.0
    if loaded:
        recorder.data.update({name: resumption.records[name] for name in recorder.data})
        previous_loop_seconds = float(resumption.attributes["loop_seconds"])
        for t in range(int(resumption.attributes["step"]), start_step):
            recorder.record(t, None, None, None, 0.0, None)  # it had left: idle steps
    departs = departure_step(setup.drops, node_index)
    rank = comm.Get_rank()
    warm_up(setup.model.dtype, parallel=config.run.threads > 1)
    progress = Progress(progress_enabled, config.run.progress_seconds, steps, start_step)
    stream = setup.stream
    every = config.run.checkpoint_every if setup.run_dir is not None else 0
    checkpointer = Checkpointer(setup.run_dir, node_index,
                                checkpoints_to_keep(config, setup.topology),
                                config.run.checkpoint_async) if every else None
    loop_start = time.perf_counter()
    startup_seconds = loop_start - started
    for t in range(start_step, steps):
        step_start = time.perf_counter()
        if departs is None or t < departs:
            inject_faults(config.faults, node_index, t, rank)
        skipped = bool(setup.skipped[t])
        columns = None if skipped else stream.sequence(t)
        target = None if skipped else float(stream.targets[t])
        prediction = node.predict(columns)
        if not node.active:
            if t == departs and every:
                checkpointer.save(t, node.checkpoint_state(), recorder.data, {
                    **node.checkpoint_attributes(),
                    "loop_seconds": previous_loop_seconds + time.perf_counter() - loop_start})
            node.learn(None)
            recorder.record(t, None, None, None, 0.0, None)
            continue
        if target is not None and not np.isfinite(prediction):
            raise FloatingPointError(f"node {node_index}, step {t}: non-finite prediction "
                                     f"{prediction} from finite data")
        info = node.learn(target)
        recorder.record(t, target, prediction, info, time.perf_counter() - step_start,
                        node.estimate)
        progress.update(t, recorder.data["squared_error"])
        if every and (t + 1) % every == 0 and t + 1 < steps:
            elapsed = previous_loop_seconds + time.perf_counter() - loop_start
            checkpointer.save(t + 1, node.checkpoint_state(), recorder.data,
                              {**node.checkpoint_attributes(), "loop_seconds": elapsed})
    if checkpointer is not None:
        checkpointer.close()
    loop_seconds = previous_loop_seconds + time.perf_counter() - loop_start
    node.close(handshake=False)  # every rank runs the agreed T steps
    return write_outputs(setup, node, steps, recorder, loop_seconds, startup_seconds)


def write_outputs(setup, node, steps, recorder, loop_seconds, startup_seconds) -> dict:
    """Write this rank's output file; return what was written."""
    records = recorder.data
    final = {"theta_mean": np.asarray(node.estimate, dtype=np.float64),
             "neighbours": np.array(setup.topology.neighbours(setup.node), dtype=np.int64)}
    attributes = output_attributes(setup, setup.node, steps, records, loop_seconds,
                                   startup_seconds, valid_until=steps)
    out_dir = None
    if setup.run_dir is not None:
        setup.run_dir.write_node(setup.node, records, final, attributes)
        out_dir = setup.run_dir.path
    return {"datasets": {**records, **final}, "attributes": attributes, "out_dir": out_dir}


def write_departed_outputs(setup, node: int, left_at: int, steps: int) -> None:
    """Write the output file of ``node``, which left at ``left_at`` and has no rank.

    A survivor writes it from the node's newest checkpoint at or before ``left_at``: its
    records are those of the checkpoint (``valid_until`` = its step; none without
    one), the steps from its departure on are marked skipped as for ``faults.drop``, and
    ``theta_mean`` is the checkpoint's estimate (NaN without one).
    """
    run_dir = setup.run_dir
    records = empty_records(steps, setup.model.n_params, setup.config.run.record_estimates)
    estimate = np.full(setup.model.n_params, np.nan)
    usable = [step for step in run_dir.checkpoint_steps(node) if step <= left_at]
    valid_until, loop_seconds = 0, 0.0
    if usable:
        valid_until = usable[-1]
        state, saved, attributes = run_dir.read_checkpoint(node, valid_until)
        records.update({name: saved[name] for name in records if name in saved})
        estimate = np.asarray(state["estimate"], dtype=np.float64)
        loop_seconds = float(attributes["loop_seconds"])
    left = departure_step(setup.drops, node)
    records["skipped"][left:] = 1
    final = {"theta_mean": estimate,
             "neighbours": np.array(setup.topology.neighbours(node), dtype=np.int64)}
    run_dir.write_node(node, records, final, output_attributes(
        setup, node, steps, records, loop_seconds, 0.0, valid_until=valid_until))


def output_attributes(setup, node: int, steps: int, records: dict, loop_seconds: float,
                      startup_seconds: float, valid_until: int) -> dict:
    """The attributes of ``node``'s output file (:data:`~mcdpf.rundir.ATTRIBUTES`)."""
    config = setup.config
    departs = departure_step(setup.drops, node)
    return {
        "node": node,
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
        "empty_walks": int(records["empty_walk"].sum()),
        "degenerate_steps": int(records["degenerate"].sum()),
        "skipped_steps": int(records["skipped"].sum()),
        "dropped_at": -1 if departs is None else departs,
        "valid_until": valid_until,
        "walk_steps": walk_steps_used(config, setup.topology),
    }
