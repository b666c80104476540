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

from dataclasses import dataclass

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
    """What a resume continues: the membership, the recorded history and who leaves now.

    Attributes
    ----------
    membership
        The ranks' nodes in this job.
    history
        The earlier resumes (``resumes.json``), oldest first.
    without
        Nodes this resume leaves out (they leave at the agreed step).
    """

    membership: Membership
    history: tuple[dict, ...] = ()
    without: tuple[int, ...] = ()

    @property
    def departures(self) -> dict[int, int]:
        """``{node: step}`` of every node an earlier resume left out."""
        return {node: entry["step"] for entry in self.history for node in entry["without"]}

    def drops(self, config_drops, step: int | None = None) -> list[list[int]]:
        """The effective drop schedule ``[[node, step], ...]``.

        ``faults.drop``, the earlier resumes' nodes at their steps, and this resume's at
        ``step`` (``None``: not agreed yet, left out).
        """
        schedule = [list(pair) for pair in config_drops or []]
        schedule += [[node, at] for node, at in self.departures.items()]
        if step is not None:
            schedule += [[node, step] for node in self.without]
        return schedule

    def describe_without(self) -> str:
        """``--without 0,2`` as given, for messages."""
        return "--without " + ",".join(map(str, self.without))


def parse_nodes(text: str) -> tuple[int, ...]:
    """``"2"`` or ``"0,3"`` as node numbers; :class:`InputError` otherwise."""
    parts = [part.strip() for part in str(text).split(",")]
    if not parts or not all(part.isdigit() for part in parts):
        raise InputError(f"--without {text}: expected node numbers like 2 or 0,3")
    nodes = tuple(int(part) for part in parts)
    if len(set(nodes)) != len(nodes):
        raise InputError(f"--without {text}: a node is named twice")
    return nodes


def plan_resume(run_dir, ranks: int, without: tuple[int, ...] = ()) -> ResumePlan:
    """The :class:`ResumePlan` of resuming ``run_dir`` on ``ranks`` ranks without ``without``.

    Raises :class:`InputError` for an unknown node, a node that already left, a run
    without checkpoints (``--without`` needs one) or a rank count other than
    ``K - |nodes left out, earlier and now|``.
    """
    history = tuple(run_dir.read_resumes())
    plan = ResumePlan(Membership.whole(ranks), history, tuple(without))
    departed = plan.departures
    if not without and not departed:
        return plan  # every node has its rank; the checkpoints check the node count
    size = run_dir.network_size()
    label = plan.describe_without() if without else f"--resume {run_dir.path}"
    unknown = [node for node in without if node >= size]
    if unknown:
        raise InputError(f"{label}: node {unknown[0]} does not exist (nodes 0..{size - 1})")
    again = [node for node in without if node in departed]
    if again:
        raise InputError(f"{label}: node {again[0]} already left at step "
                         f"{departed[again[0]]} ({run_dir.resumes_file.name})")
    members = tuple(node for node in range(size)
                    if node not in departed and node not in without)
    if ranks != len(members):
        earlier = f", {len(departed)} left earlier ({', '.join(map(str, sorted(departed)))})" \
            if departed else ""
        raise InputError(f"{label}: the run has {size} nodes{earlier}, {len(without)} leave "
                         f"now: start {len(members)} ranks (mpiexec -n {len(members)}), not "
                         f"{ranks}")
    return ResumePlan(Membership(size, members), history, tuple(without))
