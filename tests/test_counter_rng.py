"""Counter-based normals (mcdpf.kernels.counter_rng) and the fastmath log / sin / cos.

Statistical checks use fixed keys, so every result is deterministic (never flaky); their
tolerances are 5 standard errors of the statistic under the null hypothesis (or a
Kolmogorov-Smirnov critical value at alpha = 1e-3), so a correct generator passes them by a
wide margin while a real defect (a wrong bit, a shared uniform, a biased transform) fails.
"""

import math

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcdpf import kernels
from mcdpf.kernels import counter_rng, fastmath

DTYPES = [np.float32, np.float64]
KEY = kernels.stream_key(20240611, 1)
# Kolmogorov-Smirnov critical values from the asymptotic formula c(alpha) sqrt(1/n + 1/m),
# c(alpha) = sqrt(-log(alpha / 2) / 2).
KS_ALPHA = 1e-3
KS_C = math.sqrt(-math.log(KS_ALPHA / 2) / 2)

# Random123 tests/kat_vectors, the three "philox4x32 10" rows: counter, key, output.
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def philox(counters, keys):
    counters = np.atleast_2d(np.asarray(counters, dtype=np.uint32))
    keys = np.atleast_2d(np.asarray(keys, dtype=np.uint32))
    out = np.empty((counters.shape[0], 4), dtype=np.uint32)
    counter_rng.philox4x32_kernel(counters, keys, out)
    return out


def normals(rows, columns, dtype, step=0, key=KEY, first_id=0):
    out = np.empty((rows, columns), dtype=dtype)
    return kernels.normal_rows(out, np.arange(first_id, first_id + rows, dtype=np.int64),
                               step, key)


def ks_two_sample(a, b):
    a, b = np.sort(a), np.sort(b)
    points = np.concatenate([a, b])
    return np.max(np.abs(np.searchsorted(a, points, side="right") / a.size
                         - np.searchsorted(b, points, side="right") / b.size))


def normal_tail(k):
    """P(|N(0, 1)| > k)."""
    return math.erfc(k / math.sqrt(2))


# --- Philox4x32-10 -------------------------------------------------------------------------

@pytest.mark.parametrize("counter, key, expected", KAT)
def test_philox_known_answers(counter, key, expected):
    assert naive.philox4x32(counter, key) == expected
    assert tuple(int(w) for w in philox(counter, key)[0]) == expected


@settings(max_examples=100, deadline=None)
@given(counter=st.tuples(*[st.integers(0, 2**32 - 1)] * 4),
       key=st.tuples(*[st.integers(0, 2**32 - 1)] * 2))
def test_philox_matches_plain_python(counter, key):
    assert tuple(int(w) for w in philox(counter, key)[0]) == naive.philox4x32(counter, key)


def test_philox_matches_vectorised_reference_in_bulk():
    rng = np.random.default_rng(5)
    counters = rng.integers(0, 2**32, (20000, 4), dtype=np.uint64)
    keys = rng.integers(0, 2**32, (20000, 2), dtype=np.uint64)
    want = naive.philox4x32_numpy(counters, keys)
    np.testing.assert_array_equal(philox(counters, keys), want)
    for row in range(0, 20000, 997):
        assert naive.philox4x32(counters[row], keys[row]) == tuple(int(w) for w in want[row])


def test_stream_key_is_seed_sequence():
    words = np.random.SeedSequence([7, 3]).generate_state(2, np.uint32)
    assert kernels.stream_key(7, 3) == (int(words[0]), int(words[1]))
    keys = {kernels.stream_key(seed, purpose) for seed in range(20) for purpose in range(5)}
    assert len(keys) == 100
    with pytest.raises(ValueError):
        kernels.stream_key(-1, 0)


# --- uniforms --------------------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2, 7, 1000])
def test_uniforms_follow_the_documented_formula(count):
    step, stream = 12, 2**40 + 9
    got = kernels.random_uniforms(count, step, stream, KEY)
    blocks = (count + 1) // 2
    counters = np.zeros((blocks, 4), dtype=np.uint64)
    counters[:, 0] = np.arange(blocks)
    counters[:, 1:] = (step, stream & 0xFFFFFFFF, stream >> 32)
    words = naive.philox4x32_numpy(counters, np.tile(np.array(KEY, dtype=np.uint64),
                                                      (blocks, 1)))
    want = np.stack([naive.counter_uniform64(words[:, 0], words[:, 1]),
                     naive.counter_uniform64(words[:, 2], words[:, 3])], axis=1).ravel()
    np.testing.assert_array_equal(got, want[:count])
    # Prefix property: the first values do not depend on how many were asked for.
    np.testing.assert_array_equal(kernels.random_uniforms(count + 3, step, stream, KEY)[:count],
                                  got)


