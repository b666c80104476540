"""Extended-Kalman updates of a population of Gaussian particles (``filter.kernel = gaussian``).

Particle ``i`` is a Gaussian ``N(m_i, P_i)`` over the parameters. One scalar measurement
``d`` with prediction ``h_i`` and gradient ``g_i`` at ``m_i`` and noise variance ``rho``
updates every particle in place::

    u = P_i g_i,  s = g_i^T u + rho,  m_i += u (d - h_i) / s,  P_i -= u u^T / s

and returns the log predictive density ``log N(d; h_i, s)`` (the particle's weight
factor). ``P_i`` stays symmetric to rounding: ``(u[a] / s) u[b]`` and ``(u[b] / s) u[a]``
can differ in the last bit, so the two triangles may drift apart at that level.
Means and covariances are float64. The update is the one-block case of the block-diagonal
kernel (:func:`mcdpf.kernels.covariance.block_update_kernel`: rows eight at a time, the
downdate deferrable into the next measurement's pass), with ``s`` summed from ``rho``.
"""

from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")
def add_diagonal_kernel(covariances, value):
    """``P_i += value * I`` for every particle, in place."""
    for i in range(covariances.shape[0]):
        for a in range(covariances.shape[1]):
            covariances[i, a, a] += value
