"""The resume protocol: which checkpoint a resumed run continues from, and what is kept.

Ranks of a communicating algorithm continue from the newest step that every rank has a
checkpoint of (:func:`agree_resume`); ranks of an algorithm without communication are
independent and each continue from its own newest (from step 0 if it had none). A resumed
run must have the same configuration, apart from :data:`RESUMABLE_CHANGES`, and the same
nodes; anything else is refused with the keys that differ. An elastic resume
(:mod:`mcdpf.elastic`) runs on the nodes that no resume left out; the nodes it leaves out
leave at the agreed step.

A node that had left the network (``faults.drop``) writes one last checkpoint at its
departure (attribute ``active = 0``) and none after: it idles, so it does not hold the
others back. It resumes from that checkpoint at whatever step the others agree on.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from . import comm as comm_layer
from .algorithms import traits
from .errors import InputError
from .io import DamagedCheckpoint
from .recording import write_departed_outputs
from .rundir import RunDirectory
from .validation import check_schedule

# The offer of a node that has left: it does not limit the step the others agree on.
NO_LIMIT = 2 ** 62

# Injected failures (``[faults]`` crash and kill) hit the job they were given to; a resume
# from the run's kept configuration does not repeat them.
INJECTED = {("faults", "crash"), ("faults", "kill")}
# Resolved-configuration keys that may change between a run and its resumption: they do
# not affect the results (an injected crash or kill must be removable to resume at all).
# ``faults.drop`` may not change; the nodes a resume leaves out are not configuration but
# history (``resumes.json``).
RESUMABLE_CHANGES = {("run", "out"), ("run", "progress_seconds"), ("run", "checkpoint_every"),
                     ("run", "checkpoint_async"), ("run", "threads"),
                     ("run", "max_memory_gb"), *INJECTED}


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


def checkpoints_to_keep(config, topology) -> int:
    """How many checkpoints a rank keeps so that one step is common to every rank.

    Ranks of a communicating algorithm drift apart by at most about the graph diameter in
    time steps (each neighbour exchange holds a node to its neighbours' pace), so the
    newest checkpoint of the slowest rank is within ``diameter + 1 + every`` steps of the
    fastest rank's (one interval more with ``run.checkpoint_async``, whose newest
    checkpoint may still be in the writer thread). Independent algorithms resume every rank
    from its own newest.
    """
    in_flight = int(config.run.checkpoint_async)  # a writer thread's may be unfinished
    if not traits(config.run.algorithm)["communicating"]:
        return 2 + in_flight
    every = config.run.checkpoint_every
    return 2 + in_flight + -(-(topology.diameter + 1) // max(every, 1))


def offered_step(run_dir, node: int, communicating: bool) -> int:
    """The step ``node`` can continue from: its newest checkpoint's (-1: none).

    For a communicating algorithm a node whose newest checkpoint was written after it
    left the network offers :data:`NO_LIMIT`: it can join any step at or after it.
    """
    steps = run_dir.checkpoint_steps(node)
    if not steps:
        return -1
    if communicating and not int(run_dir.checkpoint_attributes(node, steps[-1])
                                 .get("active", 1)):
        return NO_LIMIT
    return steps[-1]


def newest_saved(run_dir, nodes) -> int:
    """The newest checkpoint step any of ``nodes`` has (-1: none)."""
    return max((step for node in nodes for step in run_dir.checkpoint_steps(node)),
               default=-1)


def resume_step(run_dir, members, without, communicating: bool) -> tuple[int, dict]:
    """The step a job of ``members`` continues from, without ``without`` (-1: none).

    For a communicating algorithm the newest checkpoint every member has; for the
    independent ones the newest any node has, the nodes left out included. Returns the
    step and every member's :func:`offered_step`.
    """
    offers = {node: offered_step(run_dir, node, communicating) for node in members}
    if communicating:
        step = min(offers.values())
    else:
        step = max([*offers.values(), newest_saved(run_dir, without)])
    return (-1 if step == NO_LIMIT else step), offers


@dataclass
class Resumption:
    """Where one rank continues a run.

    Attributes
    ----------
    start_step
        The first step this rank runs.
    drop_step
        The agreed step ``S`` at which the nodes this resume leaves out leave.
    state, records, attributes
        The loaded checkpoint (``None``: start from step 0); its step may precede
        ``start_step`` for a node that had left (its records are then filled as idle).
    """

    start_step: int
    drop_step: int
    state: dict | None = None
    records: dict | None = None
    attributes: dict | None = None


def agree_resume(comm, setup, steps: int, plan) -> Resumption | None:
    """Set-up collective for ``--resume``: this rank's checkpoint to continue from, checked.

    ``plan`` is the :class:`~mcdpf.elastic.ResumePlan` (its step is agreed). Raises the
    first problem any rank found (:class:`InputError`) on every rank. A checkpoint that
    does not match its digest is skipped with one line naming it: every rank then marks
    every damaged file skipped in the run directory and this returns ``None`` (plan
    again: the newest good checkpoint every rank has).
    """
    damaged = None

    def resumption() -> Resumption | None:
        nonlocal damaged
        run_dir = setup.run_dir
        mine = run_dir.checkpoint_steps(setup.node)
        own = mine[-1] if mine else -1
        independent = not traits(setup.config.run.algorithm)["communicating"]
        common = plan.step
        if common < 0:
            holders = "any node" if independent else "every rank"
            raise InputError(f"{run_dir.path}: no checkpoint that {holders} has (set "
                             "run.checkpoint_every to write them)")
        if independent and own < 0:
            return Resumption(start_step=0, drop_step=common)
        # A node that had left continues from its departure checkpoint if it is not newer.
        newest = own if independent or (plan.offers[setup.node] == NO_LIMIT
                                        and own <= common) else common
        if newest not in mine:
            raise InputError(f"{run_dir.path}: node {setup.node} lacks the checkpoint of "
                             f"step {newest}")
        try:
            state, records, attributes = run_dir.read_checkpoint(setup.node, newest)
        except DamagedCheckpoint as error:
            damaged = (setup.node, newest)
            print(f"mcdpf: warning: {error}; skipped", file=sys.stderr, flush=True)
            return None
        _refuse(run_dir, setup, steps, plan, attributes, records, independent)
        return Resumption(start_step=own if independent else common, drop_step=common,
                          state=state, records=records, attributes=attributes)

    result = comm_layer.agreed(comm, resumption)
    found = comm_layer.allgather_pairs(comm, damaged)
    for node, step in found:
        setup.run_dir.skip_checkpoint(node, step)
    return None if found else result


def _refuse(run_dir, setup, steps, plan, attributes, records, independent) -> None:
    """Raise :class:`InputError` if the loaded checkpoint cannot continue this job."""
    if int(attributes["n_nodes"]) != setup.topology.nodes:
        raise InputError(f"{run_dir.path}: the checkpoint was written by a "
                         f"{attributes['n_nodes']}-node run; this job has "
                         f"{setup.topology.nodes} ranks")
    check_same_configuration(run_dir, json.loads(attributes["config"]), setup.config)
    if int(attributes["step"]) >= steps:
        raise InputError(f"{run_dir.path}: the checkpoint is at step {attributes['step']}, "
                         f"not before the run's end ({steps})")
    recorded = len(records["prediction"])
    if recorded != steps:
        raise InputError(f"{run_dir.path}: the run has {recorded} steps but this job agrees "
                         f"on {steps} (run.steps, or the streams of the nodes left out)")
    earlier = [entry["step"] for entry in plan.history if entry["without"]]
    if not independent and earlier and plan.step < max(earlier):
        raise InputError(f"{run_dir.path}: the newest checkpoint every node has (step "
                         f"{plan.step}) precedes the resume at step {max(earlier)} "
                         f"({run_dir.resumes_file.name})")
    if plan.without:
        check_schedule(setup.drops, setup.topology, f"{plan.describe_without()}: the node loss")


def record_resume(setup, plan, steps: int, cause: str) -> None:
    """Write the output file of every node left out, then append to ``resumes.json``.

    A node left out now (or earlier, if its file is missing) gets its file from its
    newest checkpoint at or before the step it left (:func:`write_departed_outputs`).
    """
    run_dir = setup.run_dir
    leaving = {**plan.departures, **{node: plan.step for node in plan.without}}
    for node, left_at in sorted(leaving.items()):
        if node in plan.without or not run_dir.node_file(node).is_file():
            write_departed_outputs(setup, node, left_at, steps)
    run_dir.append_json(run_dir.resumes_file, {
        "step": plan.step, "without": list(plan.without), "ranks": len(plan.membership.members),
        "nodes": list(plan.membership.members), "cause": cause,
        "time": datetime.now(UTC).isoformat(timespec="seconds")})


def check_same_configuration(run_dir, saved: dict, config) -> None:
    """Refuse a configuration that differs from ``saved`` (the run's, resolved).

    Every key that differs outside :data:`RESUMABLE_CHANGES` is named, in one line.
    """
    changes = different_keys(saved, config.to_dict())
    if changes:
        raise InputError(f"{run_dir.path}: cannot resume with a different configuration: "
                         f"{', '.join(changes)}")


def command_config(path=None, overrides=(), resume=None):
    """The configuration of ``mcdpf train`` or ``supervise``: CONFIG ``path`` and ``--set``s.

    Resuming the run directory ``resume``, CONFIG is optional: without it the run's kept
    configuration (``RUN_DIR/config.json``) with ``overrides``.
    The kept configuration's injected failures (:data:`INJECTED`) are not repeated. A
    configuration that differs from the kept one in a key outside
    :data:`RESUMABLE_CHANGES` is refused, naming every such key.
    """
    from .config import config_from_json, load_config

    if resume is None:
        return load_config(path, overrides)
    run_dir = RunDirectory(resume)
    saved = run_dir.read_json(run_dir.config_file, None)
    if saved is None and path is None:
        raise InputError(f"{run_dir.config_file}: not found (a run of an older mcdpf, or not "
                         "a run directory); give the CONFIG the run was started with")
    if path is None:
        kept = {section: {key: value for key, value in table.items()
                          if (section, key) not in INJECTED}
                for section, table in saved.items()}
        config = config_from_json(kept, str(run_dir.config_file), overrides)
    else:
        config = load_config(path, overrides)
    if saved is not None:
        check_same_configuration(run_dir, saved, config)
    return config
