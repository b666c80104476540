"""Models: parameter layout, carried state, prediction, and the Kalman reference."""

import naive
import numpy as np
import pytest

from mcdpf.config import ModelConfig
from mcdpf.kalman import kalman_filter
from mcdpf.models import LSTMModel, build_model, gaussian_log_likelihood
from mcdpf.streams import Stream


def test_parameter_count_formula():
    for n, p in [(1, 1), (2, 2), (5, 3), (64, 16)]:
        model = LSTMModel(hidden=n, inputs=p, carry_state=True, init_std=1.0,
                          dtype=np.dtype(np.float64))
        assert model.n_params == 4 * n * (n + p) + 5 * n
        assert model.n_carry == 2 * n


@pytest.mark.parametrize("carry_state", [True, False])
def test_lstm_model_prediction_and_carried_state(carry_state):
    rng = np.random.default_rng(2)
    model = build_model(ModelConfig(n=3, carry_state=carry_state, init_std=0.7), inputs=2)
    theta = model.initial_theta(np.arange(6, dtype=np.int64), (1, 2))
    carry = np.zeros((6, model.n_carry))
    if carry_state:
        carry = rng.standard_normal(carry.shape)
    noise = 0.01 * rng.standard_normal(carry.shape)
    columns = rng.standard_normal((5, 2))
    predictions, next_carry = model.evaluate(theta, carry, noise, columns)
    start = carry if carry_state else np.zeros((6, 6))
    state = naive.lstm_mean_states(theta, columns, start, 3)
    if carry_state:
        state = state + noise
        np.testing.assert_allclose(next_carry, state, rtol=1e-12)
    else:
        assert next_carry.shape == (6, 0)
    w = theta[:, -3:]
    np.testing.assert_allclose(predictions, np.sum(w * state[:, 3:], axis=1), rtol=1e-12)


def test_linear_model_predicts_on_mean_column():
    model = build_model(ModelConfig(kind="linear", init_std=1.0), inputs=3)
    theta = np.arange(6.0).reshape(2, 3)
    columns = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    predictions, _ = model.evaluate(theta, np.zeros((2, 0)), np.zeros((2, 0)), columns)
    np.testing.assert_allclose(predictions, theta @ np.array([2.0, 2.0, 2.0]))


def test_log_likelihood():
    value = gaussian_log_likelihood(1.0, np.array([1.0, 0.0]), 0.25)
    np.testing.assert_allclose(value, [-0.5 * np.log(2 * np.pi * 0.25),
                                       -2.0 - 0.5 * np.log(2 * np.pi * 0.25)])


def test_kalman_filter_with_static_theta_is_batch_regression():
    rng = np.random.default_rng(9)
    streams = []
    for _ in range(3):
        lengths = rng.integers(1, 4, size=40)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        streams.append(Stream(rng.standard_normal((offsets[-1], 2)), offsets,
                              rng.standard_normal(40)))
    means, covariances = kalman_filter(streams, 0.0, 0.04, 2.0)
    from mcdpf.kalman import mean_columns
    design = np.vstack([mean_columns(s) for s in streams])
    targets = np.concatenate([s.targets for s in streams])
    want_mean, want_cov = naive.batch_linear_posterior(design, targets, 0.04, 2.0)
    np.testing.assert_allclose(means[-1], want_mean, rtol=1e-9)
    np.testing.assert_allclose(covariances[-1], want_cov, rtol=1e-9)
