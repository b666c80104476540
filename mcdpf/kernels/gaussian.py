"""Extended-Kalman updates of a population of Gaussian particles (``filter.kernel = gaussian``).

Particle ``i`` is a Gaussian ``N(m_i, P_i)`` over the parameters. One scalar measurement
``d`` with prediction ``h_i`` and gradient ``g_i`` at ``m_i`` and noise variance ``rho``
updates every particle in place::

    u = P_i g_i,  s = g_i^T u + rho,  m_i += u (d - h_i) / s,  P_i -= u u^T / s

and returns the log predictive density ``log N(d; h_i, s)`` (the particle's weight
factor). ``P_i`` stays symmetric to rounding: ``(u[a] / s) u[b]`` and ``(u[b] / s) u[a]``
can differ in the last bit, so the two triangles may drift apart at that level.
Means and covariances are float64. The parallel twin spreads the particles over numba's
threads; every particle is independent, so the bits are the same.
"""

import numpy as np
from numba import njit, prange

LOG_2PI = float(np.log(2.0 * np.pi))


@njit(cache=True, nogil=True, error_model="numpy")
def _update_one(i, means, covariances, gradients, predictions, target, noise_variance,
                log_density, scratch):
    size = means.shape[1]
    g = gradients[i]
    cov = covariances[i]
    s = noise_variance[i]
    for a in range(size):
        total = 0.0
        for b in range(size):
            total += cov[a, b] * g[b]
        scratch[a] = total
        s += g[a] * total
    residual = target - predictions[i]
    gain = residual / s
    inverse = 1.0 / s
    for a in range(size):
        means[i, a] += scratch[a] * gain
        ua = scratch[a] * inverse
        for b in range(size):
            cov[a, b] -= ua * scratch[b]
    log_density[i] = -0.5 * (residual * residual / s + np.log(s) + LOG_2PI)


@njit(cache=True, nogil=True, error_model="numpy")
def gaussian_update_kernel(means, covariances, gradients, predictions, target, noise_variance,
                           log_density):
    """EKF update of every Gaussian particle with one measurement, in place.

    Parameters
    ----------
    means : (N, P) float64, updated
    covariances : (N, P, P) float64, updated
    gradients : (N, P) float
        ``g_i = d h / d theta`` at ``m_i``.
    predictions : (N,) float64
        ``h_i``.
    target : float
        ``d``.
    noise_variance : (N,) float64
        ``rho`` per particle.
    log_density : (N,) float64, written
        ``log N(d; h_i, s_i)``.
    """
    scratch = np.empty(means.shape[1])
    for i in range(means.shape[0]):
        _update_one(i, means, covariances, gradients, predictions, target, noise_variance,
                    log_density, scratch)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def gaussian_update_parallel_kernel(means, covariances, gradients, predictions, target,
                                    noise_variance, log_density):
    """:func:`gaussian_update_kernel` with the particles on numba's threads (same bits)."""
    for i in prange(means.shape[0]):
        scratch = np.empty(means.shape[1])
        _update_one(i, means, covariances, gradients, predictions, target, noise_variance,
                    log_density, scratch)


@njit(cache=True, nogil=True, error_model="numpy")
def add_diagonal_kernel(covariances, value):
    """``P_i += value * I`` for every particle, in place."""
    for i in range(covariances.shape[0]):
        for a in range(covariances.shape[1]):
            covariances[i, a, a] += value
