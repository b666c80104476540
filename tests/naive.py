"""Slow, obvious numpy references for every kernel (stumpy's tests/naive.py pattern)."""

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def unpack_lstm(theta, n, p):
    """theta -> (W (4n, p), R (4n, n), b (4n,), w (n,)) per the documented layout."""
    g = 4 * n
    M = theta[: g * (p + n)].reshape(g, p + n)
    W, R = M[:, :p], M[:, p:]
    b = theta[g * (p + n): g * (p + n) + g]
    w = theta[g * (p + n) + g:]
    assert w.size == n
    return W, R, b, w


def lstm_mean_states(theta, columns, start, n):
    """Per particle, per column: the DESIGN §1 equations with matrices."""
    count = theta.shape[0]
    p = columns.shape[1]
    out = np.empty((count, 2 * n))
    for i in range(count):
        W, R, b, _ = unpack_lstm(theta[i].astype(np.float64), n, p)
        c = start[i, :n].astype(np.float64)
        y = start[i, n:].astype(np.float64)
        cs, ys = [], []
        for x in columns.astype(np.float64):
            a = W @ x + R @ y + b
            i_gate = sigmoid(a[:n])
            f_gate = sigmoid(a[n:2 * n])
            z = np.tanh(a[2 * n:3 * n])
            o_gate = sigmoid(a[3 * n:])
            c = i_gate * z + f_gate * c
            y = o_gate * np.tanh(c)
            cs.append(c)
            ys.append(y)
        out[i, :n] = np.mean(cs, axis=0)
        out[i, n:] = np.mean(ys, axis=0)
    return out


def normalize(log_weights):
    lw = np.asarray(log_weights, dtype=np.float64)
    m = np.max(lw)
    w = np.exp(lw - m)
    return w / w.sum(), m + np.log(np.sum(np.exp(lw - m)))


def ess(weights):
    return 1.0 / np.sum(np.square(weights))


def batch_linear_posterior(design, targets, obs_noise, prior_variance):
    """Bayesian linear regression with a static theta: the KF with q = 0."""
    p = design.shape[1]
    precision = np.eye(p) / prior_variance + design.T @ design / obs_noise
    covariance = np.linalg.inv(precision)
    return covariance @ design.T @ targets / obs_noise, covariance


PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85


def philox4x32(counter, key, rounds=10):
    """Philox4x32-R on Python ints, written from the SC'11 paper's round function."""
    c0, c1, c2, c3 = (int(word) & 0xFFFFFFFF for word in counter)
    k0, k1 = (int(word) & 0xFFFFFFFF for word in key)
    for round_index in range(rounds):
        if round_index:
            k0 = (k0 + PHILOX_W0) & 0xFFFFFFFF
            k1 = (k1 + PHILOX_W1) & 0xFFFFFFFF
        p0 = PHILOX_M0 * c0
        p1 = PHILOX_M1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0, p1 & 0xFFFFFFFF,
                          (p0 >> 32) ^ c3 ^ k1, p0 & 0xFFFFFFFF)
    return c0, c1, c2, c3


def philox4x32_numpy(counters, keys, rounds=10):
    """philox4x32 above, vectorised over rows of (n, 4) counters and (n, 2) keys."""
    mask = np.uint64(0xFFFFFFFF)
    c = [np.asarray(counters, dtype=np.uint64)[:, i] & mask for i in range(4)]
    k0, k1 = (np.asarray(keys, dtype=np.uint64)[:, i] & mask for i in range(2))
    for round_index in range(rounds):
        if round_index:
            k0 = (k0 + np.uint64(PHILOX_W0)) & mask
            k1 = (k1 + np.uint64(PHILOX_W1)) & mask
        p0 = np.uint64(PHILOX_M0) * c[0]
        p1 = np.uint64(PHILOX_M1) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & mask,
             (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & mask]
    return np.stack(c, axis=1)


def counter_uniform32(words):
    """The documented float32 uniform of 32-bit words, exactly (as float64)."""
    return ((np.asarray(words, dtype=np.uint64) >> np.uint64(8)) | np.uint64(1)) * 2.0 ** -24


def counter_uniform64(a, b):
    """The documented float64 uniform of two 32-bit words, exactly."""
    a, b = np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)
    bits = ((a << np.uint64(21)) ^ (b >> np.uint64(11))) | np.uint64(1)
    return bits.astype(np.float64) * 2.0 ** -53


