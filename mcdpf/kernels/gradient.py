"""Prediction and its exact gradient for one LSTM parameter vector (BPTT in a sequence).

``d_hat = w^T mean_l y(l)``; the gradient ``d d_hat / d theta`` is back-propagated through
the whole sequence (every column), in the flat layout of :mod:`mcdpf.kernels.lstm`. The
starting state ``[c(0), y(0)]`` is an input without gradient (state carried across steps
is not differentiated). SGD uses the gradient of the squared error, the EKF uses it as the
Jacobian ``H`` of the measurement.
"""

import numpy as np
from numba import njit

from .fastmath import sigmoid, tanh
from .lstm import FAST


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
    length, inputs = columns.shape
    n = hidden
    gates = 4 * n
    width = inputs + n
    bias_offset = gates * width
    output_offset = bias_offset + gates
    one = theta.dtype.type(1.0)
    # activations per column: i, f, z, o, c, tanh(c); states before column l at [l]
    i_g = np.empty((length, n), dtype=theta.dtype)
    f_g = np.empty((length, n), dtype=theta.dtype)
    z_g = np.empty((length, n), dtype=theta.dtype)
    o_g = np.empty((length, n), dtype=theta.dtype)
    c_all = np.empty((length + 1, n), dtype=theta.dtype)
    y_all = np.empty((length + 1, n), dtype=theta.dtype)
    h_all = np.empty((length, n), dtype=theta.dtype)
    a = np.empty(gates, dtype=theta.dtype)
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
    dy = np.zeros(n, dtype=theta.dtype)
    dc = np.zeros(n, dtype=theta.dtype)
    da = np.empty(gates, dtype=theta.dtype)
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
