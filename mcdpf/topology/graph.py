"""Network graphs: the :class:`Topology`, its validation, and the built-in graphs.

A topology is an undirected, connected graph on ``K`` nodes (node ``k`` is rank ``k`` of
the communicator) and a row-stochastic transition matrix ``A`` whose support lies on the
edges and the diagonal (the walks of :mod:`mcdpf.topology.walks`). For every topology
this module reports the stationary distribution ``pi`` (``pi A = pi``), the
second-largest eigenvalue modulus ``SLEM = max(|lambda_2|, |lambda_min|)``, the period of
the walk and the diameter; the position of a particle on a periodic walk (period > 1,
e.g. the simple walk on an even ring) never converges in distribution, which
:meth:`Topology.warnings` says.

Built-in graphs, registered in :data:`mcdpf.registry.TOPOLOGIES` (``topology.name``):
``ring``, ``complete``, ``star``, ``torus`` (2-D, wrap-around), ``random`` (seeded
connected graph) and ``paper-ring`` (the papers' 4-node ring with their matrix).
Topologies also come from an edge list (:func:`from_edges`), a networkx graph
(:func:`from_networkx`) or a file (:mod:`mcdpf.topology.files`).

Every graph search here is one breadth-first helper, :func:`hop_distances`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import InputError
from ..registry import TOPOLOGIES, WALKS
from .walks import AUTO_WALK_STEPS, auto_walk_steps, make_walk

ROW_SUM_TOLERANCE = 1e-5
UNREACHED = -1


def hop_distances(adjacency, source: int) -> np.ndarray:
    """Breadth-first hop distance from ``source`` to every node (``-1``: unreachable).

    ``adjacency[u]`` lists the nodes that ``u`` links to (a directed graph is fine).
    """
    distance = np.full(len(adjacency), UNREACHED, dtype=np.int64)
    distance[source] = 0
    queue = deque([source])
    while queue:
        u = queue.popleft()
        for v in adjacency[u]:
            if distance[v] == UNREACHED:
                distance[v] = distance[u] + 1
                queue.append(v)
    return distance


def adjacency_lists(nodes: int, edges) -> list[list[int]]:
    """Sorted neighbour lists of an undirected edge list."""
    adjacency = [[] for _ in range(nodes)]
    for i, j in edges:
        adjacency[i].append(j)
        adjacency[j].append(i)
    return [sorted(a) for a in adjacency]


def support_lists(matrix: np.ndarray) -> list[list[int]]:
    """For each row ``u``, the columns with ``matrix[u, v] > 0``."""
    return [np.flatnonzero(row > 0).tolist() for row in matrix]


def _connected(nodes: int, edges) -> bool:
    return bool(np.all(hop_distances(adjacency_lists(nodes, edges), 0) >= 0))


def _strongly_connected(matrix: np.ndarray) -> bool:
    return all(np.all(hop_distances(support_lists(m), 0) >= 0) for m in (matrix, matrix.T))


@dataclass(frozen=True, eq=False)
class Topology:
    """An undirected graph with a row-stochastic random walk on it.

    Attributes
    ----------
    nodes
        Node count ``K``.
    edges
        Undirected edges ``(i, j)`` with ``i < j``, sorted.
    transition
        ``A``, float64 (K, K), row-stochastic, support on edges and diagonal.
    walk
        Name of the walk that produced ``transition``.
    source
        File path or built-in name, for messages.
    removed
        Nodes that have left the network (isolated; they stay put).
    """

    nodes: int
    edges: tuple[tuple[int, int], ...]
    transition: np.ndarray
    walk: str
    source: str
    removed: frozenset = frozenset()

    def neighbours(self, node: int) -> list[int]:
        """Sorted graph neighbours of ``node`` (never ``node`` itself)."""
        return self._adjacency[node]

    @cached_property
    def _adjacency(self) -> list[list[int]]:
        return adjacency_lists(self.nodes, self.edges)

    def distances(self, node: int) -> np.ndarray:
        """Hop distance from ``node`` to every node (``-1`` for removed nodes)."""
        return hop_distances(self._adjacency, node)

    @cached_property
    def diameter(self) -> int:
        """Longest shortest path between active nodes (hops)."""
        return max(int(self.distances(source).max()) for source in self.active)

    @property
    def degrees(self) -> np.ndarray:
        """Node degrees ``eta_j``."""
        return np.array([len(a) for a in self._adjacency], dtype=np.int64)

    @property
    def active(self) -> list[int]:
        """Nodes still in the network (all but ``removed``)."""
        return [k for k in range(self.nodes) if k not in self.removed]

    @property
    def _active_transition(self) -> np.ndarray:
        active = self.active
        return self.transition[np.ix_(active, active)]

    @cached_property
    def stationary_distribution(self) -> np.ndarray:
        """``pi A = pi``, ``sum(pi) = 1`` (float64, K; 0 on removed nodes)."""
        pi = np.zeros(self.nodes)
        pi[self.active] = stationary_distribution(self._active_transition)
        return pi

    @cached_property
    def eigenvalue_moduli(self) -> np.ndarray:
        """Moduli of the eigenvalues of ``A`` (on the active nodes), largest first."""
        return np.sort(np.abs(np.linalg.eigvals(self._active_transition)))[::-1]

    @property
    def slem(self) -> float:
        """Second-largest eigenvalue modulus of ``A`` (0 for a single node)."""
        moduli = self.eigenvalue_moduli
        return float(moduli[1]) if moduli.size > 1 else 0.0

    @cached_property
    def auto_walk_steps(self) -> int:
        """The walk length ``filter.walk_steps = "auto"`` picks on this walk.

        :func:`~mcdpf.topology.walks.auto_walk_steps` on the active nodes.
        """
        return auto_walk_steps(self._active_transition,
                               self.stationary_distribution[self.active])

    def walk_steps(self, setting: int | str) -> int:
        """The walk length a ``filter.walk_steps`` setting (an int or ``"auto"``) means here."""
        return self.auto_walk_steps if setting == AUTO_WALK_STEPS else int(setting)

    @cached_property
    def period(self) -> int:
        """Period of the walk's support graph on the active nodes (1: aperiodic)."""
        return walk_period(self._active_transition)

    def without(self, removed) -> Topology:
        """The network after ``removed`` nodes leave: their edges go, the walk is rebuilt.

        Node indices are kept; removed nodes are isolated and stay put. Each walk rebuilds
        itself on the remaining graph (its ``rebuild`` trait): ``metropolis`` recomputes
        its weights; ``simple``, ``matrix`` and the base ``B`` of ``lazy = (I + B)/2`` keep
        their entries among the remaining nodes with rows renormalised (for the simple
        walk that is the simple walk of the remaining graph). Raises :class:`InputError`
        if the remaining graph is disconnected or the walk reducible.
        """
        removed = frozenset(removed) | self.removed
        active = [k for k in range(self.nodes) if k not in removed]
        label = f"{self.source.split(' without ')[0]} without " \
            f"node{'s' if len(removed) > 1 else ''} " + ", ".join(map(str, sorted(removed)))
        if not active:
            raise InputError(f"{label}: no node is left")
        index = {node: i for i, node in enumerate(active)}
        edges = tuple((i, j) for i, j in self.edges if i in index and j in index)
        local_edges = [(index[i], index[j]) for i, j in edges]
        if not _connected(len(active), local_edges):
            raise InputError(f"{label}: the remaining graph is disconnected")
        rebuild = WALKS.entry(self.walk).traits["rebuild"]
        sub = rebuild(self.transition[np.ix_(active, active)], local_edges)
        if not _strongly_connected(sub):
            raise InputError(f"{label}: the remaining walk is not irreducible")
        transition = np.eye(self.nodes)
        transition[np.ix_(active, active)] = sub
        return finish(self.nodes, edges, transition, self.walk, label, removed)

    def warnings(self) -> list[str]:
        """Human-readable warnings about this topology's walk."""
        if self.period > 1:
            return [f"topology {self.source}: the {self.walk} walk is periodic (period "
                    f"{self.period}, SLEM {self.slem:.3f}): a particle's position never "
                    "settles to the stationary distribution, so which nodes a short walk "
                    "visits depends on where it started (visit frequencies still average "
                    "out as walk_steps grows); walk = \"lazy\" makes it aperiodic"]
        return []

    def describe(self) -> dict:
        """Summary for ``mcdpf topology`` and run outputs."""
        pi = self.stationary_distribution
        return {
            "source": self.source,
            "nodes": self.nodes,
            "edges": len(self.edges),
            "walk": self.walk,
            "degrees": self.degrees.tolist(),
            "stationary_distribution": pi.tolist(),
            "slem": self.slem,
            "period": self.period,
            "periodic": self.period > 1,
            "regular": bool(np.all(self.degrees == self.degrees[0])),
            "diameter": self.diameter,
            "auto_walk_steps": self.auto_walk_steps,
        }

    def to_toml(self) -> str:
        """This topology as a topology file (edges and the walk's transition matrix)."""
        return topology_toml(self)

    def to_config(self) -> dict:
        """The ``[topology]`` table of this graph and walk (``edges`` and ``transition``)."""
        return {"nodes": self.nodes, "edges": [list(e) for e in self.edges],
                "transition": self.transition.tolist(), "walk": "matrix"}


