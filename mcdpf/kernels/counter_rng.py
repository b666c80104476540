"""Counter-based Gaussian noise: Philox4x32-10 keyed by (seed, purpose), counted by (step, id).

Every random value is a pure function of a key and a counter, so noise is reproducible
bit for bit whatever the thread count, the row a particle sits in, the length of the
array or the MPI rank that computes it: a particle that migrates can have its noise
regenerated where it lands, and a checkpoint only needs the step counter.

Format (other code relies on it)
--------------------------------
Generator
    Philox4x32-10 (Salmon, Moraes, Dror & Shaw, SC'11; the generator of Random123 and
    cuRAND), bit for bit: it reproduces Random123's ``kat_vectors``.
Key ``(k0, k1)``
    :func:`stream_key` ``(seed, purpose)``: the two 32-bit words of
    ``numpy.random.SeedSequence([seed, purpose]).generate_state(2, numpy.uint32)``.
    ``purpose`` separates independent uses of one seed (propagation noise, resampling,
    random-walk moves, ...).
Counter ``(c0, c1, c2, c3) = (block, step, id_lo, id_hi)``
    ``id`` is the particle's 64-bit identity (int64, two's complement: ``id_lo = id mod
    2^32``, ``id_hi = (id >> 32) mod 2^32``); ``step`` the time step, a 32-bit counter
    (``0 <= step < 2^32``: a stream repeats after 2^32 steps, so key a longer run by
    another ``purpose``); ``block`` indexes the consecutive 4-word outputs of one
    ``(id, step)`` stream (``< 2^32`` blocks: 2^34 float32 or 2^33 float64 values per
    particle and step).
Uniforms
    float32 from one word ``r``: ``u = ((r >> 8) | 1) * 2^-24``; float64 from two words
    ``(a, b)``: ``u = (((a << 21) ^ (b >> 11)) | 1) * 2^-53``. That is the top 24 (53)
    bits with the lowest of them forced to one: odd multiples of 2^-24 (2^-53), so every
    value is exact, ``u`` lies in the open interval ``[2^-24, 1 - 2^-24]``
    (``[2^-53, 1 - 2^-53]``) and ``1 - u`` has the same distribution. (The textbook
    ``(r >> 8) * 2^-24 + 2^-25`` needs 25 significant bits: float32 rounds it, to 1.0 at
    the top.) 23 (52) random bits per uniform.
Normals, float32
    Component ``j`` of a particle's noise vector comes from block ``b = j // 4``, words
    ``(r0, r1, r2, r3)``, by two Box-Muller pairs::

        z[4b]     = R(u(r0)) cos(2 pi u(r1))    z[4b + 1] = R(u(r0)) sin(2 pi u(r1))
        z[4b + 2] = R(u(r2)) cos(2 pi u(r3))    z[4b + 3] = R(u(r2)) sin(2 pi u(r3))

    with ``R(u) = sqrt(-2 log u)``. ``|z| <= R(2^-24) = 5.77`` (``P(|N(0,1)| > 5.77) =
    8e-9``).
Normals, float64
    Component ``j`` comes from block ``b = j // 2``: ``u = u(r0, r1)``, ``v = u(r2, r3)``,
    ``z[2b] = R(u) cos(2 pi v)``, ``z[2b + 1] = R(u) sin(2 pi v)``; ``|z| <= 8.57``.

So a value depends only on (key, step, id, j). Scaled, it is ``(scale R) cos(...)``,
``(scale R) sin(...)`` (the product with ``scale`` rounded first), and the kernels that
add noise round the sum separately (no FMA): ``out + scale z`` equals numpy's ``out + y``
for ``y`` from :func:`normal_rows_kernel`, bit for bit.

``log``, ``sin`` and ``cos`` are the vectorisable versions of
:mod:`mcdpf.kernels.fastmath` (``sin(2 pi v)``, ``cos(2 pi v)`` through
:func:`~mcdpf.kernels.fastmath.sincospi`, whose range reduction is exact; errors in that
module's docstring): normals differ from Box-Muller evaluated in float64 numpy by at most
4.9e-7 (float32) and 2.7e-15 (float64), measured over 2 million values. Philox words and
uniforms are exact integer arithmetic, the same everywhere; the normals are bit-identical
across runs, threads and ranks on CPUs with the same instruction set (numba compiles for
the host: where FMA is missing, the last bits of the polynomials, so of the normals, can
differ).

Box-Muller rather than a ziggurat: Box-Muller has no branches, so LLVM vectorises it
(0.5 ns per float32 normal for log, sqrt, sin and cos); a ziggurat's rare slow path is
not if-convertible, so it runs scalar, and its fast path alone (look-up, compare,
multiply) measured 0.9 ns per value. Its extra draws on rejection would also break the
fixed one-block-per-four-values format.

Implementation
--------------
Philox runs on uint64 lanes holding 32-bit values (so the 32x32->64-bit products become
``vpmuludq``); the low halves of the products are not masked between rounds because
``vpmuludq`` only reads the low 32 bits of its operands, only the outputs are. Rows are
processed in tiles of :data:`TILE_BLOCKS` blocks: one vectorised loop writes the tile's
Philox output to an L1-resident scratch (structure of arrays; float32 uniforms, or the raw
words for float64), a second turns it into normals and writes them interleaved into the
row (details in :func:`_make_row_noise`). Fusing the two loops measured 1.8x slower: the
long dependency chain of one block (10 multiply rounds, then log, sqrt, sin, cos) leaves
too little independent work in flight. Measured speeds: ``benchmarks/noise.py``.

Kernels are pure (arrays in, buffers out). The ``*_parallel_kernel`` twins spread row
blocks over numba's threads; every value still depends only on its key and counter, so
their output is bit-identical to the serial kernels for any thread count.
"""

