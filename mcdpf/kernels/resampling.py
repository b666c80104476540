"""Resampling schemes: draw ``n_out`` ancestor indices from ``M`` normalised weights.

All four are unbiased (the expected number of copies of particle ``i`` is
``n_out * w_i``) and differ in variance: residual <= stratified, systematic <= multinomial
(Douc, Cappe & Moulines 2005). ``n_out`` may differ from ``M`` (after a random walk a node
resamples the ``M`` particles it holds back to its nominal ``N``).

Each kernel is registered in :data:`mcdpf.registry.RESAMPLING` with the trait
``uniforms(n_out)``: how many U(0, 1) draws it consumes (the caller draws them and passes
them in). Output indices are ascending.
"""

import numpy as np
from numba import njit

from ..registry import RESAMPLING


@njit(cache=True, nogil=True)
def _ancestors_at_positions(weights, positions, out):
    """For ascending ``positions`` in [0, 1) write the index whose CDF bin holds each."""
    last = weights.shape[0] - 1
    i = 0
    cumulative = weights[0]
    for k in range(positions.shape[0]):
        while positions[k] >= cumulative and i < last:
            i += 1
            cumulative += weights[i]
        out[k] = i


@RESAMPLING.register("systematic", uniforms=lambda n_out: 1)
@njit(cache=True, nogil=True)
def systematic_kernel(weights, uniforms, out):
    """One uniform ``u``: positions ``(k + u) / n_out``."""
    n_out = out.shape[0]
    positions = (np.arange(n_out) + uniforms[0]) / n_out
    _ancestors_at_positions(weights, positions, out)


@RESAMPLING.register("stratified", uniforms=lambda n_out: n_out)
@njit(cache=True, nogil=True)
def stratified_kernel(weights, uniforms, out):
    """One uniform per stratum: positions ``(k + u_k) / n_out``."""
    n_out = out.shape[0]
    positions = (np.arange(n_out) + uniforms[:n_out]) / n_out
    _ancestors_at_positions(weights, positions, out)


@RESAMPLING.register("multinomial", uniforms=lambda n_out: n_out)
@njit(cache=True, nogil=True)
def multinomial_kernel(weights, uniforms, out):
    """``n_out`` independent draws (inverse CDF of sorted uniforms)."""
    positions = np.sort(uniforms[: out.shape[0]])
    _ancestors_at_positions(weights, positions, out)


@RESAMPLING.register("residual", uniforms=lambda n_out: n_out)
@njit(cache=True, nogil=True)
def residual_kernel(weights, uniforms, out):
    """``floor(n_out w_i)`` copies each, the remainder multinomially on the residuals."""
    n_out = out.shape[0]
    count = weights.shape[0]
    residual = np.empty(count)
    filled = 0
    for i in range(count):
        expected = n_out * weights[i]
        copies = int(np.floor(expected))
        if filled + copies > n_out:
            copies = n_out - filled
        for _ in range(copies):
            out[filled] = i
            filled += 1
        residual[i] = max(expected - copies, 0.0)
    remaining = n_out - filled
    if remaining == 0:
        return
    total = residual.sum()
    if total > 0:
        residual /= total
    else:
        residual[:] = 1.0 / count
    draws = np.empty(remaining, dtype=np.int64)
    positions = np.sort(uniforms[:remaining])
    _ancestors_at_positions(residual, positions, draws)
    out[filled:] = draws
    out.sort()
