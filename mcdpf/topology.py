"""Network topologies and the random walks that particles take over them.

A topology is an undirected, connected graph on ``K`` nodes (node ``k`` is MPI rank ``k``)
and a row-stochastic transition matrix ``A`` whose support lies on the edges and the
diagonal. Walks:

``simple``
    ``A[j, l] = 1 / degree(j)`` on edges; stationary ``pi_j = degree(j) / 2|E|``.
``lazy``
    ``(I + A_base) / 2``, where ``A_base`` is the file's ``transition`` if it has one, else
    the simple walk. Aperiodic; same stationary distribution as ``A_base``.
``metropolis``
    Metropolis-Hastings weights ``A[j, l] = 1 / (1 + max(deg j, deg l))``, rest on the
    diagonal; symmetric, stationary distribution uniform.
``matrix``
    The ``transition`` given in the topology file.

Topology files are TOML: ``nodes = K``, ``edges = [[0, 1], ...]`` (undirected, each pair
once, no self-loops) and an optional ``transition = [[...], ...]`` (K x K). Built-in
names: ``ring``, ``complete``, ``star``, ``torus`` (2-D, wrap-around), ``random``
(seeded connected graph) and ``paper-ring`` (the papers' 4-node ring).

For every topology this module reports the stationary distribution ``pi`` (``pi A = pi``),
the second-largest eigenvalue modulus ``SLEM = max(|lambda_2|, |lambda_min|)`` and the
period of the walk; the position of a particle on a periodic walk (period > 1, e.g. the
simple walk on an even ring) never converges in distribution, which
:meth:`Topology.warnings` says.
"""

from __future__ import annotations

import math
import tomllib
from collections import deque
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .errors import InputError

ROW_SUM_TOLERANCE = 1e-5


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
        adjacency = [[] for _ in range(self.nodes)]
        for i, j in self.edges:
            adjacency[i].append(j)
            adjacency[j].append(i)
        return [sorted(a) for a in adjacency]

    @cached_property
    def diameter(self) -> int:
        """Longest shortest path between active nodes (hops)."""
        longest = 0
        for source in self.active:
            distance = {source: 0}
            queue = deque([source])
            while queue:
                u = queue.popleft()
                for v in self._adjacency[u]:
                    if v not in distance:
                        distance[v] = distance[u] + 1
                        queue.append(v)
            longest = max(longest, max(distance.values()))
        return longest

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
    def period(self) -> int:
        """Period of the walk's support graph on the active nodes (1: aperiodic)."""
        return walk_period(self._active_transition)

    def without(self, removed) -> Topology:
        """The network after ``removed`` nodes leave: their edges go, the walk is rebuilt.

        Node indices are kept; removed nodes are isolated and stay put. A ``metropolis``
        walk is rebuilt on the remaining graph; ``simple``, ``lazy`` (its base) and
        ``matrix`` walks keep their entries among the remaining nodes, rows renormalised
        (for the simple walk that is the simple walk of the remaining graph). Raises
        :class:`InputError` if the remaining graph is disconnected or the walk reducible.
        """
        removed = frozenset(removed) | self.removed
        active = [k for k in range(self.nodes) if k not in removed]
        label = f"{self.source} without node{'s' if len(removed) > 1 else ''} " + \
            ", ".join(map(str, sorted(removed)))
        if not active:
            raise InputError(f"{label}: no node is left")
        index = {node: i for i, node in enumerate(active)}
        edges = tuple((i, j) for i, j in self.edges if i in index and j in index)
        if not _connected(len(active), [(index[i], index[j]) for i, j in edges]):
            raise InputError(f"{label}: the remaining graph is disconnected")
        if self.walk == "metropolis":
            sub = metropolis_walk(len(active), [(index[i], index[j]) for i, j in edges])
        else:
            # simple, matrix, and the base B of lazy = (I + B) / 2: keep the remaining
            # entries and renormalise each row (for the simple walk this is the simple walk
            # of the remaining graph).
            base = self.transition
            if self.walk == "lazy":
                base = 2.0 * base - np.eye(self.nodes)
            sub = base[np.ix_(active, active)]
            sums = sub.sum(axis=1)
            sub = np.where(sums[:, None] > 0, sub / np.where(sums > 0, sums, 1)[:, None],
                           np.eye(len(active)))
            if self.walk == "lazy":
                sub = 0.5 * (np.eye(len(active)) + sub)
        if not _strongly_connected(sub):
            raise InputError(f"{label}: the remaining walk is not irreducible")
        transition = np.eye(self.nodes)
        transition[np.ix_(active, active)] = sub
        transition.setflags(write=False)
        return Topology(nodes=self.nodes, edges=edges, transition=transition, walk=self.walk,
                        source=label, removed=removed)

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
        }

    def to_toml(self) -> str:
        """Serialise as a topology file (edges and the walk's transition matrix)."""
        lines = [f"# {self.source}, {self.walk} walk", f"nodes = {self.nodes}",
                 "edges = [" + ", ".join(f"[{i}, {j}]" for i, j in self.edges) + "]",
                 "transition = ["]
        for row in self.transition:
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
    k = transition.shape[0]
    level = [-1] * k
    level[0] = 0
    queue = deque([0])
    period = 0
    while queue:
        u = queue.popleft()
        for v in np.flatnonzero(transition[u] > 0):
            if level[v] < 0:
                level[v] = level[u] + 1
                queue.append(v)
            else:
                period = math.gcd(period, level[u] + 1 - level[v])
    return period if period > 0 else 1


