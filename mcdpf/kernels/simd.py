"""Explicit SIMD building blocks for the kernels, as numba intrinsics emitting LLVM vectors.

LLVM's auto-vectoriser turns a row-by-row matrix-vector product into one horizontal
reduction per row (about ten shuffles and adds for four multiply-adds at ``n = 64``); the
block here multiplies ``L`` rows at once (``L`` = one 64-byte vector: 16 float32 or 8
float64 lanes) and folds their ``L`` accumulators into one vector of ``L`` sums with a
transpose-reduce tree (``L - 1`` shuffle pairs and adds for ``L`` rows).

``prefer_wide_vectors`` marks the calling kernel ``"prefer-vector-width"="512"`` (the
attribute clang's ``-mprefer-vector-width=512`` sets): LLVM's default for several Intel
cores is 256-bit vectors even with AVX-512; elsewhere the attribute changes nothing.
Arithmetic carries the kernels' fastmath flags (reassociation, contraction, no signed
zeros, reciprocals; never "no NaN" or "no inf").
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, register_jitable

VECTOR_BYTES = 64
FLAGS = ("reassoc", "contract", "nsz", "arcp")
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


@register_jitable
def lanes_of(itemsize):
    """Vector lanes (rows per block) for an element size in bytes."""
    return VECTOR_BYTES // itemsize


def _prefer_wide(builder) -> None:
    # llvmlite only lists LLVM's keyword attributes; this string attribute is emitted as is.
    set.add(builder.function.attributes, '"prefer-vector-width"="512"')


def _data(context, builder, array_type, value):
    return context.make_array(array_type)(context, builder, value).data


def _prefetch(builder, pointer, locality: int) -> None:
    i8p = ir.IntType(8).as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
    builder.call(fn, [builder.bitcast(pointer, i8p), ir.Constant(_I32, 0),
                      ir.Constant(_I32, locality), ir.Constant(_I32, 1)])


def _masked_load(builder, pointer, mask, vector_type, align):
    suffix = "f32" if isinstance(vector_type.element, ir.FloatType) else "f64"
    name = f"llvm.masked.load.v{vector_type.count}{suffix}.p0"
    mask_type = ir.VectorType(ir.IntType(1), vector_type.count)
    fnty = ir.FunctionType(vector_type, [pointer.type, _I32, mask_type, vector_type])
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    return builder.call(fn, [pointer, ir.Constant(_I32, align), mask,
                             ir.Constant(vector_type, None)])


def _transpose_reduce(builder, vectors):
    """``L`` vectors of ``L`` lanes -> one vector whose lane ``t`` sums vector ``t``."""
    lanes = len(vectors)
    segment, rows = lanes, 1  # each vector: `rows` rows, each folded into `segment` lanes
    while len(vectors) > 1:
        half = segment // 2
        merged = []
        for k in range(0, len(vectors), 2):
            low, high = [], []
            for offset in (0, lanes):
                for row in range(rows):
                    base = row * segment + offset
                    low.extend(range(base, base + half))
                    high.extend(range(base + half, base + segment))
            mask_type = ir.VectorType(_I32, lanes)
            first = builder.shuffle_vector(vectors[k], vectors[k + 1], ir.Constant(mask_type, low))
            second = builder.shuffle_vector(vectors[k], vectors[k + 1],
                                            ir.Constant(mask_type, high))
            merged.append(builder.fadd(first, second, flags=FLAGS))
        vectors = merged
        segment, rows = half, rows * 2
    return vectors[0]


@intrinsic
def prefer_wide_vectors(typingctx):
    """Mark the calling kernel to prefer 512-bit vectors (no run-time effect)."""
    sig = types.none()

    def codegen(context, builder, sig, args):
        _prefer_wide(builder)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def dot_rows(typingctx, matrix, offset, stride, vector, length, out, out_offset, prefetch):
    """``out[out_offset + t] += sum_j matrix[offset + t stride + j] vector[j]``, ``t < L``.

    ``matrix``, ``vector`` and ``out`` are 1-D C-contiguous arrays of one float dtype;
    ``L = lanes_of(itemsize)`` rows are read, ``length`` elements each (any length: the
    tail is a masked load). While reading element ``e`` of the block the cache line of
    element ``e + prefetch`` is prefetched into L1 (pass the offset of the next block to be
    read; 0 prefetches nothing new). No bounds checks: the caller guarantees them.
    """
    sig = types.none(matrix, offset, stride, vector, length, out, out_offset, prefetch)

    def codegen(context, builder, sig, args):
        _prefer_wide(builder)
        matrix_type = sig.args[0]
        m_ptr = _data(context, builder, matrix_type, args[0])
        v_ptr = _data(context, builder, sig.args[3], args[3])
        o_ptr = _data(context, builder, sig.args[5], args[5])
        offset_v, stride_v, length_v, out_offset_v, prefetch_v = (
            context.cast(builder, args[k], sig.args[k], types.int64) for k in (1, 2, 4, 6, 7))
        element = context.get_value_type(matrix_type.dtype)
        itemsize = context.get_abi_sizeof(element)
        lanes = lanes_of(itemsize)
        vector_type = ir.VectorType(element, lanes)
        vector_pointer = vector_type.as_pointer()
        lanes_c = ir.Constant(_I64, lanes)
        accumulators = [cgutils.alloca_once_value(builder, ir.Constant(vector_type, None))
                        for _ in range(lanes)]
        rows = [builder.gep(m_ptr, [builder.add(offset_v,
                                                builder.mul(stride_v, ir.Constant(_I64, t)))])
                for t in range(lanes)]
        chunks = builder.udiv(length_v, lanes_c)
        with cgutils.for_range(builder, chunks) as loop:
            j = builder.mul(loop.index, lanes_c)
            x = builder.load(builder.bitcast(builder.gep(v_ptr, [j]), vector_pointer), align=1)
            for t in range(lanes):
                pointer = builder.gep(rows[t], [j])
                w = builder.load(builder.bitcast(pointer, vector_pointer), align=1)
                _prefetch(builder, builder.gep(pointer, [prefetch_v]), 3)
                total = builder.fadd(builder.fmul(w, x, flags=FLAGS),
                                     builder.load(accumulators[t]), flags=FLAGS)
                builder.store(total, accumulators[t])
        done = builder.mul(chunks, lanes_c)
        rest = builder.sub(length_v, done)
        with builder.if_then(builder.icmp_signed(">", rest, ir.Constant(_I64, 0))):
            index = ir.Constant(ir.VectorType(_I64, lanes), list(range(lanes)))
            splat = builder.insert_element(ir.Constant(ir.VectorType(_I64, lanes), None), rest,
                                           ir.Constant(_I32, 0))
            splat = builder.shuffle_vector(splat, splat,
                                           ir.Constant(ir.VectorType(_I32, lanes), [0] * lanes))
            mask = builder.icmp_signed("<", index, splat)
            x = _masked_load(builder, builder.bitcast(builder.gep(v_ptr, [done]), vector_pointer),
                             mask, vector_type, itemsize)
            for t in range(lanes):
                pointer = builder.bitcast(builder.gep(rows[t], [done]), vector_pointer)
                w = _masked_load(builder, pointer, mask, vector_type, itemsize)
                total = builder.fadd(builder.fmul(w, x, flags=FLAGS),
                                     builder.load(accumulators[t]), flags=FLAGS)
                builder.store(total, accumulators[t])
        sums = _transpose_reduce(builder, [builder.load(a) for a in accumulators])
        target = builder.bitcast(builder.gep(o_ptr, [out_offset_v]), vector_pointer)
        builder.store(builder.fadd(builder.load(target, align=1), sums, flags=FLAGS), target,
                      align=1)
        return context.get_dummy_value()

    return sig, codegen