def test_uniforms_are_uniform_on_the_open_interval():
    n = 2**20
    u = kernels.random_uniforms(n, 3, 1, KEY)
    assert u.min() >= 2.0**-53 and u.max() <= 1 - 2.0**-53
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 5 / math.sqrt(n)  # two words of a block
    assert abs(np.corrcoef(u[:-2], u[2:])[0, 1]) < 5 / math.sqrt(n)  # adjacent blocks
    # Other streams and steps: other (uncorrelated) sequences.
    for other in (kernels.random_uniforms(n, 3, 2, KEY), kernels.random_uniforms(n, 4, 1, KEY)):
        assert abs(np.corrcoef(u, other)[0, 1]) < 5 / math.sqrt(n)
    u = np.sort(u)
    grid = np.arange(1, n + 1) / n
    d = max(np.max(grid - u), np.max(u - (grid - 1 / n)))  # one-sample KS against U(0, 1)
    assert d < KS_C / math.sqrt(n)


def test_uniform_bit_formulas_are_exact_and_open():
    words = np.array([0, 1, 255, 256, 2**31, 2**32 - 1], dtype=np.uint64)
    u32 = naive.counter_uniform32(words)
    assert np.all(u32.astype(np.float32) == u32)  # exactly representable in float32
    assert u32.min() == 2.0**-24 and u32.max() == 1 - 2.0**-24
    u64 = naive.counter_uniform64(words, words[::-1])
    assert u64.min() > 0 and u64.max() < 1
    assert naive.counter_uniform64(2**32 - 1, 2**32 - 1) == 1 - 2.0**-53


# --- normals: the format -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("columns", [1, 2, 3, 5, 46, 1031, 2053])
def test_normals_follow_the_documented_format(dtype, columns):
    ids = np.array([0, 5, -1, 2**40 + 3], dtype=np.int64)
    out = kernels.normal_rows(np.empty((4, columns), dtype=dtype), ids, 11, KEY)
    assert out.dtype == dtype
    # float32: a few ulp of the largest |z| (5.8); float64: ~10 ulp.
    tolerance = 2e-6 if dtype == np.float32 else 1e-14
    for row, ident in enumerate(ids):
        np.testing.assert_allclose(out[row], naive.counter_normals(KEY, 11, ident, columns,
                                                                   dtype),
                                   rtol=0, atol=tolerance)


@pytest.mark.parametrize("dtype", DTYPES)
def test_values_depend_only_on_key_step_id_and_index(dtype):
    ids = np.array([3, 2**33 + 3, -7, 3, 11], dtype=np.int64)
    wide = kernels.normal_rows(np.empty((5, 1000), dtype=dtype), ids, 4, KEY)
    np.testing.assert_array_equal(wide[0], wide[3])  # same id, another row
    assert not np.any(wide[0] == wide[1])  # id_hi is part of the counter
    for columns in (1, 3, 7, 513):  # another length: a prefix of the same stream
        narrow = kernels.normal_rows(np.empty((5, columns), dtype=dtype), ids, 4, KEY)
        np.testing.assert_array_equal(narrow, wide[:, :columns])
    order = np.array([4, 2, 0, 1, 3])
    permuted = kernels.normal_rows(np.empty((5, 1000), dtype=dtype), ids[order], 4, KEY)
    np.testing.assert_array_equal(permuted, wide[order])
    scaled = kernels.normal_rows(np.empty((5, 1000), dtype=dtype), ids, 4, KEY, scale=0.5)
    np.testing.assert_array_equal(scaled, wide * dtype(0.5))  # a power of 2: exact
    for other in (kernels.normal_rows(np.empty((5, 1000), dtype=dtype), ids, 5, KEY),
                  kernels.normal_rows(np.empty((5, 1000), dtype=dtype), ids, 4,
                                      kernels.stream_key(20240611, 2))):
        assert np.mean(other == wide) < 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
