"""Comparison algorithms on the same streams, protocol and outputs as the particle filters.

``sgd``
    Online gradient descent on ``(d - d_hat)^2 / 2``: ``theta += mu (d - d_hat) grad d_hat``,
    the exact gradient through the whole sequence (BPTT inside the sequence; the state
    carried across steps enters without gradient).
``ekf``
    Extended Kalman filter on ``theta``: random-walk transition ``Q = q I``, measurement
    ``d = d_hat(theta) + N(0, r)`` linearised by the exact Jacobian ``H = grad d_hat``.
    The covariance has ``n_theta^2`` entries (float64); runs that would need more than
    ``ekf.max_memory_gb`` are refused at set-up.
``dekf``
    Diffusion EKF (Cattivelli & Sayed 2010): each node shares its measurement (sequence,
    label, starting state) with its neighbours, updates incrementally with every
    measurement of its neighbourhood (linearised at its running estimate), then combines
    its neighbours' intermediate estimates with Metropolis weights. Covariances are not
    combined.
``dsgd``
    Adapt-then-combine diffusion SGD (Yuan et al.): a local SGD step, then the Metropolis
    combination of the neighbours' adapted estimates.

The carried state of a node's own stream is the one computed with the estimate used for
its prediction. Initial estimate: for the linear model the prior mean 0 (so ``ekf`` is the
exact Kalman filter); for the LSTM a draw from ``N(0, init_std^2 I)``, because
``theta = 0`` is a stationary point of the LSTM (every gradient vanishes there).
Estimates and covariances are float64; the LSTM kernels run in ``model.dtype``.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .filters import StepInfo
from .topology import metropolis_walk

NO_PARTICLES = dict(ess=float("nan"), resampled=False, held=0, received=0, sent=0,
                    degenerate=0, empty_walk=False)
BYTES_PER_GB = 1024 ** 3


def initial_estimate(model, rng) -> np.ndarray:
    """Prior mean for the linear model; a prior draw for the LSTM (symmetry breaking)."""
    if model.kind == "linear":
        return np.zeros(model.n_params)
    return model.init_std * rng.standard_normal(model.n_params)


def check_covariance_memory(model, ekf_settings) -> None:
    """Refuse an EKF whose covariance (and one working copy) would not fit the budget."""
    needed = 2 * model.n_params ** 2 * 8 / BYTES_PER_GB
    if needed > ekf_settings.max_memory_gb:
        raise InputError(f"ekf: the {model.n_params} x {model.n_params} covariance needs "
                         f"{needed:.1f} GB, more than ekf.max_memory_gb = "
                         f"{ekf_settings.max_memory_gb:g}; use a smaller model.n or raise "
                         "the limit")


def metropolis_row(topology, node: int) -> tuple[float, np.ndarray]:
    """Metropolis combination weights of ``node``: itself, and its neighbours in order."""
    weights = metropolis_walk(topology.nodes, topology.edges)
    return weights[node, node], weights[node, topology.neighbours(node)]


class GradientLearner:
    """State shared by the single-estimate learners: estimate, carried state, protocol."""

    def __init__(self, model, rng):
        self.model = model
        self.estimate = initial_estimate(model, rng)
        self.carry = np.zeros(model.n_carry, dtype=model.dtype)
        self._columns = None
        self._prediction = None
        self._gradient = None
        self._next_carry = None

    def state(self) -> dict:
        """Estimate and carried state."""
        return {"estimate": self.estimate, "carry": self.carry}

    def restore(self, state: dict) -> None:
        """Continue from :meth:`state`."""
        self.estimate = state["estimate"]
        self.carry = state["carry"]

    def predict(self, columns: np.ndarray | None) -> float:
        """Prediction and Jacobian at the current estimate on this node's sequence."""
        self._columns = columns
        if columns is None:
            self._prediction = None
            return float("nan")
        theta = self.estimate.astype(self.model.dtype)
        self._prediction, self._gradient, self._next_carry = \
            self.model.prediction_gradient(theta, self.carry, columns)
        return self._prediction

    def observed(self, target) -> bool:
        """Whether this step has data; if so, move the carried state forward."""
        if target is None or self._prediction is None:
            return False
        self.carry = self._next_carry
        return True


class OnlineSGD(GradientLearner):
    """``sgd``: one gradient step per label."""

    def __init__(self, model, rng, learning_rate: float):
        super().__init__(model, rng)
        self.learning_rate = learning_rate

    def adapt(self, target) -> np.ndarray:
        """The estimate after a gradient step on this node's label."""
        if not self.observed(target):
            return self.estimate
        return self.estimate + self.learning_rate * (target - self._prediction) * self._gradient

    def update(self, target) -> StepInfo:
        """Gradient step."""
        self.estimate = self.adapt(target)
        return StepInfo(bytes_sent=0, **NO_PARTICLES)


