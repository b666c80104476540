"""Numba kernels and their thin, checking wrappers.

Only this package imports numba. Kernels (``*_kernel``) are pure: arrays in, buffers out,
randomness passed in. The wrappers here check shapes and dtypes, allocate outputs when
the caller gives none, and draw uniforms from a caller-owned ``numpy.random.Generator``.
Compiled code is cached on disk (``cache=True``; set ``NUMBA_CACHE_DIR`` to move it), so
JIT cost is paid once per machine; :func:`warm_up` loads or compiles every kernel before
a timed loop starts (:mod:`mcdpf.warmup`: one process compiles under
:func:`compile_lock` while the others wait, then load the cache), and
:func:`compile_seconds` is the time this process spent in numba's compiler.
"""

from __future__ import annotations

import fcntl
import functools
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numba import get_num_threads as get_num_threads  # re-exported: numba stays in here
from numba import set_num_threads as set_num_threads
from numba.core import event as _numba_event

from ..registry import RESAMPLING
from .adam import adam_update_kernel
from .counter_rng import (
    add_normal_rows_kernel,
    add_normal_rows_parallel_kernel,
    gather_add_normal_kernel,
    gather_add_normal_parallel_kernel,
    id_uniforms_kernel,
    normal_rows_kernel,
    normal_rows_parallel_kernel,
    uniforms_kernel,
)
from .counter_rng import stream_key as stream_key
from .covariance import (
    block_add_diagonal_kernel,
    block_downdate_kernel,
    block_quadratic_kernel,
    block_update_kernel,
    block_update_parallel_kernel,
    diagonal_update_kernel,
)
from .gaussian import add_diagonal_kernel
from .gradient import (
    GRADIENT_BATCH_MAX_WORK,
    lstm_population_gradient_kernel,
    lstm_population_gradient_parallel_kernel,
    lstm_prediction_gradient_kernel,
)
from .lstm import (
    add_noise_and_predict_kernel,
    lstm_batch_major_kernel,
    lstm_batch_major_parallel_kernel,
    lstm_particle_major_kernel,
    lstm_particle_major_parallel_kernel,
)
from .simd import CACHE_LINE_BYTES
from .walk import (
    pack_records_kernel,
    route_kernel,
    take_kernel,
    take_rows_kernel,
    unpack_records_kernel,
)
from .weights import (
    effective_sample_size_kernel,
    normalize_log_weights_kernel,
    weighted_mean_kernel,
    weighted_mean_parallel_kernel,
)

FLOAT_TYPES = (np.float64, np.float32)
# Models with n (n + p) up to this use the batch-major kernel (SIMD across particles);
# larger ones the particle-major kernel (crossover measured by benchmarks/kernels.py: at
# p = 2 batch-major is faster up to n = 7, particle-major from n = 8).
BATCH_MAJOR_MAX_WORK = 64


def lstm_kernel_for(hidden: int, inputs: int, parallel: bool = False):
    """The forward kernel used for a model size (batch-major for small models).

    ``parallel`` picks its multi-threaded twin (numba's threads, bit-identical results).
    """
    if hidden * (hidden + inputs) <= BATCH_MAJOR_MAX_WORK:
        return lstm_batch_major_parallel_kernel if parallel else lstm_batch_major_kernel
    return lstm_particle_major_parallel_kernel if parallel else lstm_particle_major_kernel


def lstm_parameter_count(hidden: int, inputs: int) -> int:
    """``n_theta = 4n(n + p) + 5n``."""
    return 4 * hidden * (hidden + inputs) + 5 * hidden


def lstm_mean_states(theta: np.ndarray, columns: np.ndarray, start: np.ndarray, hidden: int,
                     out: np.ndarray | None = None, parallel: bool = False) -> np.ndarray:
    """Mean-pooled ``[c_bar, y_bar]`` (N, 2n) of every particle's LSTM over one sequence.

    ``theta`` is (N, 4n(n+p)+5n), ``columns`` (m, p) with m >= 1 and ``start`` (N, 2n)
    holds ``[c(0), y(0)]``; all C-contiguous and of one float dtype. ``parallel`` runs
    the particles on numba's threads (``NUMBA_NUM_THREADS``), bit-identical to serial.
    """
    n_particles, inputs = theta.shape[0], columns.shape[1]
    states = (n_particles, 2 * hidden)
    if out is None:
        out = np.empty(states, dtype=theta.dtype)
    _check_lstm_arrays(hidden, theta, columns, population=True, start=(start, states),
                       out=(out, states))
    lstm_kernel_for(hidden, inputs, parallel)(theta, columns, start, hidden, out)
    return out


