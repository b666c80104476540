"""``dpf``: the Markov chain distributed particle filter (MCDPF, DESIGN §3).

Lee & West's filter, Algorithm 1 of Ergen & Kozat. Every node propagates its particles,
sets their walk weight to 1 and takes ``s`` random-walk steps over the graph: a particle
moves to a node drawn from its current node's row of ``A`` and at every node ``j`` it
reaches its weight is multiplied by ``p(d[j,t] | a)^(1 / (s pi_j))``, scored on node
``j``'s own data from the particle's step-(t-1) carried state. Afterwards each node
resamples the ``M`` particles it holds back to ``N`` and estimates. The carried state a
particle keeps is the one computed on the data of the node where its walk ended.

With ``filter.ess_threshold < 1`` a node resamples only when the ESS of what it holds
falls below ``threshold * M``; otherwise its particles keep their walk weights into the
next step (scaled to mean 1, the scale of a resampled population, so particles of nodes
that did and did not resample mix on equal terms). The default 1.0 resamples after every
walk, as Algorithm 1.

Particles travel as one structured record each (:func:`particle_record_dtype`: id, walk
log-weight, theta, carried state, state noise) through the node's
:class:`~mcdpf.comm.Neighbourhood`; a node that holds no particle after a walk keeps the
particles it started with, weighted by its own likelihood (a local PF step), and counts
the event.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .filters import FilterState, ParticleFilter, StreamPlan
from .kernels import route
from .learner import StepInfo
from .models import gaussian_log_likelihood
from .particles import predictive_mean, reweight_estimate_resample

SCORE_BLOCK_VALUES = 1 << 22


def particle_record_dtype(model) -> np.dtype:
    """Wire format of a migrating particle: id, walk log-weight, theta, state, noise."""
    return np.dtype([("id", "<i8"), ("log_weight", "<f8"),
                     ("theta", model.dtype, (model.n_params,)),
                     ("carry", model.dtype, (model.n_carry,)),
                     ("noise", model.dtype, (model.n_carry,))])


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


@dataclass(frozen=True)
class Departure:
    """A walk step in flight: the new record array, who stayed, the pending exchange."""

    records: np.ndarray
    stay: np.ndarray
    exchange: tuple


@dataclass(frozen=True)
class WalkStart:
    """The pending half-step of dpf: the walk's starting records and the first move."""

    step: int
    columns: np.ndarray | None
    records: np.ndarray
    predictions: np.ndarray | None
    next_carry: np.ndarray
    departure: Departure | None