def topology_toml(topology: Topology) -> str:
    """A topology file of ``topology`` (its edges and its walk's transition matrix)."""
    lines = [f"# {topology.source}, {topology.walk} walk", f"nodes = {topology.nodes}",
             "edges = [" + ", ".join(f"[{i}, {j}]" for i, j in topology.edges) + "]",
             "transition = ["]
    for row in topology.transition:
        lines.append("  [" + ", ".join(repr(float(v)) for v in row) + "],")
    lines.append("]")
    return "\n".join(lines) + "\n"


def stationary_distribution(transition: np.ndarray) -> np.ndarray:
    """Left Perron vector of an irreducible row-stochastic matrix, normalised to sum 1."""
    k = transition.shape[0]
    system = np.vstack([transition.T - np.eye(k), np.ones((1, k))])
    rhs = np.zeros(k + 1)
    rhs[-1] = 1.0
    pi, *_ = np.linalg.lstsq(system, rhs, rcond=None)
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def walk_period(transition: np.ndarray) -> int:
    """Period of an irreducible chain: gcd of ``level(u) + 1 - level(v)`` over its arcs."""
    support = support_lists(transition)
    level = hop_distances(support, 0)
    period = 0
    for u, targets in enumerate(support):
        for v in targets:
            period = math.gcd(period, int(level[u] + 1 - level[v]))
    return period if period > 0 else 1