import numba
import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload, register_jitable

from .fastmath import log_positive, sincospi_reduced32, sincospi_reduced64

FAST = {"reassoc", "contract", "nsz", "arcp"}
TILE_BLOCKS = 256  # Philox blocks per tile: 4 KiB of L1 scratch
PAD_BLOCKS = 8  # passes run over multiples of this many blocks (no scalar remainders)
ROW_BLOCK = 4  # rows per task of the parallel kernels, at least
TASK_VALUES = 16384  # values per task of the parallel kernels, about (few tasks of short rows)
SHORT_ROW_BLOCKS = 4  # rows of at most this many blocks share vectorised passes

_MASK = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)  # Philox4x32 multipliers
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)  # Weyl key increments


def stream_key(seed: int, purpose: int) -> tuple[int, int]:
    """The Philox key ``(k0, k1)`` of one ``purpose`` of ``seed`` (non-negative ints).

    ``numpy.random.SeedSequence([seed, purpose]).generate_state(2, numpy.uint32)``.
    """
    if seed < 0 or purpose < 0:
        raise ValueError(f"seed and purpose must be non-negative, got {seed}, {purpose}")
    words = np.random.SeedSequence([seed, purpose]).generate_state(2, np.uint32)
    return int(words[0]), int(words[1])


# --- Philox4x32-10 -------------------------------------------------------------------------

@register_jitable(forceinline=True)
def _philox_round(c0, c1, c2, c3, k0, k1):
    # c0 and c2 may carry junk above bit 31 (unmasked low halves of the previous round's
    # products): the masks below are what lets LLVM use vpmuludq, which ignores them.
    p0 = (c0 & _MASK) * _M0
    p1 = (c2 & _MASK) * _M1
    return (p1 >> _SHIFT) ^ c1 ^ k0, p1, (p0 >> _SHIFT) ^ c3 ^ k1, p0


