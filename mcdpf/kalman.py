"""Exact Kalman filter for the linear-Gaussian model: the reference posterior.

Model (``model.kind = "linear"``): ``theta_t = theta_{t-1} + N(0, q I)`` with
``theta_0 ~ N(0, init_std^2 I)``, and at every node ``j`` that observes step ``t``,
``d[j,t] = x_bar[j,t]^T theta_t + N(0, r)``. Given the streams of a set of nodes, the
filter returns the exact posterior mean and covariance of ``theta_t`` after each step:
with all nodes it is the centralized posterior that MCDPF approximates (Lee & West,
Theorem 1); with one node it is what a particle filter without communication targets.
"""

from __future__ import annotations

import numpy as np


def mean_columns(stream) -> np.ndarray:
    """``x_bar`` of every sequence of a stream, (T, p) float64."""
    columns = np.asarray(stream.columns, dtype=np.float64)
    sums = np.add.reduceat(columns, stream.offsets[:-1], axis=0)
    return sums / np.diff(stream.offsets)[:, None]


def kalman_filter(streams, state_noise: float, obs_noise: float, prior_variance: float,
                  steps: int | None = None, skipped=None,
                  prior_mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means (T, p) and covariances (T, p, p) of ``theta_t`` given ``streams``.

    Parameters
    ----------
    streams
        :class:`~mcdpf.streams.Stream` of every observing node, equal lengths.
    state_noise, obs_noise, prior_variance
        ``q``, ``r`` and ``init_std^2``.
    steps
        Number of steps (default: the streams' length).
    skipped
        Optional boolean masks (one per stream) of steps that node did not observe.
    prior_mean
        Mean of ``theta_0`` (default 0; a subspace filter's anchor, :mod:`mcdpf.subspace`).
    """
    designs = [mean_columns(s) for s in streams]
    targets = [np.asarray(s.targets, dtype=np.float64) for s in streams]
    steps = steps if steps is not None else targets[0].shape[0]
    p = designs[0].shape[1]
    mean = np.zeros(p) if prior_mean is None else np.asarray(prior_mean, dtype=np.float64)
    covariance = prior_variance * np.eye(p)
    means = np.empty((steps, p))
    covariances = np.empty((steps, p, p))
    identity = np.eye(p)
    for t in range(steps):
        covariance = covariance + state_noise * identity
        rows = [j for j in range(len(streams)) if skipped is None or not skipped[j][t]]
        if rows:
            design = np.array([designs[j][t] for j in rows])
            observed = np.array([targets[j][t] for j in rows])
            innovation_covariance = design @ covariance @ design.T + obs_noise * np.eye(len(rows))
            gain = np.linalg.solve(innovation_covariance, design @ covariance).T
            mean = mean + gain @ (observed - design @ mean)
            correction = identity - gain @ design
            covariance = correction @ covariance @ correction.T \
                + obs_noise * gain @ gain.T
        means[t] = mean
        covariances[t] = covariance
    return means, covariances