def check_graph(nodes, edges, source: str) -> tuple[tuple[int, int], ...]:
    """Validate node count and edge list; return normalised, sorted edges."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise InputError(f"{source}: nodes = {nodes!r}: must be a positive integer")
    if not isinstance(edges, list | tuple):
        raise InputError(f"{source}: edges must be a list of [i, j] pairs")
    seen = set()
    for index, edge in enumerate(edges):
        if (not isinstance(edge, list | tuple) or len(edge) != 2
                or any(isinstance(v, bool) or not isinstance(v, int | np.integer)
                       for v in edge)):
            raise InputError(f"{source}: edges[{index}] = {edge!r}: must be a pair of "
                             "integer node indices")
        i, j = int(edge[0]), int(edge[1])
        if not (0 <= i < nodes and 0 <= j < nodes):
            raise InputError(f"{source}: edges[{index}] = {[i, j]}: node out of range "
                             f"0..{nodes - 1}")
        if i == j:
            raise InputError(f"{source}: edges[{index}] = {[i, j]}: self-loop (laziness "
                             "belongs in the transition diagonal or walk = \"lazy\")")
        pair = (min(i, j), max(i, j))
        if pair in seen:
            raise InputError(f"{source}: edges[{index}] = {[i, j]}: duplicate edge")
        seen.add(pair)
    if not _connected(nodes, seen):
        raise InputError(f"{source}: graph is not connected")
    return tuple(sorted(seen))


def check_transition(matrix, nodes: int, edges, source: str) -> np.ndarray:
    """Validate a K x K transition matrix against the graph; return it as float64."""
    try:
        a = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{source}: transition must be a {nodes}x{nodes} matrix of "
                         "numbers") from None
    if a.shape != (nodes, nodes):
        raise InputError(f"{source}: transition has shape {'x'.join(map(str, a.shape))}, "
                         f"expected {nodes}x{nodes}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{source}: transition has non-finite entries")
    if np.any(a < 0):
        i, j = np.argwhere(a < 0)[0]
        raise InputError(f"{source}: transition[{i}][{j}] = {a[i, j]}: negative")
    sums = a.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
    if bad.size:
        total = float(sums[bad[0]])
        raise InputError(f"{source}: transition row {bad[0]} sums to {total!r}, not 1 "
                         f"(row-stochastic, tolerance {ROW_SUM_TOLERANCE:g})")
    # Rows within the tolerance but visibly off (e.g. 0.333333 x 3) are renormalised;
    # rows that are 1 to rounding are kept bit for bit.
    inexact = np.abs(sums - 1.0) > 1e-12
    a[inexact] /= sums[inexact, None]
    allowed = np.eye(nodes, dtype=bool)
    for i, j in edges:
        allowed[i, j] = allowed[j, i] = True
    off = np.argwhere((a > 0) & ~allowed)
    if off.size:
        i, j = off[0]
        raise InputError(f"{source}: transition[{i}][{j}] = {a[i, j]} > 0 but ({i}, {j}) is "
                         "not an edge")
    if not _strongly_connected(a):
        raise InputError(f"{source}: transition is not irreducible (some node cannot be "
                         "reached by the walk)")
    return a


def from_edges(edges, nodes: int | None = None, *, transition=None, walk: str | None = None,
               source: str = "edges") -> Topology:
    """A topology from an undirected edge list (``nodes``: default 1 + the largest index).

    ``transition`` (K x K, optional) is validated against the graph; ``walk`` picks a
    registered walk (default: ``matrix`` with a transition, else ``simple``).
    """
    edges = [list(e) if isinstance(e, list | tuple) else e for e in edges]
    if nodes is None:
        indices = [v for e in edges if isinstance(e, list) for v in e
                   if isinstance(v, int | np.integer)]
        nodes = 1 + int(max(indices)) if indices else 1
    checked = check_graph(nodes, edges, source)
    given = check_transition(transition, nodes, checked, source) if transition is not None \
        else None
    walk, matrix = make_walk(walk, nodes, checked, given, source)
    return finish(nodes, checked, matrix, walk, source)


def from_networkx(graph, *, walk: str | None = None) -> Topology:
    """A topology from a networkx graph whose nodes are the integers ``0 .. K-1``.

    networkx is an optional dependency (``pip install "mcdpf[networkx]"``); only the
    graph's ``nodes`` and ``edges`` are read.
    """
    nodes = sorted(graph.nodes)
    if nodes != list(range(len(nodes))):
        raise InputError(f"networkx graph: nodes must be 0 .. {len(nodes) - 1} (relabel "
                         "with networkx.convert_node_labels_to_integers)")
    return from_edges([[int(i), int(j)] for i, j in graph.edges], len(nodes), walk=walk,
                      source=f"networkx graph ({len(nodes)} nodes)")


def finish(nodes, edges, transition, walk, source, removed=frozenset()) -> Topology:
    """A :class:`Topology` from validated parts (the transition made read-only)."""
    transition = np.ascontiguousarray(transition, dtype=np.float64)
    transition.setflags(write=False)
    return Topology(nodes=nodes, edges=tuple(edges), transition=transition, walk=walk,
                    source=source, removed=removed)


# ---------------------------------------------------------------- built-in topologies
@TOPOLOGIES.register("ring")
def ring_edges(nodes: int, **_) -> list[tuple[int, int]]:
    """Cycle 0-1-...-(K-1)-0 (a single edge for K = 2, none for K = 1)."""
    if nodes == 2:
        return [(0, 1)]
    return [(k, (k + 1) % nodes) for k in range(nodes)] if nodes > 2 else []


@TOPOLOGIES.register("complete")
def complete_edges(nodes: int, **_) -> list[tuple[int, int]]:
    """Every pair of nodes."""
    return [(i, j) for i in range(nodes) for j in range(i + 1, nodes)]


@TOPOLOGIES.register("star")
def star_edges(nodes: int, **_) -> list[tuple[int, int]]:
    """Node 0 joined to every other node."""
    return [(0, k) for k in range(1, nodes)]


@TOPOLOGIES.register("torus")
def torus_edges(nodes: int, rows: int | None = None, **_) -> list[tuple[int, int]]:
    """2-D wrap-around grid ``rows x (K / rows)``; parallel edges merged, loops dropped."""
    if rows is None:
        rows = max(r for r in range(1, math.isqrt(nodes) + 1) if nodes % r == 0)
    if nodes % rows:
        raise InputError(f"torus: rows = {rows} does not divide nodes = {nodes}")
    cols = nodes // rows
    edges = set()
    for r in range(rows):
        for c in range(cols):
            here = r * cols + c
            for there in (r * cols + (c + 1) % cols, ((r + 1) % rows) * cols + c):
                if there != here:
                    edges.add((min(here, there), max(here, there)))
    return sorted(edges)


@TOPOLOGIES.register("random")
def random_edges(nodes: int, seed: int = 0, edge_probability: float | None = None, **_):
    """Seeded connected graph: a random spanning tree plus each other pair w.p. ``p``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x70B0]))
    if edge_probability is None:
        edge_probability = min(1.0, 2.0 * math.log(nodes) / nodes) if nodes > 1 else 0.0
    order = rng.permutation(nodes)
    edges = set()
    for i in range(1, nodes):
        a, b = int(order[i]), int(order[rng.integers(i)])
        edges.add((min(a, b), max(a, b)))
    for i in range(nodes):
        for j in range(i + 1, nodes):
            if rng.random() < edge_probability:
                edges.add((i, j))
    return sorted(edges)


