"""Recording a training run: the per-step records of a node, progress, the output files.

The records and attributes are declared in :mod:`mcdpf.rundir` (the learner's
diagnostics in :class:`~mcdpf.learner.StepInfo`, under their output names).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from . import __version__
from .algorithms import walk_steps_used
from .learner import StepInfo
from .results import finite_mean
from .rundir import ESTIMATES, empty_records


class Recorder:
    """Per-step records of one node, in the arrays the output schema declares."""

    def __init__(self, steps: int, n_params: int, record_estimates: bool):
        self.data = empty_records(steps, n_params, record_estimates)

    def resume(self, resumption) -> None:
        """Take a checkpoint's records (:class:`~mcdpf.resume.Resumption`).

        The steps from its step to the resumed one are idle (the node had left).
        """
        self.data.update({name: resumption.records[name] for name in self.data})
        for t in range(int(resumption.attributes["step"]), resumption.start_step):
            self.record(t, None, None, None, 0.0, None)

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
        for name, value in zip(StepInfo._fields, info, strict=True):
            d[name][t] = value
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


def departure_step(drops, node: int) -> int | None:
    """The first step at which ``node`` is out of the network (``None``: never)."""
    steps = [step for index, step in drops or [] if index == node]
    return min(steps) if steps else None


def write_outputs(setup, node, steps, recorder, loop_seconds, startup_seconds,
                  valid_until: int, compiled: float = 0.0) -> dict:
    """Write this rank's output file (records up to ``valid_until``); return it.

    ``compiled``: seconds this process spent compiling kernels (``compile_seconds``).
    """
    records = recorder.data
    final = {"theta_mean": np.asarray(node.estimate, dtype=np.float64),
             "neighbours": np.array(setup.topology.neighbours(setup.node), dtype=np.int64)}
    attributes = output_attributes(setup, setup.node, steps, records, loop_seconds,
                                   startup_seconds, valid_until=valid_until,
                                   compiled=compiled)
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
                      startup_seconds: float, valid_until: int, compiled: float = 0.0) -> dict:
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
        "scaling": setup.stream.scaling.to_json(),
        "dtype": str(setup.model.dtype),
        "mcdpf_version": __version__,
        "loop_seconds": loop_seconds,
        "startup_seconds": startup_seconds,
        "compile_seconds": compiled,
        "empty_walks": int(records["empty_walk"].sum()),
        "degenerate_steps": int(records["degenerate"].sum()),
        "skipped_steps": int(records["skipped"].sum()),
        "dropped_at": -1 if departs is None else departs,
        "valid_until": valid_until,
        "walk_steps": walk_steps_used(config, setup.topology),
    }
