"""Particle filters over model parameters: ``pf`` (local) and ``dpf`` (MCDPF).

Both follow the online protocol at every step ``t``:

1. :meth:`predict` receives the node's sequence ``X[k,t]``, propagates every particle
   (``theta += N(0, q I)``; new state = LSTM on ``X[k,t]`` + ``N(0, q I)``) and returns
   the prior predictive mean ``d_hat = sum_i w_i * w_i^T y_bar_i``, before the label;
2. :meth:`update` receives the label ``d[k,t]`` and reweights, resamples and estimates.

``pf`` weights by the local likelihood ``N(d; d_hat_i, r)`` and resamples when
``ESS < ess_threshold * N``. ``dpf`` (Lee & West's Markov chain distributed particle
filter, Algorithm 1 of Ergen & Kozat) sets the walk weight of every particle to 1 and
takes ``s`` random-walk steps over the graph: a particle moves to a node drawn from its
current node's row of ``A`` and at every node ``j`` it reaches its weight is multiplied
by ``p(d[j,t] | a)^(1 / (s pi_j))``, scored on node ``j``'s own data from the particle's
step-(t-1) carried state. Afterwards each node resamples the ``M`` particles it holds
back to ``N`` and estimates. The carried state a particle keeps is the one computed on
the data of the node where its walk ended.

Log-weights are float64 and normalised by log-sum-exp. Every particle has a 64-bit id
``rank * 2**40 + serial``; resampled offspring get fresh ids, so within a walk an id is
never lost or duplicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .kernels import effective_sample_size, normalize_log_weights, resample, route
from .models import gaussian_log_likelihood

ID_SERIAL_BITS = 40
NOISE_BLOCK_VALUES = 1 << 20
SCORE_BLOCK_VALUES = 1 << 22


class StepInfo(NamedTuple):
    """Diagnostics of one time step at one node."""

    ess: float
    resampled: bool
    held: int
    received: int
    sent: int
    bytes_sent: int
    degenerate: int
    empty_walk: bool


class IdSource:
    """Unique 64-bit particle ids ``rank * 2**40 + serial``."""

    def __init__(self, rank: int, serial: int = 0):
        self.prefix = np.int64(rank) << np.int64(ID_SERIAL_BITS)
        self.serial = serial

    def take(self, count: int) -> np.ndarray:
        """``count`` fresh ids."""
        ids = self.prefix + np.arange(self.serial, self.serial + count, dtype=np.int64)
        self.serial += count
        return ids


@dataclass
class ParticleSet:
    """Particles of one node: parameters, carried state, log-weights, ids."""

    theta: np.ndarray
    carry: np.ndarray
    log_weights: np.ndarray
    ids: np.ndarray

    @property
    def size(self) -> int:
        """Number of particles."""
        return self.theta.shape[0]


def random_streams(seed: int, key: int, names=("init", "propagate", "walk", "resample")):
    """Independent generators for one node (``key`` = rank) from one seed."""
    children = np.random.SeedSequence(seed, spawn_key=(key,)).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children, strict=True)}


def weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``sum_i w_i values_i`` in float64."""
    return weights @ values.astype(np.float64, copy=False)


