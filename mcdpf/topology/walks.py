"""Random walks on a graph: row-stochastic transition matrices, registered by name.

``simple``
    ``A[j, l] = 1 / degree(j)`` on edges; stationary ``pi_j = degree(j) / 2|E|``.
``lazy``
    ``(I + A_base) / 2``, where ``A_base`` is the file's ``transition`` if it has one, else
    the simple walk. Aperiodic; same stationary distribution as ``A_base``.
``metropolis``
    Metropolis-Hastings weights ``A[j, l] = 1 / (1 + max(deg j, deg l))``, rest on the
    diagonal; symmetric, stationary distribution uniform.
``matrix``
    The ``transition`` given with the topology.

Each walk is a function ``(nodes, edges, given) -> A`` (``given``: the topology's own
matrix or ``None``) registered in :data:`mcdpf.registry.WALKS`, with the trait
``rebuild(base_matrix_on_remaining_nodes, edges) -> A`` that rebuilds it after nodes leave
(:meth:`mcdpf.topology.Topology.without`).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..registry import WALKS


def simple_walk(nodes: int, edges) -> np.ndarray:
    """``A[j, l] = 1 / degree(j)`` on edges; a single node stays put."""
    if nodes == 1:
        return np.ones((1, 1))
    a = np.zeros((nodes, nodes))
    for i, j in edges:
        a[i, j] = a[j, i] = 1.0
    return a / a.sum(axis=1)[:, None]


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


def renormalised(base: np.ndarray) -> np.ndarray:
    """Rows divided by their sums (an all-zero row becomes a self-loop)."""
    sums = base.sum(axis=1)
    return np.where(sums[:, None] > 0, base / np.where(sums > 0, sums, 1)[:, None],
                    np.eye(base.shape[0]))


def _lazy(matrix: np.ndarray) -> np.ndarray:
    return 0.5 * (np.eye(matrix.shape[0]) + matrix)


@WALKS.register("simple", rebuild=lambda base, edges: renormalised(base))
def _simple(nodes, edges, given):
    return simple_walk(nodes, edges)


@WALKS.register("lazy", rebuild=lambda base, edges: _lazy(renormalised(2.0 * base
                                                                      - np.eye(len(base)))))
def _lazy_walk(nodes, edges, given):
    return _lazy(given if given is not None else simple_walk(nodes, edges))


@WALKS.register("metropolis", rebuild=lambda base, edges: metropolis_walk(len(base), edges))
def _metropolis(nodes, edges, given):
    return metropolis_walk(nodes, edges)


@WALKS.register("matrix", rebuild=lambda base, edges: renormalised(base))
def _matrix(nodes, edges, given):
    if given is None:
        raise InputError("walk = \"matrix\" needs a transition matrix with the topology")
    return given


def make_walk(walk: str | None, nodes: int, edges, given: np.ndarray | None,
              source: str) -> tuple[str, np.ndarray]:
    """Return ``(walk name, A)`` for a walk name (``None``: the default for this graph).

    The default is ``matrix`` when the topology gives a transition, else ``simple``.
    """
    if walk is None:
        walk = "matrix" if given is not None else "simple"
    if walk not in WALKS:
        raise InputError(f"{source}: unknown walk {walk!r}; walks are {', '.join(WALKS)}")
    try:
        return walk, WALKS[walk](nodes, edges, given)
    except InputError as error:
        raise InputError(f"{source}: {error}") from None



AUTO_WALK_STEPS = "auto"
AUTO_SPREAD = 1.0
AUTO_MAX_FACTOR = 4


def visit_spreads(transition: np.ndarray, stationary: np.ndarray, max_steps: int,
                  stop_below: float | None = None) -> np.ndarray:
    """How far the visit exponents of walks of 1 .. ``max_steps`` steps are from 1.

    A particle that starts at node ``k`` and walks ``s`` steps collects node ``j``'s
    likelihood with the total exponent ``E_j = N_j / (s pi_j)`` (``N_j``: its visits to
    ``j``, the start not counted); the centralized filter has ``E_j = 1`` for every node.
    Entry ``s - 1`` is the mean over start nodes of ``sum_j pi_j E[(E_j - 1)^2]``, exact
    (first and second moments of a Markov chain's visit counts, from the powers of
    ``A``). It falls like ``tau / (s pi_j)``, ``tau`` the walk's integrated
    autocorrelation time: about ``K / s`` for a well-mixing walk on ``K`` nodes with
    uniform ``pi``. With ``stop_below``, stops at the first ``s`` whose spread is at most
    that (the array ends there).
    """
    nodes = transition.shape[0]
    active = stationary > 0
    pi = stationary[active]
    powers = np.empty((max_steps, nodes, nodes))
    spreads = []
    power = np.eye(nodes)
    returns = np.zeros((max_steps, nodes))  # sum_{d <= m} A^d[j, j], m = 1 .. s
    for s in range(1, max_steps + 1):
        power = power @ transition
        powers[s - 1] = power
        returns[s - 1] = (returns[s - 2] if s > 1 else 0.0) + np.diagonal(power)
        visits = powers[:s].sum(axis=0)                       # E[N_j | start k]
        pairs = np.einsum("tkj,tj->kj", powers[:s - 1], returns[s - 2::-1]) if s > 1 \
            else np.zeros((nodes, nodes))
        second = visits + 2.0 * pairs                         # E[N_j^2 | start k]
        scale = s * pi
        error = (second[:, active] / scale ** 2 - 2.0 * visits[:, active] / scale + 1.0)
        spreads.append(float(np.mean((error @ pi)[active])))
        if stop_below is not None and spreads[-1] <= stop_below:
            break
    return np.array(spreads)


def auto_walk_steps(transition: np.ndarray, stationary: np.ndarray,
                    spread: float = AUTO_SPREAD) -> int:
    """``filter.walk_steps = "auto"``: the shortest walk whose visit spread is at most 1.

    The visit spread (:func:`visit_spreads`) is the mean squared distance of the walk's
    per-node exponents from the centralized filter's 1; at most 1 means every node's
    likelihood is, in root mean square, counted between not at all and twice. Capped at
    ``4 K`` steps (a ring's slow mixing would ask for ``O(K^2)``); 1 for a single node.
    """
    active = int(np.count_nonzero(stationary > 0))
    if active <= 1:
        return 1
    spreads = visit_spreads(transition, stationary, AUTO_MAX_FACTOR * active, spread)
    return int(spreads.size)
