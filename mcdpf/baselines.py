"""Comparison algorithms on the same streams, protocol and outputs as the particle filters.

``sgd``
    Online gradient descent on ``(d - d_hat)^2 / 2``: ``theta += mu (d - d_hat) grad d_hat``,
    the exact gradient through the whole sequence (BPTT inside the sequence; the state
    carried across steps enters without gradient).
``ekf``
    Extended Kalman filter on ``theta``: random-walk transition ``Q = q I``, measurement
    ``d = d_hat(theta) + N(0, r)`` linearised by the exact Jacobian ``H = grad d_hat``.
    The covariance is stored in the form ``ekf.covariance`` (:mod:`mcdpf.covariance`):
    ``full`` (``n_theta^2`` float64 entries, the textbook EKF), ``diagonal``,
    ``decoupled`` (one block per LSTM unit) or ``lowrank`` (``ekf.rank``); runs whose
    covariance (and its working copy) would need more than ``ekf.max_memory_gb`` are
    refused at set-up.
``dekf``
    Diffusion EKF (Cattivelli & Sayed 2010): each node shares its measurement (sequence,
    label, starting state) with its neighbours, updates incrementally with every
    measurement of its neighbourhood (linearised at its running estimate), then combines
    its neighbours' intermediate estimates with Metropolis weights. Covariances are not
    combined (Cattivelli & Sayed's diffusion EKF: each node keeps its own covariance, in
    any ``ekf.covariance`` form, and only estimates are sent).
``dsgd``
    Adapt-then-combine diffusion SGD (Yuan et al.): a local SGD step, then the Metropolis
    combination of the neighbours' adapted estimates.
``adam``
    Online Adam (Kingma & Ba 2015) on sgd's gradient ``g = (d_hat - d) grad d_hat``: the
    moments ``m``, ``v`` and the update count ``t`` advance only on a labelled step
    (:mod:`mcdpf.kernels.adam`); ``[adam]`` holds the step size, ``beta1``, ``beta2``,
    ``eps``.
``dadam``
    Adapt-then-combine diffusion Adam: a local Adam step, then the Metropolis combination
    of the neighbours' adapted estimates (as ``dsgd``). The moments stay local: they are
    statistics of the node's own gradients, and sending them would triple the bytes.

The carried state of a node's own stream is the one computed with the estimate used for
its prediction. Initial estimate: for the linear model the prior mean 0 (so ``ekf`` is the
exact Kalman filter); for the LSTM a draw from ``N(0, init_std^2 I)``, because
``theta = 0`` is a stationary point of the LSTM (every gradient vanishes there).
Estimates and covariances are float64; the LSTM kernels run in ``model.dtype``. The
state (:class:`EstimateState`) is passed in and returned, and left valid (the ownership
rule of :mod:`mcdpf.learner`): the EKF's time update makes the step's new covariance
arrays (the form's ``time_update``), and the step's measurement updates act on those in
place (so at most two covariances exist, the two ``ekf.max_memory_gb`` counts).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .covariance import CovarianceForm, FullCovariance
from .errors import InputError
from .kernels import adam_update, normal_rows
from .learner import StepInfo
from .particles import Keys
from .topology import metropolis_walk

BYTES_PER_GB = 1024 ** 3


def initial_estimate(model, seed: int, node: int) -> np.ndarray:
    """Prior mean for the linear model; a prior draw for the LSTM (symmetry breaking).

    The draw is counter-based (the ``estimate`` key of :class:`~mcdpf.particles.Keys`,
    counted by the node).
    """
    if model.kind == "linear":
        return np.zeros(model.n_params)
    draw = np.empty((1, model.n_params))
    normal_rows(draw, np.array([node], dtype=np.int64), 0, Keys.of(seed).estimate,
                model.init_std)
    return draw[0]


def check_covariance_memory(model, ekf_settings, copies: int = 1,
                            form: CovarianceForm | None = None) -> None:
    """Refuse covariances (and one working copy) that would not fit the memory budget.

    ``copies``: how many covariances (Gaussian particles); ``form``: their
    :mod:`~mcdpf.covariance` form (default ``full``, ``n_theta x n_theta``).
    """
    form = form or FullCovariance(model.n_params)
    needed = 2 * form.nbytes(copies) / BYTES_PER_GB
    if needed > ekf_settings.max_memory_gb:
        what = form.describe()
        if copies > 1:
            what = f"{what.replace('covariance', 'covariances', 1)} of {copies} Gaussian " \
                   "particles"
        raise InputError(f"ekf: the {what} need"
                         f"{'s' if copies == 1 else ''} {needed:.1f} GB, more than "
                         f"ekf.max_memory_gb = {ekf_settings.max_memory_gb:g}; use a smaller "
                         "model.n (or fewer particles) or raise the limit")


def metropolis_row(topology, node: int) -> tuple[float, np.ndarray]:
    """Metropolis combination weights of ``node``: itself, and its neighbours in order."""
    weights = metropolis_walk(topology.nodes, topology.edges)
    return weights[node, node], weights[node, topology.neighbours(node)]


@dataclass(frozen=True)
class EstimateState:
    """A single-estimate learner between steps (float64 estimate, carried state, P).

    ``covariance``: the EKF's state of its :mod:`~mcdpf.covariance` form (one Gaussian).
    """

    estimate: np.ndarray
    carry: np.ndarray
    covariance: dict | None = None


@dataclass(frozen=True)
class Linearisation:
    """The pending half-step: prediction and Jacobian at the estimate, next state."""

    step: int
    columns: np.ndarray | None
    carry: np.ndarray
    prediction: float | None = None
    gradient: np.ndarray | None = None
    next_carry: np.ndarray | None = None

    def observed(self, target) -> bool:
        """Whether this step has data and a label."""
        return target is not None and self.prediction is not None

    def carry_after(self, target) -> np.ndarray:
        """The carried state after the step (moved forward only when observed)."""
        return self.next_carry if self.observed(target) else self.carry


class GradientLearner:
    """What the single-estimate learners share: the estimate, carried state, protocol.

    Parameters
    ----------
    model
        The model.
    seed, node
        The run's seed and this node (the initial LSTM estimate's draw).
    """

    def __init__(self, model, seed: int, node: int):
        self.model = model
        self.seed = seed
        self.node = node

    def initial_state(self) -> EstimateState:
        """The initial estimate and a zero carried state."""
        return EstimateState(estimate=initial_estimate(self.model, self.seed, self.node),
                             carry=np.zeros(self.model.n_carry, dtype=self.model.dtype))

    def linearise(self, step: int, estimate, carry, columns) -> Linearisation:
        """Prediction and Jacobian at ``estimate`` on a sequence (None: no data)."""
        if columns is None:
            return Linearisation(step=step, columns=None, carry=carry)
        prediction, gradient, next_carry = self.model.prediction_gradient(
            estimate.astype(self.model.dtype), carry, columns)
        return Linearisation(step=step, columns=columns, carry=carry, prediction=prediction,
                             gradient=gradient, next_carry=next_carry)

    def predict(self, state: EstimateState, step: int, columns):
        """Prediction and Jacobian at the current estimate on this node's sequence."""
        pending = self.linearise(step, state.estimate, state.carry, columns)
        prediction = float("nan") if pending.prediction is None else pending.prediction
        return prediction, pending

    def state_arrays(self, state: EstimateState) -> dict:
        """Estimate and carried state."""
        return {"estimate": state.estimate, "carry": state.carry}

    def restore(self, arrays: dict) -> EstimateState:
        """The state saved by :meth:`state_arrays`."""
        return EstimateState(estimate=arrays["estimate"], carry=arrays["carry"])