def test_short_rows_share_passes_with_the_same_values(dtype):
    """Rows of a few blocks take the many-rows-per-pass path: still a prefix of the stream.

    1000 rows span several row tiles of that path; widths around one block and the path's
    limit (4 blocks: 16 float32 or 8 float64 values).
    """
    ids = np.random.default_rng(5).integers(-2**62, 2**62, 1000)
    wide = kernels.normal_rows(np.empty((1000, 40), dtype=dtype), ids, 9, KEY, 0.3)
    for columns in (1, 2, 4, 5, 8, 9, 16, 17):
        narrow = kernels.normal_rows(np.empty((1000, columns), dtype=dtype), ids, 9, KEY, 0.3)
        np.testing.assert_array_equal(narrow, wide[:, :columns], err_msg=str(columns))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("columns", [517, 4])  # the row-at-a-time and the short-row path
def test_add_and_fused_gather_are_exact(dtype, columns):
    rng = np.random.default_rng(1)
    source = rng.standard_normal((13, columns)).astype(dtype)
    ancestors = np.array([0, 0, 12, 5, 5, 5, 1, 2, 3, 9, 9, 12], dtype=np.int64)
    ids = np.arange(100, 112, dtype=np.int64)
    scale = 0.37
    noise = kernels.normal_rows(np.empty((12, columns), dtype=dtype), ids, 8, KEY, scale)
    fused = kernels.gather_add_normal(source, ancestors, ids, 8, KEY, scale)
    np.testing.assert_array_equal(fused, source[ancestors] + noise)
    assert fused.ctypes.data % 64 == 0 and fused.flags.c_contiguous  # on a cache line
    added = kernels.normal_rows(source[ancestors].copy(), ids, 8, KEY, scale, add=True)
    np.testing.assert_array_equal(added, source[ancestors] + noise)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
@pytest.mark.parametrize("shape", [(0, 5), (3, 7), (512, 1360), (9,)])
def test_aligned_empty_starts_on_a_cache_line(dtype, shape):
    array = kernels.aligned_empty(shape, dtype)
    assert array.shape == shape and array.dtype == dtype and array.flags.c_contiguous
    assert array.flags.writeable and (array.size == 0 or array.ctypes.data % 64 == 0)
    array[...] = 1
    assert array.sum() == array.size


@pytest.mark.parametrize("dtype", DTYPES)
# not multiples of the tasks' rows or of a Philox block, several tasks each (~16k values
# per task); 4 columns: the short-row path
@pytest.mark.parametrize("rows, columns", [(41, 1031), (10001, 4)])
def test_parallel_kernels_are_bit_identical_to_serial(dtype, rows, columns):
    rng = np.random.default_rng(2)
    ids = rng.integers(-2**62, 2**62, rows)
    source = rng.standard_normal((5, columns)).astype(dtype)
    ancestors = rng.integers(0, 5, rows)
    serial = {
        "set": kernels.normal_rows(np.empty((rows, columns), dtype=dtype), ids, 3, KEY, 0.1),
        "add": kernels.normal_rows(source[ancestors].copy(), ids, 3, KEY, 0.1, add=True),
        "gather": kernels.gather_add_normal(source, ancestors, ids, 3, KEY, 0.1),
    }
    threads = kernels.get_num_threads()
    try:
        for count in sorted({1, min(2, threads)}):
            kernels.set_num_threads(count)
            parallel = {
                "set": kernels.normal_rows(np.empty((rows, columns), dtype=dtype), ids, 3, KEY,
                                           0.1, parallel=True),
                "add": kernels.normal_rows(source[ancestors].copy(), ids, 3, KEY, 0.1,
                                           add=True, parallel=True),
                "gather": kernels.gather_add_normal(source, ancestors, ids, 3, KEY, 0.1,
                                                    parallel=True),
            }
            for name, values in serial.items():
                np.testing.assert_array_equal(parallel[name], values, err_msg=name)
    finally:
        kernels.set_num_threads(threads)


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (3, 0)])
@pytest.mark.parametrize("parallel", [False, True])
def test_empty_arrays_are_no_work(shape, parallel):
    ids = np.arange(shape[0], dtype=np.int64)
    out = kernels.normal_rows(np.zeros(shape), ids, 1, KEY, parallel=parallel)
    assert out.shape == shape
    added = kernels.normal_rows(np.ones(shape), ids, 1, KEY, add=True, parallel=parallel)
    assert np.all(added == 1)
    source = np.ones((2, shape[1]))
    fused = kernels.gather_add_normal(source, np.zeros(shape[0], dtype=np.int64), ids, 1,
                                      KEY, 0.1, parallel=parallel)
    assert fused.shape == shape and np.all(fused == 1)


