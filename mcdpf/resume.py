"""The resume protocol: which checkpoint a resumed run continues from, and what is kept.

Ranks of a communicating algorithm continue from the newest step that every rank has a
checkpoint of (:func:`agree_resume`); ranks of an algorithm without communication are
independent and each continue from its own newest (from step 0 if it had none). A resumed
run must have the same configuration, apart from :data:`RESUMABLE_CHANGES`, and the same
number of ranks; anything else is refused with the keys that differ.
"""

from __future__ import annotations

import json

from . import comm as comm_layer
from .algorithms import traits
from .errors import InputError

# Resolved-configuration keys that may change between a run and its resumption: they do
# not affect the results (an injected crash or kill must be removable to resume at all).
RESUMABLE_CHANGES = {("run", "out"), ("run", "progress_seconds"), ("run", "checkpoint_every"),
                     ("faults", "crash"), ("faults", "kill")}


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
    fastest rank's. Independent algorithms resume every rank from its own newest.
    """
    if not traits(config.run.algorithm)["communicating"]:
        return 2
    every = config.run.checkpoint_every
    return 2 + -(-(topology.diameter + 1) // max(every, 1))


def agree_resume(comm, setup, steps: int) -> tuple[str | None, tuple | None]:
    """Set-up collectives for ``--resume``: the checkpoint to continue from, checked.

    Returns ``(error, loaded)``: the first problem any rank found, or ``None`` and this
    rank's ``(state, records, attributes)`` (``None``: start from step 0).
    """
    run_dir = setup.run_dir
    mine = run_dir.checkpoint_steps(setup.node)
    own = mine[-1] if mine else -1
    independent = not traits(setup.config.run.algorithm)["communicating"]
    common = comm_layer.agree_max(comm, own) if independent else comm_layer.agree_min(comm, own)
    newest = own if independent else common
    problem, loaded = None, None
    if common < 0:
        problem = (f"{run_dir.path}: no checkpoint that every rank has (set "
                   "run.checkpoint_every to write them)")
    elif independent and newest < 0:
        pass  # this rank restarts from step 0
    elif newest not in mine:
        problem = f"{run_dir.path}: node {setup.node} lacks the checkpoint of step {newest}"
    else:
        try:
            loaded = run_dir.read_checkpoint(setup.node, newest)
            attributes = loaded[2]
            if int(attributes["n_nodes"]) != setup.topology.nodes:
                problem = (f"{run_dir.path}: the checkpoint was written by a "
                           f"{attributes['n_nodes']}-node run; this job has "
                           f"{setup.topology.nodes} ranks")
            else:
                changes = different_keys(json.loads(attributes["config"]),
                                         setup.config.to_dict())
                if changes:
                    problem = (f"{run_dir.path}: cannot resume with a different "
                               f"configuration: {', '.join(changes[:3])}")
                elif newest >= steps:
                    problem = (f"{run_dir.path}: the checkpoint is at step {newest}, not "
                               f"before the run's end ({steps})")
        except InputError as error:
            problem = str(error)
    return comm_layer.agree_on_error(comm, problem), loaded
