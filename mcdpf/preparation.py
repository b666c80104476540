"""Set-up of a training run: load and validate everything, then agree across the ranks.

:func:`prepare_node` loads what one rank needs (topology, its stream, the model, faults,
the output directory) once and raises :class:`~mcdpf.errors.InputError`; it touches no
communicator. :func:`agree_setup` runs it in the set-up collectives: every rank learns
whether any rank failed, and all agree on the number of steps ``T``. A problem that only
one rank can see (its own group of a stream file) therefore still stops every rank with
the same one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import comm as comm_layer
from .algorithms import traits
from .elastic import Membership, ResumePlan
from .errors import InputError
from .memory import check_memory
from .models import build_model
from .rundir import RunDirectory
from .sources import node_stream, source_label
from .streams import Stream, handle_nonfinite
from .topology import build_topology
from .validation import check_drops, check_node


@dataclass(frozen=True)
class NodeSetup:
    """What one rank loaded and validated before the run (built once, by :func:`prepare_node`).

    ``drops`` is the effective drop schedule (``faults.drop``, and the nodes resumes left
    out: :mod:`mcdpf.elastic`); ``membership`` maps the job's ranks to nodes.
    """

    config: object
    topology: object
    node: int
    stream: Stream
    skipped: np.ndarray
    model: object
    run_dir: RunDirectory | None
    membership: Membership
    drops: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def default_out_dir(config) -> Path:
    """``run.out``, else ``runs/<config file stem>`` (``runs/run`` without a file)."""
    if config.run.out is not None:
        return Path(config.run.out)
    stem = Path(config.source).stem if not config.source.startswith("<") else "run"
    return Path("runs") / stem


def load_stream(config, nodes: int, node: int) -> tuple[Stream, np.ndarray]:
    """Node ``node``'s stream of ``[data]`` (float64) and its skipped-step mask."""
    stream = node_stream(config.data, config.run.steps, nodes, node)
    return handle_nonfinite(stream, config.data.nonfinite, source_label(config.data, node))


def prepare_node(config, plan: ResumePlan, rank: int, run_dir: RunDirectory | None,
                 force: bool, resume: bool = False, stream: Stream | None = None) -> NodeSetup:
    """Validate and load everything ``rank`` needs; raise :class:`~mcdpf.errors.InputError`.

    ``plan`` (:class:`~mcdpf.elastic.ResumePlan`) says which node the rank is and which
    nodes leave when; ``stream`` (this rank's, in memory) replaces ``[data]`` when given;
    ``run_dir`` is ``None`` for a run that writes nothing; with ``resume`` its directory
    has been checked by the resume plan.
    """
    nodes, node = plan.membership.network_size, plan.membership.node_of(rank)
    topology = build_topology(config.topology, nodes)
    check_drops(config.faults, topology)
    if run_dir is not None and not resume:  # a resume's directory was checked by its plan
        run_dir.check_writable(force, False)
    given = stream is not None
    if not given:
        stream, skipped = load_stream(config, nodes, node)
    else:
        stream, skipped = handle_nonfinite(stream, config.data.nonfinite,
                                           f"the stream of node {node}")
    model = build_model(config.model, stream.input_dim)
    check_node(config, model, topology)
    check_memory(config, model, config.run.steps or stream.steps, topology)
    warnings = []
    if not given and config.data.source == "file" and config.data.partition is not None:
        warnings.append(f"data.partition = \"{config.data.partition}\" is ignored: a stream "
                        "file holds one stream per node")
    warnings += traits(config.run.algorithm)["warnings"](config, topology)
    return NodeSetup(config=config, topology=topology, node=node,
                     stream=stream.astype(model.dtype), skipped=skipped, model=model,
                     run_dir=run_dir, membership=plan.membership,
                     drops=plan.drops(config.faults.drop), warnings=warnings)


def agree_setup(comm, prepare) -> tuple[NodeSetup, int]:
    """Set-up collectives: ``prepare()`` on this rank, and the agreed step count.

    Raises the first :class:`~mcdpf.errors.InputError` of any rank on every rank.
    """
    setup = comm_layer.agreed(comm, prepare)
    config = setup.config
    length = setup.stream.steps
    shortest = comm_layer.agree_min(comm, length)
    longest = comm_layer.agree_max(comm, length)
    width = setup.stream.input_dim
    narrowest, widest = comm_layer.agree_min(comm, width), comm_layer.agree_max(comm, width)
    steps = config.run.steps
    problem = None
    if narrowest != widest:
        problem = (f"node streams have different input dimensions ({narrowest} .. {widest} "
                   "columns per step); every node needs the same p")
    elif steps is None and shortest != longest:
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
    if error:
        raise InputError(error)
    return setup, steps


class StreamTable:
    """The oracle's view of every node's data (``cpf``): node streams and skipped masks.

    ``skipped[j][t]`` is true where node ``j`` had no data at step ``t`` (a non-finite
    input, or the node had left the network).
    """

    def __init__(self, streams: list[Stream], skipped: list[np.ndarray]):
        self.streams = streams
        self.skipped = skipped

    def __call__(self, step: int, columns, target) -> tuple[list, int]:
        """Every node's ``(columns, target)`` of ``step`` (``None``: no data), 0 bytes."""
        return [None if mask[step] else (stream.sequence(step), float(stream.targets[step]))
                for stream, mask in zip(self.streams, self.skipped, strict=True)], 0


def all_streams(comm, setup: NodeSetup) -> StreamTable:
    """Set-up collective for the oracle: every node's stream, on every rank.

    The streams of nodes without a rank (left out by a resume) are read from ``[data]``
    on every rank; every node's stream counts as without data from its departure on.
    """
    gathered, masks = comm_layer.allgather_streams(comm, setup.stream, setup.skipped)
    nodes = setup.topology.nodes
    table = {setup.membership.node_of(rank): item
             for rank, item in enumerate(zip(gathered, masks, strict=True))}
    for node in setup.membership.absent:
        table[node] = load_stream(setup.config, nodes, node)
    streams = [table[node][0].astype(setup.model.dtype) for node in range(nodes)]
    masks = [np.array(table[node][1], dtype=bool) for node in range(nodes)]
    for node, step in setup.drops:
        masks[node][step:] = True
    return StreamTable(streams, masks)
