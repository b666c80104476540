"""Importance proposals for the parameter random walk (``filter.proposal``).

``prior``
    ``theta_t = theta_{t-1} + sqrt(q) xi``: the transition itself (the papers' choice);
    the weight is the likelihood.
``linearized``
    The optimal proposal ``p(theta_t | theta_{t-1}, d_t)`` of the model linearised at
    ``theta_{t-1}``: each observed stream ``j`` gives ``d_j ~ h_j + g_j^T delta + noise``
    with ``h_j``, ``g_j`` the prediction and its exact gradient (BPTT) at
    ``theta_{t-1}``, and noise variance ``rho_j = (r + q |w|^2) / e_j`` (``r``; the state
    noise on ``y_bar`` enters the prediction through the output weights ``w``; ``e_j``
    the stream's likelihood exponent). In whitened coordinates ``delta = sqrt(q) u``,
    ``B = sqrt(q) G``:

        u | d ~ N(m, C),  m = B (D + B^T B)^-1 y,  C = (I + B D^-1 B^T)^-1

    sampled exactly by perturbing the observations (``u = u0 + B (D + B^T B)^-1 (y -
    B^T u0 - eps)``, ``u0 = xi``, ``eps ~ N(0, D)``). The importance weight stays exact: the
    likelihood of the *nonlinear* model at the proposed ``theta_t`` times

        log p(u) - log q(u) = -|u|^2 / 2 + |u - m|^2 / 2
                              + sum_j (b_j^T (u - m))^2 / (2 rho_j)
                              - log det(I + D^-1 B^T B) / 2

For the linear-Gaussian model the proposal is exactly optimal: likelihood times
correction is ``log N(y; 0, B^T B + D)`` for every draw (a test checks it).
"""

from __future__ import annotations

import numpy as np


def linearized_step(theta, gradients, predictions, targets, noise_variance, state_noise,
                    standard_normals, observation_normals):
    """Proposed parameters and the log proposal correction of every particle.

    Parameters
    ----------
    theta : (N, P)
        ``theta_{t-1}`` (model dtype).
    gradients : (N, S, P) float64
        ``g_j`` of every observed stream at ``theta_{t-1}``.
    predictions : (N, S) float64
        ``h_j`` at ``theta_{t-1}``.
    targets : (S,) float64
        The labels ``d_j``.
    noise_variance : (N, S) float64
        ``rho_j`` per particle and stream.
    state_noise : float
        ``q``.
    standard_normals : (N, P)
        ``xi``, the prior draw (the same numbers the prior proposal would use).
    observation_normals : (N, S)
        Standard normals for the perturbed observations.

    Returns
    -------
    theta_t : (N, P) in theta's dtype
    log_correction : (N,) float64
        ``log p(u) - log q(u)``.
    """
    root_q = np.sqrt(state_noise)
    b = root_q * gradients                                   # (N, S, P)
    gram = np.einsum("nsp,ntp->nst", b, b)                   # B^T B (N, S, S)
    system = gram + np.einsum("ns,st->nst", noise_variance, np.eye(gram.shape[1]))
    xi = np.asarray(standard_normals, dtype=np.float64)
    innovation = targets[None, :] - predictions              # y (N, S)
    perturbed = innovation - np.einsum("nsp,np->ns", b, xi) \
        - np.sqrt(noise_variance) * observation_normals
    u = xi + np.einsum("nsp,ns->np", b, np.linalg.solve(system, perturbed[..., None])[..., 0])
    mean = np.einsum("nsp,ns->np", b, np.linalg.solve(system, innovation[..., None])[..., 0])
    gap = u - mean
    projected = np.einsum("nsp,np->ns", b, gap)
    scaled = np.eye(gram.shape[1]) + gram / noise_variance[:, :, None]
    _, log_det = np.linalg.slogdet(scaled)
    log_correction = -0.5 * np.einsum("np,np->n", u, u) + 0.5 * np.einsum("np,np->n", gap, gap) \
        + 0.5 * np.sum(projected * projected / noise_variance, axis=1) - 0.5 * log_det
    theta_t = (theta + root_q * u).astype(theta.dtype, copy=False)
    return theta_t, log_correction
