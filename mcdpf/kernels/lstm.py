"""Particle-LSTM forward kernels: every particle runs its own LSTM over one sequence.

Parameter layout of one particle's flat vector ``theta`` (length ``4n(n+p) + 5n``), gates
stacked in the order ``i, f, z, o`` into ``G = 4n`` rows (row ``r = g*n + u`` is unit ``u``
of gate ``g``):

==============================  ===============  ===================================
block                           length           element
==============================  ===============  ===================================
``M = [W R]``, row-major        ``G * (p + n)``  ``[r (p + n) + j] = W_g[u, j]``,
                                                 ``[r (p + n) + p + j] = R_g[u, j]``
biases ``b``                    ``G``            ``[r] = b_g[u]``
output weights ``w``            ``n``            ``[u] = w[u]``
==============================  ===============  ===================================

so the gate pre-activations of a column are one matrix-vector product
``a = b + M [x(l); y(l-1)]``, each row a contiguous dot product of length ``p + n``
(measured fastest of the layouts tried, ``benchmarks/kernels.py``).

Two kernels compute the same thing; :func:`mcdpf.kernels.lstm_mean_states` picks one by
model size (measured in ``benchmarks/kernels.py``):

``particle-major`` (large ``n``)
    One particle at a time, its weights staying in cache; the gate rows ``[W R]`` are
    multiplied with ``[x(l); y(l-1)]`` one vector of rows at a time (64 bytes with
    AVX-512, 32 without) by the explicit SIMD block of :mod:`mcdpf.kernels.simd` (one
    transpose-reduce per block instead of a horizontal reduction per row), odd columns
    walking the rows backwards so that those still in L1 come first, the next particle's
    weights prefetched into L2 meanwhile; the filters pass ``theta`` on a cache line
    (:func:`mcdpf.kernels.aligned_empty`), so that each vector load stays within one line
    when a row is a multiple of 64 bytes. (Projecting all ``m`` inputs ``W X`` before
    the recurrence was measured slower: it reads ``W`` strided, and the fused rows
    stream.)
``batch-major`` (small ``n``)
    The particles' parameters transposed to (P, N), so that every operation runs across
    particles in SIMD lanes; this is what makes the papers' ``n = 2`` fast.

Both use the vectorisable ``sigmoid``/``tanh`` of :mod:`mcdpf.kernels.fastmath`, compile
with the ``fastmath`` flags :data:`FAST`: reassociation, contraction, no signed zeros and
reciprocal approximations (never "no NaN" or "no inf", so the NaN checks of the weight
code survive) and numpy's
error model (no zero-division branches), and run in the dtype of ``theta``.
"""

import numpy as np
from numba import literally, njit, prange

from .fastmath import sigmoid, tanh
from .simd import (
    CACHE_LINE_BYTES,
    VECTOR_BYTES,
    dot_rows,
    lanes_of,
    prefer_wide_vectors,
    prefetch_l2,
)

FAST = {"reassoc", "contract", "nsz", "arcp"}
TILE_BYTES = 32 * 1024  # batch-major tile: transposed parameters and states, within L1
TILE_LANES = 16
PARALLEL_GROUPS = 64  # work items of a parallel kernel, shared out among the threads


@njit(cache=True, nogil=True)
def private_vector(size, like):
    """A 1-D scratch array of ``size`` (or more) elements of ``like``'s dtype, alone on its lines.

    The middle row of a (3, max(size, line)) array: small arrays allocated by two threads
    can share a cache line, and writing them then serialises the threads (measured: the
    parallel particle-major kernel with 2 threads 1.8x slower than with one at n = 16,
    p = 4); a row of a C-contiguous array stays C-contiguous, so the loops still vectorise.
    """
    line = CACHE_LINE_BYTES // like.itemsize
    return np.empty((3, max(size, line)), dtype=like.dtype)[1]


