"""``dpf``: the Markov chain distributed particle filter (MCDPF, DESIGN §3).

Lee & West's filter, Algorithm 1 of Ergen & Kozat. Every node propagates its particles,
sets their walk weight to 1 and takes ``s`` random-walk steps over the graph: a particle
moves to a node drawn from its current node's row of ``A`` and at every node ``j`` it
reaches its weight is multiplied by ``p(d[j,t] | a)^(1 / (s pi_j))``, scored on node
``j``'s own data from the particle's step-(t-1) carried state. Afterwards each node
resamples the ``M`` particles it holds back to ``N`` and estimates. The carried state a
particle keeps is the one computed on the data of the node where its walk ended.

``filter.walk_steps = "auto"`` takes ``s`` from the walk's mixing
(:attr:`~mcdpf.topology.Topology.auto_walk_steps`); ``filter.visit_tempering = beta``
multiplies every visit's exponent, ``beta / (s pi_j)`` (docs/algorithms.md).

With ``filter.ess_threshold < 1`` a node resamples only when the ESS of what it holds
falls below ``threshold * M``; otherwise its particles keep their walk weights into the
next step (scaled to mean 1, the scale of a resampled population, so particles of nodes
that did and did not resample mix on equal terms). The default 1.0 resamples after every
walk, as Algorithm 1.

**The wire.** A migrating particle is one record (:func:`wire_record_dtype`): its 64-bit
id, walk log-weight, ``theta`` (``z``, ``d`` values, with ``filter.subspace = d``) and
step-(t-1) carried state, in ``filter.wire_dtype``
(the model dtype by default; float32 halves a float64 run's bytes, and a particle that
moves is then rounded to float32 — documented in docs/algorithms.md). Its state noise does not
travel: the node that scores it regenerates it from the counter-based generator keyed
by the seed, the particle's id and the step (bit-identical on CPUs with the same
instruction set). At a node the walkers live in contiguous arrays (:class:`Walkers`);
the stayers are compacted once per walk step, the arrivals unpacked behind them.

With ``filter.proposal = "linearized"`` the origin proposes each particle with its own
label (:mod:`mcdpf.proposals`) and the correction starts its walk log-weight; the walk
then collects every visited node's likelihood as above.

A node that holds no particle after a walk keeps the particles it started with, weighted
by its own likelihood (a local PF step), and counts the event.

**Gaussian particles** (``filter.kernel = "gaussian"``) migrate with their covariance:
the record then also holds the form's arrays (:func:`wire_record_dtype`), and every
visit, a stay included, is the EKF update with the visited node's measurement tempered
by the visit's exponent, weighted by the tempered evidence. What a walk does with a
particle is the kernel's (:mod:`mcdpf.variants`: ``walk_start``, ``visit``,
``fallback``); this module moves the records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .filters import Evaluation, FilterState, ParticleFilter, StreamPlan
from .kernels import aligned_empty, pack_records, route, take_rows, unpack_records
from .learner import StepInfo
from .particles import (
    Particles,
    particle_uniforms,
    reweight_estimate_resample,
    state_noise,
)

SCORE_BLOCK_VALUES = 1 << 22


def wire_record_dtype(model, wire_dtype=None, form=None) -> np.dtype:
    """A migrating particle on the wire: id, walk log-weight, theta, carried state.

    ``model`` is the filter's: with ``filter.subspace = d`` the ``theta`` field holds the
    particle's ``d`` subspace coordinates ``z``. A Gaussian particle (``form``: its
    :mod:`~mcdpf.covariance` form) carries its mean as ``theta`` and its covariance as
    the form's arrays, one field per name, after the carried state.
    """
    wire = np.dtype(wire_dtype or model.dtype)
    covariance = [] if form is None else [(name, wire, shape[1:])
                                          for name, shape in form.shapes(1).items()]
    return np.dtype([("id", "<i8"), ("log_weight", "<f8"),
                     ("theta", wire, (model.n_params,)),
                     ("carry", wire, (model.n_carry,))] + covariance)


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
    """The particles on a walk at one node (contiguous arrays, one row per particle).

    ``carry`` is each particle's step-(t-1) carried state (what a visit scores from);
    ``log_likelihood`` and ``next_carry`` what this node computed for it. Gaussian
    particles: ``theta`` holds the means (float64), ``covariance`` the covariances (the
    form's state, first axis the particles).
    """

    ids: np.ndarray
    log_weight: np.ndarray
    theta: np.ndarray
    carry: np.ndarray
    log_likelihood: np.ndarray
    next_carry: np.ndarray
    covariance: dict | None = None

    @property
    def size(self) -> int:
        """Number of particles here."""
        return self.ids.shape[0]


@dataclass
class Departure:
    """A walk step in flight: who stays, the pending exchange (holds the send buffer).

    :meth:`DistributedParticleFilter.arrive` takes the exchange out, so the sent records
    are freed as soon as it completes (peak memory); a departure without its exchange is
    :attr:`finished`.
    """

    stay: np.ndarray
    exchange: tuple | None

    @property
    def finished(self) -> bool:
        """Whether the exchange has been taken out (completed)."""
        return self.exchange is None


class DistributedParticleFilter(ParticleFilter):
    """``dpf`` at one node.

    Parameters
    ----------
    model, settings, seed
        As for :class:`~mcdpf.filters.ParticleFilter`.
    node
        This node (its rank; id prefix and resampling stream).
    topology
        The :class:`~mcdpf.topology.Topology` the walk runs on.
    neighbourhood
        The node's :class:`~mcdpf.comm.Neighbourhood` (neighbour-only exchanges).
    parallel
        Run the kernels on numba's threads.
    """

    def __init__(self, model, settings, seed: int, node: int, topology, neighbourhood,
                 parallel: bool = False):
        super().__init__(model=model, settings=settings, seed=seed, key=node,
                         count=settings.particles, plan=StreamPlan((node,)), parallel=parallel)
        self.node = node
        self.walk_steps = topology.walk_steps(settings.walk_steps)
        self.neighbourhood = neighbourhood
        self.visit_exponent = settings.visit_tempering / (
            self.walk_steps * topology.stationary_distribution[node])
        row = topology.transition[node]
        self.move_probabilities = np.array([row[node]] + [row[j] for j in
                                                          topology.neighbours(node)])
        self.move_cumulative = np.cumsum(self.move_probabilities)
        self.wire_dtype = wire_record_dtype(self.model, settings.wire_dtype,
                                            getattr(self.kernel, "form", None))

    def initial_state(self) -> FilterState:
        """As the local filter, with an empty record of walked ids."""
        state = super().initial_state()
        return FilterState(particles=state.particles, estimate=state.estimate,
                           next_serial=state.next_serial, walk_ids=np.empty(0, dtype=np.int64))

    # ------------------------------------------------------------------ the walk
    def destinations(self, ids: np.ndarray, step: int, walk_step: int):
        """Next move of each held particle: ``(slot, counts per slot, order by slot)``.

        Slot 0 stays, slot ``i`` goes to neighbour ``i - 1``; ``order`` lists the
        particles grouped by slot, stable. Free walk: each particle's own uniform (keyed
        by its id, the step and the walk step); balanced: a fixed, ``A``-proportional
        number per slot, assigned by a random permutation.
        """
        if self.settings.migration == "balanced":
            counts = apportion(ids.shape[0], self.move_probabilities)
            keys = particle_uniforms(ids, step, walk_step, self.keys.balance)
            destination = np.repeat(np.arange(counts.size), counts)[
                np.argsort(np.argsort(keys, kind="stable"), kind="stable")]
            return destination, counts, np.argsort(destination, kind="stable")
        uniforms = particle_uniforms(ids, step, walk_step, self.keys.walk)
        return route(uniforms, self.move_cumulative)

    def depart(self, walkers: Walkers, step: int, walk_step: int) -> Departure:
        """Draw every particle's next move and start sending the movers (non-blocking)."""
        destination, counts, order = self.destinations(walkers.ids, step, walk_step)
        kept = int(counts[0])
        movers = order[kept:]
        records = np.empty(movers.shape[0], dtype=self.wire_dtype)
        pack_records(records, movers, walkers.ids, walkers.log_weight, walkers.theta,
                     walkers.carry)
        for name, array in (walkers.covariance or {}).items():
            records[name] = array[movers]
        exchange = self.neighbourhood.start_exchange(records, counts[1:], stamp=step)
        return Departure(stay=destination == 0, exchange=exchange)

    def score(self, theta, carry, ids, step: int, columns, target):
        """Log-likelihood and next carried state of particles on this node's data.

        The state noise is regenerated from the particles' ids; scored in blocks, so the
        temporaries stay small.
        """
        count = ids.shape[0]
        if columns is None or target is None or count == 0:
            return np.zeros(count), carry.copy()
        rows = max(1, SCORE_BLOCK_VALUES // max(self.model.n_params, 1))
        likelihoods, carries = [], []
        for first in range(0, count, rows):
            block = slice(first, first + rows)
            noise = state_noise(ids[block], self.model.n_carry, step, self.keys,
                                self.noise_std, self.model.dtype, self.parallel)
            log_likelihood, next_carry = self.model.score(
                theta[block], carry[block], noise, columns, target, self.settings.obs_noise,
                self.parallel)
            likelihoods.append(log_likelihood)
            carries.append(next_carry)
        if len(likelihoods) == 1:
            return likelihoods[0], carries[0]
        return np.concatenate(likelihoods), np.concatenate(carries)

    def arrive(self, departure: Departure, walkers: Walkers, step: int, columns, target):
        """Finish an exchange; the stayers and the arrivals, visited here.

        Every array of the new walkers is allocated once and filled in place by the row
        kernels: the stayers compacted into its head, the arrivals unpacked into its tail.
        The kernel's :meth:`visit` scores them (point particles: the arrivals; Gaussian
        particles: every particle, an EKF update each). Returns ``(walkers, received,
        sent, bytes sent)``.
        """
        exchange, departure.exchange = departure.exchange, None
        received, sent_bytes, sent = self.neighbourhood.finish_exchange(exchange)
        del exchange  # the sent records: free before the new walkers are allocated
        stayers = np.flatnonzero(departure.stay)
        kept = stayers.shape[0]
        total = kept + received.shape[0]

        def compacted(old):
            out = aligned_empty((total, *old.shape[1:]), old.dtype)  # LSTM rows on lines
            if old.ndim > 2:  # a full covariance (M, n, n): rows of n * n values
                width = int(np.prod(old.shape[1:]))
                take_rows(old.reshape(old.shape[0], width), stayers, out.reshape(total, width))
                return out
            return take_rows(old, stayers, out)

        theta, carry = compacted(walkers.theta), compacted(walkers.carry)
        ids, log_weight = compacted(walkers.ids), compacted(walkers.log_weight)
        unpack_records(received, ids[kept:], log_weight[kept:], theta[kept:], carry[kept:])
        covariance = None
        if walkers.covariance is not None:
            covariance = {name: compacted(array) for name, array in walkers.covariance.items()}
            for name, array in covariance.items():
                array[kept:] = received[name]
        arrived = received.shape[0]
        del received
        result = Walkers(ids=ids, log_weight=log_weight, theta=theta, carry=carry,
                         log_likelihood=compacted(walkers.log_likelihood),
                         next_carry=compacted(walkers.next_carry), covariance=covariance)
        visit, scale = self.kernel.visit(self, result, kept, step, columns, target)
        if self.settings.visit_centering and result.size:
            visit = visit - visit.mean()
        result.log_weight += scale * visit
        return result, arrived, sent, sent_bytes

    # ------------------------------------------------------------------ protocol
    def started(self, particles: Particles, theta: np.ndarray, step: int) -> Departure | None:
        """With ``filter.overlap``: send the first walk step's movers while this node predicts.

        The first move of a particle does not depend on any likelihood (its starting node
        is not a visit), so the first exchange is in flight while this node evaluates its
        own particles (the prior proposal's ``predict``).
        """
        if not self.settings.overlap:
            return None
        return self.depart(Walkers(
            ids=particles.ids, log_weight=particles.log_weights + np.log(particles.size),
            theta=theta, carry=particles.carry, log_likelihood=None, next_carry=None), step, 0)

    def walk_start(self, state: FilterState, pending: Evaluation, target) -> Walkers:
        """The walkers at this node before the first move (the kernel's)."""
        return self.kernel.walk_start(self, state, pending, target)

    def learn(self, state: FilterState, pending: Evaluation, target):
        """Walk ``s`` steps collecting tempered likelihoods, then resample back to N."""
        step, columns = pending.step, pending.columns
        walkers = self.walk_start(state, pending, target)
        departure = pending.in_flight
        if departure is None or departure.finished:
            departure = self.depart(walkers, step, 0)
        start = walkers  # what an empty walk falls back on (never written by the walk)
        received = sent = bytes_sent = 0
        for walk_step in range(self.walk_steps):
            if walk_step:
                departure = self.depart(walkers, step, walk_step)
            walkers, arrived, departed, step_bytes = self.arrive(departure, walkers, step,
                                                                 columns, target)
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
            walkers = self.kernel.fallback(self, start, pending, target)
        threshold = self.settings.ess_threshold
        update = reweight_estimate_resample(
            walkers.theta, walkers.next_carry, walkers.log_weight, walkers.ids,
            count=self.count, threshold=None if threshold >= 1.0 else threshold,
            scheme=self.settings.resampling, step=step, keys=self.keys, rank=self.node,
            next_serial=state.next_serial, parallel=self.parallel,
            covariance=walkers.covariance)
        new_state = FilterState(particles=update.particles,
                                estimate=self.space.estimate(update.estimate),
                                next_serial=update.next_serial, empty_walks=empty_walks,
                                walk_ids=walkers.ids.copy())
        info = StepInfo(ess=update.ess, resampled=update.resampled, particles_held=held,
                        particles_received=received, particles_sent=sent,
                        bytes_sent=bytes_sent,
                        degenerate=update.degenerate, empty_walk=empty_walk)
        return new_state, info

    def restore(self, arrays: dict) -> FilterState:
        """The state saved by :meth:`state_arrays`."""
        state = super().restore(arrays)
        return FilterState(particles=state.particles, estimate=state.estimate,
                           next_serial=state.next_serial, empty_walks=state.empty_walks,
                           walk_ids=np.empty(0, dtype=np.int64))
