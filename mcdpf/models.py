"""Regression models behind one interface, so that filters do not know which they run.

A model maps a particle population to predictions on one sequence. Each particle is
``a = [theta, carried state]``:

``lstm`` (DESIGN §1)
    ``theta`` in the layout of :mod:`mcdpf.kernels.lstm` (``4n(n+p) + 5n`` values; the
    output weights ``w`` are the last ``n``). With ``carry_state`` the carried state is
    ``[c_bar, y_bar]`` of the previous step (``2n`` values) and the sequence starts from
    it; without, every sequence starts from zeros and nothing is carried.
``linear`` (DESIGN §5)
    ``theta`` in R^p, prediction ``theta^T x_bar`` with ``x_bar`` the mean column; no
    carried state. With Gaussian random-walk ``theta`` its exact posterior is a Kalman
    filter (:mod:`mcdpf.kalman`).

The state-space transition adds ``N(0, q)`` noise to every component: the filter draws
it, perturbs ``theta`` and hands the state-noise part to :meth:`evaluate`, which adds it
to the new carried state before predicting (``d_hat = w^T y_bar``). ``parallel`` runs the
kernels on numba's threads (bit-identical results).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import (
    lstm_parameter_count,
    lstm_population_gradient,
    lstm_predict,
    lstm_prediction_gradient,
    normal_rows,
)


class NormalInitialisation:
    """Models whose parameters start ``N(0, init_std^2 I)`` (``n_params``, ``dtype``)."""

    def initial_theta(self, ids: np.ndarray, key, parallel: bool = False) -> np.ndarray:
        """``theta ~ N(0, init_std^2 I)`` of particles ``ids`` (counter-based, step 0)."""
        theta = np.empty((ids.shape[0], self.n_params), dtype=self.dtype)
        return normal_rows(theta, ids, 0, key, self.init_std, parallel=parallel)


@dataclass(frozen=True)
class LSTMModel(NormalInitialisation):
    """LSTM regressor with mean pooling; ``n`` outputs, ``p`` inputs."""

    hidden: int
    inputs: int
    carry_state: bool
    init_std: float
    dtype: np.dtype

    kind = "lstm"

    @property
    def n_params(self) -> int:
        """Length of ``theta``."""
        return lstm_parameter_count(self.hidden, self.inputs)

    @property
    def n_carry(self) -> int:
        """Length of the carried state (``2n`` or 0)."""
        return 2 * self.hidden if self.carry_state else 0

    def output_weights(self, theta: np.ndarray) -> np.ndarray:
        """``w`` of every particle (N, n), a view."""
        return theta[:, self.n_params - self.hidden:]

    def evaluate(self, theta: np.ndarray, carry: np.ndarray, state_noise: np.ndarray,
                 columns: np.ndarray, parallel: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Predictions (float64, N) and next carried state (N, n_carry) on one sequence.

        ``carry`` is the state of the previous step, ``state_noise`` the transition noise
        of the new state (both (N, n_carry)); ``columns`` is (m, p) in the model dtype.
        """
        predictions, next_carry, _ = self._run(theta, carry, state_noise, columns, 0.0, 0.0,
                                               parallel)
        return predictions, next_carry

    def score(self, theta, carry, state_noise, columns, target: float, obs_noise: float,
              parallel: bool = False):
        """Log-likelihoods ``log N(target; d_hat_i, r)`` (float64) and next carried state."""
        _, next_carry, log_likelihood = self._run(theta, carry, state_noise, columns, target,
                                                  obs_noise, parallel)
        return log_likelihood, next_carry

    def _run(self, theta, carry, state_noise, columns, target, obs_noise, parallel):
        count = theta.shape[0]
        n = self.hidden
        if self.carry_state:
            return lstm_predict(theta, columns, carry, state_noise, n, True, target, obs_noise,
                                parallel)
        start = np.zeros((count, 2 * n), dtype=self.dtype)
        predictions, _, log_likelihood = lstm_predict(theta, columns, start, start, n, False,
                                                      target, obs_noise, parallel)
        return predictions, np.empty((count, 0), self.dtype), log_likelihood

    def population_gradient(self, theta: np.ndarray, carry: np.ndarray, columns: np.ndarray,
                            parallel: bool = False):
        """``(d_hat (N,) float64, d d_hat / d theta (N, P), next state)`` of every particle.

        At ``theta`` without state noise; the carried state is an input without gradient.
        """
        count, n = theta.shape[0], self.hidden
        start = carry if self.carry_state else np.zeros((count, 2 * n), dtype=self.dtype)
        predictions, gradient, state = lstm_population_gradient(theta, columns, start, n,
                                                                parallel=parallel)
        next_carry = state if self.carry_state else np.empty((count, 0), self.dtype)
        return predictions, gradient, next_carry

    def prediction_gradient(self, theta: np.ndarray, carry: np.ndarray,
                            columns: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """``(d_hat, d d_hat / d theta, next carried state)`` of one parameter vector.

        Back-propagation runs through the whole sequence; the carried state is an input
        without gradient. Gradient in float64.
        """
        n = self.hidden
        start = carry if self.carry_state else np.zeros(2 * n, dtype=self.dtype)
        prediction, gradient, state = lstm_prediction_gradient(theta, columns, start, n)
        next_carry = state if self.carry_state else np.empty(0, dtype=self.dtype)
        return prediction, gradient.astype(np.float64, copy=False), next_carry

    def parameter_groups(self) -> list[np.ndarray]:
        """Indices of ``theta`` by unit (decoupled EKF), then the read-out ``w``.

        Unit ``u``'s group: its gate rows of ``[W R]`` and biases (rows ``g n + u``, gates
        i, f, z, o).
        """
        n, width = self.hidden, self.hidden + self.inputs
        rows = np.arange(4)[:, None] * n + np.arange(n)[None, :]  # (gate, unit)
        groups = [np.concatenate([(rows[:, u, None] * width + np.arange(width)).ravel(),
                                  4 * n * width + rows[:, u]]) for u in range(n)]
        return groups + [np.arange(self.n_params - n, self.n_params)]

    def layout(self) -> str:
        """One-line description of the flat ``theta`` layout."""
        n, p = self.hidden, self.inputs
        return (f"lstm n={n} p={p}: [M = [W R] (4n x (p+n)) row-major | b (4n) | w (n)], "
                f"gate rows i,f,z,o; {self.n_params} values")


@dataclass(frozen=True)
class LinearModel(NormalInitialisation):
    """Linear regressor on the mean column: ``d = theta^T x_bar``."""

    inputs: int
    init_std: float
    dtype: np.dtype

    kind = "linear"
    carry_state = False

    @property
    def n_params(self) -> int:
        """Length of ``theta`` (= p)."""
        return self.inputs

    n_carry = 0

    def output_weights(self, theta: np.ndarray) -> np.ndarray:
        """The linear model has no output weights (no state noise reaches ``d_hat``)."""
        return theta[:, :0]

    def evaluate(self, theta, carry, state_noise, columns, parallel: bool = False):
        """Predictions ``theta_i^T x_bar`` (float64) and an empty carried state."""
        mean_column = columns.mean(axis=0, dtype=np.float64)
        predictions = theta.astype(np.float64, copy=False) @ mean_column
        return predictions, carry

    def score(self, theta, carry, state_noise, columns, target: float, obs_noise: float,
              parallel: bool = False):
        """Log-likelihoods ``log N(target; d_hat_i, r)`` (float64) and the (empty) state."""
        predictions, carry = self.evaluate(theta, carry, state_noise, columns)
        return gaussian_log_likelihood(target, predictions, obs_noise), carry

    def population_gradient(self, theta, carry, columns, parallel: bool = False):
        """``(theta_i^T x_bar, x_bar for every particle, empty state)``."""
        mean_column = columns.mean(axis=0, dtype=np.float64)
        predictions = theta.astype(np.float64, copy=False) @ mean_column
        return predictions, np.broadcast_to(mean_column, theta.shape), carry

    def prediction_gradient(self, theta, carry, columns):
        """``(theta^T x_bar, x_bar, empty carried state)``."""
        mean_column = columns.mean(axis=0, dtype=np.float64)
        return float(theta.astype(np.float64) @ mean_column), mean_column, carry

    def parameter_groups(self) -> list[np.ndarray]:
        """One group: the single output unit's weights (decoupled EKF = full EKF here)."""
        return [np.arange(self.inputs)]

    def layout(self) -> str:
        """One-line description of ``theta``."""
        return f"linear p={self.inputs}: theta (p), d = theta^T mean(x)"


Model = LSTMModel | LinearModel


def build_model(model_config, inputs: int) -> Model:
    """The ``[model]`` section's model for input dimension ``inputs``."""
    dtype = np.dtype(model_config.dtype)
    if model_config.kind == "linear":
        return LinearModel(inputs=inputs, init_std=model_config.init_std, dtype=dtype)
    return LSTMModel(hidden=model_config.n, inputs=inputs,
                     carry_state=model_config.carry_state,
                     init_std=model_config.init_std, dtype=dtype)


def gaussian_log_likelihood(target: float, predictions: np.ndarray,
                            obs_noise: float) -> np.ndarray:
    """``log N(target; predictions, obs_noise)`` elementwise (float64)."""
    residual = target - predictions
    return -0.5 * (residual * residual / obs_noise + np.log(2.0 * np.pi * obs_noise))