@register_jitable(forceinline=True)
def _philox(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint64 lanes holding 32-bit words; outputs below 2^32."""
    for _ in range(9):
        c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
        k0 = (k0 + _W0) & _MASK
        k1 = (k1 + _W1) & _MASK
    c0, c1, c2, c3 = _philox_round(c0, c1, c2, c3, k0, k1)
    return c0 & _MASK, c1 & _MASK, c2 & _MASK, c3 & _MASK


@register_jitable(forceinline=True)
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter ``(c0, c1, c2, c3)`` under key ``(k0, k1)``.

    Integer arguments, taken modulo 2^32; returns four ``uint32``.
    """
    r0, r1, r2, r3 = _philox(np.uint64(c0) & _MASK, np.uint64(c1) & _MASK,
                             np.uint64(c2) & _MASK, np.uint64(c3) & _MASK,
                             np.uint64(k0) & _MASK, np.uint64(k1) & _MASK)
    return np.uint32(r0), np.uint32(r1), np.uint32(r2), np.uint32(r3)


@njit(cache=True, nogil=True, error_model="numpy")
def philox4x32_kernel(counters, keys, out):
    """``out[i] = philox4x32(counters[i], keys[i])`` for (n, 4) counters, (n, 2) keys."""
    for i in range(counters.shape[0]):
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = philox4x32(
            counters[i, 0], counters[i, 1], counters[i, 2], counters[i, 3],
            keys[i, 0], keys[i, 1])


# --- uniforms and Box-Muller ---------------------------------------------------------------

@register_jitable(forceinline=True)
def _uniform32(r):
    return np.float32(np.int64((r >> np.uint64(8)) | np.uint64(1))) * np.float32(2.0 ** -24)


@register_jitable(forceinline=True)
def _uniform64(a, b):
    bits = ((a << np.uint64(21)) ^ (b >> np.uint64(11))) | np.uint64(1)
    return np.float64(np.int64(bits)) * 2.0 ** -53




@intrinsic
def _add_rounded(typingctx, a, b):
    """``a + b`` that never fuses with the product that made ``b`` (no ``contract`` flag).

    So that ``x + scale * z`` in a kernel rounds exactly like numpy's ``x + y`` with
    ``y = scale * z`` from :func:`normal_rows_kernel`.
    """
    signature = a(a, b)

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1], flags=("nsz",))

    return signature, codegen


@intrinsic
def _mul_rounded(typingctx, a, b):
    """``a * b`` rounded on its own: never re-associated or fused with its neighbours.

    Under ``reassoc``/``contract`` LLVM may regroup ``scale * R * cos`` differently in
    kernels that vectorise differently (seen on AVX2 but not AVX-512), which changed the
    last bit of the same normal between :func:`normal_rows_kernel` and the fused kernels.
    """
    signature = a(a, b)

    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1], flags=("nsz",))

    return signature, codegen


@register_jitable(forceinline=True)
def _box_muller32(u, v, scale):
    """``scale * (R(u) cos(2 pi v), R(u) sin(2 pi v))``, ``R(u) = sqrt(-2 log u)``.

    The products are rounded as written (:func:`_mul_rounded`), so every kernel that
    inlines this gives the same values whatever the vector width of the machine.
    """
    radius = _mul_rounded(scale, np.sqrt(np.float32(-2.0) * log_positive(u)))
    s, c = sincospi_reduced32(v + v)
    return _mul_rounded(radius, c), _mul_rounded(radius, s)


@register_jitable(forceinline=True)
def _box_muller64(u, v, scale):
    radius = _mul_rounded(scale, np.sqrt(-2.0 * log_positive(u)))
    s, c = sincospi_reduced64(v + v)
    return _mul_rounded(radius, c), _mul_rounded(radius, s)


@register_jitable(forceinline=True)
def _set(previous, noise):
    return noise


@register_jitable(forceinline=True)
def _add(previous, noise):
    return _add_rounded(previous, noise)


@register_jitable(forceinline=True)
def _words32(scratch, start, blocks, c1, c2, c3, k0, k1):
    """Pass 1, float32: ``scratch[k, b]`` = uniform of word ``k`` of block ``start + b``."""
    u0, u1, u2, u3 = scratch[0], scratch[1], scratch[2], scratch[3]
    for b in range(blocks):
        r0, r1, r2, r3 = _philox(np.uint64(start + b), c1, c2, c3, k0, k1)
        u0[b] = _uniform32(r0)
        u1[b] = _uniform32(r1)
        u2[b] = _uniform32(r2)
        u3[b] = _uniform32(r3)


@register_jitable(forceinline=True)
def _words64(scratch, start, blocks, c1, c2, c3, k0, k1):
    """Pass 1, float64: ``scratch[k, b]`` = word ``k`` of block ``start + b``.

    The words (not float64 uniforms) go to the scratch: the narrower stores let LLVM run
    Philox 8 lanes wide (zmm) instead of 4 (1.25x faster in all).
    """
    w0, w1, w2, w3 = scratch[0], scratch[1], scratch[2], scratch[3]
    for b in range(blocks):
        r0, r1, r2, r3 = _philox(np.uint64(start + b), c1, c2, c3, k0, k1)
        w0[b] = np.uint32(r0)
        w1[b] = np.uint32(r1)
        w2[b] = np.uint32(r2)
        w3[b] = np.uint32(r3)


