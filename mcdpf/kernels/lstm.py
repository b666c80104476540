"""Particle-LSTM forward kernel: every particle runs its own LSTM over one sequence.

Parameter layout of one particle's flat vector ``theta`` (length ``4n(n+p) + 5n``), with
the gates stacked in the order ``i, f, z, o`` (``G = 4n`` rows):

====================  ===========  ===========================================
block                 length       element ``[j, g*n + u]`` / ``[g*n + u]``
====================  ===========  ===========================================
input weights         ``p * G``    ``W_g[u, j]``  (``W^T``, shape (p, G))
recurrent weights     ``n * G``    ``R_g[u, j]``  (``R^T``, shape (n, G))
biases                ``G``        ``b_g[u]``
output weights        ``n``        ``w[u]``
====================  ===========  ===========================================

The transposed blocks make the gate pre-activation an accumulation of contiguous rows,
``a = b + sum_j x_j W^T[j] + sum_j y_j R^T[j]``, which vectorises.

The kernel is pure: it reads ``theta``, the sequence's columns and the starting state
``[c(0), y(0)]``, and writes the mean-pooled ``[c_bar, y_bar]`` into a buffer the caller
owns. Arithmetic runs in the dtype of ``theta`` (float64 or float32).
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def lstm_mean_states_kernel(theta, columns, start, hidden, mean_state):
    """Run each particle's LSTM over ``columns`` and mean-pool its states.

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
    n_particles = theta.shape[0]
    length, inputs = columns.shape
    gates = 4 * hidden
    recurrent_offset = inputs * gates
    bias_offset = recurrent_offset + hidden * gates
    one = theta.dtype.type(1.0)
    inverse_length = one / length
    a = np.empty(gates, dtype=theta.dtype)
    c = np.empty(hidden, dtype=theta.dtype)
    y = np.empty(hidden, dtype=theta.dtype)
    c_sum = np.empty(hidden, dtype=theta.dtype)
    y_sum = np.empty(hidden, dtype=theta.dtype)
    for i in range(n_particles):
        th = theta[i]
        for u in range(hidden):
            c[u] = start[i, u]
            y[u] = start[i, hidden + u]
            c_sum[u] = 0
            y_sum[u] = 0
        for step in range(length):
            for g in range(gates):
                a[g] = th[bias_offset + g]
            for j in range(inputs):
                xj = columns[step, j]
                row = j * gates
                for g in range(gates):
                    a[g] += xj * th[row + g]
            for j in range(hidden):
                yj = y[j]
                row = recurrent_offset + j * gates
                for g in range(gates):
                    a[g] += yj * th[row + g]
            for u in range(hidden):
                input_gate = one / (one + np.exp(-a[u]))
                forget_gate = one / (one + np.exp(-a[hidden + u]))
                candidate = np.tanh(a[2 * hidden + u])
                output_gate = one / (one + np.exp(-a[3 * hidden + u]))
                c[u] = input_gate * candidate + forget_gate * c[u]
                y[u] = output_gate * np.tanh(c[u])
                c_sum[u] += c[u]
                y_sum[u] += y[u]
        for u in range(hidden):
            mean_state[i, u] = c_sum[u] * inverse_length
            mean_state[i, hidden + u] = y_sum[u] * inverse_length