def _check_lstm_arrays(hidden: int, theta, columns, population: bool, **others) -> None:
    """Raise ``TypeError``/``ValueError`` unless the arrays fit one LSTM kernel call.

    ``theta`` (N, P) with ``population`` else (P,), ``columns`` (m, p) with m >= 1, and
    ``others`` ``name=(array, expected shape)``; all C-contiguous of one float dtype.
    """
    dtype = theta.dtype
    if dtype not in FLOAT_TYPES:
        raise TypeError(f"theta dtype {dtype} is not float64 or float32")
    size = lstm_parameter_count(hidden, columns.shape[1])
    fits = theta.ndim == 2 and theta.shape[1] == size if population else theta.shape == (size,)
    if not fits:
        expected = f"(N, {size})" if population else f"({size},)"
        raise ValueError(f"theta has shape {theta.shape}, expected {expected} for n={hidden}, "
                         f"p={columns.shape[1]}")
    if columns.shape[0] < 1:
        raise ValueError("a sequence needs at least one column")
    for name, (array, shape) in others.items():
        if array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    for name, array in (("theta", theta), ("columns", columns),
                        *((name, array) for name, (array, _) in others.items())):
        if array.dtype != dtype or not array.flags.c_contiguous:
            raise TypeError(f"{name} must be C-contiguous {dtype}")


