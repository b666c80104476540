"""Adam (Kingma & Ba 2015): one step of one parameter vector, in place.

With the loss gradient ``g`` and the bias corrections ``1 - beta1^t`` and ``1 - beta2^t``
of the ``t``-th update (passed in, so the power is computed once, by the caller)::

    m = beta1 m + (1 - beta1) g
    v = beta2 v + (1 - beta2) g^2
    theta -= alpha (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

float64 throughout and no ``fastmath``: the bits are those of this order of IEEE operations
(the numpy reference in ``tests/naive.py`` evaluates the same expressions).
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")
def adam_update_kernel(theta, first_moment, second_moment, gradient, step_size, beta1, beta2,
                       eps, first_correction, second_correction):
    """Update ``theta``, ``first_moment`` and ``second_moment`` (all (P,)) in place."""
    for k in range(theta.shape[0]):
        g = gradient[k]
        first_moment[k] = beta1 * first_moment[k] + (1.0 - beta1) * g
        second_moment[k] = beta2 * second_moment[k] + (1.0 - beta2) * (g * g)
        theta[k] -= step_size * (first_moment[k] / first_correction) / (
            np.sqrt(second_moment[k] / second_correction) + eps)