def counter_normals(key, step, ident, count, dtype):
    """Noise vector of one particle per the format of mcdpf.kernels.counter_rng, float64 math."""
    ident = int(ident) % 2 ** 64
    per_block = 4 if dtype == np.float32 else 2
    blocks = -(-count // per_block)
    counters = np.zeros((blocks, 4), dtype=np.uint64)
    counters[:, 0] = np.arange(blocks)
    counters[:, 1] = step
    counters[:, 2] = ident & 0xFFFFFFFF
    counters[:, 3] = ident >> 32
    words = philox4x32_numpy(counters, np.tile(np.array(key, dtype=np.uint64), (blocks, 1)))
    if dtype == np.float32:
        u = counter_uniform32(words)
        pairs = [(u[:, 0], u[:, 1]), (u[:, 2], u[:, 3])]
    else:
        pairs = [(counter_uniform64(words[:, 0], words[:, 1]),
                  counter_uniform64(words[:, 2], words[:, 3]))]
    columns = []
    for radius_uniform, angle_uniform in pairs:
        radius = np.sqrt(-2.0 * np.log(radius_uniform))
        columns += [radius * np.cos(2 * np.pi * angle_uniform),
                    radius * np.sin(2 * np.pi * angle_uniform)]
    return np.stack(columns, axis=1).ravel()[:count]


def adam_update(theta, first_moment, second_moment, gradient, step_size, beta1, beta2, eps,
                updates):
    """Kingma & Ba's Algorithm 1, one step (``updates`` = t, counting this one); new arrays."""
    first_moment = beta1 * first_moment + (1.0 - beta1) * gradient
    second_moment = beta2 * second_moment + (1.0 - beta2) * gradient ** 2
    first_unbiased = first_moment / (1.0 - beta1 ** updates)
    second_unbiased = second_moment / (1.0 - beta2 ** updates)
    return (theta - step_size * first_unbiased / (np.sqrt(second_unbiased) + eps),
            first_moment, second_moment)


def ekf_update(mean, covariance, gradient, prediction, target, noise_variance):
    """Textbook scalar EKF update with a dense covariance: (mean, covariance, log density)."""
    gain_direction = covariance @ gradient
    s = gradient @ gain_direction + noise_variance
    residual = target - prediction
    mean = mean + gain_direction * residual / s
    covariance = covariance - np.outer(gain_direction, gain_direction) / s
    return mean, covariance, -0.5 * (residual ** 2 / s + np.log(2 * np.pi * s))


def block_diagonal_part(covariance, groups):
    """The blocks of ``covariance`` on ``groups`` (everything else zero)."""
    out = np.zeros_like(covariance)
    for group in groups:
        out[np.ix_(group, group)] = covariance[np.ix_(group, group)]
    return out


def row_by_row_block_update(blocks, form, means, gradient, prediction, target, noise):
    """One Gaussian's decoupled update (``form``'s groups and block offsets) in plain
    Python floats: each row's product summed in column order, then the downdate, as
    mcdpf.kernels.covariance states; returns new (blocks, means)."""
    blocks, means = blocks.copy(), means.copy()
    products, quadratic = np.empty(form.size), 0.0
    for k, group in enumerate(form.groups):
        block = blocks[form.starts[k]:form.starts[k + 1]].reshape(group.size, group.size)
        for a in range(group.size):
            total = 0.0
            for c in range(group.size):
                total += float(block[a, c]) * float(gradient[group[c]])
            products[group[a]] = total
            quadratic += float(gradient[group[a]]) * total
    s = noise + quadratic
    for k, group in enumerate(form.groups):
        block = blocks[form.starts[k]:form.starts[k + 1]].reshape(group.size, group.size)
        for a in range(group.size):
            means[group[a]] += products[group[a]] * ((target - prediction) / s)
            scaled = products[group[a]] * (1.0 / s)
            for c in range(group.size):
                block[a, c] -= scaled * products[group[c]]
    return blocks, means


def lofi_predict(upsilon, factor, state_noise):
    """LoFi's predict step (gamma = 1) from the dense matrices: the exact precision of
    P + q I, as (diagonal, low-rank part) = (upsilon / (1 + q upsilon), its remainder)."""
    precision = np.diag(upsilon) + factor @ factor.T
    exact = np.linalg.inv(np.linalg.inv(precision) + state_noise * np.eye(upsilon.size))
    diagonal = upsilon / (1 + state_noise * upsilon)
    return diagonal, exact - np.diag(diagonal)


def lofi_condition(mean, upsilon, factor, gradient, prediction, target, noise_variance):
    """LoFi's condition step from dense matrices: the exact mean update of the precision
    diag(upsilon) + W W^T + g g^T / rho, then the eigendecomposition of the low-rank part
    keeping the leading rank(W) directions and moving the rest's diagonal into upsilon.
    Returns (mean, upsilon, low-rank precision part W W^T)."""
    rank = factor.shape[1]
    extended = np.column_stack([factor, gradient / np.sqrt(noise_variance)])
    precision = np.diag(upsilon) + extended @ extended.T
    covariance = np.linalg.inv(precision)
    residual = target - prediction
    mean = mean + covariance @ gradient * residual / noise_variance
    values, vectors = np.linalg.eigh(extended @ extended.T)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0, None), vectors[:, order]
    kept = (vectors[:, :rank] * values[:rank]) @ vectors[:, :rank].T
    dropped = (vectors[:, rank:] ** 2) @ values[rank:]
    return mean, upsilon + dropped, kept


def walk_visit_spread(transition, stationary, steps):
    """Visit spread of ``steps``-step walks by enumerating every path (tiny graphs only).

    Mean over start nodes of ``sum_j pi_j E[(N_j / (s pi_j) - 1)^2]``, ``N_j`` the visits
    to ``j`` after the start.
    """
    import itertools

    nodes = transition.shape[0]
    total = 0.0
    for start in range(nodes):
        for path in itertools.product(range(nodes), repeat=steps):
            probability, here = 1.0, start
            for there in path:
                probability *= transition[here, there]
                here = there
            if probability == 0.0:
                continue
            counts = np.bincount(np.array(path), minlength=nodes)
            exponents = counts / (steps * stationary)
            total += probability * float(np.sum(stationary * (exponents - 1.0) ** 2))
    return total / nodes