@njit(cache=True, nogil=True)
def private_matrix(rows, columns, like):
    """A C-contiguous (rows, columns) scratch array alone on its cache lines.

    The middle rows of a taller array (see :func:`private_vector`).
    """
    row_bytes = max(columns * like.itemsize, 1)
    guard = (CACHE_LINE_BYTES + row_bytes - 1) // row_bytes
    return np.empty((rows + 2 * guard, columns), dtype=like.dtype)[guard:guard + rows]


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _particle_major_range(theta, columns, start, hidden, mean_state, first, stop,
                          vector_bytes):
    """Particles ``first .. stop - 1`` of :func:`lstm_particle_major_kernel`.

    ``vector_bytes`` (a literal: 32 or 64) is the width of the SIMD row blocks; the public
    kernels pass :data:`mcdpf.kernels.simd.VECTOR_BYTES`.
    """
    literally(vector_bytes)
    # Gate rows are taken L at a time (L = lanes of one vector_bytes vector) by the
    # explicit SIMD block of mcdpf.kernels.simd: [W R] rows against z = [x(l), y(l-1)].
    # Odd columns walk the blocks backwards, so the rows the previous column read last
    # (still in L1) come first; each block prefetches the next one it will read into L1,
    # and a few lines of the next particle's [W R] into L2, spread over the whole sequence
    # (measured faster than none, and than all of them in the first column).
    prefer_wide_vectors()
    length, inputs = columns.shape
    n = hidden
    gates = 4 * n
    width = inputs + n
    bias = gates * width
    dtype = theta.dtype
    inverse_length = dtype.type(1.0) / length
    lanes = lanes_of(theta.itemsize, vector_bytes)
    blocks = gates // lanes
    line = CACHE_LINE_BYTES // theta.itemsize
    calls = max(1, length * blocks)  # block products per particle
    ahead_per_block = ((bias + line - 1) // line + calls - 1) // calls
    z = private_vector(width, theta)  # [x(l), y(l-1)]
    a = private_vector(gates, theta)
    c = private_vector(n, theta)
    c_sum = private_vector(n, theta)
    y_sum = private_vector(n, theta)
    for i in range(first, stop):
        row = theta[i]
        weights = row[:bias].reshape((gates, width))
        biases = row[bias:bias + gates]
        upcoming = theta[min(i + 1, theta.shape[0] - 1)]
        cursor = 0
        for u in range(n):
            c[u] = start[i, u]
            z[inputs + u] = start[i, n + u]
            c_sum[u] = 0
            y_sum[u] = 0
        for step in range(length):
            for j in range(inputs):
                z[j] = columns[step, j]
            for r in range(gates):
                a[r] = biases[r]
            backward = step % 2 == 1
            for k in range(blocks):
                block = blocks - 1 - k if backward else k
                following = block - 1 if backward else block + 1
                if following < 0 or following >= blocks:
                    following = block
                dot_rows(row, block * lanes * width, width, z, width, a, block * lanes,
                         (following - block) * lanes * width, vector_bytes)
                for _ in range(ahead_per_block):
                    if cursor < bias:
                        prefetch_l2(upcoming, cursor)
                        cursor += line
            for r in range(blocks * lanes, gates):
                total = a[r]
                weight = weights[r]
                for j in range(width):
                    total += weight[j] * z[j]
                a[r] = total
            for u in range(n):
                cell = sigmoid(a[u]) * tanh(a[2 * n + u]) + sigmoid(a[n + u]) * c[u]
                out = sigmoid(a[3 * n + u]) * tanh(cell)
                c[u] = cell
                z[inputs + u] = out
                c_sum[u] += cell
                y_sum[u] += out
        for u in range(n):
            mean_state[i, u] = c_sum[u] * inverse_length
            mean_state[i, n + u] = y_sum[u] * inverse_length


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def lstm_particle_major_kernel(theta, columns, start, hidden, mean_state):
    """Mean-pooled ``[c_bar, y_bar]`` of every particle, one particle at a time.

    Parameters
    ----------
    theta : (N, P) float array
        One parameter vector per particle, layout in the module docstring.
    columns : (m, p) float array, same dtype, m >= 1
        The sequence ``x(1..m)``.
    start : (N, 2n) float array
        ``[c(0), y(0)]`` of each particle.
    hidden : int
        ``n``.
    mean_state : (N, 2n) float array, written
        ``[mean_l c(l), mean_l y(l)]``.
    """
    _particle_major_range(theta, columns, start, hidden, mean_state, 0, theta.shape[0],
                          VECTOR_BYTES)


@njit(cache=True, nogil=True)
def batch_tile(n_particles, hidden, inputs, itemsize):
    """Particles per batch-major tile (depends on the model and dtype, never on threads)."""
    gates = 4 * hidden
    scratch_rows = gates * (inputs + hidden) + 2 * gates + 4 * hidden
    tile = TILE_BYTES // (scratch_rows * itemsize)
    tile = max(TILE_LANES, tile - tile % TILE_LANES)
    return max(1, min(tile, n_particles))


@njit(cache=True, nogil=True)
def work_groups(items):
    """Contiguous groups of work items for ``prange`` (:data:`PARALLEL_GROUPS` at most).

    Fixed, not per thread (numba's thread count is a dynamic global, which would stop the
    kernels from caching); which thread runs which group never changes a result, since
    every item is computed by the same code whatever group it falls in.
    """
    return max(1, min(items, PARALLEL_GROUPS))


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _batch_major_tiles(theta, columns, start, hidden, mean_state, tile, first_tile, stop_tile):
    """Tiles ``first_tile .. stop_tile - 1`` (of ``tile`` particles) of the batch-major kernel."""
    n_particles = theta.shape[0]
    length, inputs = columns.shape
    n = hidden
    gates = 4 * n
    width = inputs + n
    bias = gates * width
    rows = bias + gates
    dtype = theta.dtype
    inverse_length = dtype.type(1.0) / length
    scratch_rows = rows + gates + 4 * n
    # One scratch allocation for everything; explicit transposes (numba's generic
    # strided copy is several times slower).
    scratch = np.empty(scratch_rows * tile, dtype=dtype)
    for index in range(first_tile, stop_tile):
        first = index * tile
        count = min(tile, n_particles - first)
        block = scratch[:scratch_rows * count].reshape((scratch_rows, count))
        lanes = block[:rows]
        a = block[rows:rows + gates]
        c = block[rows + gates:rows + gates + n]
        y = block[rows + gates + n:rows + gates + 2 * n]
        c_sum = block[rows + gates + 2 * n:rows + gates + 3 * n]
        y_sum = block[rows + gates + 3 * n:]
        c_sum[:] = 0
        y_sum[:] = 0
        for k in range(count):
            th = theta[first + k]
            for q in range(rows):
                lanes[q, k] = th[q]
            for u in range(n):
                c[u, k] = start[first + k, u]
                y[u, k] = start[first + k, n + u]
        weights = lanes[:bias].reshape((gates, width, count))
        biases = lanes[bias:]
        for step in range(length):
            x = columns[step]
            for r in range(gates):
                out = a[r]
                source = biases[r]
                for k in range(count):
                    out[k] = source[k]
                for j in range(inputs):
                    weight = weights[r, j]
                    xj = x[j]
                    for k in range(count):
                        out[k] += weight[k] * xj
                for j in range(n):
                    weight = weights[r, inputs + j]
                    previous = y[j]
                    for k in range(count):
                        out[k] += weight[k] * previous[k]
            for u in range(n):
                a_i, a_f, a_z, a_o = a[u], a[n + u], a[2 * n + u], a[3 * n + u]
                c_u, y_u, cs_u, ys_u = c[u], y[u], c_sum[u], y_sum[u]
                for k in range(count):
                    cell = sigmoid(a_i[k]) * tanh(a_z[k]) + sigmoid(a_f[k]) * c_u[k]
                    out_k = sigmoid(a_o[k]) * tanh(cell)
                    c_u[k] = cell
                    y_u[k] = out_k
                    cs_u[k] += cell
                    ys_u[k] += out_k
        for k in range(count):
            for u in range(n):
                mean_state[first + k, u] = c_sum[u, k] * inverse_length
                mean_state[first + k, n + u] = y_sum[u, k] * inverse_length


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def lstm_batch_major_kernel(theta, columns, start, hidden, mean_state):
    """Same result as :func:`lstm_particle_major_kernel`, vectorised across particles.

    Particles are processed in tiles small enough for their transposed parameters and
    states to stay in the L1 cache (:data:`TILE_BYTES`).
    """
    n_particles = theta.shape[0]
    tile = batch_tile(n_particles, hidden, columns.shape[1], theta.itemsize)
    tiles = (n_particles + tile - 1) // tile
    _batch_major_tiles(theta, columns, start, hidden, mean_state, tile, 0, tiles)


@njit(cache=True, nogil=True, parallel=True, fastmath=FAST, error_model="numpy")
def lstm_batch_major_parallel_kernel(theta, columns, start, hidden, mean_state):
    """:func:`lstm_batch_major_kernel` with its tiles spread over numba's threads.

    Tiles are the serial kernel's (their size does not depend on the thread count), so
    the result is bit-identical to it for any number of threads.
    """
    n_particles = theta.shape[0]
    tile = batch_tile(n_particles, hidden, columns.shape[1], theta.itemsize)
    tiles = (n_particles + tile - 1) // tile
    groups = work_groups(tiles)
    for group in prange(groups):
        _batch_major_tiles(theta, columns, start, hidden, mean_state, tile,
                           group * tiles // groups, (group + 1) * tiles // groups)


@njit(cache=True, nogil=True, parallel=True, fastmath=FAST, error_model="numpy")
def lstm_particle_major_parallel_kernel(theta, columns, start, hidden, mean_state):
    """:func:`lstm_particle_major_kernel` with the particles spread over numba's threads.

    Every particle is computed by the same code as in the serial kernel, so the result is
    bit-identical to it for any number of threads.
    """
    n_particles = theta.shape[0]
    groups = work_groups(n_particles)
    for group in prange(groups):
        _particle_major_range(theta, columns, start, hidden, mean_state,
                              group * n_particles // groups,
                              (group + 1) * n_particles // groups, VECTOR_BYTES)


@njit(cache=True, nogil=True)
def add_noise_and_predict_kernel(state, noise, theta, hidden, carry_state, predictions,
                                 target, obs_noise, log_likelihood):
    """``state += noise`` (when carried), ``d_hat_i = w_i^T y_bar_i``, log-likelihoods.

    ``state`` (N, 2n) holds ``[c_bar, y_bar]`` from a forward kernel, ``noise`` (N, 2n)
    the transition noise of the carried state (ignored without ``carry_state``);
    ``predictions`` (N,) float64 is written, and ``log_likelihood`` (N,) float64 with
    ``log N(target; d_hat_i, obs_noise)`` when ``obs_noise > 0``.
    """
    n_particles = state.shape[0]
    n = hidden
    output = theta.shape[1] - n
    normaliser = -0.5 * np.log(2.0 * np.pi * obs_noise) if obs_noise > 0 else 0.0
    for i in range(n_particles):
        if carry_state:
            for u in range(2 * n):
                state[i, u] += noise[i, u]
        total = 0.0
        for u in range(n):
            total += theta[i, output + u] * state[i, n + u]
        predictions[i] = total
        if obs_noise > 0:
            residual = target - total
            log_likelihood[i] = normaliser - 0.5 * residual * residual / obs_noise