PAPER_RING_TRANSITION = np.array([[0.0, 0.5, 0.0, 0.5],
                                  [0.5, 0.0, 0.5, 0.0],
                                  [0.0, 0.5, 0.0, 0.5],
                                  [0.5, 0.0, 0.5, 0.0]])


@TOPOLOGIES.register("paper-ring", transition=PAPER_RING_TRANSITION, nodes=4)
def paper_ring_edges(nodes: int, **_) -> list[tuple[int, int]]:
    """The papers' 4-node ring (with their transition matrix)."""
    if nodes != 4:
        raise InputError(f"topology paper-ring has 4 nodes, not {nodes}")
    return ring_edges(4)


def named_topology(name: str, nodes: int, *, walk: str | None = None, seed: int = 0,
                   edge_probability: float | None = None,
                   rows: int | None = None) -> Topology:
    """Build a built-in topology by name."""
    if name not in TOPOLOGIES:
        raise InputError(f"unknown topology name {name!r}; built-in topologies are "
                         f"{', '.join(TOPOLOGIES)}")
    entry = TOPOLOGIES.entry(name)
    edges = entry.target(nodes, seed=seed, edge_probability=edge_probability, rows=rows)
    label = f"{name}({nodes})"
    edges = check_graph(nodes, [list(e) for e in edges], label)
    walk, transition = make_walk(walk, nodes, edges, entry.traits.get("transition"), label)
    return finish(nodes, edges, transition, walk, label)
