"""Scalar-measurement EKF updates of structured covariances (:mod:`mcdpf.covariance`).

Gaussian ``i`` is ``N(m_i, P_i)``; one scalar measurement ``d`` with prediction ``h_i``,
gradient ``g_i`` at ``m_i`` and noise variance ``rho_i`` updates it in place, with the
innovation variance ``s = g_i^T P_i g_i + rho_i`` of the whole vector and the gain kept
inside each form's structure, and writes ``log N(d; h_i, s)``:

``diagonal`` (:func:`diagonal_update_kernel`)
    ``P = diag(v)``: ``u = v * g``, ``m += u (d - h) / s``, ``v -= u^2 / s`` (only the
    diagonal of the rank-one downdate is kept: each weight its own group, the "fully
    decoupled" EKF of Puskorius & Feldkamp 1991). ``O(n_theta)``.
``decoupled`` (:func:`block_update_kernel`)
    ``P`` block diagonal over groups of weights (``index[offsets[k]:offsets[k+1]]``),
    block ``k`` stored row-major at ``blocks[i, starts[k]:starts[k+1]]``:
    ``u_k = P_k g_k``, ``m_k += u_k (d - h) / s``, ``P_k -= u_k u_k^T / s`` with the one
    ``s`` of all blocks (decoupled EKF, Puskorius & Feldkamp 1991). ``O(sum_k b_k^2)``.

Means and covariances are float64. Every Gaussian is independent of the others.
"""

import numpy as np
from numba import njit

LOG_2PI = float(np.log(2.0 * np.pi))


@njit(cache=True, nogil=True, error_model="numpy")
def diagonal_update_kernel(means, variances, gradients, predictions, target, noise_variance,
                           log_density):
    """EKF update of diagonal-covariance Gaussians with one measurement, in place.

    Parameters
    ----------
    means, variances : (N, P) float64, updated
    gradients : (N, P) float64
    predictions, noise_variance : (N,) float64
    target : float
    log_density : (N,) float64, written
    """
    size = means.shape[1]
    for i in range(means.shape[0]):
        s = noise_variance[i]
        for a in range(size):
            s += gradients[i, a] * gradients[i, a] * variances[i, a]
        residual = target - predictions[i]
        gain = residual / s
        inverse = 1.0 / s
        for a in range(size):
            u = variances[i, a] * gradients[i, a]
            means[i, a] += u * gain
            variances[i, a] -= u * u * inverse
        log_density[i] = -0.5 * (residual * residual / s + np.log(s) + LOG_2PI)


@njit(cache=True, nogil=True, error_model="numpy")
def _block_products(blocks, i, starts, index, offsets, gradient, out):
    """``out[offsets[k] + a] = (P_k g_k)[a]`` for every block; returns ``g^T P g``."""
    quadratic = 0.0
    for k in range(offsets.shape[0] - 1):
        first, size, start = offsets[k], offsets[k + 1] - offsets[k], starts[k]
        for a in range(size):
            total = 0.0
            row = start + a * size
            for c in range(size):
                total += blocks[i, row + c] * gradient[index[first + c]]
            out[first + a] = total
            quadratic += gradient[index[first + a]] * total
    return quadratic


@njit(cache=True, nogil=True, error_model="numpy")
def block_update_kernel(means, blocks, starts, index, offsets, gradients, predictions, target,
                        noise_variance, log_density):
    """EKF update of block-diagonal-covariance Gaussians with one measurement, in place.

    Parameters
    ----------
    means : (N, P) float64, updated
    blocks : (N, S) float64, updated
        Every block row-major, block ``k`` at ``starts[k]:starts[k+1]``.
    starts : (K+1,) int64
    index : (P,) int64
        The weights grouped by block (a permutation of ``0..P-1``).
    offsets : (K+1,) int64
        Block ``k`` holds the weights ``index[offsets[k]:offsets[k+1]]``.
    gradients : (N, P) float64
    predictions, noise_variance : (N,) float64
    target : float
    log_density : (N,) float64, written
    """
    products = np.empty(index.shape[0])
    for i in range(means.shape[0]):
        s = noise_variance[i] + _block_products(blocks, i, starts, index, offsets,
                                                gradients[i], products)
        residual = target - predictions[i]
        gain = residual / s
        inverse = 1.0 / s
        for k in range(offsets.shape[0] - 1):
            first, size, start = offsets[k], offsets[k + 1] - offsets[k], starts[k]
            for a in range(size):
                u = products[first + a]
                means[i, index[first + a]] += u * gain
                scaled = u * inverse
                row = start + a * size
                for c in range(size):
                    blocks[i, row + c] -= scaled * products[first + c]
        log_density[i] = -0.5 * (residual * residual / s + np.log(s) + LOG_2PI)


@njit(cache=True, nogil=True, error_model="numpy")
def block_quadratic_kernel(blocks, starts, index, offsets, gradients, out):
    """``out[i] = g_i^T P_i g_i`` of block-diagonal covariances."""
    products = np.empty(index.shape[0])
    for i in range(blocks.shape[0]):
        out[i] = _block_products(blocks, i, starts, index, offsets, gradients[i], products)


@njit(cache=True, nogil=True)
def block_add_diagonal_kernel(blocks, starts, offsets, value):
    """``P_i += value * I`` of block-diagonal covariances, in place."""
    for i in range(blocks.shape[0]):
        for k in range(offsets.shape[0] - 1):
            size = offsets[k + 1] - offsets[k]
            for a in range(size):
                blocks[i, starts[k] + a * size + a] += value
