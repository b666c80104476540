"""Training driver: set-up, resume, the online loop over a stream, checkpoints, outputs.

:func:`train` is what ``mcdpf train`` and :func:`mcdpf.train` run on every rank:
:mod:`~mcdpf.preparation` loads and validates (with agreed verdicts),
:mod:`~mcdpf.elastic` plans a resume and :mod:`~mcdpf.resume` picks the checkpoint to
continue from, then :func:`run_node` feeds the node's stream step by step to a
:class:`~mcdpf.node.Node` (the only per-step communication is the neighbour exchanges
inside its learner, plus a graph rebuild at each node-loss event). The other jobs of a run
have their own modules: :mod:`~mcdpf.recording` (records, progress, output files),
:mod:`~mcdpf.checkpointing` and :mod:`~mcdpf.faults` (injected failures).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from . import comm as comm_layer
from .algorithms import traits
from .blas import one_blas_thread
from .checkpointing import checkpointer_for
from .elastic import ResumePlan, plan_resume
from .errors import InputError
from .faults import inject_faults
from .kernels import compile_seconds
from .node import Node
from .preparation import agree_setup, all_streams, default_out_dir, prepare_node
from .recording import Progress, Recorder, departure_step, write_outputs
from .resume import agree_resume, record_resume
from .rundir import RunDirectory
from .shutdown import stopper as make_stopper
from .warmup import prepare_kernels, run_units


def train(comm, config, out_dir: Path | None = None, *, force: bool = False,
          resume: bool = False, without: tuple[int, ...] = (), cause: str = "manual",
          progress: bool = False, started: float | None = None, warn: bool = True,
          stream=None, write: bool = True, watch=None) -> dict:
    """Train this rank's node; every rank of ``comm`` calls it with the same configuration.

    Bad inputs on any rank raise :class:`InputError` with the same message on every rank.
    With ``resume`` the run continues from the newest checkpoint that every rank has in
    ``out_dir``; ``without`` (node numbers) continues it on the other nodes, which must
    be the ranks of ``comm`` (:mod:`mcdpf.elastic`), and records the resume with
    ``cause`` in ``resumes.json``. ``stream`` (this rank's
    :class:`~mcdpf.streams.Stream`) replaces ``[data]``. Without ``write`` no file is
    written (no outputs, no checkpoints). A new run keeps its resolved configuration in
    the run directory (``config.json``). ``watch`` (a
    :class:`~mcdpf.shutdown.SignalWatch`) stops the run at an agreed step on a signal.
    Returns this node's records (``datasets``, ``attributes``, ``out_dir``) as written
    to its output file, and ``stop`` (the :class:`~mcdpf.shutdown.Stop`, or ``None``).
    """
    started = time.perf_counter() if started is None else started
    rank, size = comm.Get_rank(), comm.Get_size()
    run_dir = None
    if write:
        run_dir = RunDirectory(out_dir if out_dir is not None else default_out_dir(config))
    plan, resumption = ResumePlan.fresh(size), None
    while True:  # once, or again after a damaged checkpoint was skipped
        if resume:
            plan = comm_layer.agreed(comm, lambda: _plan(run_dir, size, without, force,
                                                         config))
            if comm_layer.agree_min(comm, plan.step) != comm_layer.agree_max(comm, plan.step):
                raise InputError(f"{run_dir.path}: the ranks see different checkpoints (is "
                                 "the run directory on a file system every rank shares?)")
        setup, steps = agree_setup(comm, lambda plan=plan: prepare_node(
            config, plan, rank, run_dir, force, resume, stream))
        if not resume:
            break
        resumption = agree_resume(comm, setup, steps, plan)
        if resumption is not None:
            break
    if rank == 0 and run_dir is not None:
        run_dir.prepare(force, resume)
        if not resume or not run_dir.config_file.exists():  # kept from the start
            run_dir.write_json(run_dir.config_file, config.to_dict())
    if resume:
        comm_layer.agreed(comm, lambda: record_resume(setup, plan, steps, cause)
                          if rank == 0 else None)
    processes = [{**process, "node": plan.membership.node_of(process["rank"])}
                 for process in comm_layer.process_table(comm)]
    if rank == 0:
        if warn:
            for warning in setup.warnings:
                print(f"mcdpf: warning: {warning}", file=sys.stderr, flush=True)
        if run_dir is not None:
            run_dir.write_json(run_dir.processes_file, processes)
    with one_blas_thread():  # ranks, not BLAS pools, share the cores (mcdpf.blas)
        return run_node(comm, setup, steps, started, progress and rank == 0,
                        resumption, watch)


def _plan(run_dir, ranks: int, without, force: bool, config) -> ResumePlan:
    if run_dir is None:
        raise InputError("resume needs a run directory")
    run_dir.check_writable(force, resume=True)
    return plan_resume(run_dir, ranks, tuple(without),
                       communicating=traits(config.run.algorithm)["communicating"])


def run_node(comm, setup, steps: int, started: float, progress_enabled: bool,
             resumption=None, watch=None) -> dict:
    """Train one node for ``steps`` steps and write its output file; return its records.

    ``resumption`` (:class:`~mcdpf.resume.Resumption`) continues from a checkpoint. A
    node that has left the network writes one checkpoint at its departure step and
    idles; faults injected into it after it left are ignored. With ``watch``
    (:mod:`mcdpf.shutdown`) a signal stops every rank at one agreed step, which is
    checkpointed (whether or not ``run.checkpoint_every`` is set).
    """
    config = setup.config
    start_step = resumption.start_step if resumption else 0
    loaded = resumption is not None and resumption.state is not None
    measurements = all_streams(comm, setup) \
        if traits(config.run.algorithm)["needs_all_streams"] else None
    prepare_kernels(comm, setup.model.dtype, config.run.threads > 1, progress_enabled,
                    run_units(config, setup.model))
    node = Node(config, comm, setup.stream.input_dim, topology=setup.topology,
                model=setup.model, measurements=measurements, start_step=start_step,
                state=resumption.state if loaded else None, drops=setup.drops,
                membership=setup.membership)
    recorder = Recorder(steps, setup.model.n_params, config.run.record_estimates)
    previous_seconds = float(resumption.attributes["loop_seconds"]) if loaded else 0.0
    if loaded:
        recorder.resume(resumption)
    departs = departure_step(setup.drops, setup.node)
    progress = Progress(progress_enabled, config.run.progress_seconds, steps, start_step)
    stopper = make_stopper(watch, comm, node, traits(config.run.algorithm).communicating,
                           steps)
    checkpointer = checkpointer_for(setup, on_stop=stopper.enabled)
    loop_start = time.perf_counter()
    startup_seconds = loop_start - started
    compiled_before_loop = compile_seconds()

    def loop_seconds() -> float:
        return previous_seconds + time.perf_counter() - loop_start

    stopped_at = steps
    rank = comm.Get_rank()
    for t in range(start_step, steps):
        if stopper.should_stop(t):
            stopped_at = t
            break
        step_start = time.perf_counter()
        if departs is None or t < departs:
            inject_faults(config.faults, setup.node, t, rank)
        skipped = bool(setup.skipped[t])
        prediction = node.predict(None if skipped else setup.stream.sequence(t))
        if not node.active:
            if t == departs and checkpointer is not None:
                checkpointer.save_node(t, node, recorder.data, loop_seconds())
            node.learn(None)
            recorder.record(t, None, None, None, 0.0, None)
            continue
        target = None if skipped else float(setup.stream.targets[t])
        if target is not None and not np.isfinite(prediction):
            raise FloatingPointError(f"node {setup.node}, step {t}: non-finite prediction "
                                     f"{prediction} from finite data")
        info = node.learn(target)
        recorder.record(t, target, prediction, info, time.perf_counter() - step_start,
                        node.estimate)
        progress.update(t, recorder.data["squared_error"])
        if checkpointer is not None and checkpointer.due(t + 1, steps):
            checkpointer.save_node(t + 1, node, recorder.data, loop_seconds())
    if checkpointer is not None:
        if stopped_at < steps and checkpointer.newest != stopped_at:
            checkpointer.save_node(stopped_at, node, recorder.data, loop_seconds())
        checkpointer.close()
    # A kernel first specialised inside the loop is compile time, not training time.
    training_seconds = loop_seconds() - (compile_seconds() - compiled_before_loop)
    stop = stopper.finish(stopped_at)  # shutdown agreement; closes the node
    result = write_outputs(setup, node, steps, recorder, training_seconds, startup_seconds,
                           valid_until=stopped_at, compiled=compile_seconds())
    return {**result, "stop": stop}
