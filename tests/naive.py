"""Slow, obvious numpy references for every kernel (stumpy's tests/naive.py pattern)."""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def unpack_lstm(theta, n, p):
    """theta -> (W (4n, p), R (4n, n), b (4n,), w (n,)) per the documented layout."""
    g = 4 * n
    M = theta[: g * (p + n)].reshape(g, p + n)
    W, R = M[:, :p], M[:, p:]
    b = theta[g * (p + n): g * (p + n) + g]
    w = theta[g * (p + n) + g:]
    assert w.size == n
    return W, R, b, w


def lstm_mean_states(theta, columns, start, n):
    """Per particle, per column: the DESIGN §1 equations with matrices."""
    count = theta.shape[0]
    p = columns.shape[1]
    out = np.empty((count, 2 * n))
    for i in range(count):
        W, R, b, _ = unpack_lstm(theta[i].astype(np.float64), n, p)
        c = start[i, :n].astype(np.float64)
        y = start[i, n:].astype(np.float64)
        cs, ys = [], []
        for x in columns.astype(np.float64):
            a = W @ x + R @ y + b
            i_gate = sigmoid(a[:n])
            f_gate = sigmoid(a[n:2 * n])
            z = np.tanh(a[2 * n:3 * n])
            o_gate = sigmoid(a[3 * n:])
            c = i_gate * z + f_gate * c
            y = o_gate * np.tanh(c)
            cs.append(c)
            ys.append(y)
        out[i, :n] = np.mean(cs, axis=0)
        out[i, n:] = np.mean(ys, axis=0)
    return out


def normalize(log_weights):
    lw = np.asarray(log_weights, dtype=np.float64)
    m = np.max(lw)
    w = np.exp(lw - m)
    return w / w.sum(), m + np.log(np.sum(np.exp(lw - m)))


def ess(weights):
    return 1.0 / np.sum(np.square(weights))


def batch_linear_posterior(design, targets, obs_noise, prior_variance):
    """Bayesian linear regression with a static theta: the KF with q = 0."""
    p = design.shape[1]
    precision = np.eye(p) / prior_variance + design.T @ design / obs_noise
    covariance = np.linalg.inv(precision)
    return covariance @ design.T @ targets / obs_noise, covariance