@register_jitable(forceinline=True)
def _lane_words32(scratch, blocks, c0s, c1, c2s, c3s, k0, k1):
    """Pass 1 of short rows, float32: lane ``b`` is block ``c0s[b]`` of stream ``(c2s, c3s)[b]``."""
    u0, u1, u2, u3 = scratch[0], scratch[1], scratch[2], scratch[3]
    for b in range(blocks):
        r0, r1, r2, r3 = _philox(c0s[b], c1, c2s[b], c3s[b], k0, k1)
        u0[b] = _uniform32(r0)
        u1[b] = _uniform32(r1)
        u2[b] = _uniform32(r2)
        u3[b] = _uniform32(r3)


@register_jitable(forceinline=True)
def _lane_words64(scratch, blocks, c0s, c1, c2s, c3s, k0, k1):
    """Pass 1 of short rows, float64 (raw words, as :func:`_words64`)."""
    w0, w1, w2, w3 = scratch[0], scratch[1], scratch[2], scratch[3]
    for b in range(blocks):
        r0, r1, r2, r3 = _philox(c0s[b], c1, c2s[b], c3s[b], k0, k1)
        w0[b] = np.uint32(r0)
        w1[b] = np.uint32(r1)
        w2[b] = np.uint32(r2)
        w3[b] = np.uint32(r3)


def _lane_words(scratch, blocks, c0s, c1, c2s, c3s, k0, k1):
    """:func:`_lane_words32` or :func:`_lane_words64`, by the dtype of ``scratch``."""


@overload(_lane_words, jit_options={"forceinline": True})
def _lane_words_dispatch(scratch, blocks, c0s, c1, c2s, c3s, k0, k1):
    return _lane_words32 if scratch.dtype == types.float32 else _lane_words64


def _words(scratch, start, blocks, c1, c2, c3, k0, k1):
    """:func:`_words32` or :func:`_words64`, by the dtype of ``scratch``."""


@overload(_words, jit_options={"forceinline": True})
def _words_dispatch(scratch, start, blocks, c1, c2, c3, k0, k1):
    return _words32 if scratch.dtype == types.float32 else _words64


def _make_normals(combine):
    """Pass 2: ``out[j] = combine(inp[j], scale z_j)`` for blocks ``offset + b``."""

    @register_jitable(forceinline=True)
    def normals32(out, inp, scratch, offset, blocks, scale):
        scale = np.float32(scale)
        u0 = scratch[0][offset:offset + blocks]
        u1 = scratch[1][offset:offset + blocks]
        u2 = scratch[2][offset:offset + blocks]
        u3 = scratch[3][offset:offset + blocks]
        for b in range(blocks):
            z0, z1 = _box_muller32(u0[b], u1[b], scale)
            z2, z3 = _box_muller32(u2[b], u3[b], scale)
            x0, x1, x2, x3 = inp[4 * b], inp[4 * b + 1], inp[4 * b + 2], inp[4 * b + 3]
            out[4 * b] = combine(x0, z0)
            out[4 * b + 1] = combine(x1, z1)
            out[4 * b + 2] = combine(x2, z2)
            out[4 * b + 3] = combine(x3, z3)

    @register_jitable(forceinline=True)
    def normals64(out, inp, scratch, offset, blocks, scale):
        scale = np.float64(scale)
        w0 = scratch[0][offset:offset + blocks]
        w1 = scratch[1][offset:offset + blocks]
        w2 = scratch[2][offset:offset + blocks]
        w3 = scratch[3][offset:offset + blocks]
        for b in range(blocks):
            z0, z1 = _box_muller64(_uniform64(np.uint64(w0[b]), np.uint64(w1[b])),
                                   _uniform64(np.uint64(w2[b]), np.uint64(w3[b])), scale)
            x0, x1 = inp[2 * b], inp[2 * b + 1]
            out[2 * b] = combine(x0, z0)
            out[2 * b + 1] = combine(x1, z1)

    def normals(out, inp, scratch, offset, blocks, scale):
        """:func:`normals32` or :func:`normals64`, by the dtype of ``out``."""

    @overload(normals, jit_options={"forceinline": True})
    def _normals_dispatch(out, inp, scratch, offset, blocks, scale):
        return normals32 if out.dtype == types.float32 else normals64

    return normals


_normals_set = _make_normals(_set)


def _make_scratch(like):
    """``(words, z, previous)`` for rows like ``like``: L1 scratch for :func:`_make_row_noise`.

    Philox output (4, TILE_BLOCKS), a short tile of normals and a tile of row values.
    """