class ParticleFilter:
    """``pf``: one node's particle filter, no communication.

    Parameters
    ----------
    model
        :class:`~mcdpf.models.LSTMModel` or :class:`~mcdpf.models.LinearModel`.
    settings
        The ``[filter]`` section.
    streams
        Generators from :func:`random_streams`.
    ids
        Id source of this rank.
    """

    def __init__(self, model, settings, streams, ids: IdSource, count: int | None = None,
                 carry_copies: int = 1):
        self.model = model
        self.settings = settings
        self.streams = streams
        self.ids = ids
        count = settings.particles if count is None else count
        theta, carry = model.initial_particles(count, streams["init"])
        if carry_copies != 1:
            carry = np.zeros((count, carry_copies * model.n_carry), dtype=model.dtype)
        self.particles = ParticleSet(theta=theta, carry=carry,
                                     log_weights=np.full(count, -np.log(count)),
                                     ids=ids.take(count))
        self.noise_std = np.sqrt(settings.state_noise)
        self.estimate = weighted_mean(np.full(count, 1.0 / count), theta)
        self._columns = None
        self._predictions = None
        self._next_carry = None
        self._state_noise = None

    def state(self) -> dict:
        """Everything needed to continue bit-identically: arrays, counters, RNG states."""
        particles = self.particles
        return {"theta": particles.theta, "carry": particles.carry,
                "log_weights": particles.log_weights, "ids": particles.ids,
                "estimate": self.estimate, "id_serial": self.ids.serial,
                "rng": {name: g.bit_generator.state for name, g in self.streams.items()}}

    def restore(self, state: dict) -> None:
        """Continue from :meth:`state` (as read back from a checkpoint)."""
        self.particles = ParticleSet(theta=state["theta"], carry=state["carry"],
                                     log_weights=state["log_weights"], ids=state["ids"])
        self.estimate = state["estimate"]
        self.ids.serial = int(state["id_serial"])
        for name, generator in self.streams.items():
            generator.bit_generator.state = state["rng"][name]

    def propagate(self) -> np.ndarray:
        """Add ``N(0, q I)`` to every ``theta``; return the state noise (N, n_carry).

        The parameter noise is drawn in blocks of rows (same random stream as one big
        draw), so a large population needs no full-size temporary.
        """
        particles = self.particles
        rng = self.streams["propagate"]
        theta = particles.theta
        rows = max(1, NOISE_BLOCK_VALUES // max(theta.shape[1], 1))
        for first in range(0, theta.shape[0], rows):
            block = theta[first:first + rows]
            block += self.noise_std * rng.standard_normal(block.shape, dtype=theta.dtype)
        return self.noise_std * rng.standard_normal(particles.carry.shape, dtype=theta.dtype)

    def predict(self, columns: np.ndarray | None) -> float:
        """Propagate, run the model on this node's sequence, return the predictive mean.

        ``columns`` is ``None`` on a skipped step (no data): the particles still
        propagate, their carried state is kept and the prediction is NaN.
        """
        self._state_noise = self.propagate()
        return self.evaluate_here(columns)

    def evaluate_here(self, columns: np.ndarray | None) -> float:
        """Run the model on this node's sequence; the predictive mean (NaN when skipped)."""
        particles = self.particles
        self._columns = columns
        if columns is None:
            self._predictions = None
            self._next_carry = particles.carry
            return float("nan")
        self._predictions, self._next_carry = self.model.evaluate(
            particles.theta, particles.carry, self._state_noise, columns)
        weights, _ = normalize_log_weights(particles.log_weights)
        return float(weights @ self._predictions)

    def local_log_likelihood(self, target: float | None) -> np.ndarray:
        """Log-likelihood of this node's label for every particle (0 when skipped)."""
        if target is None or self._predictions is None:
            return np.zeros(self._next_carry.shape[0])
        return gaussian_log_likelihood(target, self._predictions, self.settings.obs_noise)

    def update(self, target: float | None) -> StepInfo:
        """Weight by the local likelihood, estimate, resample if the ESS is low."""
        particles = self.particles
        log_weights = particles.log_weights + self.local_log_likelihood(target)
        weights, degenerate, log_weights = _normalise(log_weights)
        ess = effective_sample_size(weights)
        self.estimate = weighted_mean(weights, particles.theta)
        count = particles.size
        resampled = ess < self.settings.ess_threshold * count
        if resampled:
            ancestors = resample(self.settings.resampling, weights, count,
                                 self.streams["resample"])
            self.particles = ParticleSet(theta=particles.theta[ancestors],
                                         carry=self._next_carry[ancestors],
                                         log_weights=np.full(count, -np.log(count)),
                                         ids=self.ids.take(count))
        else:
            particles.carry = self._next_carry
            particles.log_weights = log_weights
        return StepInfo(ess=ess, resampled=resampled, held=count, received=0, sent=0,
                        bytes_sent=0, degenerate=degenerate, empty_walk=False)


def _normalise(log_weights: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Normalised weights, 1 if degenerate (no finite weight, reset uniform), log-weights."""
    weights, log_total = normalize_log_weights(log_weights)
    if log_total == -np.inf:
        return weights, 1, np.log(weights)
    return weights, 0, log_weights - log_total


def particle_record_dtype(model) -> np.dtype:
    """Wire format of a migrating particle: id, walk log-weight, theta, state, noise."""
    return np.dtype([("id", "<i8"), ("log_weight", "<f8"),
                     ("theta", model.dtype, (model.n_params,)),
                     ("carry", model.dtype, (model.n_carry,)),
                     ("noise", model.dtype, (model.n_carry,))])


@dataclass
class Walkers:
    """Particles on a walk at one node.

    ``records`` (structured, :func:`particle_record_dtype`) is what travels; the
    log-likelihood and next carried state are what this node computed for them.
    """

    records: np.ndarray
    log_likelihood: np.ndarray
    next_carry: np.ndarray

    @property
    def size(self) -> int:
        """Number of particles on this node."""
        return self.records.shape[0]


def apportion(total: int, probabilities: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``probabilities``.

    Largest-remainder rounding, ties to the lower index.
    """
    exact = total * probabilities / probabilities.sum()
    counts = np.floor(exact).astype(np.int64)
    remainder = total - counts.sum()
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1
    return counts


class DistributedParticleFilter(ParticleFilter):
    """``dpf``: the Markov chain distributed particle filter (DESIGN §3).

    Parameters
    ----------
    model, settings, streams, ids
        As for :class:`ParticleFilter`.
    topology
        The :class:`~mcdpf.topology.Topology`; this node is ``node``.
    neighbourhood
        The node's :class:`~mcdpf.comm.Neighbourhood` (neighbour-only exchanges).
    node
        This node's index (its rank).
    """

    def __init__(self, model, settings, streams, ids, topology, neighbourhood, node: int):
        super().__init__(model, settings, streams, ids)
        self.node = node
        self.walk_steps = settings.walk_steps
        self.rewire(topology, neighbourhood)
        self.record_dtype = particle_record_dtype(model)
        self.empty_walks = 0
        self.last_walk_ids = np.empty(0, dtype=np.int64)

    def rewire(self, topology, neighbourhood) -> None:
        """Walk on a (new) topology: move probabilities, exponent ``1 / (s pi_j)``."""
        node = self.node
        self.neighbourhood = neighbourhood
        self.visit_exponent = 1.0 / (self.walk_steps * topology.stationary_distribution[node])
        row = topology.transition[node]
        neighbours = topology.neighbours(node)
        self.move_probabilities = np.array([row[node]] + [row[j] for j in neighbours])
        self.move_cumulative = np.cumsum(self.move_probabilities)

    def state(self) -> dict:
        """Particle filter state plus the empty-walk count."""
        return {**super().state(), "empty_walks": self.empty_walks}

    def restore(self, state: dict) -> None:
        """Continue from :meth:`state`."""
        super().restore(state)
        self.empty_walks = int(state["empty_walks"])

    def destinations(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Next move of each held particle: ``(slot, counts per slot, order by slot)``.

        Slot 0 stays, slot ``i`` goes to neighbour ``i - 1``; ``order`` lists the
        particles grouped by slot, stable.
        """
        rng = self.streams["walk"]
        if self.settings.migration == "balanced":
            counts = apportion(count, self.move_probabilities)
            destination = rng.permutation(np.repeat(np.arange(counts.size), counts))
            return destination, counts, np.argsort(destination, kind="stable")
        return route(rng.random(count), self.move_cumulative)

    def score(self, records: np.ndarray, target):
        """Log-likelihood and next carried state of arriving particles on this node's data.

        Scored in blocks, so the contiguous copies the kernels need stay small.
        """
        carry = np.ascontiguousarray(records["carry"])
        if self._columns is None or target is None:
            return np.zeros(records.shape[0]), carry
        rows = max(1, SCORE_BLOCK_VALUES // max(self.model.n_params, 1))
        scored = [self.model.score(np.ascontiguousarray(block["theta"]),
                                   np.ascontiguousarray(block["carry"]),
                                   np.ascontiguousarray(block["noise"]), self._columns,
                                   target, self.settings.obs_noise)
                  for block in (records[first:first + rows]
                                for first in range(0, records.shape[0], rows))]
        if len(scored) == 1:
            return scored[0]
        if not scored:
            return np.zeros(0), carry
        return (np.concatenate([log_likelihood for log_likelihood, _ in scored]),
                np.concatenate([next_carry for _, next_carry in scored]))

    def depart(self, records: np.ndarray):
        """Draw every particle's next move and start sending the movers (non-blocking).

        The particles that stay are copied into a new record array sized for them and the
        arrivals, which MPI fills directly; so the walk holds the old records, the movers
        in flight and the new records, no more. Returns ``(new records, stay mask,
        pending exchange)``.
        """
        destination, counts, order = self.destinations(records.shape[0])
        stay = destination == 0
        kept = int(counts[0])
        movers = records[order[kept:]]
        joined = []

        def allocate(incoming):
            new = np.empty(kept + incoming, dtype=records.dtype)
            np.compress(stay, records, out=new[:kept])
            joined.append(new)
            return new[kept:]

        pending = self.neighbourhood.start_exchange(movers, counts[1:], allocate)
        return joined[0], stay, pending

    def arrive(self, departure, previous_scores, target) -> tuple[Walkers, int, int, int]:
        """Finish an exchange, score the arrivals here, weight every particle held.

        ``previous_scores`` are the log-likelihoods and next carried states of the
        particles before the move (the stayers keep theirs).
        """
        records, stay, pending = departure
        previous_likelihood, previous_carry = previous_scores
        received, sent_bytes, sent = self.neighbourhood.finish_exchange(pending)
        log_likelihood, next_carry = self.score(received, target)
        walkers = Walkers(records, np.concatenate([previous_likelihood[stay], log_likelihood]),
                          np.concatenate([previous_carry[stay], next_carry]))
        walkers.records["log_weight"] += self.visit_exponent * walkers.log_likelihood
        return walkers, received.shape[0], sent, sent_bytes

    def predict(self, columns: np.ndarray | None) -> float:
        """Propagate; send the first walk step's movers; predict while they travel.

        The first move of a particle does not depend on any likelihood (its starting node
        is not a visit), so with ``filter.overlap`` the first exchange is in flight while
        this node evaluates its own particles for the prediction.
        """
        particles = self.particles
        records = np.empty(particles.size, dtype=self.record_dtype)
        self._state_noise = self.propagate()
        records["id"] = particles.ids
        records["log_weight"] = 0.0
        records["theta"] = particles.theta
        records["carry"] = particles.carry
        records["noise"] = self._state_noise
        self._start = records
        self._departure = self.depart(records) if self.settings.overlap else None
        prediction = self.evaluate_here(columns)
        # The records hold the particles now; the walk ends with a new population.
        self.particles = None
        return prediction

    def update(self, target: float | None) -> StepInfo:
        """Walk ``s`` steps collecting tempered likelihoods, then resample back to N."""
        start = Walkers(self._start, self.local_log_likelihood(target), self._next_carry)
        departure = self._departure or self.depart(start.records)
        self._departure = None
        walkers = start
        received = sent = bytes_sent = 0
        for step in range(self.walk_steps):
            if step:
                departure = self.depart(walkers.records)
            scores = (walkers.log_likelihood, walkers.next_carry)
            walkers = None  # the records are copied: free them while the exchange runs
            walkers, arrived, departed, step_bytes = self.arrive(departure, scores, target)
            departure = None
            received += arrived
            sent += departed
            bytes_sent += step_bytes
        held = walkers.size
        empty_walk = held == 0
        if empty_walk:
            # Nothing arrived or stayed: fall back on this node's own particles, weighted
            # by its own likelihood (a local PF step), and count the event.
            self.empty_walks += 1
            walkers = start
            walkers.records["log_weight"] = start.log_likelihood
        log_weights = walkers.records["log_weight"]
        weights, degenerate, _ = _normalise(log_weights)
        ess = effective_sample_size(weights)
        theta = walkers.records["theta"]
        self.estimate = weighted_mean(weights, theta)
        count = self.settings.particles
        ancestors = resample(self.settings.resampling, weights, count,
                             self.streams["resample"])
        self.particles = ParticleSet(theta=np.ascontiguousarray(theta[ancestors]),
                                     carry=np.ascontiguousarray(walkers.next_carry[ancestors]),
                                     log_weights=np.full(count, -np.log(count)),
                                     ids=self.ids.take(count))
        self.last_walk_ids = walkers.records["id"].copy()
        return StepInfo(ess=ess, resampled=True, held=held, received=received, sent=sent,
                        bytes_sent=bytes_sent, degenerate=degenerate, empty_walk=empty_walk)


class CentralizedParticleFilter(ParticleFilter):
    """``cpf``: the centralized particle filter, an oracle that sees every node's data.

    One filter (``filter.central_particles``, default ``N * K`` particles) whose weights
    use the likelihood of all K nodes' labels at each step; each particle carries one LSTM
    state per node stream. Every rank runs the same filter from the same random streams,
    without communication, and reports the prediction of its own node's labels. It is the
    reference that Theorem 1 says DPF converges to, not a deployable algorithm: a real
    central node would have to receive every node's data.

    Parameters
    ----------
    model, settings, streams, ids
        As for :class:`ParticleFilter` (``streams`` must be the same on every rank).
    node_streams, node_skipped
        Every node's :class:`~mcdpf.streams.Stream` and skipped-step mask.
    node
        This rank's node.
    """

    def __init__(self, model, settings, streams, ids, node_streams, node_skipped, node: int):
        nodes = len(node_streams)
        count = settings.central_particles or settings.particles * nodes
        super().__init__(model, settings, streams, ids, count=count, carry_copies=nodes)
        self.node_streams = node_streams
        self.node_skipped = node_skipped
        self.node = node
        self.step = 0
        self._node_predictions = []

    def state(self) -> dict:
        """Particle filter state plus the step counter."""
        return {**super().state(), "step": self.step}

    def restore(self, state: dict) -> None:
        """Continue from :meth:`state`."""
        super().restore(state)
        self.step = int(state["step"])

    def predict(self, columns) -> float:
        """Propagate and evaluate on every node's sequence; predict this node's label."""
        particles = self.particles
        self._state_noise = self.propagate()
        width = self.model.n_carry
        predictions, carries = [], []
        for j, stream in enumerate(self.node_streams):
            part = slice(j * width, (j + 1) * width)
            carry = np.ascontiguousarray(particles.carry[:, part])
            if self.node_skipped[j][self.step]:
                predictions.append(None)
                carries.append(carry)
                continue
            noise = np.ascontiguousarray(self._state_noise[:, part])
            predicted, next_carry = self.model.evaluate(particles.theta, carry, noise,
                                                        stream.sequence(self.step))
            predictions.append(predicted)
            carries.append(next_carry)
        self._node_predictions = predictions
        self._next_carry = np.concatenate(carries, axis=1) if width else particles.carry
        self._predictions = predictions[self.node]
        if columns is None or self._predictions is None:
            return float("nan")
        weights, _ = normalize_log_weights(particles.log_weights)
        return float(weights @ self._predictions)

    def local_log_likelihood(self, target) -> np.ndarray:
        """Sum over all observing nodes of their labels' log-likelihoods."""
        total = np.zeros(self.particles.size)
        for j, predicted in enumerate(self._node_predictions):
            if predicted is not None:
                label = float(self.node_streams[j].targets[self.step])
                total += gaussian_log_likelihood(label, predicted, self.settings.obs_noise)
        self.step += 1
        return total
