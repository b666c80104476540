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
    The products ``P_k g_k`` sum each row in column order, eight rows at a time as
    independent chains (a single chain is bound by the add latency, not by memory); the
    downdate may be left pending and applied in the next measurement's pass over ``P``
    (``defer``): one pass per measurement instead of two. Both keep the arithmetic of the
    plain row-by-row update, bit for bit.

Means and covariances are float64. Every Gaussian is independent of the others.
"""

import numpy as np
from numba import njit, prange

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
def _block_rows(flat, row, size, first, gathered, out, previous, scale, downdate, rows):
    """``rows`` (1 or 8) rows of one block from offset ``row``: ``out = P g`` over them.

    With ``downdate``, each row first takes the pending downdate
    ``P[a, :] -= (previous[a] * scale) previous`` (stored), so the product reads the
    downdated values. The rows' dot products run as independent chains (one per row),
    each summed in column order: the same arithmetic as one row at a time. Returns
    ``g_a (P g)_a`` of each row, in order (zeros past ``rows``).
    """
    if downdate:
        for r in range(rows):
            scaled = previous[first + r] * scale
            p = flat[row + r * size:row + (r + 1) * size]
            for c in range(size):
                p[c] -= scaled * previous[c]
    if rows == 8:
        p0 = flat[row:row + size]
        p1 = flat[row + size:row + 2 * size]
        p2 = flat[row + 2 * size:row + 3 * size]
        p3 = flat[row + 3 * size:row + 4 * size]
        p4 = flat[row + 4 * size:row + 5 * size]
        p5 = flat[row + 5 * size:row + 6 * size]
        p6 = flat[row + 6 * size:row + 7 * size]
        p7 = flat[row + 7 * size:row + 8 * size]
        t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = 0.0
        for c in range(size):
            gc = gathered[c]
            t0 += p0[c] * gc
            t1 += p1[c] * gc
            t2 += p2[c] * gc
            t3 += p3[c] * gc
            t4 += p4[c] * gc
            t5 += p5[c] * gc
            t6 += p6[c] * gc
            t7 += p7[c] * gc
        out[first] = t0
        out[first + 1] = t1
        out[first + 2] = t2
        out[first + 3] = t3
        out[first + 4] = t4
        out[first + 5] = t5
        out[first + 6] = t6
        out[first + 7] = t7
        return (gathered[first] * t0, gathered[first + 1] * t1, gathered[first + 2] * t2,
                gathered[first + 3] * t3, gathered[first + 4] * t4, gathered[first + 5] * t5,
                gathered[first + 6] * t6, gathered[first + 7] * t7)
    p0 = flat[row:row + size]
    total = 0.0
    for c in range(size):
        total += p0[c] * gathered[c]
    out[first] = total
    return gathered[first] * total, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _block_products(flat, starts, offsets, gathered, out, previous, scale, downdate,
                    initial):
    """``out = P g`` blockwise (``g`` gathered into block order); ``initial + g^T P g``.

    The quadratic form is summed row by row onto ``initial``. With ``downdate``,
    ``P -= scale previous previous^T`` blockwise first, in the same pass.
    """
    quadratic = initial
    for k in range(offsets.shape[0] - 1):
        first, size, start = offsets[k], offsets[k + 1] - offsets[k], starts[k]
        g = gathered[first:first + size]
        o = out[first:first + size]
        u = previous[first:first + size]
        a = 0
        while a < size:
            rows = 8 if a + 8 <= size else 1
            terms = _block_rows(flat, start + a * size, size, a, g, o, u, scale, downdate,
                                rows)
            for r in range(rows):
                quadratic += terms[r]
            a += rows
    return quadratic


@njit(cache=True, nogil=True, error_model="numpy")
def _block_downdate(flat, starts, offsets, products, scale):
    """``P -= scale u u^T`` blockwise (``u = products`` in block order), in place."""
    for k in range(offsets.shape[0] - 1):
        first, size, start = offsets[k], offsets[k + 1] - offsets[k], starts[k]
        u = products[first:first + size]
        for a in range(size):
            scaled = u[a] * scale
            p = flat[start + a * size:start + (a + 1) * size]
            for c in range(size):
                p[c] -= scaled * u[c]


@njit(cache=True, nogil=True, error_model="numpy")
def _update_one(i, means, blocks, starts, index, offsets, gradients, predictions, target,
                noise_variance, log_density, products, previous, scale, defer, noise_first,
                gathered):
    """Gaussian ``i`` of :func:`block_update_kernel`."""
    for a in range(index.shape[0]):
        gathered[a] = gradients[i, index[a]]
    initial = noise_variance[i] if noise_first else 0.0
    s = _block_products(blocks[i], starts, offsets, gathered, products[i], previous[i],
                        scale[i], scale[i] != 0.0, initial)
    if not noise_first:
        s = noise_variance[i] + s
    residual = target - predictions[i]
    gain = residual / s
    inverse = 1.0 / s
    for a in range(index.shape[0]):
        means[i, index[a]] += products[i, a] * gain
    if defer:
        previous[i, :] = products[i]
        scale[i] = inverse
    else:
        _block_downdate(blocks[i], starts, offsets, products[i], inverse)
        scale[i] = 0.0
    log_density[i] = -0.5 * (residual * residual / s + np.log(s) + LOG_2PI)


@njit(cache=True, nogil=True, error_model="numpy")
def block_update_kernel(means, blocks, starts, index, offsets, gradients, predictions, target,
                        noise_variance, log_density, products, previous, scale, defer,
                        noise_first):
    """EKF update of block-diagonal-covariance Gaussians with one measurement, in place.

    Parameters
    ----------
    means : (N, P) float64, updated
    blocks : (N, S) float64, updated
        Every block row-major, block ``k`` at ``starts[k]:starts[k+1]`` (a dense
        covariance is one block: ``full``).
    starts : (K+1,) int64
    index : (P,) int64
        The weights grouped by block (a permutation of ``0..P-1``).
    offsets : (K+1,) int64
        Block ``k`` holds the weights ``index[offsets[k]:offsets[k+1]]``.
    gradients : (N, P) float64
    predictions, noise_variance : (N,) float64
    target : float
    log_density : (N,) float64, written
    products : (N, P) float64, written
        ``u_k = P_k g_k`` in block order.
    previous, scale : (N, P), (N,) float64, updated
        A pending downdate ``P -= scale u u^T`` (``u = previous``; none where ``scale`` is
        0), applied in the same pass as this measurement's products.
    defer : bool
        Leave this measurement's downdate pending (``previous = products``, ``scale =
        1 / s``) for the next call or :func:`block_downdate_kernel`, instead of applying
        it now: one pass over ``P`` per measurement instead of two.
    noise_first : bool
        Sum ``s`` from ``rho`` (``rho + t_1 + t_2 + ...``, the dense form's order) instead
        of adding ``rho`` to ``g^T P g`` (the decoupled form's).
    """
    gathered = np.empty(index.shape[0])
    for i in range(means.shape[0]):
        _update_one(i, means, blocks, starts, index, offsets, gradients, predictions, target,
                    noise_variance, log_density, products, previous, scale, defer,
                    noise_first, gathered)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def block_update_parallel_kernel(means, blocks, starts, index, offsets, gradients,
                                 predictions, target, noise_variance, log_density, products,
                                 previous, scale, defer, noise_first):
    """:func:`block_update_kernel` with the Gaussians on numba's threads (same bits)."""
    for i in prange(means.shape[0]):
        gathered = np.empty(index.shape[0])
        _update_one(i, means, blocks, starts, index, offsets, gradients, predictions, target,
                    noise_variance, log_density, products, previous, scale, defer,
                    noise_first, gathered)


@njit(cache=True, nogil=True, error_model="numpy")
def block_downdate_kernel(blocks, starts, offsets, previous, scale):
    """Apply the pending downdates of :func:`block_update_kernel` in place; clear them."""
    for i in range(blocks.shape[0]):
        if scale[i] != 0.0:
            _block_downdate(blocks[i], starts, offsets, previous[i], scale[i])
            scale[i] = 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def block_quadratic_kernel(blocks, starts, index, offsets, gradients, out):
    """``out[i] = g_i^T P_i g_i`` of block-diagonal covariances."""
    gathered = np.empty(index.shape[0])
    products = np.empty(index.shape[0])
    for i in range(blocks.shape[0]):
        for a in range(index.shape[0]):
            gathered[a] = gradients[i, index[a]]
        out[i] = _block_products(blocks[i], starts, offsets, gathered, products, products,
                                 0.0, False, 0.0)


@njit(cache=True, nogil=True)
def block_add_diagonal_kernel(blocks, starts, offsets, value):
    """``P_i += value * I`` of block-diagonal covariances, in place."""
    for i in range(blocks.shape[0]):
        for k in range(offsets.shape[0] - 1):
            size = offsets[k + 1] - offsets[k]
            for a in range(size):
                blocks[i, starts[k] + a * size + a] += value