def _connected(nodes: int, edges) -> bool:
    adjacency = [[] for _ in range(nodes)]
    for i, j in edges:
        adjacency[i].append(j)
        adjacency[j].append(i)
    seen = {0}
    queue = deque([0])
    while queue:
        for v in adjacency[queue.popleft()]:
            if v not in seen:
                seen.add(v)
                queue.append(v)
    return len(seen) == nodes


def _strongly_connected(matrix: np.ndarray) -> bool:
    support = matrix > 0
    for graph in (support, support.T):
        seen = {0}
        queue = deque([0])
        while queue:
            for v in np.flatnonzero(graph[queue.popleft()]):
                if v not in seen:
                    seen.add(int(v))
                    queue.append(int(v))
        if len(seen) != matrix.shape[0]:
            return False
    return True


def check_graph(nodes, edges, source: str) -> tuple[tuple[int, int], ...]:
    """Validate node count and edge list; return normalised, sorted edges."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise InputError(f"{source}: nodes = {nodes!r}: must be a positive integer")
    if not isinstance(edges, list):
        raise InputError(f"{source}: edges must be a list of [i, j] pairs")
    seen = set()
    for index, edge in enumerate(edges):
        if (not isinstance(edge, list | tuple) or len(edge) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in edge)):
            raise InputError(f"{source}: edges[{index}] = {edge!r}: must be a pair of "
                             "integer node indices")
        i, j = edge
        if not (0 <= i < nodes and 0 <= j < nodes):
            raise InputError(f"{source}: edges[{index}] = {list(edge)}: node out of range "
                             f"0..{nodes - 1}")
        if i == j:
            raise InputError(f"{source}: edges[{index}] = {list(edge)}: self-loop (laziness "
                             "belongs in the transition diagonal or walk = \"lazy\")")
        pair = (min(i, j), max(i, j))
        if pair in seen:
            raise InputError(f"{source}: edges[{index}] = {list(edge)}: duplicate edge")
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


def simple_walk(nodes: int, edges) -> np.ndarray:
    """``A[j, l] = 1 / degree(j)`` on edges; a single node stays put."""
    a = np.zeros((nodes, nodes))
    for i, j in edges:
        a[i, j] = a[j, i] = 1.0
    degrees = a.sum(axis=1)
    if nodes == 1:
        return np.ones((1, 1))
    return a / degrees[:, None]


def metropolis_walk(nodes: int, edges) -> np.ndarray:
    """Metropolis-Hastings weights: symmetric, doubly stochastic, uniform ``pi``."""
    degrees = np.zeros(nodes, dtype=np.int64)
    for i, j in edges:
        degrees[i] += 1
        degrees[j] += 1
    a = np.zeros((nodes, nodes))
    for i, j in edges:
        a[i, j] = a[j, i] = 1.0 / (1 + max(degrees[i], degrees[j]))
    a[np.diag_indices(nodes)] = 1.0 - a.sum(axis=1)
    return a


def make_walk(walk: str | None, nodes: int, edges, given: np.ndarray | None,
              source: str) -> tuple[str, np.ndarray]:
    """Return ``(walk name, A)`` for a walk name (``None``: the default for this graph)."""
    if walk is None:
        walk = "matrix" if given is not None else "simple"
    if walk == "simple":
        return walk, simple_walk(nodes, edges)
    if walk == "metropolis":
        return walk, metropolis_walk(nodes, edges)
    if walk == "lazy":
        base = given if given is not None else simple_walk(nodes, edges)
        return walk, 0.5 * (np.eye(nodes) + base)
    if walk == "matrix":
        if given is None:
            raise InputError(f"{source}: walk = \"matrix\" needs a 'transition' matrix in "
                             "the topology file")
        return walk, given
    raise InputError(f"{source}: unknown walk {walk!r}")


# ---------------------------------------------------------------- built-in topologies
def ring_edges(nodes: int) -> list[tuple[int, int]]:
    """Cycle 0-1-...-(K-1)-0 (a single edge for K = 2, none for K = 1)."""
    if nodes == 2:
        return [(0, 1)]
    return [(k, (k + 1) % nodes) for k in range(nodes)] if nodes > 2 else []


def complete_edges(nodes: int) -> list[tuple[int, int]]:
    """Every pair of nodes."""
    return [(i, j) for i in range(nodes) for j in range(i + 1, nodes)]


def star_edges(nodes: int) -> list[tuple[int, int]]:
    """Node 0 joined to every other node."""
    return [(0, k) for k in range(1, nodes)]


def torus_edges(nodes: int, rows: int | None = None) -> list[tuple[int, int]]:
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


def random_edges(nodes: int, seed: int, edge_probability: float | None = None):
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


def named_topology(name: str, nodes: int, *, walk: str | None = None, seed: int = 0,
                   edge_probability: float | None = None,
                   rows: int | None = None) -> Topology:
    """Build a built-in topology by name."""
    given = None
    if name == "ring":
        edges = ring_edges(nodes)
    elif name == "complete":
        edges = complete_edges(nodes)
    elif name == "star":
        edges = star_edges(nodes)
    elif name == "torus":
        edges = torus_edges(nodes, rows)
    elif name == "random":
        edges = random_edges(nodes, seed, edge_probability)
    elif name == "paper-ring":
        if nodes != 4:
            raise InputError(f"topology paper-ring has 4 nodes, not {nodes}")
        edges, given = ring_edges(4), PAPER_RING_TRANSITION
    else:
        raise InputError(f"unknown topology name {name!r}")
    label = f"{name}({nodes})"
    edges = check_graph(nodes, [list(e) for e in edges], label)
    walk, transition = make_walk(walk, nodes, edges, given, label)
    return _finish(nodes, edges, transition, walk, label)


def read_topology_file(path: str | Path, walk: str | None = None) -> Topology:
    """Read and validate a topology file."""
    source = str(path)
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{source}: topology file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{source}: cannot read topology file: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{source}: invalid TOML: {error}") from None
    unknown = set(document) - {"nodes", "edges", "transition"}
    if unknown:
        raise InputError(f"{source}: unknown key '{sorted(unknown)[0]}' (a topology file "
                         "has nodes, edges, transition)")
    for key in ("nodes", "edges"):
        if key not in document:
            raise InputError(f"{source}: missing '{key}'")
    nodes = document["nodes"]
    edges = check_graph(nodes, document["edges"], source)
    given = None
    if "transition" in document:
        given = check_transition(document["transition"], nodes, edges, source)
    walk, transition = make_walk(walk, nodes, edges, given, source)
    return _finish(nodes, edges, transition, walk, source)


def _finish(nodes, edges, transition, walk, source) -> Topology:
    transition = np.ascontiguousarray(transition, dtype=np.float64)
    transition.setflags(write=False)
    return Topology(nodes=nodes, edges=tuple(edges), transition=transition, walk=walk,
                    source=source)


def build_topology(spec, world_size: int) -> Topology:
    """Build the topology of a ``[topology]`` section for a job of ``world_size`` ranks.

    The node count must equal the number of MPI ranks.
    """
    if spec.file is not None:
        topology = read_topology_file(spec.file, spec.walk)
    else:
        nodes = spec.nodes if spec.nodes is not None else world_size
        topology = named_topology(spec.name, nodes, walk=spec.walk, seed=spec.seed,
                                  edge_probability=spec.edge_probability, rows=spec.rows)
    if topology.nodes != world_size:
        raise InputError(f"{topology.source}: topology has {topology.nodes} nodes but the job "
                         f"has {world_size} MPI ranks (start it with mpiexec -n "
                         f"{topology.nodes})")
    return topology


def resolve_topology_argument(argument: str, nodes: int | None, walk: str | None,
                              seed: int = 0) -> Topology:
    """``mcdpf topology FILE|NAME``: a path if it names a file or ends in .toml."""
    from .config import TOPOLOGY_NAMES

    if argument in TOPOLOGY_NAMES and not Path(argument).exists():
        if nodes is None:
            if argument != "paper-ring":
                raise InputError(f"topology {argument}: give --nodes K")
            nodes = 4
        return named_topology(argument, nodes, walk=walk, seed=seed)
    if nodes is not None:
        raise InputError(f"{argument}: --nodes goes with a built-in name; a topology file "
                         "states its own node count")
    if not argument.endswith(".toml") and not Path(argument).exists():
        raise InputError(f"{argument}: neither a topology file nor a built-in name "
                         f"({', '.join(TOPOLOGY_NAMES)})")
    return read_topology_file(argument, walk)
