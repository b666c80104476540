"""What every particle filter here shares: the population, its ids, and the update step.

A population (:class:`Particles`) holds ``theta`` (N, n_theta) and the carried LSTM state
(N, n_carry) in the model dtype, normalised float64 log-weights and 64-bit ids
``rank * 2**40 + serial``: resampled offspring get fresh ids, so a test can prove that a
walk never loses or duplicates a particle.

:func:`reweight_estimate_resample` is the one update that ``pf``, ``cpf``, ``rpf`` and
``dpf`` share (particles' ``SMC.__next__`` reads the same way): normalise the log-weights
(log-sum-exp; a population with no finite weight is reset to uniform and counted), the
effective sample size, the weighted-mean estimate, and resampling back to ``count``
particles when the ESS falls below ``threshold * size`` (``threshold=None``: always).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import effective_sample_size, normalize_log_weights, resample

ID_SERIAL_BITS = 40
RANDOM_STREAMS = ("init", "propagate", "walk", "resample")


@dataclass(frozen=True)
class Particles:
    """A population: parameters, carried state, normalised log-weights, ids."""

    theta: np.ndarray
    carry: np.ndarray
    log_weights: np.ndarray
    ids: np.ndarray

    @property
    def size(self) -> int:
        """Number of particles."""
        return self.theta.shape[0]


def fresh_ids(rank: int, serial: int, count: int) -> np.ndarray:
    """``count`` new ids ``rank * 2**40 + serial ...`` (the caller advances ``serial``)."""
    prefix = np.int64(rank) << np.int64(ID_SERIAL_BITS)
    return prefix + np.arange(serial, serial + count, dtype=np.int64)


def random_streams(seed: int, key: int, names=RANDOM_STREAMS) -> dict:
    """Independent generators for one node (``key`` = rank) from one seed."""
    children = np.random.SeedSequence(seed, spawn_key=(key,)).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children, strict=True)}


def generator_states(streams: dict) -> dict:
    """The bit-generator states of :func:`random_streams` (JSON-ready)."""
    return {name: generator.bit_generator.state for name, generator in streams.items()}


def restored_streams(states: dict, seed: int, key: int) -> dict:
    """Generators of :func:`random_streams` put back to saved ``states``."""
    streams = random_streams(seed, key)
    for name, generator in streams.items():
        generator.bit_generator.state = states[name]
    return streams


def weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``sum_i w_i values_i`` in float64."""
    return weights @ values.astype(np.float64, copy=False)


def normalised(log_weights: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Weights, 1 if degenerate (no finite weight: reset uniform) else 0, log-weights."""
    weights, log_total = normalize_log_weights(log_weights)
    if log_total == -np.inf:
        return weights, 1, np.log(weights)
    return weights, 0, log_weights - log_total


def predictive_mean(log_weights: np.ndarray, predictions: np.ndarray) -> float:
    """``sum_i w_i d_hat_i`` with ``w`` the normalised weights."""
    weights, _ = normalize_log_weights(log_weights)
    return float(weights @ predictions)


@dataclass(frozen=True)
class Update:
    """Result of :func:`reweight_estimate_resample`."""

    particles: Particles
    estimate: np.ndarray
    ess: float
    resampled: bool
    degenerate: int
    next_serial: int


def reweight_estimate_resample(theta, carry, log_weights, ids, *, count: int,
                               threshold: float | None, scheme: str, rng, rank: int,
                               next_serial: int) -> Update:
    """Normalise, estimate, and resample to ``count`` particles if the ESS is low.

    Parameters
    ----------
    theta, carry, ids
        The particles held after this step's moves (any count ``M``).
    log_weights
        Their unnormalised float64 log-weights.
    count
        ``N``, the population size after resampling.
    threshold
        Resample when ``ESS < threshold * M``; ``None``: always (Algorithm 1).
    scheme, rng
        Resampling scheme and the generator of its uniforms.
    rank, next_serial
        Id prefix and the next free serial of this rank.
    """
    weights, degenerate, log_weights = normalised(log_weights)
    ess = effective_sample_size(weights)
    estimate = weighted_mean(weights, theta)
    held = theta.shape[0]
    resampled = threshold is None or ess < threshold * held
    if resampled:
        ancestors = resample(scheme, weights, count, rng)
        particles = Particles(theta=np.ascontiguousarray(theta[ancestors]),
                              carry=np.ascontiguousarray(carry[ancestors]),
                              log_weights=np.full(count, -np.log(count)),
                              ids=fresh_ids(rank, next_serial, count))
        next_serial += count
    else:
        particles = Particles(theta=theta, carry=carry, log_weights=log_weights, ids=ids)
    return Update(particles=particles, estimate=estimate, ess=ess, resampled=resampled,
                  degenerate=degenerate, next_serial=next_serial)
