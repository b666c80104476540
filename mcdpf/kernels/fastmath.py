"""Vectorisable ``exp``, ``sigmoid`` and ``tanh`` for the LSTM kernels.

Without Intel's SVML, numba turns ``np.exp`` and ``np.tanh`` into scalar library calls,
which dominate the LSTM at small sizes (a tanh costs ~12 ns here). These versions are
plain arithmetic, so LLVM vectorises the loops that call them:

``exp(x) = 2^k * P(r)``, ``k = floor(x / ln 2 + 1/2)``, ``r = x - k ln 2`` (``ln 2`` split in two
parts), ``P`` the Taylor polynomial of degree 11 (float64) or 7 (float32) on
``|r| <= ln 2 / 2``, and ``2^k`` assembled from its exponent bits. Inputs are clamped to
the finite range of the type. Relative error: below 1e-14 (float64) and 4e-7 (float32).

``sigmoid(x) = 1 / (1 + exp(-x))`` and ``tanh(x) = 2 / (1 + exp(-2x)) - 1`` (absolute
error ~2 ulp near 0, where the relative error of tanh grows; irrelevant to the LSTM,
whose states are sums of such terms).
"""

import numpy as np
from numba import types
from numba.extending import intrinsic, overload, register_jitable


@intrinsic
def _bits_to_float64(typingctx, value):
    signature = types.float64(types.int64)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return signature, codegen


@intrinsic
def _bits_to_float32(typingctx, value):
    signature = types.float32(types.int32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return signature, codegen


@register_jitable(inline="always")
def _exp64(x):
    x = min(max(x, -708.0), 709.0)
    k = np.floor(x * 1.4426950408889634 + 0.5)
    r = x - k * 0.6931471803691238 - k * 1.9082149292705877e-10
    p = 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * _bits_to_float64((np.int64(k) + 1023) << 52)


@register_jitable(inline="always")
def _exp32(x):
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    k = np.floor(x * np.float32(1.442695) + np.float32(0.5))
    r = x - k * np.float32(0.693145751953125) - k * np.float32(1.428606765330187e-06)
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * _bits_to_float32((np.int32(k) + np.int32(127)) << np.int32(23))


def sigmoid(x):
    """``1 / (1 + exp(-x))``."""


@overload(sigmoid, inline="always")
def _sigmoid(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        one = np.float32(1.0)
        return lambda x: one / (one + _exp32(-x))
    return lambda x: 1.0 / (1.0 + _exp64(-x))


def tanh(x):
    """``2 / (1 + exp(-2x)) - 1``."""


@overload(tanh, inline="always")
def _tanh(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        one, two = np.float32(1.0), np.float32(2.0)
        return lambda x: two / (one + _exp32(-two * x)) - one
    return lambda x: 2.0 / (1.0 + _exp64(-2.0 * x)) - 1.0