def test_wrappers_reject_bad_arguments():
    out = np.empty((3, 4))
    ids = np.arange(3)
    with pytest.raises(ValueError):
        kernels.normal_rows(out, ids, 2**32, KEY)
    with pytest.raises(ValueError):
        kernels.normal_rows(out, ids, 0, (2**32, 0))
    with pytest.raises(TypeError):
        kernels.normal_rows(out, ids.astype(np.int32), 0, KEY)
    with pytest.raises(TypeError):
        kernels.normal_rows(out.T, ids, 0, KEY)
    with pytest.raises(ValueError):
        kernels.gather_add_normal(out, np.array([0, 3, 1]), ids, 0, KEY, 1.0)
    with pytest.raises(ValueError):
        kernels.gather_add_normal(out, ids, ids, 0, KEY, 1.0, out=out)
    with pytest.raises(ValueError):
        kernels.gather_add_normal(out, ids, ids, 0, KEY, 1.0, out=np.empty((3, 4), np.float32))
    with pytest.raises(ValueError):
        kernels.random_uniforms(3, 0, 2**64, KEY)


# --- normals: the distribution -------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_moments(dtype):
    z = normals(64, 2**15, dtype).astype(np.float64).ravel()
    n = z.size
    mean = z.mean()
    centred = z - mean
    variance = np.mean(centred**2)
    skewness = np.mean(centred**3) / variance**1.5
    excess_kurtosis = np.mean(centred**4) / variance**2 - 3
    assert abs(mean) < 5 * math.sqrt(1 / n)
    assert abs(variance - 1) < 5 * math.sqrt(2 / n)
    assert abs(skewness) < 5 * math.sqrt(6 / n)
    assert abs(excess_kurtosis) < 5 * math.sqrt(24 / n)