class ExtendedKalmanFilter(GradientLearner):
    """``ekf``: EKF on the parameters with ``Q = q I`` and ``R = r``."""

    def __init__(self, model, rng, state_noise: float, obs_noise: float,
                 initial_variance: float):
        super().__init__(model, rng)
        self.state_noise = state_noise
        self.obs_noise = obs_noise
        self.covariance = initial_variance * np.eye(model.n_params)

    def state(self) -> dict:
        """Estimate, carried state and covariance."""
        return {**super().state(), "covariance": self.covariance}

    def restore(self, state: dict) -> None:
        """Continue from :meth:`state`."""
        super().restore(state)
        self.covariance = state["covariance"]

    def predict(self, columns):
        """Time update ``P += q I``, then predict at the current estimate."""
        self.covariance[np.diag_indices_from(self.covariance)] += self.state_noise
        return super().predict(columns)

    def measurement_update(self, estimate, covariance, target, prediction, jacobian):
        """One scalar EKF update; returns the new estimate, updates ``covariance`` in place."""
        projected = covariance @ jacobian
        innovation_variance = jacobian @ projected + self.obs_noise
        gain = projected / innovation_variance
        covariance -= np.outer(gain, projected)
        covariance += covariance.T
        covariance *= 0.5
        return estimate + gain * (target - prediction)

    def update(self, target) -> StepInfo:
        """Measurement update with this node's label."""
        if self.observed(target):
            self.estimate = self.measurement_update(self.estimate, self.covariance, target,
                                                    self._prediction, self._gradient)
        return StepInfo(bytes_sent=0, **NO_PARTICLES)


class Diffusion:
    """Mixin: neighbour-only combination with Metropolis weights of the current graph."""

    def rewire(self, topology, neighbourhood) -> None:
        """Combine over a (new) topology."""
        self.neighbourhood = neighbourhood
        self.self_weight, self.neighbour_weights = metropolis_row(topology, self.node)

    def combine(self, intermediate: np.ndarray) -> int:
        """``estimate = c_kk psi_k + sum_l c_lk psi_l``; returns the bytes sent."""
        gathered, sent = self.neighbourhood.allgather(intermediate)
        self.estimate = self.self_weight * intermediate + self.neighbour_weights @ gathered
        return sent


class DiffusionSGD(Diffusion, OnlineSGD):
    """``dsgd``: adapt (local SGD step), then combine neighbours' adapted estimates."""

    def __init__(self, model, rng, learning_rate, topology, neighbourhood, node):
        super().__init__(model, rng, learning_rate)
        self.node = node
        self.rewire(topology, neighbourhood)

    def update(self, target) -> StepInfo:
        """Adapt, exchange, combine."""
        sent = self.combine(self.adapt(target))
        return StepInfo(bytes_sent=sent, **NO_PARTICLES)


class DiffusionEKF(Diffusion, ExtendedKalmanFilter):
    """``dekf``: incremental update with the neighbourhood's measurements, then combine."""

    def __init__(self, model, rng, state_noise, obs_noise, initial_variance, topology,
                 neighbourhood, node):
        super().__init__(model, rng, state_noise, obs_noise, initial_variance)
        self.node = node
        self.rewire(topology, neighbourhood)

    def pack_measurement(self, target) -> np.ndarray:
        """``[observed, d, starting state..., columns...]`` of this node's step (float64).

        Call before :meth:`observed` moves the carried state forward.
        """
        if target is None or self._columns is None:
            return np.zeros(1)
        return np.concatenate([[1.0, target], np.asarray(self.carry, dtype=np.float64),
                               np.asarray(self._columns, dtype=np.float64).ravel()])

    def unpack_measurement(self, record: np.ndarray):
        """``(target, carry, columns)`` of a neighbour's record, or None if unobserved."""
        if record[0] == 0:
            return None
        width = self.model.n_carry
        carry = np.ascontiguousarray(record[2:2 + width], dtype=self.model.dtype)
        columns = np.ascontiguousarray(record[2 + width:], dtype=self.model.dtype)
        return record[1], carry, columns.reshape(-1, self.model.inputs)

    def update(self, target) -> StepInfo:
        """Share measurements, update incrementally, share and combine estimates."""
        records, measurement_bytes = self.neighbourhood.allgatherv(
            self.pack_measurement(target))
        intermediate = self.estimate
        if self.observed(target):
            intermediate = self.measurement_update(intermediate, self.covariance, target,
                                                   self._prediction, self._gradient)
        for record in records:
            measurement = self.unpack_measurement(record)
            if measurement is None:
                continue
            label, carry, columns = measurement
            prediction, jacobian, _ = self.model.prediction_gradient(
                intermediate.astype(self.model.dtype), carry, columns)
            intermediate = self.measurement_update(intermediate, self.covariance, label,
                                                   prediction, jacobian)
        estimate_bytes = self.combine(intermediate)
        return StepInfo(bytes_sent=measurement_bytes + estimate_bytes, **NO_PARTICLES)
