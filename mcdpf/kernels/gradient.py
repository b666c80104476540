"""Prediction and its exact gradient for one LSTM parameter vector (BPTT in a sequence).

``d_hat = w^T mean_l y(l)``; the gradient ``d d_hat / d theta`` is back-propagated through
the whole sequence (every column), in the flat layout of :mod:`mcdpf.kernels.lstm`. The
starting state ``[c(0), y(0)]`` is an input without gradient (state carried across steps
is not differentiated). SGD uses the gradient of the squared error, the EKF uses it as the
Jacobian ``H`` of the measurement.

:func:`lstm_population_gradient_kernel` does the same for every particle of a population,
all scratch allocated once: batch-major (parameters transposed into SIMD lanes, tiles
within L1) for small models, one particle at a time (the single-vector code) for large.
"""

import numpy as np
from numba import njit, prange

from .fastmath import sigmoid, tanh
from .lstm import FAST, TILE_BYTES, TILE_LANES, private_matrix, private_vector, work_groups

# Models with n (n + p) up to this use the batch-major population gradient (SIMD across
# particles), larger ones one particle at a time: batch-major measured faster up to
# n = 16, p = 2 (15.0 against 22.3 ms at N = 1000, m = 10, float64; benchmarks/kernels.py).
GRADIENT_BATCH_MAX_WORK = 288


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _gradient_one(theta, columns, start, hidden, gradient, mean_state, i_g, f_g, z_g, o_g,
                  c_all, y_all, h_all, a, dy, dc, da):
    """Body of :func:`lstm_prediction_gradient_kernel` on caller-owned scratch."""
    length, inputs = columns.shape
    n = hidden
    gates = 4 * n
    width = inputs + n
    bias_offset = gates * width
    output_offset = bias_offset + gates
    one = theta.dtype.type(1.0)
    for u in range(n):
        c_all[0, u] = start[u]
        y_all[0, u] = start[n + u]
    for step in range(length):
        for r in range(gates):
            row = r * width
            total = theta[bias_offset + r]
            for j in range(inputs):
                total += theta[row + j] * columns[step, j]
            for j in range(n):
                total += theta[row + inputs + j] * y_all[step, j]
            a[r] = total
        for u in range(n):
            i_g[step, u] = sigmoid(a[u])
            f_g[step, u] = sigmoid(a[n + u])
            z_g[step, u] = tanh(a[2 * n + u])
            o_g[step, u] = sigmoid(a[3 * n + u])
            c_all[step + 1, u] = i_g[step, u] * z_g[step, u] + f_g[step, u] * c_all[step, u]
            h_all[step, u] = tanh(c_all[step + 1, u])
            y_all[step + 1, u] = o_g[step, u] * h_all[step, u]
    inverse_length = one / length
    prediction = theta.dtype.type(0.0)
    for u in range(n):
        c_sum = theta.dtype.type(0.0)
        y_sum = theta.dtype.type(0.0)
        for step in range(length):
            c_sum += c_all[step + 1, u]
            y_sum += y_all[step + 1, u]
        mean_state[u] = c_sum * inverse_length
        mean_state[n + u] = y_sum * inverse_length
        gradient[output_offset + u] = mean_state[n + u]
        prediction += theta[output_offset + u] * mean_state[n + u]
    for k in range(output_offset):
        gradient[k] = 0
    for u in range(n):
        dy[u] = 0
        dc[u] = 0
    for step in range(length - 1, -1, -1):
        for u in range(n):
            gy = theta[output_offset + u] * inverse_length + dy[u]
            h = h_all[step, u]
            gc = gy * o_g[step, u] * (one - h * h) + dc[u]
            ig, fg, zg, og = i_g[step, u], f_g[step, u], z_g[step, u], o_g[step, u]
            da[u] = gc * zg * ig * (one - ig)
            da[n + u] = gc * c_all[step, u] * fg * (one - fg)
            da[2 * n + u] = gc * ig * (one - zg * zg)
            da[3 * n + u] = gy * h * og * (one - og)
            dc[u] = gc * fg
        for j in range(n):
            dy[j] = 0
        for r in range(gates):
            d = da[r]
            row = r * width
            gradient[bias_offset + r] += d
            for j in range(inputs):
                gradient[row + j] += d * columns[step, j]
            for j in range(n):
                gradient[row + inputs + j] += d * y_all[step, j]
                dy[j] += theta[row + inputs + j] * d
    return prediction


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def lstm_prediction_gradient_kernel(theta, columns, start, hidden, gradient, mean_state):
    """Return ``d_hat``; write ``d d_hat / d theta`` and ``[c_bar, y_bar]``.

    Parameters
    ----------
    theta : (P,) float array
        Parameters, layout of :mod:`mcdpf.kernels.lstm`.
    columns : (m, p) float array, same dtype, m >= 1
    start : (2n,) float array
        ``[c(0), y(0)]``.
    hidden : int
    gradient : (P,) float array, written
    mean_state : (2n,) float array, written
    """
    length = columns.shape[0]
    n = hidden
    dtype = theta.dtype
    # activations per column: i, f, z, o, c, tanh(c); states before column l at [l]
    return _gradient_one(theta, columns, start, hidden, gradient, mean_state,
                         np.empty((length, n), dtype=dtype), np.empty((length, n), dtype=dtype),
                         np.empty((length, n), dtype=dtype), np.empty((length, n), dtype=dtype),
                         np.empty((length + 1, n), dtype=dtype),
                         np.empty((length + 1, n), dtype=dtype),
                         np.empty((length, n), dtype=dtype), np.empty(4 * n, dtype=dtype),
                         np.empty(n, dtype=dtype), np.empty(n, dtype=dtype),
                         np.empty(4 * n, dtype=dtype))


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _gradient_particles(theta, columns, start, hidden, gradient, mean_state, predictions,
                        first, stop):
    """Particles ``first .. stop - 1``, one at a time, scratch allocated once."""
    length = columns.shape[0]
    n = hidden
    # scratch on cache lines of its own (threads run this side by side)
    i_g = private_matrix(length, n, theta)
    f_g = private_matrix(length, n, theta)
    z_g = private_matrix(length, n, theta)
    o_g = private_matrix(length, n, theta)
    c_all = private_matrix(length + 1, n, theta)
    y_all = private_matrix(length + 1, n, theta)
    h_all = private_matrix(length, n, theta)
    a = private_vector(4 * n, theta)
    dy = private_vector(n, theta)
    dc = private_vector(n, theta)
    da = private_vector(4 * n, theta)
    for i in range(first, stop):
        predictions[i] = _gradient_one(theta[i], columns, start[i], hidden, gradient[i],
                                       mean_state[i], i_g, f_g, z_g, o_g, c_all, y_all, h_all,
                                       a, dy, dc, da)