@pytest.mark.parametrize("dtype", DTYPES)
def test_two_sample_kolmogorov_smirnov_against_numpy(dtype):
    # 4 million values a side. (Offline, scipy's one-sample KS p-values of 200 disjoint
    # samples of 10^6 were uniform, as were chi-square tests of 10^8 values in 1000 bins.)
    ours = normals(200, 20000, dtype).ravel()
    theirs = np.random.default_rng(3).standard_normal(ours.size, dtype=dtype)
    d = ks_two_sample(ours, theirs)
    assert d < KS_C * math.sqrt(2 / ours.size)
    # The test has power: a 1% scale error is rejected at this size.
    assert ks_two_sample(ours * dtype(1.01), theirs) > KS_C * math.sqrt(2 / ours.size)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tails(dtype):
    z = np.abs(normals(64, 2**16, dtype).ravel())
    n = z.size
    for k in (3.0, 4.0):
        p = normal_tail(k)
        assert abs(np.mean(z > k) - p) < 5 * math.sqrt(p * (1 - p) / n), k
    # The documented bound of Box-Muller with uniforms >= 2^-24 (2^-53).
    bound = math.sqrt(-2 * math.log(2.0**-24 if dtype == np.float32 else 2.0**-53))
    assert z.max() <= bound * (1 + 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_independence_across_particles_steps_blocks_and_pairs(dtype):
    rows, columns = 256, 4096
    a = normals(rows, columns, dtype, step=5).astype(np.float64)
    b = normals(rows, columns, dtype, step=6).astype(np.float64)
    per_block = 4 if dtype == np.float32 else 2

    def corr(x, y):
        return np.corrcoef(x.ravel(), y.ravel())[0, 1]

    pairs = {
        "adjacent ids": (a[0::2], a[1::2]),
        "adjacent steps": (a, b),
        "adjacent blocks": (a[:, :-per_block], a[:, per_block:]),
        "other key": (a, normals(rows, columns, dtype, step=5,
                                 key=kernels.stream_key(20240611, 2))),
        "cos, sin of one pair": (a[:, 0::2], a[:, 1::2]),
        "squares of one pair": (a[:, 0::2] ** 2, a[:, 1::2] ** 2),
    }
    if dtype == np.float32:
        pairs["two pairs of one block"] = (a[:, 0::4], a[:, 2::4])
        pairs["squares, two pairs"] = (a[:, 0::4] ** 2, a[:, 2::4] ** 2)
    for name, (x, y) in pairs.items():
        assert abs(corr(x, y)) < 5 / math.sqrt(x.size), name


# --- fastmath log, sin and cos -------------------------------------------------------------

def ulp_error(got, want, dtype):
    want = np.asarray(want, dtype=np.float64)
    spacing = np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
    return np.max(np.abs(got.astype(np.float64) - want) / spacing)


@pytest.mark.parametrize("dtype, bound", [(np.float32, 3.0), (np.float64, 3.0)])
def test_log_accuracy(dtype, bound):
    rng = np.random.default_rng(4)
    top = 88.0 if dtype == np.float32 else 709.0
    x = np.concatenate([np.exp(rng.uniform(-top, top, 10**6)),
                        1 + rng.uniform(-1e-3, 1e-3, 10**5),
                        rng.uniform(0.5, 2.0, 10**5)]).astype(dtype)
    x = x[(x > 0) & np.isfinite(x)]
    out = np.empty_like(x)
    fastmath.log_kernel(x, out)
    assert ulp_error(out, np.log(x.astype(np.float64)), dtype) <= bound
    # Box-Muller's inputs: odd multiples of 2^-24 (float32), every one of them.
    if dtype == np.float32:
        u = ((2 * np.arange(2**23, dtype=np.float64) + 1) * 2.0**-24).astype(np.float32)
        out = np.empty_like(u)
        fastmath.log_kernel(u, out)
        assert ulp_error(out, np.log(u.astype(np.float64)), dtype) <= bound


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_special_values(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.array([0.0, -0.0, -1.0, np.inf, -np.inf, np.nan, 1.0, tiny, 3 * tiny,
                  np.finfo(dtype).tiny, np.finfo(dtype).max], dtype=dtype)
    out = np.empty_like(x)
    fastmath.log_kernel(x, out)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.log(x.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(out[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)])
    np.testing.assert_allclose(out[finite], want[finite], rtol=4 * np.finfo(dtype).eps,
                               atol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("limit", [4.0, 1e3, 1e7])
def test_sincos_accuracy(dtype, limit):
    rng = np.random.default_rng(6)
    x = rng.uniform(-limit, limit, 10**6).astype(dtype)
    # The hardest arguments for a range reduction: the floats nearest multiples of pi/2.
    k = rng.integers(1, int(limit / (np.pi / 2)) + 1, 10**4)
    x = np.concatenate([x, (k * (np.pi / 2)).astype(dtype)])
    s, c = np.empty_like(x), np.empty_like(x)
    fastmath.sincos_kernel(x, s, c)
    x64 = x.astype(np.float64)
    assert ulp_error(s, np.sin(x64), dtype) <= 2.5
    assert ulp_error(c, np.cos(x64), dtype) <= 2.5


@pytest.mark.parametrize("dtype", DTYPES)
def test_sincospi_accuracy_and_exact_reduction(dtype):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-1, 1, 10**6), rng.uniform(-1e6, 1e6, 10**5),
                        [0.0, 0.25, 0.5, 1.0, 1.5, -0.5, 2.0**20 + 0.5, 1e30]]).astype(dtype)
    s, c = np.empty_like(x), np.empty_like(x)
    fastmath.sincospi_kernel(x, s, c)
    x64 = x.astype(np.float64)
    reduced = x64 - 2 * np.rint(x64 / 2)  # exact: sin(pi x) = sin(pi reduced)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(s, np.sin(np.pi * reduced), rtol=0, atol=2 * eps)
    np.testing.assert_allclose(c, np.cos(np.pi * reduced), rtol=0, atol=2 * eps)
    # Exact zeros and ones at multiples of 1/2, however large.
    exact = [-8, -6, -5, -4, -3, -2, -1]
    np.testing.assert_array_equal(s[exact], [0, 1, 0, -1, -1, 1, 0])
    np.testing.assert_array_equal(c[exact], [1, 0, -1, 0, 0, 0, 1])


def test_sincos_of_non_finite_is_nan():
    for dtype in DTYPES:
        x = np.array([np.inf, -np.inf, np.nan], dtype=dtype)
        s, c = np.empty_like(x), np.empty_like(x)
        fastmath.sincos_kernel(x, s, c)
        assert np.all(np.isnan(s)) and np.all(np.isnan(c))
