"""Particle filters over model parameters on one or several data streams: pf, cpf, rpf.

A :class:`ParticleFilter` weights its particles by the likelihood of the labels of a
fixed list of node streams (:class:`StreamPlan`), each particle carrying one LSTM state
per stream:

``pf``
    this node's stream only (no communication);
``cpf``
    every node's stream (the centralized oracle): ``N * K`` particles unless
    ``filter.central_particles``, the oracle's ids and resampling stream on every rank, so
    every rank runs the same filter and reports the prediction of its own node's labels;
``rpf``
    the streams of the node's neighbourhood, relayed (:mod:`mcdpf.rpf`).

The variants are registered strategies the filter calls (:mod:`mcdpf.variants`): the
proposal (``filter.proposal``) and the particle kernel (``filter.kernel``). Particles are
point particles (a parameter vector each, the papers'), or with
``filter.kernel = "gaussian"`` Gaussian particles ``N(m_i, P_i)`` each updated by the
extended Kalman filter with every measured stream, its covariance in the form
``filter.covariance`` (:mod:`mcdpf.covariance`), and weighted by its predictive density:
a Gaussian-sum particle filter (Alspach & Sorenson 1972; Kotecha & Djuric 2003). With one
particle it is the EKF; with several, a mixture of EKFs started from the prior's draws,
resampled when the ESS is low.

At every step (the online protocol):

1. :meth:`~ParticleFilter.predict` propagates every particle (``theta += N(0, q I)``; each
   stream's new state = LSTM on that stream's sequence + ``N(0, q I)``), evaluates this
   node's sequence and returns the prior predictive mean
   ``d_hat = sum_i w_i * w_i^T y_bar_i``, before the label. With
   ``filter.proposal = "linearized"`` the propagation waits for the label
   (:mod:`mcdpf.proposals`) and the prediction is ``sum_i w_i h_i``, the prediction at
   ``theta_{t-1}`` where the linearisation is taken;
2. :meth:`~ParticleFilter.learn` receives the label, evaluates the other streams of the
   plan (their sequences and labels come from the plan's ``measurements``), multiplies
   the weights by ``prod_j p(d_j | a)^(e_j)`` (and the proposal's correction: the
   kernel's ``update``) and calls the shared
   :func:`~mcdpf.particles.reweight_estimate_resample` (resampling when
   ``ESS < ess_threshold * N``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .learner import StepInfo
from .models import gaussian_log_likelihood
from .particles import (
    Keys,
    Particles,
    fresh_ids,
    predictive_mean,
    reweight_estimate_resample,
    state_noise,
    weighted_mean,
)
from .registry import KERNELS, PROPOSALS
from .subspace import parameter_space


@dataclass(frozen=True)
class FilterState:
    """A particle filter between steps: the population, its estimate and counters."""

    particles: Particles
    estimate: np.ndarray
    next_serial: int
    empty_walks: int = 0
    walk_ids: np.ndarray | None = None


@dataclass(frozen=True)
class StreamPlan:
    """Which node streams a filter weights by, and where their data come from.

    Parameters
    ----------
    nodes
        The streams' nodes, in the order their likelihoods are summed.
    own
        Position of this node's stream in ``nodes``.
    exponents
        Exponent of each stream's likelihood (``None``: 1 for every stream).
    measurements
        ``measurements(step, columns, target) -> (list, bytes sent)``: ``(columns_j,
        target_j)`` or ``None`` (no data) for every stream of ``nodes`` given this node's
        own, and the bytes this node sent to get them; not needed when ``nodes`` is this
        node alone.
    """

    nodes: tuple[int, ...]
    own: int = 0
    exponents: tuple[float, ...] | None = None
    measurements: object = None

    def exponent(self, index: int) -> float:
        """Exponent of stream ``index``."""
        return 1.0 if self.exponents is None else self.exponents[index]


@dataclass(frozen=True)
class Evaluation:
    """The pending half-step of a particle filter.

    ``theta`` is ``theta_t`` (prior proposal, with the carried states' transition
    ``noise``) or ``theta_{t-1}`` (linearized proposal and Gaussian particles, with the own
    stream's ``gradient`` there); ``predictions`` and ``next_carry`` are the own stream's.
    ``in_flight`` is what the filter started with ``theta_t`` before evaluating (dpf: the
    first walk step's exchange, :meth:`ParticleFilter.started`): the first ``learn``
    finishes it; a ``learn`` that finds it finished starts it again.
    """

    step: int
    columns: np.ndarray | None
    theta: np.ndarray
    predictions: np.ndarray | None
    next_carry: np.ndarray | None
    gradient: np.ndarray | None = None
    noise: np.ndarray | None = None
    in_flight: object = None


class ParticleFilter:
    """``pf`` (one stream), ``cpf`` and ``rpf`` (several) at one node.

    Parameters
    ----------
    model
        :class:`~mcdpf.models.LSTMModel` or :class:`~mcdpf.models.LinearModel`.
    settings
        The ``[filter]`` section.
    seed
        The run's seed (all random draws: :class:`~mcdpf.particles.Keys`).
    key
        Id prefix and resampling stream: the node, or one key shared by every rank for
        the oracle.
    count
        Particles (``N``).
    plan
        The streams weighted (:class:`StreamPlan`).
    parallel
        Run the kernels on numba's threads (bit-identical results).
    initial_variance
        ``P0`` scale of Gaussian particles (``filter.kernel = "gaussian"``).

    With ``filter.subspace = d`` the particles are the coordinates ``z`` of an affine
    subspace of the weights (:mod:`mcdpf.subspace`): :attr:`model` is then the subspace
    model and :attr:`space` maps the particles' mean to the weights' estimate.
    """

    def __init__(self, model, settings, seed: int, key: int, count: int, plan: StreamPlan,
                 parallel: bool = False, initial_variance: float | None = None):
        self.space = parameter_space(model, settings, seed)
        self.model = self.space.model
        self.settings = settings
        self.keys = Keys.of(seed)
        self.key = key
        self.count = count
        self.plan = plan
        self.parallel = parallel
        self.noise_std = float(np.sqrt(settings.state_noise))
        self.proposal = PROPOSALS[settings.proposal]()
        self.kernel = KERNELS[settings.kernel].of(settings, model)
        self.initial_variance = initial_variance if initial_variance is not None \
            else self.model.init_std ** 2

    @property
    def carry_width(self) -> int:
        """Carried values per particle: one state per stream."""
        return self.model.n_carry * len(self.plan.nodes)

    def initial_state(self) -> FilterState:
        """``theta ~ N(0, init_std^2 I)``, zero states, uniform weights."""
        ids = fresh_ids(self.key, 0, self.count)
        theta, covariance = self.kernel.initial(
            self, self.model.initial_theta(ids, self.keys.initial, self.parallel))
        particles = Particles(theta=theta,
                              carry=np.zeros((self.count, self.carry_width),
                                             dtype=self.model.dtype),
                              log_weights=np.full(self.count, -np.log(self.count)), ids=ids,
                              covariance=covariance)
        estimate = self.space.estimate(weighted_mean(np.full(self.count, 1.0 / self.count),
                                                     theta, self.parallel))
        return FilterState(particles=particles, estimate=estimate, next_serial=self.count)

    # ------------------------------------------------------------------ pieces
    def stream_carry(self, carry: np.ndarray, index: int) -> np.ndarray:
        """The carried state of stream ``index`` of the plan (contiguous)."""
        if len(self.plan.nodes) == 1:
            return carry
        width = self.model.n_carry
        return np.ascontiguousarray(carry[:, index * width:(index + 1) * width])

    def evaluate_stream(self, theta, carry, noise, index: int, columns):
        """Predictions and next state of stream ``index`` of the plan (None: no data)."""
        part_carry = self.stream_carry(carry, index)
        if columns is None:
            return None, part_carry
        return self.model.evaluate(theta, part_carry, self.stream_carry(noise, index), columns,
                                   self.parallel)

    def transition_noise(self, particles: Particles, step: int) -> np.ndarray:
        """The state noise of every stream's carried state (N, n_carry per stream)."""
        return state_noise(particles.ids, self.carry_width, step, self.keys, self.noise_std,
                           self.model.dtype, self.parallel)

    # ------------------------------------------------------------------ protocol
    def started(self, particles: Particles, theta: np.ndarray, step: int):
        """What waits only on ``theta_t`` and overlaps the own evaluation (none here)."""
        return None

    def linearize(self, particles: Particles, step: int, columns) -> Evaluation:
        """The own stream's predictions and gradients at the current parameters."""
        theta = particles.parameters()
        predictions = gradient = next_carry = None
        if columns is not None:
            predictions, gradient, next_carry = self.model.population_gradient(
                self.in_model_dtype(theta), self.stream_carry(particles.carry, self.plan.own),
                columns, self.parallel)
        return Evaluation(step=step, columns=columns, theta=theta, predictions=predictions,
                          next_carry=next_carry, gradient=gradient)

    def predict(self, state: FilterState, step: int, columns) -> tuple[float, Evaluation]:
        """The kernel's first half; the predictive mean of the own label (NaN: no data)."""
        particles = state.particles
        pending = self.kernel.predict(self, particles, step, columns)
        if pending.predictions is None:
            return float("nan"), pending
        return predictive_mean(particles.log_weights, pending.predictions), pending

    def gather(self, pending: Evaluation, target) -> tuple[list, int]:
        """Every plan stream's ``(columns, target)`` or ``None``, and the bytes sent."""
        plan = self.plan
        own = None if pending.columns is None or target is None else (pending.columns, target)
        if len(plan.nodes) == 1:
            return [own], 0
        measured, bytes_sent = plan.measurements(pending.step, pending.columns, target)
        measured = list(measured)
        measured[plan.own] = own
        return measured, bytes_sent

    def log_likelihood(self, theta, carry, noise, measured, own=None):
        """``sum_j e_j log p(d_j | a)`` over the plan's streams, and the next states.

        ``own`` (predictions, next state) reuses the own stream's evaluation.
        """
        total = np.zeros(theta.shape[0])
        carries = []
        for index, measurement in enumerate(measured):
            if index == self.plan.own and own is not None:
                predictions, next_carry = own
            else:
                columns = None if measurement is None else measurement[0]
                predictions, next_carry = self.evaluate_stream(theta, carry, noise, index,
                                                               columns)
            carries.append(next_carry)
            if predictions is not None and measurement is not None:
                increment = gaussian_log_likelihood(measurement[1], predictions,
                                                    self.settings.obs_noise)
                exponent = self.plan.exponent(index)
                total += increment if exponent == 1.0 else exponent * increment
        return total, self.joined_carry(carries, carry)

    def joined_carry(self, carries: list, carry: np.ndarray) -> np.ndarray:
        """The plan's streams' next states side by side (``carry`` if there are none)."""
        if len(carries) == 1:
            return carries[0]
        return np.concatenate(carries, axis=1) if self.model.n_carry else carry

    def in_model_dtype(self, theta: np.ndarray) -> np.ndarray:
        """Parameters in the model dtype (Gaussian particles' means are float64)."""
        return np.ascontiguousarray(theta, dtype=self.model.dtype)

    def learn(self, state: FilterState, pending: Evaluation, target):
        """Weight by the plan's likelihoods, estimate, resample if the ESS is low."""
        particles = state.particles
        measured, bytes_sent = self.gather(pending, target)
        moved = self.kernel.update(self, state, pending, measured)
        increment = moved.log_likelihood * self.settings.weight_tempering
        update = reweight_estimate_resample(
            moved.theta, moved.next_carry, particles.log_weights + increment,
            particles.ids, count=self.count, threshold=self.settings.ess_threshold,
            scheme=self.settings.resampling, step=pending.step, keys=self.keys,
            rank=self.key, next_serial=state.next_serial, parallel=self.parallel,
            covariance=moved.covariance)
        new_state = FilterState(particles=update.particles,
                                estimate=self.space.estimate(update.estimate),
                                next_serial=update.next_serial)
        info = StepInfo(ess=update.ess, resampled=update.resampled,
                        particles_held=particles.size,
                        bytes_sent=bytes_sent, degenerate=update.degenerate)
        return new_state, info

    # ------------------------------------------------------------------ state
    def adopt(self, state: FilterState, previous: ParticleFilter) -> FilterState:
        """``state`` of ``previous`` (before a node-loss event) for this plan's streams.

        Streams that left the plan lose their carried-state columns.
        """
        if previous.plan.nodes == self.plan.nodes or not self.model.n_carry:
            return state
        width = self.model.n_carry
        old = {node: index for index, node in enumerate(previous.plan.nodes)}
        carry = state.particles.carry
        kept = np.concatenate([carry[:, old[node] * width:(old[node] + 1) * width]
                               for node in self.plan.nodes], axis=1)
        return replace(state, particles=replace(state.particles, carry=kept))

    def state_arrays(self, state: FilterState) -> dict:
        """Arrays and counters of ``state`` (for a checkpoint; no generator state)."""
        particles = state.particles
        arrays = {"theta": particles.parameters(), "carry": particles.carry,
                  "log_weights": particles.log_weights, "ids": particles.ids,
                  "estimate": state.estimate, "id_serial": state.next_serial,
                  "empty_walks": state.empty_walks}
        if particles.covariance is not None:
            arrays.update(particles.covariance)
        return arrays

    def restore(self, arrays: dict) -> FilterState:
        """The state saved by :meth:`state_arrays`."""
        particles = Particles(theta=arrays["theta"], carry=arrays["carry"],
                              log_weights=arrays["log_weights"], ids=arrays["ids"],
                              covariance=self.kernel.restore(arrays))
        return FilterState(particles=particles, estimate=arrays["estimate"],
                           next_serial=int(arrays["id_serial"]),
                           empty_walks=int(arrays.get("empty_walks", 0)))