@njit(cache=True, nogil=True)
def gradient_tile(n_particles, hidden, inputs, length, itemsize):
    """Particles per batch-major gradient tile (model, dtype and N only; never threads)."""
    gates = 4 * hidden
    size = gates * (inputs + hidden) + 5 * hidden
    scratch_rows = 2 * size + 7 * length * hidden + 2 * hidden + 2 * gates + 2 * hidden
    tile = TILE_BYTES // (scratch_rows * itemsize)
    tile = max(TILE_LANES, tile - tile % TILE_LANES)
    return max(1, min(tile, n_particles))


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def _gradient_tiles(theta, columns, start, hidden, gradient, mean_state, predictions, tile,
                    first_tile, stop_tile):
    """Tiles ``first_tile .. stop_tile - 1``: the single-vector algorithm across SIMD lanes."""
    n_particles, size = theta.shape
    length, inputs = columns.shape
    n = hidden
    gates = 4 * n
    width = inputs + n
    bias_offset = gates * width
    output_offset = bias_offset + gates
    dtype = theta.dtype
    one = dtype.type(1.0)
    inverse_length = one / length
    steps = length * n
    states = (length + 1) * n
    scratch_rows = 2 * size + 5 * steps + 2 * states + 2 * gates + 2 * n
    scratch = np.empty(scratch_rows * tile, dtype=dtype)
    for index in range(first_tile, stop_tile):
        first = index * tile
        count = min(tile, n_particles - first)
        block = scratch[:scratch_rows * count].reshape((scratch_rows, count))
        lanes = block[:size]
        grads = block[size:2 * size]
        at = 2 * size
        i_g = block[at:at + steps].reshape((length, n, count))
        f_g = block[at + steps:at + 2 * steps].reshape((length, n, count))
        z_g = block[at + 2 * steps:at + 3 * steps].reshape((length, n, count))
        o_g = block[at + 3 * steps:at + 4 * steps].reshape((length, n, count))
        h_all = block[at + 4 * steps:at + 5 * steps].reshape((length, n, count))
        at += 5 * steps
        c_all = block[at:at + states].reshape((length + 1, n, count))
        y_all = block[at + states:at + 2 * states].reshape((length + 1, n, count))
        at += 2 * states
        a = block[at:at + gates]
        da = block[at + gates:at + 2 * gates]
        dy = block[at + 2 * gates:at + 2 * gates + n]
        dc = block[at + 2 * gates + n:at + 2 * gates + 2 * n]
        for k in range(count):
            th = theta[first + k]
            for q in range(size):
                lanes[q, k] = th[q]
            for u in range(n):
                c_all[0, u, k] = start[first + k, u]
                y_all[0, u, k] = start[first + k, n + u]
        weights = lanes[:bias_offset].reshape((gates, width, count))
        biases = lanes[bias_offset:output_offset]
        output = lanes[output_offset:]
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
                    previous = y_all[step, j]
                    for k in range(count):
                        out[k] += weight[k] * previous[k]
            for u in range(n):
                a_i, a_f, a_z, a_o = a[u], a[n + u], a[2 * n + u], a[3 * n + u]
                ig, fg, zg, og = i_g[step, u], f_g[step, u], z_g[step, u], o_g[step, u]
                c_old, c_new, h, y_new = c_all[step, u], c_all[step + 1, u], h_all[step, u], \
                    y_all[step + 1, u]
                for k in range(count):
                    ig[k] = sigmoid(a_i[k])
                    fg[k] = sigmoid(a_f[k])
                    zg[k] = tanh(a_z[k])
                    og[k] = sigmoid(a_o[k])
                    c_new[k] = ig[k] * zg[k] + fg[k] * c_old[k]
                    h[k] = tanh(c_new[k])
                    y_new[k] = og[k] * h[k]
        total = a[0]  # free after the forward pass: d_hat in theta's dtype
        total[:] = 0
        for u in range(n):
            for k in range(count):
                c_sum = dtype.type(0.0)
                y_sum = dtype.type(0.0)
                for step in range(length):
                    c_sum += c_all[step + 1, u, k]
                    y_sum += y_all[step + 1, u, k]
                c_bar = c_sum * inverse_length
                y_bar = y_sum * inverse_length
                mean_state[first + k, u] = c_bar
                mean_state[first + k, n + u] = y_bar
                grads[output_offset + u, k] = y_bar
                total[k] += output[u, k] * y_bar
        for k in range(count):
            predictions[first + k] = total[k]
        grads[:output_offset] = 0
        dy[:] = 0
        dc[:] = 0
        for step in range(length - 1, -1, -1):
            x = columns[step]
            for u in range(n):
                ig, fg, zg, og = i_g[step, u], f_g[step, u], z_g[step, u], o_g[step, u]
                h, c_old, w_u = h_all[step, u], c_all[step, u], output[u]
                dy_u, dc_u = dy[u], dc[u]
                da_i, da_f, da_z, da_o = da[u], da[n + u], da[2 * n + u], da[3 * n + u]
                for k in range(count):
                    gy = w_u[k] * inverse_length + dy_u[k]
                    gc = gy * og[k] * (one - h[k] * h[k]) + dc_u[k]
                    da_i[k] = gc * zg[k] * ig[k] * (one - ig[k])
                    da_f[k] = gc * c_old[k] * fg[k] * (one - fg[k])
                    da_z[k] = gc * ig[k] * (one - zg[k] * zg[k])
                    da_o[k] = gy * h[k] * og[k] * (one - og[k])
                    dc_u[k] = gc * fg[k]
            dy[:] = 0
            for r in range(gates):
                d = da[r]
                row = r * width
                g_bias = grads[bias_offset + r]
                for k in range(count):
                    g_bias[k] += d[k]
                for j in range(inputs):
                    g = grads[row + j]
                    xj = x[j]
                    for k in range(count):
                        g[k] += d[k] * xj
                for j in range(n):
                    g = grads[row + inputs + j]
                    weight = weights[r, inputs + j]
                    previous = y_all[step, j]
                    dy_j = dy[j]
                    for k in range(count):
                        g[k] += d[k] * previous[k]
                        dy_j[k] += weight[k] * d[k]
        for k in range(count):
            out_row = gradient[first + k]
            for q in range(size):
                out_row[q] = grads[q, k]


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def lstm_population_gradient_kernel(theta, columns, start, hidden, gradient, mean_state,
                                    predictions):
    """:func:`lstm_prediction_gradient_kernel` for every particle of a population.

    Parameters
    ----------
    theta : (N, P) float array
        One parameter vector per particle.
    columns : (m, p) float array, same dtype, m >= 1
    start : (N, 2n) float array
        ``[c(0), y(0)]`` of each particle.
    hidden : int
    gradient : (N, P) float array, same dtype, written
        ``d d_hat_i / d theta_i``.
    mean_state : (N, 2n) float array, same dtype, written
        ``[c_bar_i, y_bar_i]``.
    predictions : (N,) float array, written
        ``d_hat_i``.
    """
    n_particles = theta.shape[0]
    length, inputs = columns.shape
    if hidden * (hidden + inputs) <= GRADIENT_BATCH_MAX_WORK:
        tile = gradient_tile(n_particles, hidden, inputs, length, theta.itemsize)
        _gradient_tiles(theta, columns, start, hidden, gradient, mean_state, predictions, tile,
                        0, (n_particles + tile - 1) // tile)
    else:
        _gradient_particles(theta, columns, start, hidden, gradient, mean_state, predictions,
                            0, n_particles)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy", parallel=True)
def lstm_population_gradient_parallel_kernel(theta, columns, start, hidden, gradient,
                                             mean_state, predictions):
    """:func:`lstm_population_gradient_kernel` on numba's threads, for large models.

    Groups of particles, each differentiated on its own by the single-vector algorithm,
    so the bits do not depend on the thread count. Small models (``n (n + p) <=
    GRADIENT_BATCH_MAX_WORK``) stay serial (:func:`mcdpf.kernels.lstm_population_gradient`
    decides): their tiled, vectorised-across-particles code was found to round some
    lanes differently once inlined into a threaded caller.
    """
    n_particles = theta.shape[0]
    groups = work_groups(n_particles)
    for group in prange(groups):
        _gradient_particles(theta, columns, start, hidden, gradient, mean_state,
                            predictions, group * n_particles // groups,
                            (group + 1) * n_particles // groups)
