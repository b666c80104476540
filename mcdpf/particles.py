"""What every particle filter here shares: the population, its randomness, the update step.

A population (:class:`Particles`) holds the parameters ``theta`` and the carried LSTM
state in the model dtype, normalised float64 log-weights and 64-bit ids
``rank * 2**40 + serial``: resampled offspring get fresh ids, so a test can prove that a
walk never loses or duplicates a particle. After resampling the population's parameters
are ``theta[ancestors]``, gathered lazily: the next step's propagation does the gather
and adds the noise in one pass (:func:`propagate`).

**Randomness** is counter-based (:mod:`mcdpf.kernels.counter_rng`): every draw is a pure
function of the run's seed, a purpose, the step and a particle id (or, for resampling, a
node), so results are the same for any thread count, a checkpoint needs no generator
state, and a node can regenerate a visiting particle's state noise instead of receiving
it. :class:`Keys` lists the purposes.

:func:`reweight_estimate_resample` is the one update that ``pf``, ``cpf``, ``rpf`` and
``dpf`` share (particles' ``SMC.__next__`` reads the same way): normalise the log-weights
(log-sum-exp; a population with no finite weight is reset to uniform and counted), the
effective sample size, the weighted-mean estimate (float64, accumulated in a kernel
without a float64 copy of ``theta``), and resampling back to ``count`` particles when the
ESS falls below ``threshold * size`` (``threshold=None``: always).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import (
    effective_sample_size,
    gather_add_normal,
    id_uniforms,
    normal_rows,
    normalize_log_weights,
    random_uniforms,
    resample_by,
    stream_key,
    weighted_mean,
)

ID_SERIAL_BITS = 40


@dataclass(frozen=True)
class Keys:
    """The Philox keys of one run's random draws, one per purpose (from the seed)."""

    initial: tuple[int, int]
    theta: tuple[int, int]
    state: tuple[int, int]
    resample: tuple[int, int]
    walk: tuple[int, int]
    observation: tuple[int, int]
    balance: tuple[int, int]
    estimate: tuple[int, int]
    subspace: tuple[int, int]

    @classmethod
    def of(cls, seed: int) -> Keys:
        """The keys of ``seed``: purposes 1 (initial particles) to 9, in field order."""
        names = [field for field in cls.__dataclass_fields__]
        return cls(**{name: stream_key(seed, purpose)
                      for purpose, name in enumerate(names, start=1)})


@dataclass(frozen=True)
class Particles:
    """A population: parameters, carried state, normalised log-weights, ids.

    With ``ancestors`` the population's parameters are ``theta[ancestors]`` (a resampled
    population whose gather is deferred to the next propagation). Gaussian particles
    (``filter.kernel = "gaussian"``) are ``N(theta_i, covariance_i)``, ``theta`` float64,
    ``covariance`` the state of their :mod:`~mcdpf.covariance` form (arrays by name, first
    axis the particles).
    """

    theta: np.ndarray
    carry: np.ndarray
    log_weights: np.ndarray
    ids: np.ndarray
    ancestors: np.ndarray | None = None
    covariance: dict | None = None

    @property
    def size(self) -> int:
        """Number of particles."""
        return self.ids.shape[0]

    def parameters(self) -> np.ndarray:
        """The population's parameters (N, n_theta), gathered if need be."""
        return self.theta if self.ancestors is None else self.theta[self.ancestors]


def fresh_ids(rank: int, serial: int, count: int) -> np.ndarray:
    """``count`` new ids ``rank * 2**40 + serial ...`` (the caller advances ``serial``)."""
    prefix = np.int64(rank) << np.int64(ID_SERIAL_BITS)
    return prefix + np.arange(serial, serial + count, dtype=np.int64)


def propagate(particles: Particles, step: int, keys: Keys, noise_std: float,
              parallel: bool = False) -> np.ndarray:
    """``theta_t = theta_{t-1} + N(0, q I)`` of every particle (a new array).

    One pass: the deferred resampling gather and the counter-based noise of each id.
    """
    ancestors = particles.ancestors
    if ancestors is None:
        ancestors = np.arange(particles.size, dtype=np.int64)
    return gather_add_normal(particles.theta, ancestors, particles.ids, step, keys.theta,
                             noise_std, parallel=parallel)


def state_noise(ids: np.ndarray, width: int, step: int, keys: Keys, noise_std: float,
                dtype, parallel: bool = False) -> np.ndarray:
    """The transition noise ``N(0, q I)`` of the carried states of particles ``ids``."""
    noise = np.empty((ids.shape[0], width), dtype=dtype)
    if width:
        normal_rows(noise, ids, step, keys.state, noise_std, parallel=parallel)
    return noise


def standard_normals(ids: np.ndarray, width: int, step: int, key, dtype,
                     parallel: bool = False) -> np.ndarray:
    """Standard normals (N, width) of particles ``ids`` under ``key``."""
    values = np.empty((ids.shape[0], width), dtype=dtype)
    return normal_rows(values, ids, step, key, 1.0, parallel=parallel)


def particle_uniforms(ids: np.ndarray, step: int, block: int, key) -> np.ndarray:
    """One uniform per particle for event ``block`` of ``step`` (e.g. a walk move)."""
    return id_uniforms(ids, step, block, key)


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


def resample_ancestors(scheme: str, weights: np.ndarray, count: int, step: int,
                       stream: int, keys: Keys) -> np.ndarray:
    """Ancestor indices (ascending) drawn by ``scheme`` from counter-based uniforms.

    ``stream`` is the node whose draw this is (the oracle's key for ``cpf``).
    """
    return resample_by(scheme, weights, count,
                       lambda draws: random_uniforms(draws, step, stream, keys.resample))


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
                               threshold: float | None, scheme: str, step: int,
                               keys: Keys, rank: int, next_serial: int,
                               parallel: bool = False, covariance=None) -> Update:
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
    scheme, step, keys
        Resampling scheme and the counter of its uniforms.
    rank, next_serial
        Id prefix (and resampling stream) and the next free serial of this rank.
    covariance
        Gaussian particles' covariance state (arrays by name, first axis the particles;
        resampled with them).
    """
    weights, degenerate, log_weights = normalised(log_weights)
    ess = effective_sample_size(weights)
    estimate = weighted_mean(weights, theta, parallel=parallel)
    held = ids.shape[0]
    resampled = threshold is None or ess < threshold * held
    if resampled:
        ancestors = resample_ancestors(scheme, weights, count, step, rank, keys)
        particles = Particles(theta=theta, carry=np.ascontiguousarray(carry[ancestors]),
                              log_weights=np.full(count, -np.log(count)),
                              ids=fresh_ids(rank, next_serial, count), ancestors=ancestors,
                              covariance=None if covariance is None
                              else {name: np.ascontiguousarray(array[ancestors])
                                    for name, array in covariance.items()})
        next_serial += count
    else:
        particles = Particles(theta=theta, carry=carry, log_weights=log_weights, ids=ids,
                              covariance=covariance)
    return Update(particles=particles, estimate=estimate, ess=ess, resampled=resampled,
                  degenerate=degenerate, next_serial=next_serial)
