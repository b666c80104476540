"""Log-domain importance weights: log-sum-exp normalisation and effective sample size.

Weights are kept as float64 log-weights. Normalisation subtracts the maximum before
exponentiating, so no weight underflows to an all-zero vector unless every log-weight is
``-inf`` or NaN; that degenerate case is reported, never hidden.
"""

import numpy as np
from numba import njit, prange

MEAN_BLOCK = 64  # rows per partial sum of weighted means (fixed: results do not depend on
#                  the thread count)


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


@njit(cache=True, nogil=True, error_model="numpy")
def _weighted_block(weights, values, partial, block):
    first = block * MEAN_BLOCK
    last = min(first + MEAN_BLOCK, values.shape[0])
    width = values.shape[1]
    for j in range(width):
        partial[block, j] = 0.0
    for i in range(first, last):
        w = weights[i]
        for j in range(width):
            partial[block, j] += w * np.float64(values[i, j])


@njit(cache=True, nogil=True, error_model="numpy")
def _combine_blocks(partial, out):
    for j in range(out.shape[0]):
        out[j] = 0.0
    for block in range(partial.shape[0]):
        for j in range(out.shape[0]):
            out[j] += partial[block, j]


@njit(cache=True, nogil=True, error_model="numpy")
def weighted_mean_kernel(weights, values, out):
    """``out = sum_i weights[i] * values[i, :]`` accumulated in float64.

    ``values`` (N, P) of any float dtype and any row stride is read in place (no float64
    copy); partial sums over fixed blocks of :data:`MEAN_BLOCK` rows are added in block
    order, so :func:`weighted_mean_parallel_kernel` gives the same bits.
    """
    blocks = (values.shape[0] + MEAN_BLOCK - 1) // MEAN_BLOCK
    partial = np.empty((blocks, values.shape[1]))
    for block in range(blocks):
        _weighted_block(weights, values, partial, block)
    _combine_blocks(partial, out)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def weighted_mean_parallel_kernel(weights, values, out):
    """:func:`weighted_mean_kernel` with the blocks on numba's threads (same bits)."""
    blocks = (values.shape[0] + MEAN_BLOCK - 1) // MEAN_BLOCK
    partial = np.empty((blocks, values.shape[1]))
    for block in prange(blocks):
        _weighted_block(weights, values, partial, block)
    _combine_blocks(partial, out)