class OnlineSGD(GradientLearner):
    """``sgd``: one gradient step per label."""

    def __init__(self, model, seed: int, node: int, learning_rate: float):
        super().__init__(model=model, seed=seed, node=node)
        self.learning_rate = learning_rate

    def adapt(self, state: EstimateState, pending: Linearisation, target) -> np.ndarray:
        """The estimate after a gradient step on this node's label."""
        if not pending.observed(target):
            return state.estimate
        return state.estimate + self.learning_rate * (target - pending.prediction) \
            * pending.gradient

    def learn(self, state, pending, target):
        """Gradient step."""
        return EstimateState(estimate=self.adapt(state, pending, target),
                             carry=pending.carry_after(target)), StepInfo()


class ExtendedKalmanFilter(GradientLearner):
    """``ekf``: EKF on the parameters with ``Q = q I`` and ``R = r``.

    ``covariance`` is the form of ``P`` (:mod:`mcdpf.covariance`; default ``full``).
    """

    def __init__(self, model, seed: int, node: int, state_noise: float, obs_noise: float,
                 initial_variance: float, covariance: CovarianceForm | None = None):
        super().__init__(model=model, seed=seed, node=node)
        self.state_noise = state_noise
        self.obs_noise = obs_noise
        self.initial_variance = initial_variance
        self.form = covariance or FullCovariance(model.n_params)

    def initial_state(self) -> EstimateState:
        """Initial estimate, zero state, ``P0 = initial_variance * I``."""
        state = super().initial_state()
        return replace(state, covariance=self.form.initial(1, self.initial_variance))

    def time_update(self, covariance: dict) -> dict:
        """``P + q I``, new arrays (the step's working covariance)."""
        return self.form.time_update(covariance, self.state_noise)

    def measurement_update(self, estimate, updates, target, prediction, jacobian):
        """One scalar EKF update through ``updates``; returns the new estimate.

        ``updates``: ``self.form.updates`` of the step's own covariance (from
        :meth:`time_update`), which it updates.
        """
        updated, _ = updates.update(estimate, jacobian, prediction, target, self.obs_noise)
        return updated[0]

    def local_update(self, state, pending, target, updates):
        """The estimate after this node's label (if any), through ``updates``."""
        if not pending.observed(target):
            return state.estimate
        return self.measurement_update(state.estimate, updates, target, pending.prediction,
                                       pending.gradient)

    def learn(self, state, pending, target):
        """Time update, then the measurement update with this node's label."""
        covariance = self.time_update(state.covariance)
        with self.form.updates(covariance) as updates:
            estimate = self.local_update(state, pending, target, updates)
        return EstimateState(estimate=estimate, carry=pending.carry_after(target),
                             covariance=covariance), StepInfo()

    def state_arrays(self, state: EstimateState) -> dict:
        """Estimate, carried state and the covariance form's arrays (``covariance``: full)."""
        arrays = super().state_arrays(state)
        arrays.update({name: array[0] for name, array in state.covariance.items()})
        return arrays

    def restore(self, arrays: dict) -> EstimateState:
        """The state saved by :meth:`state_arrays`."""
        covariance = self.form.restore({name: np.asarray(arrays[name])[None]
                                        for name in self.form.shapes(1)})
        return replace(super().restore(arrays), covariance=covariance)


