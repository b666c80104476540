"""``rpf``: the relay particle filter (DESIGN §3a). Measurements travel; particles never move.

Every node relays the raw measurements ``(X[j,t], d[j,t])`` of its graph neighbourhood to
``relay.hops`` hops, over neighbour-only messages, and runs a particle filter on the data
it then holds: the likelihood of node ``j``'s label raised to an exponent ``e_j``:

``uniform``
    ``e_j = 1``. With ``hops >= diameter`` every node holds every node's data: each runs
    the centralized particle filter, obtained without any central node.
``walk``
    ``e_j = sum_{tau=1..s} A^tau[k, j] / (s pi_j)``: the expected log-weight of an
    ``s``-step MCDPF walk from this node (MCDPF in expectation, without the walk's
    randomness). Nodes farther than ``hops`` are left out (with a warning at set-up).

**Relay.** The measurement of origin ``o`` reaches every node within ``hops`` of it along
a breadth-first tree: in round ``r`` a node ``v`` at distance ``r`` receives it from one
designated parent, the lowest-numbered neighbour of ``v`` at distance ``r - 1`` from
``o``. So each measurement crosses each link of its tree once, a node's messages per step
are bounded by its ``hops``-ball, and ``min(hops, diameter)`` rounds complete the relay
within the time step (one stamped handshake and one ``Neighbor_alltoallv`` per round).
A message packs ``[origin, observed, m, d, X...]`` in float64.

The particles carry one LSTM state per stream of the node's ball.
"""

from __future__ import annotations

import numpy as np

from .filters import ParticleFilter, StreamPlan

HEADER = 4  # origin, observed, m, d


def relay_exponents(topology, node: int, ball: list[int], weights: str,
                    walk_steps: int) -> tuple[float, ...] | None:
    """Exponent of each ball node's likelihood (``None``: all 1)."""
    if weights == "uniform":
        return None
    transition = topology.transition
    power = np.eye(topology.nodes)[node]
    visits = np.zeros(topology.nodes)
    for _ in range(walk_steps):
        power = power @ transition
        visits += power
    pi = topology.stationary_distribution
    return tuple(float(visits[j] / (walk_steps * pi[j])) for j in ball)


def walk_reach_beyond(topology, node: int, hops: int, walk_steps: int) -> bool:
    """Whether an ``s``-step walk from ``node`` reaches nodes farther than ``hops``."""
    return walk_steps > hops and int(topology.distances(node).max()) > hops


class RelayPlan:
    """Who forwards which origin's measurement to whom, in which round (from the graph).

    Attributes
    ----------
    ball
        Nodes within ``hops`` of this node (sorted, including itself).
    rounds
        Relay rounds per step, the same at every node: ``min(hops, diameter)``.
    forwards
        ``forwards[r][i]``: origins whose measurement this node sends to neighbour ``i``
        in round ``r + 1``.
    """

    def __init__(self, topology, node: int, hops: int):
        active = topology.active
        distance = {j: topology.distances(j) for j in active}
        neighbours = {j: topology.neighbours(j) for j in active}
        self.node = node
        self.hops = hops
        self.rounds = min(hops, topology.diameter)
        self.ball = sorted(j for j in active if 0 <= distance[node][j] <= hops)
        self.neighbours = neighbours[node]
        self.forwards = [[[] for _ in self.neighbours] for _ in range(self.rounds)]
        for origin in active:
            for position, target in enumerate(self.neighbours):
                depth = distance[origin][target]
                if not 1 <= depth <= self.rounds:
                    continue
                parents = [u for u in neighbours[target] if distance[origin][u] == depth - 1]
                if min(parents) == node:
                    self.forwards[depth - 1][position].append(origin)


def pack(origin: int, columns, target) -> np.ndarray:
    """``[origin, observed, m, d, X...]`` (float64) of one measurement."""
    if columns is None or target is None:
        return np.array([origin, 0.0, 0.0, 0.0])
    columns = np.asarray(columns, dtype=np.float64)
    return np.concatenate([[origin, 1.0, columns.shape[0], target], columns.ravel()])


def split(buffer: np.ndarray, inputs: int):
    """``(origin, record)`` of every packed measurement in ``buffer``, in order."""
    position = 0
    while position < buffer.size:
        end = position + HEADER + int(buffer[position + 2]) * inputs
        yield int(buffer[position]), buffer[position:end]
        position = end


def decode(record: np.ndarray, inputs: int, dtype):
    """``(columns, target)`` of one packed measurement, or ``None`` if it had no data."""
    _, observed, length, target = record[:HEADER]
    if not observed:
        return None
    columns = record[HEADER:].reshape(int(length), inputs)
    return np.ascontiguousarray(columns, dtype=dtype), float(target)


class Relay:
    """This node's relay of measurements over its neighbourhood (:class:`RelayPlan`).

    ``relay(step, columns, target)`` returns ``(measurements of the ball in ball order,
    bytes sent)``.
    """

    def __init__(self, plan: RelayPlan, neighbourhood, model):
        self.plan = plan
        self.neighbourhood = neighbourhood
        self.model = model

    def __call__(self, step: int, columns, target) -> tuple[list, int]:
        """Relay this step's measurements; the ball's, in ball order, and bytes sent."""
        plan = self.plan
        held = {plan.node: pack(plan.node, columns, target)}
        bytes_sent = 0
        for forwards in plan.forwards:
            outgoing = [np.concatenate([held[o] for o in origins]) if origins
                        else np.empty(0) for origins in forwards]
            received, sent = self.neighbourhood.exchange_vectors(step, outgoing)
            bytes_sent += sent
            for buffer in received:
                held.update(split(buffer, self.model.inputs))
        measured = [decode(held[origin], self.model.inputs, self.model.dtype)
                    for origin in plan.ball]
        return measured, bytes_sent


class RelayParticleFilter(ParticleFilter):
    """``rpf`` at one node.

    Parameters
    ----------
    model, settings, seed
        As for :class:`~mcdpf.filters.ParticleFilter`.
    node
        This node (random-stream key and id prefix).
    topology, neighbourhood
        The graph and this node's neighbour exchanges.
    relay_settings
        The ``[relay]`` section.
    key
        Random-stream key and id prefix (default: ``node``; the oracle's key makes rpf
        draw exactly what ``cpf`` draws).
    """

    def __init__(self, model, settings, seed: int, node: int, topology, neighbourhood,
                 relay_settings, key: int | None = None, parallel: bool = False,
                 initial_variance: float | None = None):
        hops = relay_settings.hops or topology.diameter
        relay_plan = RelayPlan(topology, node, hops)
        ball = relay_plan.ball
        exponents = relay_exponents(topology, node, ball, relay_settings.weights,
                                    topology.walk_steps(settings.walk_steps))
        self.relay = Relay(relay_plan, neighbourhood, model)
        plan = StreamPlan(tuple(ball), own=ball.index(node), exponents=exponents,
                          measurements=self.relay)
        super().__init__(model=model, settings=settings, seed=seed,
                         key=node if key is None else key, count=settings.particles, plan=plan,
                         parallel=parallel, initial_variance=initial_variance)
