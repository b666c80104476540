"""Vectorisable ``exp``, ``sigmoid``, ``tanh``, ``log``, ``sin`` and ``cos`` for the kernels.

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

``log``, ``sincos`` and ``sincospi`` (for the counter-based normals' Box-Muller transform;
methods in the comments above each). Maximum errors measured against numpy (float64
numpy as the reference for float32), ``tests/test_counter_rng.py`` checks them:

=====================================  ===============  ===============
function, arguments                    float32          float64
=====================================  ===============  ===============
``log``, positive normal floats        2.8 ulp          3 ulp (5e-16)
``log``, Box-Muller's inputs           2.5 ulp (all)    3 ulp
``sincos``, ``|x| < 1.3e7``            1.5 ulp          2 ulp
``sincospi``, every finite ``x``       8.5e-8 absolute  3.9e-16 absolute
=====================================  ===============  ===============

``log`` returns ``-inf`` at 0, ``nan`` below 0 and for nan, ``inf`` at inf, and handles
subnormals; ``log_positive`` skips those cases. ``sincos`` of inf or nan is nan; beyond
``|x| = 1.3e7`` its Cody-Waite reduction loses accuracy (no Payne-Hanek). ``sincospi``
reduces exactly, so it is accurate for every finite argument.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
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


@intrinsic
def _float64_to_bits(typingctx, value):
    signature = types.int64(types.float64)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return signature, codegen


@intrinsic
def _float32_to_bits(typingctx, value):
    signature = types.int32(types.float32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))

    return signature, codegen


@intrinsic
def _split_exponent(typingctx, x):
    """``(k, m)`` with ``x = 2^k m``, ``m`` in ``[sqrt(1/2), sqrt(2))``, both of x's type.

    Written in LLVM IR so that the integer work stays in x's width: numba would widen
    int32 arithmetic to int64, halving the float32 SIMD width.
    """
    bits, mantissa = (32, 23) if x.bitwidth == 32 else (64, 52)
    offset = 0x3F3504F3 if bits == 32 else 0x3FE6A09E667F3BCD  # the bits of sqrt(1/2)
    signature = types.UniTuple(x, 2)(x)

    def codegen(context, builder, sig, args):
        integer = ir.IntType(bits)
        shifted = builder.sub(builder.bitcast(args[0], integer), ir.Constant(integer, offset))
        exponent = builder.sitofp(builder.ashr(shifted, ir.Constant(integer, mantissa)),
                                  args[0].type)
        low = builder.and_(shifted, ir.Constant(integer, (1 << mantissa) - 1))
        m = builder.bitcast(builder.add(low, ir.Constant(integer, offset)), args[0].type)
        return context.make_tuple(builder, sig.return_type, [exponent, m])

    return signature, codegen


@intrinsic
def _minus_product(typingctx, x, q, c):
    """``x - q * c`` exempt from reassociation.

    numba's fastmath pass only flags floating-point instructions that carry no flags, so
    these two, built with ``contract`` alone, can still fuse into an FMA but can never be
    merged with a neighbouring ``- q * c2`` into ``q * (c + c2)``: that rewrite (allowed by
    ``reassoc``) would undo a Cody-Waite range reduction.
    """
    signature = x(x, q, c)

    def codegen(context, builder, sig, args):
        product = builder.fmul(args[1], args[2], flags=("contract",))
        return builder.fsub(args[0], product, flags=("contract",))

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


# The functions below are inlined by LLVM (``forceinline``) rather than in numba's IR
# (``inline="always"``): the same vectorised code, a fraction of the compile time.
_INLINE = {"forceinline": True}


# --- log -----------------------------------------------------------------------------------
# x = 2^k m with m in [sqrt(1/2), sqrt(2)) (the exponent bits, offset by those of sqrt(1/2)),
# f = m - 1 (exact), s = f / (2 + f), log(m) = 2 atanh(s) = 2s + s z T(z), z = s^2 <= 0.0295,
# then log(x) = k ln2_hi + (log(m) + k ln2_lo). The polynomials here and below come from
# Chebyshev economisation of the Taylor series on the reduced interval, computed in exact
# rational arithmetic and rounded to the type; their truncation errors are below 5e-18
# (float64) and 3e-9 (float32) relative, far under half an ulp.

@register_jitable(forceinline=True)
def _log64_core(x, k_offset):
    k, m = _split_exponent(x)
    k += k_offset
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    t = 0.14618452072714802
    t = t * z + 0.15331554743280912
    t = t * z + 0.18182894320084278
    t = t * z + 0.2222221106056441
    t = t * z + 0.2857142862645262
    t = t * z + 0.3999999999989839
    t = t * z + 0.666666666666667
    log_m = 2.0 * s + s * (z * t)
    return _minus_product(log_m, k, -1.9082149292705877e-10) + k * 0.6931471803691238


@register_jitable(forceinline=True)
def _log32_core(x, k_offset):
    k, m = _split_exponent(x)
    k += k_offset
    f = m - np.float32(1.0)
    s = f / (np.float32(2.0) + f)
    z = s * s
    t = np.float32(0.29582035541534424)
    t = t * z + np.float32(0.3998872637748718)
    t = t * z + np.float32(0.6666668653488159)
    log_m = np.float32(2.0) * s + s * (z * t)
    return (_minus_product(log_m, k, np.float32(-3.194618329871446e-05))
            + k * np.float32(0.693115234375))


def log_positive(x):
    """``log(x)`` for normal, positive, finite ``x``: no special cases, a few ops cheaper."""


@overload(log_positive, jit_options=_INLINE)
def _log_positive(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: _log32_core(x, np.float32(0.0))
    return lambda x: _log64_core(x, 0.0)


def log(x):
    """Natural logarithm (``-inf`` at 0, ``nan`` below, subnormals handled)."""


@overload(log, jit_options=_INLINE)
def _log(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        tiny32, scale32 = np.float32(1.1754943508222875e-38), np.float32(2.0 ** 24)
        zero32, inf32 = np.float32(0.0), np.float32(np.inf)

        def log32(x):
            small = x < tiny32
            y = _log32_core(x * scale32 if small else x,
                            np.float32(-24.0) if small else np.float32(0.0))
            if not x < inf32:
                y = x + x  # inf -> inf, nan -> nan
            if x == zero32:
                y = -inf32
            elif x < zero32:
                y = np.float32(np.nan)
            return y

        return log32

    def log64(x):
        small = x < 2.2250738585072014e-308
        y = _log64_core(x * 2.0 ** 54 if small else x, -54.0 if small else 0.0)
        if not x < np.inf:
            y = x + x
        if x == 0.0:
            y = -np.inf
        elif x < 0.0:
            y = np.nan
        return y

    return log64


# --- sin and cos -----------------------------------------------------------------------------
# On |r| <= pi/4 polynomials (economised, see log: sin to r^7 / r^13, cos to r^8 / r^14 for
# float32 / float64, truncation below 2e-8 / 2e-17), then the quadrant q mod 4 swaps and
# negates them.
# sincospi reduces exactly (x - 2 rint(x/2), then r = x - q/2 with q = rint(2x): both exact
# in floating point), so it is accurate for every finite x. sincos reduces by Cody-Waite:
# r = x - q pi/2 with q = rint(2x/pi) and pi/2 split in four parts (30, 30, 30 and 53 bits,
# 143 bits in all), the first three products exact while |q| < 2^23, i.e. |x| < 1.3e7, which
# keeps even the floats nearest multiples of pi/2 (where r is 2^-60 x) accurate; float32
# arguments are reduced in float64. Beyond 1.3e7 the reduction loses accuracy (no
# Payne-Hanek); inf and nan give nan.

@register_jitable(forceinline=True)
def _sincos64_poly(r):
    z = r * r
    s = 1.5917995630635248e-10
    s = s * z - 2.505112999912784e-08
    s = s * z + 2.755731609375319e-06
    s = s * z - 0.00019841269836741755
    s = s * z + 0.008333333333330938
    s = s * z - 0.16666666666666666
    c = -1.1382548343152154e-11
    c = c * z + 2.0876145106497293e-09
    c = c * z - 2.7557317266186513e-07
    c = c * z + 2.480158729875508e-05
    c = c * z - 0.001388888888888739
    c = c * z + 0.041666666666666664
    return r + r * (z * s), 1.0 - 0.5 * z + (z * z) * c


@register_jitable(forceinline=True)
def _sincos32_poly(r):
    z = r * r
    s = np.float32(-0.00019587698625400662)
    s = s * z + np.float32(0.008332747034728527)
    s = s * z - np.float32(0.166666641831398)
    c = np.float32(2.4547738576075062e-05)
    c = c * z - np.float32(0.001388830249197781)
    c = c * z + np.float32(0.0416666641831398)
    return r + r * (z * s), np.float32(1.0) - np.float32(0.5) * z + (z * z) * c


@register_jitable(forceinline=True)
def _quadrant(s, c, quadrant):
    """``(sin, cos)`` of ``r + quadrant * pi / 2`` from those of ``r`` (``quadrant`` int32)."""
    if quadrant & np.int32(1):
        s, c = c, s
    if quadrant & np.int32(2):
        s = -s
    if (quadrant + np.int32(1)) & np.int32(2):
        c = -c
    return s, c


@register_jitable(forceinline=True)
def sincospi_reduced64(x):
    """``(sin(pi x), cos(pi x))`` for float64 ``|x| <= 2^51``."""
    q = np.rint(x + x)
    s, c = _sincos64_poly((x - 0.5 * q) * 3.141592653589793)
    return _quadrant(s, c, np.int32(q))


@register_jitable(forceinline=True)
def sincospi_reduced32(x):
    """``(sin(pi x), cos(pi x))`` for float32 ``|x| <= 2^22``."""
    q = np.rint(x + x)
    s, c = _sincos32_poly((x - np.float32(0.5) * q) * np.float32(3.1415927410125732))
    return _quadrant(s, c, np.int32(q))


def sincospi(x):
    """``(sin(pi x), cos(pi x))``, exact argument reduction for every finite ``x``."""


@overload(sincospi, jit_options=_INLINE)
def _sincospi(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        half, two = np.float32(0.5), np.float32(2.0)
        return lambda x: sincospi_reduced32(x - two * np.rint(x * half))
    return lambda x: sincospi_reduced64(x - 2.0 * np.rint(x * 0.5))


@register_jitable(forceinline=True)
def _reduce_half_pi(x):
    """``(r, q mod 4)`` with ``r = x - q pi/2``, ``q = rint(2x/pi)``; ``r`` nan unless finite."""
    q = np.rint(x * 0.6366197723675814)
    q = min(max(q, -4503599627370496.0), 4503599627370496.0)
    r = _minus_product(x, q, 1.570796325802803)
    r = _minus_product(r, q, 9.920935791635221e-10)
    r = _minus_product(r, q, 5.17018297889025e-19)
    r = _minus_product(r, q, 2.9038559739793605e-28)
    if not abs(x) < np.inf:
        r = np.nan
    return r, np.int32(np.int64(q) & np.int64(3))


def sincos(x):
    """``(sin(x), cos(x))``; accurate for ``|x| < 1.3e7`` (Cody-Waite reduction)."""


@overload(sincos, jit_options=_INLINE)
def _sincos(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def sincos32(x):
            r, quadrant = _reduce_half_pi(np.float64(x))
            s, c = _sincos32_poly(np.float32(r))
            return _quadrant(s, c, quadrant)

        return sincos32

    def sincos64(x):
        r, quadrant = _reduce_half_pi(x)
        s, c = _sincos64_poly(r)
        return _quadrant(s, c, quadrant)

    return sincos64


# --- array versions, for tests and benchmarks -----------------------------------------------
# Compiled with the kernels' fast-math flags, so they measure what the kernels get.

_FAST = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def log_kernel(x, out):
    """``out[i] = log(x[i])`` (1-D arrays of one float dtype)."""
    for i in range(x.shape[0]):
        out[i] = log(x[i])


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def sincos_kernel(x, sin_out, cos_out):
    """``sin_out[i], cos_out[i] = sincos(x[i])``."""
    for i in range(x.shape[0]):
        sin_out[i], cos_out[i] = sincos(x[i])


@njit(cache=True, nogil=True, fastmath=_FAST, error_model="numpy")
def sincospi_kernel(x, sin_out, cos_out):
    """``sin_out[i], cos_out[i] = sincospi(x[i])``."""
    for i in range(x.shape[0]):
        sin_out[i], cos_out[i] = sincospi(x[i])