class Diffusion:
    """Mixin: neighbour-only combination with Metropolis weights of the current graph."""

    def connect(self, topology, neighbourhood, node: int) -> None:
        """Combine over ``topology`` through ``neighbourhood``."""
        self.neighbourhood = neighbourhood
        self.self_weight, self.neighbour_weights = metropolis_row(topology, node)

    def combine(self, intermediate: np.ndarray, stamp: int | None) -> tuple[np.ndarray, int]:
        """``c_kk psi_k + sum_l c_lk psi_l`` and the bytes sent (``stamp``: see allgather)."""
        gathered, sent = self.neighbourhood.allgather(intermediate, stamp)
        return self.self_weight * intermediate + self.neighbour_weights @ gathered, sent


class DiffusionSGD(Diffusion, OnlineSGD):
    """``dsgd``: adapt (local SGD step), then combine neighbours' adapted estimates."""

    def __init__(self, model, seed, node, learning_rate, topology, neighbourhood):
        super().__init__(model=model, seed=seed, node=node, learning_rate=learning_rate)
        self.connect(topology, neighbourhood, node)

    def learn(self, state, pending, target):
        """Adapt, exchange, combine."""
        estimate, sent = self.combine(self.adapt(state, pending, target), pending.step)
        return EstimateState(estimate=estimate, carry=pending.carry_after(target)), \
            StepInfo(bytes_sent=sent)


