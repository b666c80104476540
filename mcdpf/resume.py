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

from . import comm as comm_layer
from .algorithms import traits
from .errors import InputError
from .io import DamagedCheckpoint
from .node import check_schedule

# The offer of a node that has left: it does not limit the step the others agree on.
NO_LIMIT = 2 ** 62

# Resolved-configuration keys that may change between a run and its resumption: they do
# not affect the results (an injected crash or kill must be removable to resume at all).
# ``faults.drop`` may not change; the nodes a resume leaves out are not configuration but
# history (``resumes.json``).
RESUMABLE_CHANGES = {("run", "out"), ("run", "progress_seconds"), ("run", "checkpoint_every"),
                     ("run", "checkpoint_async"), ("run", "threads"),
                     ("run", "max_memory_gb"), ("faults", "crash"),
                     ("faults", "kill")}


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


def offered_step(run_dir, node: int, communicating: bool, steps=None) -> int:
    """The step ``node`` can continue from: its newest checkpoint's (-1: none).

    For a communicating algorithm a node whose newest checkpoint was written after it
    left the network offers :data:`NO_LIMIT`: it can join any step at or after it.
    ``steps``: the node's checkpoint steps, if already listed.
    """
    steps = run_dir.checkpoint_steps(node) if steps is None else steps
    if not steps:
        return -1
    if communicating and not int(run_dir.checkpoint_attributes(node, steps[-1])
                                 .get("active", 1)):
        return NO_LIMIT
    return steps[-1]


def newest_saved(run_dir, nodes, before: int | None = None) -> int:
    """The newest checkpoint step any of ``nodes`` has (before ``before``; -1: none)."""
    return max((step for node in nodes for step in run_dir.checkpoint_steps(node)
                if before is None or step < before), default=-1)


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


def agree_resume(comm, setup, steps: int, plan) -> tuple[str | None, Resumption | None]:
    """Set-up collectives for ``--resume``: the checkpoint to continue from, checked.

    ``plan`` is the :class:`~mcdpf.elastic.ResumePlan`. Returns ``(error, resumption)``:
    the first problem any rank found, or ``None`` and this rank's :class:`Resumption`.
    A checkpoint that does not match its digest is skipped with one line naming it, and
    every rank agrees again without it (the newest good checkpoint every rank has).
    """
    mine = setup.run_dir.checkpoint_steps(setup.node)
    while True:
        error, resumption, damaged = _agree_once(comm, setup, steps, plan, mine)
        if not comm_layer.agree_max(comm, int(damaged is not None)):
            return error, resumption
        if damaged is not None:
            step, message = damaged
            print(f"mcdpf: warning: {message}; skipped", file=sys.stderr, flush=True)
            mine.remove(step)


def _agree_once(comm, setup, steps, plan, mine):
    """One round of :func:`agree_resume` over ``mine`` (this node's checkpoint steps).

    Returns ``(error, resumption, damaged)``, ``damaged`` the ``(step, message)`` of a
    checkpoint this rank found damaged (``None``: none).
    """
    run_dir = setup.run_dir
    own = mine[-1] if mine else -1
    independent = not traits(setup.config.run.algorithm)["communicating"]
    problem, offer = None, own
    try:
        offer = offered_step(run_dir, setup.node, not independent, mine)
        if independent:
            # Nodes that do not communicate keep what any of them saved, the nodes left
            # out too: a lost node that saved later than every survivor leaves at its own
            # newest checkpoint (a survivor that saved nothing yet starts from step 0).
            offer = max(offer, newest_saved(run_dir, plan.without, before=steps))
    except InputError as error:
        problem = str(error)
    common = comm_layer.agree_max(comm, offer) if independent \
        else comm_layer.agree_min(comm, offer)
    if problem is not None:
        return comm_layer.agree_on_error(comm, problem), None, None
    start = own if independent else common
    # A node that had left continues from its departure checkpoint if it is not newer.
    newest = own if independent or (offer == NO_LIMIT and own <= common) else common
    resumption, damaged = None, None
    if common < 0 or common == NO_LIMIT:
        holders = "any node" if independent else "every rank"
        problem = (f"{run_dir.path}: no checkpoint that {holders} has (set "
                   "run.checkpoint_every to write them)")
    elif independent and newest < 0:
        resumption = Resumption(start_step=0, drop_step=common)
    elif newest not in mine:
        problem = f"{run_dir.path}: node {setup.node} lacks the checkpoint of step {newest}"
    else:
        try:
            state, records, attributes = run_dir.read_checkpoint(setup.node, newest)
            problem = _refusal(run_dir, setup, steps, plan, attributes, records, common,
                               independent)
            resumption = Resumption(start_step=start, drop_step=common, state=state,
                                    records=records, attributes=attributes)
        except DamagedCheckpoint as error:
            damaged = (newest, str(error))
        except InputError as error:
            problem = str(error)
    return comm_layer.agree_on_error(comm, problem), resumption, damaged


def _refusal(run_dir, setup, steps, plan, attributes, records, common, independent):
    """Why the loaded checkpoint cannot continue this job, or ``None``."""
    if int(attributes["n_nodes"]) != setup.topology.nodes:
        return (f"{run_dir.path}: the checkpoint was written by a {attributes['n_nodes']}-"
                f"node run; this job has {setup.topology.nodes} ranks")
    changes = different_keys(json.loads(attributes["config"]), setup.config.to_dict())
    if changes:
        return (f"{run_dir.path}: cannot resume with a different configuration: "
                f"{', '.join(changes[:3])}")
    if int(attributes["step"]) >= steps:
        return (f"{run_dir.path}: the checkpoint is at step {attributes['step']}, not before "
                f"the run's end ({steps})")
    recorded = len(records["prediction"])
    if recorded != steps:
        return (f"{run_dir.path}: the run has {recorded} steps but this job agrees on "
                f"{steps} (run.steps, or the streams of the nodes left out)")
    earlier = [entry["step"] for entry in plan.history if entry["without"]]
    if not independent and earlier and common < max(earlier):
        return (f"{run_dir.path}: the newest checkpoint every node has (step {common}) "
                f"precedes the resume at step {max(earlier)} ({run_dir.resumes_file.name})")
    if plan.without:
        try:
            check_schedule(plan.drops(setup.config.faults.drop, common), setup.topology,
                           f"{plan.describe_without()}: the node loss")
        except InputError as error:
            return str(error)
    return None