@overload(_make_scratch, jit_options={"forceinline": True})
def _make_scratch_dispatch(like):
    if like.dtype == types.float32:
        def scratch32(like):
            return (np.empty((4, TILE_BLOCKS), dtype=np.float32),
                    np.empty(4 * PAD_BLOCKS, dtype=np.float32),
                    np.empty(4 * TILE_BLOCKS, dtype=np.float32))

        return scratch32

    def scratch64(like):
        return (np.empty((4, TILE_BLOCKS), dtype=np.uint32),
                np.empty(2 * PAD_BLOCKS, dtype=np.float64),
                np.empty(2 * TILE_BLOCKS, dtype=np.float64))

    return scratch64


def _make_row_noise(combine, source):
    """``dst[j] = combine(src[j], scale * z(key, step, id, j))`` for one row, both dtypes.

    ``source`` is "none" (``src`` unused: ``dst[j] = scale z``), "self" (``src`` is
    ``dst``) or "other" (``src`` a distinct row: the gather).

    Pass 1 (Philox) fills L1 scratch for a tile of blocks, pass 2 (Box-Muller) writes the
    row: both vectorised. Pass 1 runs over a multiple of :data:`PAD_BLOCKS` blocks, and
    pass 2 over a multiple of it straight into the row, the remaining blocks (at the end
    of the row) into a short buffer from which the values needed are copied: so that no
    row, however short, falls into LLVM's scalar remainder loops (scalar Philox is 3x
    slower; padding made N = 80 x P = 46 1.5x faster). Writing every tile through such a
    buffer measured 1.4x slower for float32: the row's stores then come in bursts
    instead of overlapping the arithmetic.

    In place ("self"), the tile's old values are first copied to L1 scratch and pass 2
    reads them there: reading and writing the row itself in the interleaved pass 2 makes
    LLVM add an aliasing check that always fails, and the loop ran scalar (4x slower).
    """
    normals = _make_normals(combine)
    in_place = source == "self"
    gather = source == "other"

    @register_jitable(forceinline=True)
    def row_noise(dst, src, ident, step, k0, k1, scale, scratch):
        words, z, previous = scratch
        per_block = z.shape[0] // PAD_BLOCKS
        c2, c3 = ident & _MASK, ident >> _SHIFT
        count = dst.shape[0]
        blocks = (count + per_block - 1) // per_block
        for start in range(0, blocks, TILE_BLOCKS):
            tile = min(TILE_BLOCKS, blocks - start)
            padded = (tile + PAD_BLOCKS - 1) // PAD_BLOCKS * PAD_BLOCKS
            _words(words, start, padded, step, c2, c3, k0, k1)
            first = per_block * start
            full = min(tile, (count - first) // per_block)
            main = full - full % PAD_BLOCKS
            values = per_block * main
            out = dst[first:first + values]
            if gather:
                normals(out, src[first:first + values], words, 0, main, scale)
            elif in_place:
                old = previous[:values]
                for j in range(values):
                    old[j] = out[j]
                normals(out, old, words, 0, main, scale)
            else:
                normals(out, out, words, 0, main, scale)
            if main < tile:  # the end of the row: fewer than PAD_BLOCKS blocks left
                _normals_set(z, z, words, main, PAD_BLOCKS, scale)
                base = first + values
                for j in range(count - base):
                    dst[base + j] = combine(src[base + j], z[j])

    return row_noise


_row_set = _make_row_noise(_set, "none")
_row_add = _make_row_noise(_add, "self")
_row_gather_add = _make_row_noise(_add, "other")


def _make_short_rows(combine, gather):
    """Rows of at most :data:`SHORT_ROW_BLOCKS` blocks, many rows per vectorised pass.

    A row-at-a-time pass computes at least :data:`PAD_BLOCKS` blocks per row and pays the
    set-up of two loops per row: for the carried state (2n values) that made a normal cost
    15 ns. Here the blocks of consecutive rows are laid out as lanes (counter words in
    scratch), one Philox pass and one Box-Muller pass run over all of them, and each row
    takes its values from the result: the same counters and arithmetic, so the same bits
    as :func:`_make_row_noise`. ``dst[i] = combine(src[rows[i]], z)`` for ``i`` in
    ``first .. stop - 1`` with ``gather`` (``rows``: the ancestors), else
    ``combine(dst[i], z)`` (``src`` and ``rows`` unused).
    """

    @register_jitable(forceinline=True)
    def short_rows(dst, src, rows, ids, first, stop, step, k0, k1, scale, scratch):
        words, z, values = scratch
        c0s = np.empty(TILE_BLOCKS, dtype=np.uint64)
        c2s = np.empty(TILE_BLOCKS, dtype=np.uint64)
        c3s = np.empty(TILE_BLOCKS, dtype=np.uint64)
        per_block = z.shape[0] // PAD_BLOCKS
        width = dst.shape[1]
        blocks = (width + per_block - 1) // per_block
        row_tile = TILE_BLOCKS // blocks
        for tile_first in range(first, stop, row_tile):
            tile_stop = min(stop, tile_first + row_tile)
            lanes = (tile_stop - tile_first) * blocks
            padded = (lanes + PAD_BLOCKS - 1) // PAD_BLOCKS * PAD_BLOCKS
            lane = 0
            for i in range(tile_first, tile_stop):
                ident = np.uint64(ids[i])
                for b in range(blocks):
                    c0s[lane] = np.uint64(b)
                    c2s[lane] = ident & _MASK
                    c3s[lane] = ident >> _SHIFT
                    lane += 1
            for b in range(lanes, padded):
                c0s[b] = np.uint64(0)
                c2s[b] = np.uint64(0)
                c3s[b] = np.uint64(0)
            _lane_words(words, padded, c0s, step, c2s, c3s, k0, k1)
            _normals_set(values, values, words, 0, padded, scale)
            for i in range(tile_first, tile_stop):
                row = dst[i]
                source = src[rows[i]] if gather else row
                base = (i - tile_first) * blocks * per_block
                for j in range(width):
                    row[j] = combine(source[j], values[base + j])

    return short_rows


_short_set = _make_short_rows(_set, False)
_short_add = _make_short_rows(_add, False)
_short_gather_add = _make_short_rows(_add, True)


@register_jitable(forceinline=True)
def _is_short(row, scratch):
    """Whether rows like ``row`` take the many-rows-per-pass path."""
    per_block = scratch[1].shape[0] // PAD_BLOCKS
    return row.shape[0] <= SHORT_ROW_BLOCKS * per_block


@register_jitable(forceinline=True)
def _masked(step, k0, k1):
    return np.uint64(step) & _MASK, np.uint64(k0) & _MASK, np.uint64(k1) & _MASK


def _make_rows_range(row_noise, short_rows, gather):
    """Rows ``first .. stop - 1`` of a kernel: the short-row or the row-at-a-time path.

    ``dst[i] = combine(src[rows[i]], z)`` with ``gather``, else ``combine(dst[i], z)``.
    """

    @register_jitable(forceinline=True)
    def rows_range(dst, src, rows, ids, first, stop, step, k0, k1, scale):
        scratch = _make_scratch(dst)
        if first < stop and dst.shape[1] and _is_short(dst[first], scratch):
            short_rows(dst, src, rows, ids, first, stop, step, k0, k1, scale, scratch)
            return
        for i in range(first, stop):
            row = dst[i]
            source = src[rows[i]] if gather else row
            row_noise(row, source, np.uint64(ids[i]), step, k0, k1, scale, scratch)

    return rows_range


_set_range = _make_rows_range(_row_set, _short_set, False)
_add_range = _make_rows_range(_row_add, _short_add, False)
_gather_add_range = _make_rows_range(_row_gather_add, _short_gather_add, True)


@register_jitable(forceinline=True)
def _task_rows(out):
    """Rows per task of the parallel kernels: ~:data:`TASK_VALUES` values, >= :data:`ROW_BLOCK`.

    Which thread computes a row never changes its values.
    """
    return max(ROW_BLOCK, TASK_VALUES // max(out.shape[1], 1))


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def normal_rows_kernel(out, ids, step, k0, k1, scale):
    """``out[i, j] = scale * z(key, step, ids[i], j)`` (format in the module docstring).

    Parameters
    ----------
    out : (N, P) float32 or float64 array, C-contiguous, written
    ids : (N,) int64 array
        Particle identities.
    step : int
        Time-step counter, ``0 <= step < 2^32``.
    k0, k1 : int
        The key, :func:`stream_key`.
    scale : float
        Standard deviation.
    """
    step, k0, k1 = _masked(step, k0, k1)
    _set_range(out, out, ids, ids, 0, out.shape[0], step, k0, k1, scale)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def add_normal_rows_kernel(out, ids, step, k0, k1, scale):
    """``out[i, j] += scale * z(key, step, ids[i], j)``; arguments as :func:`normal_rows_kernel`."""
    step, k0, k1 = _masked(step, k0, k1)
    _add_range(out, out, ids, ids, 0, out.shape[0], step, k0, k1, scale)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def gather_add_normal_kernel(out, source, ancestors, ids, step, k0, k1, scale):
    """Resampling gather and propagation noise in one pass.

    ``out[i, j] = source[ancestors[i], j] + scale * z(key, step, ids[i], j)``; ``out``
    (N, P) and ``source`` (M, P) distinct C-contiguous arrays of one float dtype,
    ``ancestors`` (N,) int64 in ``[0, M)``, other arguments as :func:`normal_rows_kernel`.
    """
    step, k0, k1 = _masked(step, k0, k1)
    _gather_add_range(out, source, ancestors, ids, 0, out.shape[0], step, k0, k1, scale)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy", parallel=True)
def normal_rows_parallel_kernel(out, ids, step, k0, k1, scale):
    """:func:`normal_rows_kernel` over numba's threads (bit-identical output)."""
    step, k0, k1 = _masked(step, k0, k1)
    rows, task_rows = out.shape[0], _task_rows(out)
    for task in numba.prange((rows + task_rows - 1) // task_rows):
        _set_range(out, out, ids, ids, task * task_rows, min(rows, (task + 1) * task_rows),
                   step, k0, k1, scale)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy", parallel=True)
def add_normal_rows_parallel_kernel(out, ids, step, k0, k1, scale):
    """:func:`add_normal_rows_kernel` over numba's threads (bit-identical output)."""
    step, k0, k1 = _masked(step, k0, k1)
    rows, task_rows = out.shape[0], _task_rows(out)
    for task in numba.prange((rows + task_rows - 1) // task_rows):
        _add_range(out, out, ids, ids, task * task_rows, min(rows, (task + 1) * task_rows),
                   step, k0, k1, scale)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy", parallel=True)
def gather_add_normal_parallel_kernel(out, source, ancestors, ids, step, k0, k1, scale):
    """:func:`gather_add_normal_kernel` over numba's threads (bit-identical output)."""
    step, k0, k1 = _masked(step, k0, k1)
    rows, task_rows = out.shape[0], _task_rows(out)
    for task in numba.prange((rows + task_rows - 1) // task_rows):
        _gather_add_range(out, source, ancestors, ids, task * task_rows,
                          min(rows, (task + 1) * task_rows), step, k0, k1, scale)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def uniforms_kernel(out, step, stream_lo, stream_hi, k0, k1):
    """``out[k]``: float64 uniform in (0, 1) from counter ``(k // 2, step, lo, hi)``.

    Two per block: ``out[2b] = u(r0, r1)``, ``out[2b + 1] = u(r2, r3)`` (formula in the
    module docstring). For resampling and random-walk draws keyed by (node, step, ...).
    """
    step, k0, k1 = _masked(step, k0, k1)
    c2, c3 = np.uint64(stream_lo) & _MASK, np.uint64(stream_hi) & _MASK
    count = out.shape[0]
    full = count // 2
    for b in range(full):
        r0, r1, r2, r3 = _philox(np.uint64(b), step, c2, c3, k0, k1)
        out[2 * b] = _uniform64(r0, r1)
        out[2 * b + 1] = _uniform64(r2, r3)
    if count > 2 * full:
        r0, r1, r2, r3 = _philox(np.uint64(full), step, c2, c3, k0, k1)
        out[count - 1] = _uniform64(r0, r1)


@njit(cache=True, nogil=True, fastmath=FAST, error_model="numpy")
def id_uniforms_kernel(out, ids, step, block, k0, k1):
    """``out[i]``: float64 uniform in (0, 1) from counter ``(block, step, ids[i])``.

    One per particle (words r0, r1 of its block): a particle's own draw of one event,
    e.g. its move at walk step ``block``, the same wherever it is computed.
    """
    step, k0, k1 = _masked(step, k0, k1)
    b = np.uint64(block) & _MASK
    for i in range(out.shape[0]):
        identity = np.uint64(ids[i])
        r0, r1, _, _ = _philox(b, step, identity & _MASK, (identity >> _SHIFT) & _MASK,
                               k0, k1)
        out[i] = _uniform64(r0, r1)
