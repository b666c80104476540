"""Log-domain importance weights: log-sum-exp normalisation and effective sample size.

Weights are kept as float64 log-weights. Normalisation subtracts the maximum before
exponentiating, so no weight underflows to an all-zero vector unless every log-weight is
``-inf`` or NaN; that degenerate case is reported, never hidden.
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def normalize_log_weights_kernel(log_weights, weights):
    """Write ``exp(log_weights - logsumexp)`` into ``weights``; return the logsumexp.

    NaN log-weights count as ``-inf``. When no log-weight is finite the weights are set
    uniform and ``-inf`` is returned, so the caller can count the event.
    """
    count = log_weights.shape[0]
    peak = -np.inf
    for i in range(count):
        value = log_weights[i]
        if value > peak:
            peak = value
    if not peak > -np.inf or peak == np.inf:
        for i in range(count):
            weights[i] = 1.0 / count
        return -np.inf
    total = 0.0
    for i in range(count):
        value = log_weights[i]
        w = np.exp(value - peak) if value == value else 0.0
        weights[i] = w
        total += w
    inverse = 1.0 / total
    for i in range(count):
        weights[i] *= inverse
    return peak + np.log(total)


@njit(cache=True, nogil=True)
def effective_sample_size_kernel(weights):
    """``1 / sum(w_i^2)`` of normalised weights."""
    total = 0.0
    for i in range(weights.shape[0]):
        total += weights[i] * weights[i]
    return 1.0 / total