def lstm_predict(theta: np.ndarray, columns: np.ndarray, start: np.ndarray,
                 noise: np.ndarray, hidden: int, carry_state: bool, target: float = 0.0,
                 obs_noise: float = 0.0, parallel: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictions, new state and (if ``obs_noise > 0``) log-likelihoods on one sequence.

    The state (N, 2n) is the mean-pooled ``[c_bar, y_bar]`` from ``start``, plus
    ``noise`` when the state is carried; predictions (float64) are ``w_i^T y_bar_i``;
    log-likelihoods (float64) ``log N(target; d_hat_i, obs_noise)``.
    """
    state = lstm_mean_states(theta, columns, start, hidden, parallel=parallel)
    count = theta.shape[0]
    predictions = np.empty(count)
    log_likelihood = np.empty(count if obs_noise > 0 else 0)
    add_noise_and_predict_kernel(state, noise, theta, hidden, carry_state, predictions,
                                 float(target), float(obs_noise), log_likelihood)
    return predictions, state, log_likelihood


def route(uniforms: np.ndarray, cumulative: np.ndarray):
    """Walk moves: ``(destination, counts, order)`` from U(0, 1) draws.

    ``cumulative`` is the cumulative probability of [stay, neighbour 1, ...];
    ``destination[i]`` the chosen slot of particle ``i``, ``counts`` how many chose each
    slot, ``order`` the particles sorted by slot (stable).
    """
    count = uniforms.shape[0]
    destination = np.empty(count, dtype=np.int64)
    counts = np.zeros(cumulative.shape[0], dtype=np.int64)
    order = np.empty(count, dtype=np.int64)
    route_kernel(uniforms, cumulative, destination, counts, order)
    return destination, counts, order


def take_rows(source: np.ndarray, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[i] = source[rows[i]]`` for 1-D or 2-D C-contiguous arrays (memory speed)."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if source.ndim == 1:
        take_kernel(source, rows, out)
    elif source.shape[1]:
        take_rows_kernel(source, rows, out)
    return out


@functools.lru_cache(maxsize=16)
def _record_layout(record_dtype: np.dtype):
    """``(empty array of the wire dtype, theta offset, carry offset)`` of a record dtype."""
    theta = record_dtype.fields["theta"]
    carry = record_dtype.fields["carry"]
    return np.empty(0, dtype=theta[0].base), theta[1], carry[1]


def pack_records(records: np.ndarray, rows: np.ndarray, ids, log_weight, theta, carry) -> None:
    """Fill structured wire records from the particles ``rows`` (dtype of the records)."""
    wire_like, theta_at, carry_at = _record_layout(records.dtype)
    if records.shape[0]:
        pack_records_kernel(records.view(np.uint8).reshape(records.shape[0], -1),
                            np.ascontiguousarray(rows, dtype=np.int64), ids, log_weight,
                            theta, carry, wire_like, theta_at, carry_at)


def unpack_records(records: np.ndarray, ids, log_weight, theta, carry) -> None:
    """Read structured wire records into the given (tail) arrays, converting the dtype."""
    wire_like, theta_at, carry_at = _record_layout(records.dtype)
    if records.shape[0]:
        unpack_records_kernel(records.view(np.uint8).reshape(records.shape[0], -1), ids,
                              log_weight, theta, carry, wire_like, theta_at, carry_at)


def lstm_prediction_gradient(theta: np.ndarray, columns: np.ndarray, start: np.ndarray,
                             hidden: int) -> tuple[float, np.ndarray, np.ndarray]:
    """``(d_hat, d d_hat / d theta, [c_bar, y_bar])`` of one parameter vector on a sequence.

    ``theta`` (P,), ``columns`` (m, p) with m >= 1, ``start`` (2n,); one float dtype.
    """
    _check_lstm_arrays(hidden, theta, columns, population=False, start=(start, (2 * hidden,)))
    gradient = np.empty_like(theta)
    mean_state = np.empty(2 * hidden, dtype=theta.dtype)
    prediction = lstm_prediction_gradient_kernel(theta, columns, start, hidden, gradient,
                                                 mean_state)
    return float(prediction), gradient, mean_state


def lstm_population_gradient(theta: np.ndarray, columns: np.ndarray, start: np.ndarray,
                             hidden: int, parallel: bool = False
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(d_hat, d d_hat / d theta, [c_bar, y_bar])`` of every particle on one sequence.

    ``theta`` (N, P), ``columns`` (m, p) with m >= 1, ``start`` (N, 2n); one float dtype.
    Returns predictions (N,) float64, gradients (N, P) and mean states (N, 2n) in that
    dtype; row ``i`` is :func:`lstm_prediction_gradient` of particle ``i``. ``parallel``
    runs on numba's threads (bit-identical results).
    """
    count = theta.shape[0]
    _check_lstm_arrays(hidden, theta, columns, population=True,
                       start=(start, (count, 2 * hidden)))
    dtype, inputs = theta.dtype, columns.shape[1]
    gradient = np.empty_like(theta)
    mean_state = np.empty((count, 2 * hidden), dtype=dtype)
    predictions = np.empty(count)
    small = hidden * (hidden + inputs) <= GRADIENT_BATCH_MAX_WORK
    kernel = (lstm_population_gradient_parallel_kernel if parallel and not small
              else lstm_population_gradient_kernel)
    kernel(theta, columns, start, hidden, gradient, mean_state, predictions)
    return predictions, gradient, mean_state


def normalize_log_weights(log_weights: np.ndarray,
                          weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Normalised weights and ``logsumexp(log_weights)`` (``-inf``: degenerate, uniform)."""
    log_weights = np.ascontiguousarray(log_weights, dtype=np.float64)
    if log_weights.size == 0:
        raise ValueError("no weights to normalise")
    if weights is None:
        weights = np.empty_like(log_weights)
    log_total = normalize_log_weights_kernel(log_weights, weights)
    return weights, float(log_total)


def effective_sample_size(weights: np.ndarray) -> float:
    """ESS ``1 / sum(w^2)`` of normalised float64 weights."""
    return float(effective_sample_size_kernel(np.ascontiguousarray(weights,
                                                                   dtype=np.float64)))


def resample(scheme: str, weights: np.ndarray, n_out: int,
             rng: np.random.Generator) -> np.ndarray:
    """Ancestor indices (int64, ascending, length ``n_out``) drawn by ``scheme``."""
    return resample_by(scheme, weights, n_out, rng.random)


def resample_by(scheme: str, weights: np.ndarray, n_out: int, uniforms) -> np.ndarray:
    """As :func:`resample`, with ``uniforms(count)`` the U(0, 1) draws the scheme needs."""
    entry = RESAMPLING.entry(scheme)
    draws = uniforms(entry.traits["uniforms"](n_out))
    out = np.empty(n_out, dtype=np.int64)
    entry.target(np.ascontiguousarray(weights, dtype=np.float64), draws, out)
    return out


def _check_counter(step: int, key) -> tuple[int, int]:
    if not 0 <= step < 2 ** 32:
        raise ValueError(f"step {step} is outside the 32-bit counter range [0, 2^32)")
    k0, k1 = (int(word) for word in key)
    if not (0 <= k0 < 2 ** 32 and 0 <= k1 < 2 ** 32):
        raise ValueError(f"key {key} is not two 32-bit words (see stream_key)")
    return k0, k1


def _check_rows(name: str, array: np.ndarray, rows: int | None = None) -> None:
    if array.ndim != 2 or array.dtype not in FLOAT_TYPES or not array.flags.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous 2-D float64 or float32 array")
    if rows is not None and array.shape[0] != rows:
        raise ValueError(f"{name} has {array.shape[0]} rows, expected {rows}")


def _check_ids(ids: np.ndarray, rows: int) -> np.ndarray:
    if ids.dtype != np.int64 or ids.shape != (rows,):
        raise TypeError(f"ids must be int64 of shape ({rows},)")
    return np.ascontiguousarray(ids)


def normal_rows(out: np.ndarray, ids: np.ndarray, step: int, key, scale: float = 1.0,
                add: bool = False, parallel: bool = False) -> np.ndarray:
    """``out[i, j] (+)= scale * z(key, step, ids[i], j)``, counter-based normals, in place.

    ``out`` (N, P) C-contiguous float64 or float32, ``ids`` (N,) int64 particle ids,
    ``key`` from :func:`stream_key`; format in :mod:`mcdpf.kernels.counter_rng`.
    """
    _check_rows("out", out)
    ids = _check_ids(ids, out.shape[0])
    k0, k1 = _check_counter(step, key)
    if parallel:
        kernel = add_normal_rows_parallel_kernel if add else normal_rows_parallel_kernel
    else:
        kernel = add_normal_rows_kernel if add else normal_rows_kernel
    kernel(out, ids, step, k0, k1, float(scale))
    return out


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a cache line (64 bytes).

    numpy aligns its arrays to 16 bytes; the particle-major LSTM kernel reads each gate row
    in 64-byte vectors, which then straddle two cache lines (``benchmarks/kernels.py``
    times both). Every row stays aligned when a row is a multiple of 64 bytes, as the
    parameter vectors of ``n`` a multiple of 16 are.
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(size + CACHE_LINE_BYTES, dtype=np.uint8)
    start = -buffer.ctypes.data % CACHE_LINE_BYTES
    return buffer[start:start + size].view(dtype).reshape(shape)


def gather_add_normal(source: np.ndarray, ancestors: np.ndarray, ids: np.ndarray, step: int,
                      key, scale: float, out: np.ndarray | None = None,
                      parallel: bool = False) -> np.ndarray:
    """``out[i] = source[ancestors[i]] + scale * z(key, step, ids[i], :)`` in one pass.

    Bit-identical to ``source[ancestors] + normal_rows(...)``; ``out`` must not be
    ``source``, and is allocated on a cache line (:func:`aligned_empty`) if not given: it
    holds the propagated parameters that the LSTM kernels read next.
    """
    _check_rows("source", source)
    if ancestors.dtype != np.int64 or ancestors.ndim != 1:
        raise TypeError("ancestors must be a 1-D int64 array")
    ancestors = np.ascontiguousarray(ancestors)
    if ancestors.size and (ancestors.min() < 0 or ancestors.max() >= source.shape[0]):
        raise ValueError(f"ancestors outside [0, {source.shape[0]})")
    if out is None:
        out = aligned_empty((ancestors.shape[0], source.shape[1]), source.dtype)
    _check_rows("out", out, ancestors.shape[0])
    if out.dtype != source.dtype or out.shape[1] != source.shape[1]:
        raise ValueError(f"out {out.shape} {out.dtype} does not match source "
                         f"{source.shape} {source.dtype}")
    if np.may_share_memory(out, source):
        raise ValueError("out and source must be distinct arrays")
    ids = _check_ids(ids, out.shape[0])
    k0, k1 = _check_counter(step, key)
    kernel = gather_add_normal_parallel_kernel if parallel else gather_add_normal_kernel
    kernel(out, source, ancestors, ids, step, k0, k1, float(scale))
    return out


def random_uniforms(count: int, step: int, stream: int, key,
                    out: np.ndarray | None = None) -> np.ndarray:
    """``count`` float64 uniforms in (0, 1) from counters ``(k // 2, step, stream)``.

    ``stream`` (``0 <= stream < 2^64``) fills counter words 2 and 3 (low, high).
    """
    if not 0 <= stream < 2 ** 64:
        raise ValueError(f"stream {stream} is outside [0, 2^64)")
    k0, k1 = _check_counter(step, key)
    if out is None:
        out = np.empty(count, dtype=np.float64)
    if out.dtype != np.float64 or out.shape != (count,) or not out.flags.c_contiguous:
        raise TypeError(f"out must be C-contiguous float64 of shape ({count},)")
    uniforms_kernel(out, step, stream & 0xFFFFFFFF, stream >> 32, k0, k1)
    return out


def id_uniforms(ids: np.ndarray, step: int, block: int, key,
                out: np.ndarray | None = None) -> np.ndarray:
    """One float64 uniform in (0, 1) per particle id, from counter ``(block, step, id)``."""
    k0, k1 = _check_counter(step, key)
    if not 0 <= block < 2 ** 32:
        raise ValueError(f"block {block} is outside [0, 2^32)")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if out is None:
        out = np.empty(ids.shape[0])
    id_uniforms_kernel(out, ids, step, block, k0, k1)
    return out


def weighted_mean(weights: np.ndarray, values: np.ndarray,
                  parallel: bool = False) -> np.ndarray:
    """``sum_i w_i values[i, :]`` in float64, reading ``values`` in place (any row stride).

    Partial sums over fixed blocks of rows, added in order: the same bits serial or
    ``parallel``.
    """
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != weights.shape[0]:
        raise ValueError(f"values {values.shape} do not match {weights.shape[0]} weights")
    if values.dtype not in FLOAT_TYPES:
        raise TypeError(f"values dtype {values.dtype} is not float64 or float32")
    out = np.empty(values.shape[1])
    (weighted_mean_parallel_kernel if parallel else weighted_mean_kernel)(weights, values, out)
    return out


def gaussian_update(means: np.ndarray, covariances: np.ndarray, gradients: np.ndarray,
                    predictions: np.ndarray, target: float, noise_variance: np.ndarray,
                    parallel: bool = False,
                    pending: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """EKF update of Gaussian particles with one measurement, in place; log densities.

    ``means`` (N, P) and ``covariances`` (N, P, P) float64 C-contiguous, ``gradients``
    (N, P), ``predictions`` and ``noise_variance`` (N,) float64. The dense covariance is
    one block of :func:`block_update` (``pending``: as there).
    """
    count, size = means.shape
    if covariances.shape != (count, size, size) or covariances.dtype != np.float64 \
            or not covariances.flags.c_contiguous:
        raise TypeError(f"covariances must be C-contiguous float64 ({count}, {size}, {size})")
    return _update(means, covariances.reshape(count, size * size), dense_layout(size),
                   gradients, predictions, target, noise_variance, parallel, pending, True)


@functools.lru_cache(maxsize=8)
def dense_layout(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The block layout ``(starts, index, offsets)`` of a dense ``size`` x ``size`` matrix."""
    return (np.array([0, size * size], dtype=np.int64), np.arange(size, dtype=np.int64),
            np.array([0, size], dtype=np.int64))


def add_diagonal(covariances: np.ndarray, value: float) -> np.ndarray:
    """``P_i += value * I`` in place (float64, (N, P, P))."""
    add_diagonal_kernel(covariances, float(value))
    return covariances


def adam_update(theta: np.ndarray, first_moment: np.ndarray, second_moment: np.ndarray,
                gradient: np.ndarray, step_size: float, beta1: float, beta2: float,
                eps: float, updates: int) -> None:
    """Adam step of ``theta`` along the loss gradient; moments updated in place.

    ``theta``, ``first_moment``, ``second_moment`` (P,) C-contiguous float64, ``gradient``
    (P,) (converted to float64); ``updates`` counts the updates including this one (>= 1).
    """
    size = theta.shape[0]
    for name, array in (("theta", theta), ("first_moment", first_moment),
                        ("second_moment", second_moment)):
        if array.shape != (size,) or array.dtype != np.float64 \
                or not array.flags.c_contiguous:
            raise TypeError(f"{name} must be C-contiguous float64 of shape ({size},)")
    gradient = np.ascontiguousarray(gradient, dtype=np.float64)
    if gradient.shape != (size,):
        raise ValueError(f"gradient has shape {gradient.shape}, expected ({size},)")
    if updates < 1:
        raise ValueError(f"updates must be >= 1, got {updates}")
    adam_update_kernel(theta, first_moment, second_moment, gradient, float(step_size),
                       float(beta1), float(beta2), float(eps), 1.0 - float(beta1) ** updates,
                       1.0 - float(beta2) ** updates)


def _check_gaussians(means: np.ndarray, state: np.ndarray, name: str) -> None:
    if means.dtype != np.float64 or not means.flags.c_contiguous:
        raise TypeError("means must be C-contiguous float64")
    if state.dtype != np.float64 or not state.flags.c_contiguous \
            or state.shape[0] != means.shape[0]:
        raise TypeError(f"{name} must be C-contiguous float64 with {means.shape[0]} rows")


def _float64_input(values) -> np.ndarray:
    """``values`` as a C-contiguous, writeable float64 array (copied only if need be).

    A read-only array (``np.broadcast_to``) is a distinct numba type: passing one would
    compile a second specialisation of the kernel, inside the timed loop.
    """
    return np.require(values, dtype=np.float64, requirements=("C", "W"))


def _measurement(means, gradients, predictions, noise_variance):
    gradients = _float64_input(gradients)
    if gradients.shape != means.shape:
        raise ValueError(f"gradients have shape {gradients.shape}, expected {means.shape}")
    return gradients, _float64_input(predictions), _float64_input(noise_variance)


def diagonal_update(means: np.ndarray, variances: np.ndarray, gradients: np.ndarray,
                    predictions: np.ndarray, target: float,
                    noise_variance: np.ndarray) -> np.ndarray:
    """EKF update of diagonal-covariance Gaussians, in place; log predictive densities.

    ``means`` and ``variances`` (N, P) float64 C-contiguous, ``gradients`` (N, P),
    ``predictions`` and ``noise_variance`` (N,).
    """
    _check_gaussians(means, variances, "variances")
    if variances.shape != means.shape:
        raise TypeError(f"variances have shape {variances.shape}, expected {means.shape}")
    gradients, predictions, noise_variance = _measurement(means, gradients, predictions,
                                                          noise_variance)
    log_density = np.empty(means.shape[0])
    diagonal_update_kernel(means, variances, gradients, predictions, float(target),
                           noise_variance, log_density)
    return log_density


def block_update(means: np.ndarray, blocks: np.ndarray, layout, gradients: np.ndarray,
                 predictions: np.ndarray, target: float, noise_variance: np.ndarray,
                 pending: tuple[np.ndarray, np.ndarray] | None = None,
                 parallel: bool = False) -> np.ndarray:
    """EKF update of block-diagonal-covariance Gaussians, in place; log predictive densities.

    ``blocks`` (N, S) float64 holds every block row-major; ``layout`` is ``(starts, index,
    offsets)`` (:func:`mcdpf.kernels.covariance.block_update_kernel`). With ``pending``
    (from :func:`block_pending`), the covariance downdate is left pending in it, applied in
    the same pass as the next call's products or by :func:`block_downdate`: until then
    ``blocks`` is not the covariance. ``parallel``: the Gaussians on numba's threads.
    """
    return _update(means, blocks, layout, gradients, predictions, target, noise_variance,
                   parallel, pending, False)


def _update(means, blocks, layout, gradients, predictions, target, noise_variance, parallel,
            pending, noise_first):
    _check_gaussians(means, blocks, "covariances")
    gradients, predictions, noise_variance = _measurement(means, gradients, predictions,
                                                          noise_variance)
    log_density = np.empty(means.shape[0])
    defer = pending is not None
    previous, scale = pending if defer else block_pending(means.shape[0], means.shape[1])
    kernel = block_update_parallel_kernel if parallel else block_update_kernel
    kernel(means, blocks, *layout, gradients, predictions, float(target), noise_variance,
           log_density, np.empty_like(means), previous, scale, defer, noise_first)
    return log_density


def block_pending(count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """No pending downdate of ``count`` block-diagonal covariances of ``size`` weights."""
    return np.zeros((count, size)), np.zeros(count)


def block_downdate(blocks: np.ndarray, layout, pending) -> np.ndarray:
    """Apply the downdates :func:`block_update` left ``pending``, in place; clear them."""
    starts, _, offsets = layout
    block_downdate_kernel(blocks, starts, offsets, *pending)
    return blocks


def block_quadratic(blocks: np.ndarray, layout, gradients: np.ndarray) -> np.ndarray:
    """``g_i^T P_i g_i`` (N,) of block-diagonal covariances (see :func:`block_update`)."""
    out = np.empty(blocks.shape[0])
    block_quadratic_kernel(blocks, *layout, np.ascontiguousarray(gradients, dtype=np.float64),
                           out)
    return out


def block_add_diagonal(blocks: np.ndarray, layout, value: float) -> np.ndarray:
    """``P_i += value * I`` in place of block-diagonal covariances (see :func:`block_update`)."""
    starts, _, offsets = layout
    block_add_diagonal_kernel(blocks, starts, offsets, float(value))
    return blocks


def set_threads(count: int) -> None:
    """Use ``count`` numba threads for the ``parallel`` kernels (at most NUMBA_NUM_THREADS)."""
    if count > get_num_threads_limit():
        raise ValueError(f"run.threads = {count} exceeds the {get_num_threads_limit()} "
                         "threads numba may start (set NUMBA_NUM_THREADS)")
    set_num_threads(count)


def get_num_threads_limit() -> int:
    """Most threads numba may start in this process (``NUMBA_NUM_THREADS``)."""
    from numba import config

    return int(config.NUMBA_NUM_THREADS)


def compile_seconds() -> float:
    """Seconds this process has spent in numba's compiler (compiling or loading the cache)."""
    return _COMPILER_TIMER.duration if _COMPILER_TIMER.done else 0.0


def cache_directory() -> Path:
    """Where numba caches this package's compiled kernels (``NUMBA_CACHE_DIR`` moves it)."""
    return Path(lstm_batch_major_kernel._cache.cache_path)


def cache_is_cold(parallel: bool = False, units=None) -> bool:
    """Whether a kernel that :func:`warm_up` loads has no compiled code in the cache yet.

    Looks for the cache index of every kernel of ``units`` (names of
    :data:`KERNEL_UNITS`; ``None``: all), the parallel twins with ``parallel``; a stale
    index (changed source) is not detected here, and numba recompiles it when loading.
    """
    for name in units if units is not None else KERNEL_UNITS:
        for kernel in _unit_kernels(name, parallel):
            index = getattr(getattr(getattr(kernel, "_cache", None), "_cache_file", None),
                            "_index_path", None)
            if index is not None and not Path(index).is_file():
                return True
    return False


@contextmanager
def compile_lock():
    """Hold an exclusive lock on the kernel cache (a file lock: no MPI needed).

    Processes that would compile the same kernels take turns: the first compiles and
    writes the cache, the others then load it.
    """
    directory = cache_directory()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "mcdpf-compile.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Warm-up units: what a run loads (or compiles) before its loop, by name. A learner
# names the units it calls (AlgorithmTraits.kernels); "resampling:<scheme>" is one
# scheme of mcdpf.registry.RESAMPLING.
KERNEL_UNITS = ("lstm_batch_major", "lstm_particle_major", "lstm_predict",
                "prediction_gradient", "population_gradient", "weights", "normal_rows",
                "particle_noise", "walk", "gaussian", "diagonal", "decoupled", "adam",
                *(f"resampling:{scheme}" for scheme in RESAMPLING.names()))


def forward_unit(hidden: int, inputs: int) -> str:
    """The warm-up unit of the forward kernel :func:`lstm_kernel_for` picks."""
    return "lstm_batch_major" if hidden * (hidden + inputs) <= BATCH_MAJOR_MAX_WORK \
        else "lstm_particle_major"


def _unit_kernels(name: str, parallel: bool) -> tuple:
    """The kernels (dispatchers) unit ``name`` loads; the parallel twins with ``parallel``."""
    if name.startswith("resampling:"):
        return (RESAMPLING[name.split(":", 1)[1]],)
    serial, twins = {
        "lstm_batch_major": ((lstm_batch_major_kernel,), (lstm_batch_major_parallel_kernel,)),
        "lstm_particle_major": ((lstm_particle_major_kernel,),
                                (lstm_particle_major_parallel_kernel,)),
        "lstm_predict": ((add_noise_and_predict_kernel,), ()),
        "prediction_gradient": ((lstm_prediction_gradient_kernel,), ()),
        "population_gradient": ((lstm_population_gradient_kernel,),
                                (lstm_population_gradient_parallel_kernel,)),
        "weights": ((normalize_log_weights_kernel, effective_sample_size_kernel,
                     weighted_mean_kernel), (weighted_mean_parallel_kernel,)),
        "normal_rows": ((normal_rows_kernel, add_normal_rows_kernel),
                        (normal_rows_parallel_kernel, add_normal_rows_parallel_kernel)),
        "particle_noise": ((gather_add_normal_kernel, uniforms_kernel, id_uniforms_kernel),
                           (gather_add_normal_parallel_kernel,)),
        "walk": ((route_kernel, take_kernel, take_rows_kernel, pack_records_kernel,
                  unpack_records_kernel), ()),
        "gaussian": ((add_diagonal_kernel, block_update_kernel, block_downdate_kernel),
                     (block_update_parallel_kernel,)),
        "diagonal": ((diagonal_update_kernel,), ()),
        "decoupled": ((block_add_diagonal_kernel, block_update_kernel,
                       block_downdate_kernel, block_quadratic_kernel),
                      (block_update_parallel_kernel,)),
        "adam": ((adam_update_kernel,), ()),
    }[name]
    return serial + twins if parallel else serial


def warm_up(dtype, parallel: bool = False, progress=None, units=None) -> None:
    """Load (or compile) the kernels of ``units`` for ``dtype`` before timing starts.

    ``units``: names of :data:`KERNEL_UNITS` (``None``: every unit). The
    ``*_parallel_kernel`` twins only with ``parallel``: running one starts numba's
    thread pool, which an MPI rank per core should not do. ``progress(done, total)`` is
    called after each unit.
    """
    calls = _warm_up_calls(np.dtype(dtype), parallel)
    names = list(KERNEL_UNITS if units is None else dict.fromkeys(units))
    unknown = sorted(set(names) - set(calls))
    if unknown:
        raise ValueError(f"unknown warm-up units {unknown}; known: {list(calls)}")
    for done, name in enumerate(names, start=1):
        calls[name]()
        if progress is not None:
            progress(done, len(names))


def _warm_up_calls(dtype, parallel: bool) -> dict:
    """The call (of no arguments) that loads each unit of :data:`KERNEL_UNITS`."""
    threads = (False, True) if parallel else (False,)
    theta = np.zeros((1, lstm_parameter_count(1, 1)), dtype=dtype)
    weights = np.full(2, 0.5)
    rows, ids = np.zeros((2, 3), dtype=dtype), np.arange(2, dtype=np.int64)
    means, covariances = np.zeros((2, 3)), np.zeros((2, 3, 3))

    def forward(kernels):
        for kernel in kernels[:2 if parallel else 1]:
            kernel(theta, np.zeros((1, 1), dtype=dtype), np.zeros((1, 2), dtype=dtype), 1,
                   np.empty((1, 2), dtype=dtype))

    def prediction_gradient():
        lstm_prediction_gradient(theta[0], np.zeros((1, 1), dtype=dtype),
                                 np.zeros(2, dtype=dtype), 1)

    def population_gradient():
        for hidden in (1, 16):  # both paths of the population gradient (by model size)
            big = np.zeros((1, lstm_parameter_count(hidden, 1)), dtype=dtype)
            for threaded in threads:
                lstm_population_gradient(big, np.zeros((1, 1), dtype=dtype),
                                         np.zeros((1, 2 * hidden), dtype=dtype), hidden,
                                         parallel=threaded)

    def predict():
        lstm_predict(theta, np.zeros((1, 1), dtype=dtype), np.zeros((1, 2), dtype=dtype),
                     np.zeros((1, 2), dtype=dtype), 1, True)

    def weighting():
        normalize_log_weights(np.zeros(2))
        effective_sample_size(weights)
        for threaded in threads:
            weighted_mean(np.ones(2), rows, parallel=threaded)

    def normal():
        for threaded in threads:
            for add in (False, True):
                normal_rows(rows, ids, 0, (0, 0), add=add, parallel=threaded)

    def particle_noise():
        for threaded in threads:
            gather_add_normal(rows, ids, ids, 0, (0, 0), 1.0, parallel=threaded)
        random_uniforms(3, 0, 0, (0, 0))
        id_uniforms(ids, 0, 0, (0, 0))

    def gaussian():
        add_diagonal(covariances, 1.0)
        pending = block_pending(2, 3)
        for threaded in threads:
            gaussian_update(means, covariances, np.ones((2, 3)), np.zeros(2), 0.0, np.ones(2),
                            parallel=threaded, pending=pending)
        block_downdate(covariances.reshape(2, 9), dense_layout(3), pending)

    def diagonal():
        diagonal_update(means, np.ones((2, 3)), np.ones((2, 3)), np.zeros(2), 0.0, np.ones(2))

    def decoupled():
        layout = (np.array([0, 4, 5]), np.arange(3), np.array([0, 2, 3]))
        blocks = block_add_diagonal(np.zeros((2, 5)), layout, 1.0)
        pending = block_pending(2, 3)
        for threaded in threads:
            block_update(means, blocks, layout, np.ones((2, 3)), np.zeros(2), 0.0, np.ones(2),
                         pending, parallel=threaded)
        block_downdate(blocks, layout, pending)
        block_quadratic(blocks, layout, np.ones((2, 3)))

    def adam():
        adam_update(np.zeros(3), np.zeros(3), np.zeros(3), np.ones(3), 0.1, 0.9, 0.999, 1e-8,
                    1)

    def walk():
        route(np.zeros(2), np.array([0.5, 1.0]))
        log_weight = np.zeros(2)
        for source in (log_weight, ids, rows):  # take_rows of 1-D and 2-D arrays
            take_rows(source, ids, np.empty_like(source))
        for wire in {dtype, np.dtype(np.float32)}:  # filter.wire_dtype
            records = np.zeros(2, dtype=[("id", "<i8"), ("log_weight", "<f8"),
                                         ("theta", wire, (3,)), ("carry", wire, (3,))])
            pack_records(records, ids, ids, log_weight, rows, rows)
            unpack_records(records, ids.copy(), log_weight.copy(), rows.copy(), rows.copy())

    def resampling(scheme):
        return lambda: resample(scheme, weights, 2, np.random.default_rng(0))

    calls = {
        "lstm_batch_major": lambda: forward((lstm_batch_major_kernel,
                                             lstm_batch_major_parallel_kernel)),
        "lstm_particle_major": lambda: forward((lstm_particle_major_kernel,
                                                lstm_particle_major_parallel_kernel)),
        "lstm_predict": predict, "prediction_gradient": prediction_gradient,
        "population_gradient": population_gradient, "weights": weighting,
        "normal_rows": normal, "particle_noise": particle_noise, "walk": walk,
        "gaussian": gaussian, "diagonal": diagonal, "decoupled": decoupled, "adam": adam}
    return calls | {f"resampling:{scheme}": resampling(scheme) for scheme in RESAMPLING.names()}


# Time spent in numba's compiler by this process (compiling, or loading the disk cache).
_COMPILER_TIMER = _numba_event.TimingListener()
_numba_event.register("numba:compiler_lock", _COMPILER_TIMER)
