"""Elastic resume: continue a run on the nodes that survived a crash (DESIGN §8).

``mpiexec -n K' mcdpf train CONFIG --resume RUN_DIR --without NODE[,NODE...]`` continues
a run of ``K`` nodes on ``K' = K - |nodes left out by every resume so far|`` ranks. The
decisions, in one place:

**Ranks and nodes.** A node keeps its number for the whole run (output files, checkpoints,
particle ids, random streams and the topology are addressed by node). The ranks of a
resumed job are the nodes that no resume has left out, in increasing order: rank ``r``
is the ``r``-th of them (:class:`Membership`). A run that never left a node out maps
rank ``k`` to node ``k``.

**The effective drop schedule** is the configuration's ``faults.drop`` plus, for every
resume recorded in ``resumes.json``, its ``without`` nodes at its ``step``
(:meth:`ResumePlan.drops`). A node left out at step ``S`` leaves the network at ``S``
exactly as ``faults.drop = [[node, S]]`` makes it leave, so the survivors' outputs equal
those of an uninterrupted run with that schedule, bit for bit. The configuration itself
is not changed: a resume still compares it with the checkpoint's
(:func:`~mcdpf.resume.different_keys`; ``faults.drop`` must stay the same, the
``--without`` lists are not configuration).

**The step** ``S``: for an algorithm that communicates, the newest checkpoint every
survivor has; for the independent ones (each rank continues from its own newest, or from
step 0 if it saved none), the newest any node has, the nodes left out included -- no
survivor's records depend on the lost node's computation (the ``cpf`` oracle reads its
data up to ``S``), and the lost node's records up to its newest checkpoint are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InputError


@dataclass(frozen=True)
class Membership:
    """Which network node each rank of the job is.

    Attributes
    ----------
    network_size
        Nodes of the network, ``K``.
    members
        The node of each rank, increasing (rank ``r`` is node ``members[r]``).
    """

    network_size: int
    members: tuple[int, ...]

    @classmethod
    def whole(cls, size: int) -> Membership:
        """Every node has its rank: rank ``k`` is node ``k``."""
        return cls(size, tuple(range(size)))

    def node_of(self, rank: int) -> int:
        """The node of ``rank``."""
        return self.members[rank]

    def rank_of(self, node: int) -> int:
        """The rank of ``node`` (a member)."""
        return self.members.index(node)

    def __contains__(self, node: object) -> bool:
        return node in self.members

    @property
    def absent(self) -> list[int]:
        """Nodes without a rank (left out by a resume)."""
        return [node for node in range(self.network_size) if node not in self.members]


@dataclass(frozen=True)
class ResumePlan:
    """What a job continues: the membership, the recorded history, who leaves, the step.

    Decided from the run directory alone by :func:`plan_resume` (a fresh run:
    :meth:`fresh`), so ``mcdpf train --resume`` and ``mcdpf supervise`` cannot disagree.

    Attributes
    ----------
    membership
        The ranks' nodes in this job.
    history
        The earlier resumes (``resumes.json``), oldest first.
    without
        Nodes this resume leaves out (they leave at ``step``).
    step
        The step the job continues from (-1: none to continue from; a fresh run).
    offers
        ``{node: step}``: the step each member can continue from
        (:func:`~mcdpf.resume.offered_step`).
    """

    membership: Membership
    history: tuple[dict, ...] = ()
    without: tuple[int, ...] = ()
    step: int = -1
    offers: dict = field(default_factory=dict)

    @classmethod
    def fresh(cls, size: int) -> ResumePlan:
        """A new run on ``size`` ranks: every node has its rank."""
        return cls(Membership.whole(size))

    @property
    def departures(self) -> dict[int, int]:
        """``{node: step}`` of every node an earlier resume left out."""
        return departures(self.history)

    def drops(self, config_drops) -> list[list[int]]:
        """The effective drop schedule ``[[node, step], ...]``.

        ``faults.drop``, the earlier resumes' nodes at their steps, and this resume's at
        :attr:`step`.
        """
        schedule = [list(pair) for pair in config_drops or []]
        schedule += [[node, at] for node, at in self.departures.items()]
        schedule += [[node, self.step] for node in self.without]
        return schedule

    def describe_without(self) -> str:
        """``--without 0,2`` as given, for messages."""
        return describe_without(self.without)


def describe_without(nodes) -> str:
    """``--without 0,2``, for messages."""
    return "--without " + ",".join(map(str, nodes))


def departures(history) -> dict[int, int]:
    """``{node: step}`` of every node the resumes of ``history`` left out."""
    return {node: entry["step"] for entry in history for node in entry["without"]}


def parse_nodes(text: str) -> tuple[int, ...]:
    """``"2"`` or ``"0,3"`` as node numbers; :class:`InputError` otherwise."""
    parts = [part.strip() for part in str(text).split(",")]
    if not parts or not all(part.isdigit() for part in parts):
        raise InputError(f"--without {text}: expected node numbers like 2 or 0,3")
    nodes = tuple(int(part) for part in parts)
    if len(set(nodes)) != len(nodes):
        raise InputError(f"--without {text}: a node is named twice")
    return nodes


def plan_resume(run_dir, ranks: int | None, without: tuple[int, ...] = (), *,
                communicating: bool) -> ResumePlan:
    """The :class:`ResumePlan` of resuming ``run_dir`` without ``without``.

    Pure, no communicator: every rank of a job and ``mcdpf supervise`` compute the same
    plan from the run directory.
    ``ranks``: the job's rank count, checked against ``K - |nodes left out, earlier and
    now|`` (``None``: the job this plan needs, the network size read from the
    checkpoints). The step is :func:`~mcdpf.resume.resume_step` over the members.
    Raises :class:`InputError` for an unknown node, a node that already left, a wrong
    rank count, or (:class:`~mcdpf.rundir.NoCheckpoint`) a run without checkpoints
    where the network size is needed.
    """
    from .resume import resume_step

    history = tuple(run_dir.read_resumes())
    departed = departures(history)
    if not without and not departed and ranks is not None:
        membership = Membership.whole(ranks)  # the checkpoints check the node count
    else:
        membership = _members(run_dir, ranks, tuple(without), departed)
    step, offers = resume_step(run_dir, membership.members, tuple(without), communicating)
    return ResumePlan(membership, history, tuple(without), step, offers)


def _members(run_dir, ranks, without, departed) -> Membership:
    size = run_dir.network_size()
    label = describe_without(without) if without else f"--resume {run_dir.path}"
    unknown = [node for node in without if node >= size]
    if unknown:
        raise InputError(f"{label}: node {unknown[0]} does not exist (nodes 0..{size - 1})")
    again = [node for node in without if node in departed]
    if again:
        raise InputError(f"{label}: node {again[0]} already left at step "
                         f"{departed[again[0]]} ({run_dir.resumes_file.name})")
    members = tuple(node for node in range(size)
                    if node not in departed and node not in without)
    if ranks is not None and ranks != len(members):
        earlier = f", {len(departed)} left earlier ({', '.join(map(str, sorted(departed)))})" \
            if departed else ""
        raise InputError(f"{label}: the run has {size} nodes{earlier}, {len(without)} leave "
                         f"now: start {len(members)} ranks (mpiexec -n {len(members)}), not "
                         f"{ranks}")
    return Membership(size, members)
