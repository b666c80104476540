"""Particle filters over model parameters on one or several data streams: pf and cpf.

A :class:`ParticleFilter` weights its particles by the likelihood of the labels of a
fixed list of node streams (:class:`StreamPlan`), each particle carrying one LSTM state
per stream:

``pf``
    this node's stream only (no communication);
``cpf``
    every node's stream (the centralized oracle): ``N * K`` particles unless
    ``filter.central_particles``, the same random streams on every rank, so every rank
    runs the same filter and reports the prediction of its own node's labels.

At every step (the online protocol):

1. :meth:`~ParticleFilter.predict` propagates every particle (``theta += N(0, q I)``; each
   stream's new state = LSTM on that stream's sequence + ``N(0, q I)``), evaluates this
   node's sequence and returns the prior predictive mean
   ``d_hat = sum_i w_i * w_i^T y_bar_i``, before the label;
2. :meth:`~ParticleFilter.learn` receives the label, evaluates the other streams of the
   plan (their sequences and labels come from the plan's ``measurements``), multiplies
   the weights by ``prod_j p(d_j | a)^(e_j)`` and calls the shared
   :func:`~mcdpf.particles.reweight_estimate_resample` (resampling when
   ``ESS < ess_threshold * N``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .learner import StepInfo
from .models import gaussian_log_likelihood
from .particles import (
    Particles,
    fresh_ids,
    generator_states,
    predictive_mean,
    random_streams,
    restored_streams,
    reweight_estimate_resample,
    weighted_mean,
)

NOISE_BLOCK_VALUES = 1 << 20


@dataclass(frozen=True)
class FilterState:
    """A particle filter between steps: the population, its estimate, counters, streams.

    ``streams`` are the node's random generators (advanced by every draw).
    """

    particles: Particles
    estimate: np.ndarray
    next_serial: int
    streams: dict
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


@dataclass(frozen=True)
class Evaluation:
    """The pending half-step of a particle filter: propagated particles, own evaluation."""

    step: int
    columns: np.ndarray | None
    theta: np.ndarray
    carry: np.ndarray
    state_noise: np.ndarray
    predictions: np.ndarray | None
    next_carry: np.ndarray
    extra: dict = field(default_factory=dict)


class ParticleFilter:
    """``pf`` (one stream) and ``cpf`` (every stream) at one node.

    Parameters
    ----------
    model
        :class:`~mcdpf.models.LSTMModel` or :class:`~mcdpf.models.LinearModel`.
    settings
        The ``[filter]`` section.
    seed, key
        Seed and stream key of the random generators (the node, or one key shared by
        every rank for the oracle); ``key`` is also the id prefix.
    count
        Particles (``N``).
    plan
        The streams weighted (:class:`StreamPlan`).
    """

    def __init__(self, model, settings, seed: int, key: int, count: int, plan: StreamPlan):
        self.model = model
        self.settings = settings
        self.seed = seed
        self.key = key
        self.count = count
        self.plan = plan
        self.noise_std = np.sqrt(settings.state_noise)

    @property
    def carry_width(self) -> int:
        """Carried values per particle: one state per stream."""
        return self.model.n_carry * len(self.plan.nodes)

    def initial_state(self) -> FilterState:
        """``theta ~ N(0, init_std^2 I)``, zero states, uniform weights."""
        streams = random_streams(self.seed, self.key)
        theta, carry = self.model.initial_particles(self.count, streams["init"])
        if len(self.plan.nodes) != 1:
            carry = np.zeros((self.count, self.carry_width), dtype=self.model.dtype)
        particles = Particles(theta=theta, carry=carry,
                              log_weights=np.full(self.count, -np.log(self.count)),
                              ids=fresh_ids(self.key, 0, self.count))
        return FilterState(particles=particles,
                           estimate=weighted_mean(np.full(self.count, 1.0 / self.count), theta),
                           next_serial=self.count, streams=streams)

    def propagate(self, particles: Particles, streams: dict) -> tuple[np.ndarray, np.ndarray]:
        """``theta + N(0, q I)`` (new array) and the state noise (N, n_carry per stream).

        The parameter noise is drawn in blocks of rows (same random stream as one draw),
        so a large population needs no full-size temporary.
        """
        rng = streams["propagate"]
        theta = particles.theta.copy()
        rows = max(1, NOISE_BLOCK_VALUES // max(theta.shape[1], 1))
        for first in range(0, theta.shape[0], rows):
            block = theta[first:first + rows]
            block += self.noise_std * rng.standard_normal(block.shape, dtype=theta.dtype)
        noise = self.noise_std * rng.standard_normal(particles.carry.shape, dtype=theta.dtype)
        return theta, noise

    def evaluate_stream(self, theta, carry, noise, index: int, columns):
        """Predictions and next state of stream ``index`` of the plan (None: no data)."""
        width = self.model.n_carry
        if len(self.plan.nodes) == 1:
            part_carry, part_noise = carry, noise
        else:
            part = slice(index * width, (index + 1) * width)
            part_carry = np.ascontiguousarray(carry[:, part])
            part_noise = np.ascontiguousarray(noise[:, part])
        if columns is None:
            return None, part_carry
        return self.model.evaluate(theta, part_carry, part_noise, columns)

    def predict(self, state: FilterState, step: int, columns) -> tuple[float, Evaluation]:
        """Propagate and evaluate this node's sequence; the predictive mean (NaN: no data)."""
        particles = state.particles
        theta, noise = self.propagate(particles, state.streams)
        predictions, next_carry = self.evaluate_stream(theta, particles.carry, noise,
                                                       self.plan.own, columns)
        pending = Evaluation(step=step, columns=columns, theta=theta, carry=particles.carry,
                             state_noise=noise, predictions=predictions, next_carry=next_carry)
        if predictions is None:
            return float("nan"), pending
        return predictive_mean(particles.log_weights, predictions), pending

    def log_likelihood(self, pending: Evaluation, target):
        """``sum_j e_j log p(d_j | a)`` over the plan's streams, next states, bytes sent."""
        plan = self.plan
        size = pending.theta.shape[0]
        if len(plan.nodes) == 1:
            if target is None or pending.predictions is None:
                return np.zeros(size), pending.next_carry, 0
            return (gaussian_log_likelihood(target, pending.predictions,
                                            self.settings.obs_noise), pending.next_carry, 0)
        measured, bytes_sent = plan.measurements(pending.step, pending.columns, target)
        total = np.zeros(size)
        carries = []
        for index, measurement in enumerate(measured):
            if index == plan.own:
                predictions, next_carry = pending.predictions, pending.next_carry
                label = None if predictions is None else target
            elif measurement is None:
                predictions, next_carry = self.evaluate_stream(
                    pending.theta, pending.carry, pending.state_noise, index, None)
                label = None
            else:
                columns, label = measurement
                predictions, next_carry = self.evaluate_stream(
                    pending.theta, pending.carry, pending.state_noise, index, columns)
            carries.append(next_carry)
            if predictions is not None and label is not None:
                increment = gaussian_log_likelihood(label, predictions, self.settings.obs_noise)
                exponent = 1.0 if plan.exponents is None else plan.exponents[index]
                total += increment if exponent == 1.0 else exponent * increment
        next_carry = np.concatenate(carries, axis=1) if self.model.n_carry else pending.carry
        return total, next_carry, bytes_sent

    def learn(self, state: FilterState, pending: Evaluation, target):
        """Weight by the plan's likelihoods, estimate, resample if the ESS is low."""
        log_likelihood, next_carry, bytes_sent = self.log_likelihood(pending, target)
        particles = state.particles
        update = reweight_estimate_resample(
            pending.theta, next_carry, particles.log_weights + log_likelihood, particles.ids,
            count=self.count, threshold=self.settings.ess_threshold,
            scheme=self.settings.resampling, rng=state.streams["resample"], rank=self.key,
            next_serial=state.next_serial)
        new_state = FilterState(particles=update.particles, estimate=update.estimate,
                                next_serial=update.next_serial, streams=state.streams)
        info = StepInfo(ess=update.ess, resampled=update.resampled, held=particles.size,
                        bytes_sent=bytes_sent, degenerate=update.degenerate)
        return new_state, info

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
        particles = Particles(theta=state.particles.theta, carry=kept,
                              log_weights=state.particles.log_weights, ids=state.particles.ids)
        return replace(state, particles=particles)

    def state_arrays(self, state: FilterState) -> dict:
        """Arrays, counters and generator states of ``state`` (for a checkpoint)."""
        particles = state.particles
        return {"theta": particles.theta, "carry": particles.carry,
                "log_weights": particles.log_weights, "ids": particles.ids,
                "estimate": state.estimate, "id_serial": state.next_serial,
                "empty_walks": state.empty_walks, "rng": generator_states(state.streams)}

    def restore(self, arrays: dict) -> FilterState:
        """The state saved by :meth:`state_arrays`."""
        particles = Particles(theta=arrays["theta"], carry=arrays["carry"],
                              log_weights=arrays["log_weights"], ids=arrays["ids"])
        return FilterState(particles=particles, estimate=arrays["estimate"],
                           next_serial=int(arrays["id_serial"]),
                           streams=restored_streams(arrays["rng"], self.seed, self.key),
                           empty_walks=int(arrays.get("empty_walks", 0)))