class DiffusionEKF(Diffusion, ExtendedKalmanFilter):
    """``dekf``: incremental update with the neighbourhood's measurements, then combine."""

    def __init__(self, model, seed, node, state_noise, obs_noise, initial_variance, topology,
                 neighbourhood, covariance: CovarianceForm | None = None):
        super().__init__(model=model, seed=seed, node=node, state_noise=state_noise,
                         obs_noise=obs_noise, initial_variance=initial_variance,
                         covariance=covariance)
        self.connect(topology, neighbourhood, node)

    def pack_measurement(self, pending: Linearisation, target) -> np.ndarray:
        """``[observed, d, starting state..., columns...]`` of this node's step (float64)."""
        if target is None or pending.columns is None:
            return np.zeros(1)
        return np.concatenate([[1.0, target], np.asarray(pending.carry, dtype=np.float64),
                               np.asarray(pending.columns, dtype=np.float64).ravel()])

    def unpack_measurement(self, record: np.ndarray):
        """``(target, carry, columns)`` of a neighbour's record, or None if unobserved."""
        if record[0] == 0:
            return None
        width = self.model.n_carry
        carry = np.ascontiguousarray(record[2:2 + width], dtype=self.model.dtype)
        columns = np.ascontiguousarray(record[2 + width:], dtype=self.model.dtype)
        return record[1], carry, columns.reshape(-1, self.model.inputs)

    def learn(self, state, pending, target):
        """Share measurements, update incrementally, share and combine estimates."""
        records, measurement_bytes = self.neighbourhood.allgatherv(
            self.pack_measurement(pending, target), pending.step)
        covariance = self.time_update(state.covariance)
        with self.form.updates(covariance) as updates:
            intermediate = self.local_update(state, pending, target, updates)
            for record in records:
                measurement = self.unpack_measurement(record)
                if measurement is None:
                    continue
                label, carry, columns = measurement
                neighbour = self.linearise(pending.step, intermediate, carry, columns)
                intermediate = self.measurement_update(intermediate, updates, label,
                                                       neighbour.prediction,
                                                       neighbour.gradient)
        estimate, estimate_bytes = self.combine(intermediate, None)
        return EstimateState(estimate=estimate, carry=pending.carry_after(target),
                             covariance=covariance), \
            StepInfo(bytes_sent=measurement_bytes + estimate_bytes)


@dataclass(frozen=True)
class AdamState(EstimateState):
    """An Adam learner between steps: estimate, carried state, moments, update count."""

    first_moment: np.ndarray | None = None
    second_moment: np.ndarray | None = None
    updates: int = 0


class OnlineAdam(GradientLearner):
    """``adam``: one Adam step per label on the gradient of the step's squared error.

    Parameters
    ----------
    model, seed, node
        As :class:`GradientLearner`.
    settings
        ``[adam]``: ``learning_rate``, ``beta1``, ``beta2``, ``eps``.
    """

    def __init__(self, model, seed: int, node: int, settings):
        super().__init__(model, seed, node)
        self.settings = settings

    def initial_state(self) -> AdamState:
        """The initial estimate, a zero carried state, zero moments, no update yet."""
        state = super().initial_state()
        size = self.model.n_params
        return AdamState(estimate=state.estimate, carry=state.carry,
                         first_moment=np.zeros(size), second_moment=np.zeros(size))

    def adapt(self, state: AdamState, pending: Linearisation, target) -> AdamState:
        """The state after an Adam step on this node's label (unchanged without one)."""
        if not pending.observed(target):
            return state
        estimate, first, second = (np.array(values, dtype=np.float64) for values in (
            state.estimate, state.first_moment, state.second_moment))
        loss_gradient = (pending.prediction - target) * np.asarray(pending.gradient,
                                                                   dtype=np.float64)
        settings = self.settings
        adam_update(estimate, first, second, loss_gradient, settings.learning_rate,
                    settings.beta1, settings.beta2, settings.eps, state.updates + 1)
        return replace(state, estimate=estimate, first_moment=first, second_moment=second,
                       updates=state.updates + 1)

    def learn(self, state, pending, target):
        """Adam step."""
        return replace(self.adapt(state, pending, target),
                       carry=pending.carry_after(target)), StepInfo()

    def state_arrays(self, state: AdamState) -> dict:
        """Estimate, carried state, both moments and the update count."""
        return {**super().state_arrays(state), "first_moment": state.first_moment,
                "second_moment": state.second_moment, "adam_updates": state.updates}

    def restore(self, arrays: dict) -> AdamState:
        """The state saved by :meth:`state_arrays`."""
        return AdamState(estimate=arrays["estimate"], carry=arrays["carry"],
                         first_moment=arrays["first_moment"],
                         second_moment=arrays["second_moment"],
                         updates=int(arrays["adam_updates"]))


class DiffusionAdam(Diffusion, OnlineAdam):
    """``dadam``: adapt (local Adam step), then combine neighbours' adapted estimates."""

    def __init__(self, model, seed, node, settings, topology, neighbourhood):
        super().__init__(model, seed, node, settings)
        self.connect(topology, neighbourhood, node)

    def learn(self, state, pending, target):
        """Adapt, exchange, combine (the moments stay local)."""
        adapted = self.adapt(state, pending, target)
        estimate, sent = self.combine(adapted.estimate, pending.step)
        return replace(adapted, estimate=estimate, carry=pending.carry_after(target)), \
            StepInfo(bytes_sent=sent)
