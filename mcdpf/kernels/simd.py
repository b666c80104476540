"""Explicit SIMD building blocks for the kernels, as numba intrinsics emitting LLVM vectors.

LLVM's auto-vectoriser turns a row-by-row matrix-vector product into one horizontal
reduction per row (about ten shuffles and adds for four multiply-adds at ``n = 64``); the
block here multiplies ``L`` rows at once (``L`` = the lanes of one vector of ``B`` bytes)
and folds their ``L`` accumulators into one vector of ``L`` sums with a transpose-reduce
tree (``L - 1`` shuffle pairs and adds for ``L`` rows).

``B`` is a compile-time constant: :data:`VECTOR_BYTES` (:func:`native_vector_bytes`) is 64
on AVX-512 targets (16 float32 or 8 float64 rows per block, in 32 zmm registers) and 32
elsewhere, so that on AVX2 the ``L`` accumulators fit in 16 ymm registers. It follows the
CPU features numba compiles for, which key numba's cache, so a cached kernel always has
the width of its target. The width changes the order of the sums, hence the last bits.

``prefer_wide_vectors`` marks the calling kernel ``"prefer-vector-width"="512"`` (the
attribute clang's ``-mprefer-vector-width=512`` sets): LLVM's default for several Intel
cores is 256-bit vectors even with AVX-512; elsewhere the attribute changes nothing.
Arithmetic carries the kernels' fastmath flags (reassociation, contraction, no signed
zeros, reciprocals; never "no NaN" or "no inf").
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils, codegen, config, errors
from numba.extending import intrinsic, register_jitable

CACHE_LINE_BYTES = 64


def native_vector_bytes() -> int:
    """64 when numba compiles for AVX-512 (``avx512f``), else 32."""
    features = config.CPU_FEATURES
    if features is None:
        features = codegen.get_host_cpu_features()
    return 64 if "+avx512f" in features.split(",") else 32


VECTOR_BYTES = native_vector_bytes()
FLAGS = ("reassoc", "contract", "nsz", "arcp")
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


@register_jitable
def lanes_of(itemsize, vector_bytes):
    """Vector lanes (rows per block) for an element size and a vector width in bytes."""
    return vector_bytes // itemsize


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
def prefetch_l2(typingctx, array, index):
    """Prefetch the cache line of ``array[index]`` (1-D, C-contiguous) into L2 (no checks)."""
    sig = types.none(array, index)

    def codegen(context, builder, sig, args):
        index_v = context.cast(builder, args[1], sig.args[1], types.int64)
        pointer = builder.gep(_data(context, builder, sig.args[0], args[0]), [index_v])
        _prefetch(builder, pointer, 2)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def dot_rows(typingctx, matrix, offset, stride, vector, length, out, out_offset, prefetch,
             vector_bytes):
    """``out[out_offset + t] += sum_j matrix[offset + t stride + j] vector[j]``, ``t < L``.

    ``matrix``, ``vector`` and ``out`` are 1-D C-contiguous arrays of one float dtype;
    ``L = lanes_of(itemsize, vector_bytes)`` rows are read (``vector_bytes`` a literal),
    ``length`` elements each (any length: the tail is a masked load). Once per 64 bytes
    of each row, the cache line ``prefetch`` elements further on is prefetched into L1
    (pass the offset of the next block to be read; 0 prefetches nothing new). No bounds
    checks: the caller guarantees them.
    """
    if not isinstance(vector_bytes, types.IntegerLiteral):
        raise errors.RequireLiteralValue("dot_rows: vector_bytes must be a literal")
    sig = types.none(matrix, offset, stride, vector, length, out, out_offset, prefetch,
                     vector_bytes)

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
        lanes = lanes_of(itemsize, sig.args[8].literal_value)
        per_line = max(1, CACHE_LINE_BYTES // (lanes * itemsize))  # vectors per cache line
        vector_type = ir.VectorType(element, lanes)
        vector_pointer = vector_type.as_pointer()
        lanes_c = ir.Constant(_I64, lanes)
        accumulators = [cgutils.alloca_once_value(builder, ir.Constant(vector_type, None))
                        for _ in range(lanes)]
        rows = [builder.gep(m_ptr, [builder.add(offset_v,
                                                builder.mul(stride_v, ir.Constant(_I64, t)))])
                for t in range(lanes)]

        def multiply_add(j, with_prefetch):
            x = builder.load(builder.bitcast(builder.gep(v_ptr, [j]), vector_pointer), align=1)
            for t in range(lanes):
                pointer = builder.gep(rows[t], [j])
                w = builder.load(builder.bitcast(pointer, vector_pointer), align=1)
                if with_prefetch:
                    _prefetch(builder, builder.gep(pointer, [prefetch_v]), 3)
                total = builder.fadd(builder.fmul(w, x, flags=FLAGS),
                                     builder.load(accumulators[t]), flags=FLAGS)
                builder.store(total, accumulators[t])

        chunks = builder.udiv(length_v, lanes_c)
        lines = builder.udiv(chunks, ir.Constant(_I64, per_line))
        with cgutils.for_range(builder, lines) as loop:
            first = builder.mul(loop.index, ir.Constant(_I64, per_line))
            for k in range(per_line):
                multiply_add(builder.mul(builder.add(first, ir.Constant(_I64, k)), lanes_c),
                             k == 0)
        if per_line > 1:
            done_lines = builder.mul(lines, ir.Constant(_I64, per_line))
            with cgutils.for_range(builder, builder.sub(chunks, done_lines)) as loop:
                multiply_add(builder.mul(builder.add(done_lines, loop.index), lanes_c), True)
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