class DistributedParticleFilter(ParticleFilter):
    """``dpf`` at one node.

    Parameters
    ----------
    model, settings, seed
        As for :class:`~mcdpf.filters.ParticleFilter`.
    node
        This node (its rank; also the random-stream key and id prefix).
    topology
        The :class:`~mcdpf.topology.Topology` the walk runs on.
    neighbourhood
        The node's :class:`~mcdpf.comm.Neighbourhood` (neighbour-only exchanges).
    """

    def __init__(self, model, settings, seed: int, node: int, topology, neighbourhood):
        super().__init__(model, settings, seed, node, settings.particles, StreamPlan((node,)))
        self.node = node
        self.walk_steps = settings.walk_steps
        self.neighbourhood = neighbourhood
        self.visit_exponent = 1.0 / (self.walk_steps * topology.stationary_distribution[node])
        row = topology.transition[node]
        self.move_probabilities = np.array([row[node]] + [row[j] for j in
                                                          topology.neighbours(node)])
        self.move_cumulative = np.cumsum(self.move_probabilities)
        self.record_dtype = particle_record_dtype(model)

    def initial_state(self) -> FilterState:
        """As the local filter, with an empty record of walked ids."""
        state = super().initial_state()
        return FilterState(particles=state.particles, estimate=state.estimate,
                           next_serial=state.next_serial, streams=state.streams,
                           walk_ids=np.empty(0, dtype=np.int64))

    def destinations(self, count: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Next move of each held particle: ``(slot, counts per slot, order by slot)``.

        Slot 0 stays, slot ``i`` goes to neighbour ``i - 1``; ``order`` lists the
        particles grouped by slot, stable.
        """
        if self.settings.migration == "balanced":
            counts = apportion(count, self.move_probabilities)
            destination = rng.permutation(np.repeat(np.arange(counts.size), counts))
            return destination, counts, np.argsort(destination, kind="stable")
        return route(rng.random(count), self.move_cumulative)

    def score(self, records: np.ndarray, columns, target):
        """Log-likelihood and next carried state of arriving particles on this node's data.

        Scored in blocks, so the contiguous copies the kernels need stay small.
        """
        carry = np.ascontiguousarray(records["carry"])
        if columns is None or target is None:
            return np.zeros(records.shape[0]), carry
        rows = max(1, SCORE_BLOCK_VALUES // max(self.model.n_params, 1))
        scored = [self.model.score(np.ascontiguousarray(block["theta"]),
                                   np.ascontiguousarray(block["carry"]),
                                   np.ascontiguousarray(block["noise"]), columns,
                                   target, self.settings.obs_noise)
                  for block in (records[first:first + rows]
                                for first in range(0, records.shape[0], rows))]
        if len(scored) == 1:
            return scored[0]
        if not scored:
            return np.zeros(0), carry
        return (np.concatenate([log_likelihood for log_likelihood, _ in scored]),
                np.concatenate([next_carry for _, next_carry in scored]))

    def depart(self, records: np.ndarray, rng, step: int) -> Departure:
        """Draw every particle's next move and start sending the movers (non-blocking).

        The particles that stay are copied into a new record array sized for them and the
        arrivals, which MPI fills directly; so the walk holds the old records, the movers
        in flight and the new records, no more.
        """
        destination, counts, order = self.destinations(records.shape[0], rng)
        stay = destination == 0
        kept = int(counts[0])
        movers = records[order[kept:]]
        joined = []

        def allocate(incoming):
            new = np.empty(kept + incoming, dtype=records.dtype)
            np.compress(stay, records, out=new[:kept])
            joined.append(new)
            return new[kept:]

        exchange = self.neighbourhood.start_exchange(movers, counts[1:], allocate, stamp=step)
        return Departure(records=joined[0], stay=stay, exchange=exchange)

    def arrive(self, departure: Departure, previous: Walkers, columns, target):
        """Finish an exchange, score the arrivals here, weight every particle held.

        ``previous`` holds the log-likelihoods and next carried states of the particles
        before the move (the stayers keep theirs). Returns ``(walkers, received, sent,
        bytes sent)``.
        """
        received, sent_bytes, sent = self.neighbourhood.finish_exchange(departure.exchange)
        log_likelihood, next_carry = self.score(received, columns, target)
        stay = departure.stay
        walkers = Walkers(departure.records,
                          np.concatenate([previous.log_likelihood[stay], log_likelihood]),
                          np.concatenate([previous.next_carry[stay], next_carry]))
        walkers.records["log_weight"] += self.visit_exponent * walkers.log_likelihood
        return walkers, received.shape[0], sent, sent_bytes

    def predict(self, state: FilterState, step: int, columns) -> tuple[float, WalkStart]:
        """Propagate; send the first walk step's movers; predict while they travel.

        The first move of a particle does not depend on any likelihood (its starting node
        is not a visit), so with ``filter.overlap`` the first exchange is in flight while
        this node evaluates its own particles for the prediction.
        """
        particles = state.particles
        theta, noise = self.propagate(particles, state.streams)
        records = np.empty(particles.size, dtype=self.record_dtype)
        records["id"] = particles.ids
        records["log_weight"] = particles.log_weights
        records["theta"] = theta
        records["carry"] = particles.carry
        records["noise"] = noise
        departure = self.depart(records, state.streams["walk"], step) \
            if self.settings.overlap else None
        if columns is None:
            predictions, next_carry = None, particles.carry
        else:
            predictions, next_carry = self.model.evaluate(theta, particles.carry, noise,
                                                          columns)
        pending = WalkStart(step=step, columns=columns, records=records,
                            predictions=predictions, next_carry=next_carry,
                            departure=departure)
        if predictions is None:
            return float("nan"), pending
        return predictive_mean(particles.log_weights, predictions), pending

    def learn(self, state: FilterState, pending: WalkStart, target):
        """Walk ``s`` steps collecting tempered likelihoods, then resample back to N."""
        streams = state.streams
        columns = pending.columns
        if target is None or pending.predictions is None:
            own = np.zeros(pending.next_carry.shape[0])
        else:
            own = gaussian_log_likelihood(target, pending.predictions, self.settings.obs_noise)
        start = Walkers(pending.records, own, pending.next_carry)
        departure = pending.departure or self.depart(start.records, streams["walk"],
                                                     pending.step)
        walkers = start
        received = sent = bytes_sent = 0
        for walk_step in range(self.walk_steps):
            if walk_step:
                departure = self.depart(walkers.records, streams["walk"], pending.step)
            walkers, arrived, departed, step_bytes = self.arrive(departure, walkers, columns,
                                                                 target)
            departure = None
            received += arrived
            sent += departed
            bytes_sent += step_bytes
        held = walkers.size
        empty_walk = held == 0
        empty_walks = state.empty_walks
        if empty_walk:
            # Nothing arrived or stayed: fall back on this node's own particles, weighted
            # by its own likelihood (a local PF step), and count the event.
            empty_walks += 1
            walkers = start
            walkers.records["log_weight"] = start.log_likelihood
        records = walkers.records
        threshold = self.settings.ess_threshold
        update = reweight_estimate_resample(
            records["theta"], walkers.next_carry, records["log_weight"], records["id"],
            count=self.count, threshold=None if threshold >= 1.0 else threshold,
            scheme=self.settings.resampling, rng=streams["resample"], rank=self.node,
            next_serial=state.next_serial)
        particles = update.particles
        if not update.resampled:
            # Carried walk weights, scaled to mean 1 like a resampled population's.
            particles = replace(particles, log_weights=particles.log_weights + np.log(held))
        new_state = FilterState(particles=particles, estimate=update.estimate,
                                next_serial=update.next_serial, streams=streams,
                                empty_walks=empty_walks, walk_ids=records["id"].copy())
        info = StepInfo(ess=update.ess, resampled=update.resampled, held=held,
                        received=received,
                        sent=sent, bytes_sent=bytes_sent, degenerate=update.degenerate,
                        empty_walk=empty_walk)
        return new_state, info

    def restore(self, arrays: dict) -> FilterState:
        """The state saved by :meth:`state_arrays`."""
        state = super().restore(arrays)
        return FilterState(particles=state.particles, estimate=state.estimate,
                           next_serial=state.next_serial, streams=state.streams,
                           empty_walks=state.empty_walks,
                           walk_ids=np.empty(0, dtype=np.int64))
