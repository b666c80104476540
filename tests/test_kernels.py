"""Every kernel against its plain-numpy reference; resampling unbiasedness."""

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcdpf import kernels
from mcdpf.registry import RESAMPLING

DTYPE_TOLERANCE = {np.float64: 1e-12, np.float32: 2e-5}


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), p=st.integers(1, 5), particles=st.integers(1, 9),
       length=st.integers(1, 12), dtype=st.sampled_from([np.float64, np.float32]),
       scale=st.floats(0.1, 3.0), seed=st.integers(0, 2**31))
def test_lstm_kernel_matches_reference(n, p, particles, length, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    theta = (scale * rng.standard_normal((particles, kernels.lstm_parameter_count(n, p))))
    columns = rng.standard_normal((length, p))
    start = rng.standard_normal((particles, 2 * n))
    got = kernels.lstm_mean_states(theta.astype(dtype), columns.astype(dtype),
                                   start.astype(dtype), n)
    want = naive.lstm_mean_states(theta.astype(dtype), columns.astype(dtype),
                                  start.astype(dtype), n)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=DTYPE_TOLERANCE[dtype],
                               atol=DTYPE_TOLERANCE[dtype])


def test_lstm_kernel_saturates_without_nan():
    theta = np.full((2, kernels.lstm_parameter_count(2, 2)), 1e4)
    theta[1] *= -1
    out = kernels.lstm_mean_states(theta, np.ones((3, 2)), np.zeros((2, 4)), 2)
    assert np.all(np.isfinite(out))


def test_lstm_wrapper_rejects_bad_shapes_and_dtypes():
    theta = np.zeros((3, kernels.lstm_parameter_count(2, 2)))
    with pytest.raises(ValueError):
        kernels.lstm_mean_states(theta, np.zeros((4, 3)), np.zeros((3, 4)), 2)
    with pytest.raises(TypeError):
        kernels.lstm_mean_states(theta, np.zeros((4, 2), np.float32), np.zeros((3, 4)), 2)
    with pytest.raises(ValueError):
        kernels.lstm_mean_states(theta, np.zeros((0, 2)), np.zeros((3, 4)), 2)
    with pytest.raises(ValueError):
        kernels.lstm_mean_states(theta, np.zeros((4, 2)), np.zeros((2, 4)), 2)


@settings(max_examples=50, deadline=None)
@given(log_weights=st.lists(st.floats(-800, 800), min_size=1, max_size=50))
def test_normalize_matches_reference(log_weights):
    weights, log_total = kernels.normalize_log_weights(np.array(log_weights))
    want, want_total = naive.normalize(log_weights)
    np.testing.assert_allclose(weights, want, rtol=1e-12, atol=1e-300)
    assert log_total == pytest.approx(want_total, rel=1e-12, abs=1e-12)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert kernels.effective_sample_size(weights) == pytest.approx(naive.ess(weights),
                                                                    rel=1e-12)


def test_normalize_survives_huge_negative_log_weights():
    # exp() of these underflows to zero in the linear domain; log-sum-exp must not.
    weights, log_total = kernels.normalize_log_weights(np.array([-1e6, -1e6 - 1.0]))
    np.testing.assert_allclose(weights, [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1))])
    assert np.isfinite(log_total)


def test_normalize_degenerate_is_reported_and_uniform():
    for bad in ([-np.inf, -np.inf], [np.nan, np.nan], [np.nan, -np.inf, np.nan]):
        weights, log_total = kernels.normalize_log_weights(np.array(bad))
        assert log_total == -np.inf
        np.testing.assert_allclose(weights, np.full(len(bad), 1 / len(bad)))
    weights, log_total = kernels.normalize_log_weights(np.array([np.nan, 0.0]))
    np.testing.assert_allclose(weights, [0.0, 1.0])
    assert log_total == 0.0


def test_ess_bounds():
    assert kernels.effective_sample_size(np.full(10, 0.1)) == pytest.approx(10)
    assert kernels.effective_sample_size(np.eye(1, 10)[0]) == pytest.approx(1)


@pytest.mark.parametrize("scheme", sorted(RESAMPLING))
@pytest.mark.parametrize("n_out", [1, 5, 13])
def test_resampling_is_unbiased(scheme, n_out):
    """Mean offspring count of particle i over R draws is n_out * w_i.

    Tolerance: 5 standard errors of the multinomial count (the highest-variance scheme),
    sqrt(n_out w (1 - w) / R), plus rounding; seeded, so it cannot flake.
    """
    rng = np.random.default_rng(12345)
    weights = rng.dirichlet(np.full(7, 0.7))
    repeats = 20000
    counts = np.zeros(weights.size)
    for _ in range(repeats):
        ancestors = kernels.resample(scheme, weights, n_out, rng)
        assert ancestors.shape == (n_out,)
        assert np.all(np.diff(ancestors) >= 0)
        assert ancestors.min() >= 0 and ancestors.max() < weights.size
        counts += np.bincount(ancestors, minlength=weights.size)
    expected = n_out * weights
    standard_error = np.sqrt(n_out * weights * (1 - weights) / repeats)
    assert np.all(np.abs(counts / repeats - expected) <= 5 * standard_error + 1e-9)


@pytest.mark.parametrize("scheme", sorted(RESAMPLING))
def test_resampling_respects_zero_weights_and_rounding(scheme):
    rng = np.random.default_rng(0)
    weights = np.array([0.0, 0.5, 0.0, 0.5 - 1e-17, 0.0])
    for _ in range(200):
        ancestors = kernels.resample(scheme, weights, 4, rng)
        assert set(ancestors.tolist()) <= {1, 3}


def test_low_variance_schemes_keep_deterministic_part():
    """Systematic, stratified and residual give floor(n w) or ceil(n w) copies."""
    rng = np.random.default_rng(1)
    weights = np.array([0.45, 0.3, 0.25])
    for scheme in ("systematic", "residual"):
        for _ in range(200):
            copies = np.bincount(kernels.resample(scheme, weights, 10, rng), minlength=3)
            assert np.all(copies >= np.floor(10 * weights))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), p=st.integers(1, 4), length=st.integers(1, 7),
       seed=st.integers(0, 2**31))
def test_lstm_gradient_matches_finite_differences(n, p, length, seed):
    """Central differences, step 1e-6: truncation and rounding errors stay below 1e-6
    (absolute) for these O(1) values; the tolerance is 1e-5 + 1e-5 relative."""
    rng = np.random.default_rng(seed)
    size = kernels.lstm_parameter_count(n, p)
    theta = rng.standard_normal(size)
    columns = rng.standard_normal((length, p))
    start = 0.5 * rng.standard_normal(2 * n)
    prediction, gradient, state = kernels.lstm_prediction_gradient(theta, columns, start, n)
    reference_state = naive.lstm_mean_states(theta[None], columns, start[None], n)[0]
    np.testing.assert_allclose(state, reference_state, rtol=1e-12, atol=1e-12)
    assert prediction == pytest.approx(theta[-n:] @ reference_state[n:], rel=1e-12, abs=1e-12)
    step = 1e-6
    numeric = np.empty(size)
    for k in range(size):
        shifted = theta.copy()
        shifted[k] += step
        up = kernels.lstm_prediction_gradient(shifted, columns, start, n)[0]
        shifted[k] -= 2 * step
        down = kernels.lstm_prediction_gradient(shifted, columns, start, n)[0]
        numeric[k] = (up - down) / (2 * step)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-5)


def test_lstm_gradient_float32_agrees_with_float64():
    rng = np.random.default_rng(3)
    theta = rng.standard_normal(kernels.lstm_parameter_count(3, 2))
    columns = rng.standard_normal((5, 2))
    start = np.zeros(6)
    p64, g64, _ = kernels.lstm_prediction_gradient(theta, columns, start, 3)
    p32, g32, _ = kernels.lstm_prediction_gradient(theta.astype(np.float32),
                                                   columns.astype(np.float32),
                                                   start.astype(np.float32), 3)
    assert g32.dtype == np.float32
    assert p32 == pytest.approx(p64, abs=1e-5)
    np.testing.assert_allclose(g32, g64, atol=1e-4)


@pytest.mark.parametrize("kernel", ["batch", "particle"])
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 9), p=st.integers(1, 6), particles=st.integers(1, 20),
       length=st.integers(1, 9), dtype=st.sampled_from([np.float64, np.float32]),
       seed=st.integers(0, 2**31))
def test_both_forward_kernels_match_reference(kernel, n, p, particles, length, dtype, seed):
    """Whichever kernel the size selects, both are correct at every size."""
    from mcdpf.kernels.lstm import lstm_batch_major_kernel, lstm_particle_major_kernel

    chosen = lstm_batch_major_kernel if kernel == "batch" else lstm_particle_major_kernel
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((particles, kernels.lstm_parameter_count(n, p))).astype(dtype)
    columns = rng.standard_normal((length, p)).astype(dtype)
    start = rng.standard_normal((particles, 2 * n)).astype(dtype)
    out = np.empty((particles, 2 * n), dtype=dtype)
    chosen(theta, columns, start, n, out)
    want = naive.lstm_mean_states(theta, columns, start, n)
    np.testing.assert_allclose(out, want, rtol=DTYPE_TOLERANCE[dtype],
                               atol=DTYPE_TOLERANCE[dtype])


@pytest.mark.parametrize("vector_bytes", [32, 64])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_particle_major_block_widths_match_reference(vector_bytes, dtype):
    """Both SIMD block widths (32 bytes without AVX-512, 64 with) match the reference,
    forced on this machine, with masked tails, a leftover vector after the cache lines
    and rows left over after the blocks; the public kernel uses the native width."""
    from mcdpf.kernels.lstm import _particle_major_range, lstm_particle_major_kernel
    from mcdpf.kernels.simd import VECTOR_BYTES

    rng = np.random.default_rng(11)
    for n, p, particles, length in ((64, 16, 3, 3), (9, 3, 4, 5), (16, 8, 2, 2), (5, 1, 3, 4)):
        theta = rng.standard_normal((particles, kernels.lstm_parameter_count(n, p)))
        theta = (0.5 * theta).astype(dtype)
        columns = rng.standard_normal((length, p)).astype(dtype)
        start = rng.standard_normal((particles, 2 * n)).astype(dtype)
        got = np.full((particles, 2 * n), np.nan, dtype=dtype)
        _particle_major_range(theta, columns, start, n, got, 0, particles, vector_bytes)
        np.testing.assert_allclose(got, naive.lstm_mean_states(theta, columns, start, n),
                                   rtol=DTYPE_TOLERANCE[dtype], atol=DTYPE_TOLERANCE[dtype])
        if vector_bytes == VECTOR_BYTES:
            native = np.empty_like(got)
            lstm_particle_major_kernel(theta, columns, start, n, native)
            assert np.array_equal(native, got)


def test_native_vector_bytes_follows_numba_target(monkeypatch):
    """64-byte blocks exactly when numba compiles for AVX-512."""
    from numba.core import config

    from mcdpf.kernels.simd import native_vector_bytes

    monkeypatch.setattr(config, "CPU_FEATURES", "+avx,+avx2,+fma,-avx512f")
    assert native_vector_bytes() == 32
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx,+avx2,+avx512f,+avx512vl")
    assert native_vector_bytes() == 64


@pytest.mark.parametrize("kind", ["batch", "particle"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parallel_forward_kernels_bit_identical_for_any_thread_count(kind, dtype):
    """Parallel twins give exactly the serial result with 1 and 2 threads."""
    import numba

    from mcdpf.kernels import lstm

    serial = getattr(lstm, f"lstm_{kind}_major_kernel")
    parallel = getattr(lstm, f"lstm_{kind}_major_parallel_kernel")
    rng = np.random.default_rng(7)
    before = numba.get_num_threads()
    try:
        for n, p, particles, length in ((2, 2, 80, 2), (16, 2, 301, 3), (5, 3, 1, 4),
                                        (9, 4, 37, 5)):
            theta = rng.standard_normal((particles, kernels.lstm_parameter_count(n, p)))
            theta = theta.astype(dtype)
            columns = rng.standard_normal((length, p)).astype(dtype)
            start = rng.standard_normal((particles, 2 * n)).astype(dtype)
            want = np.empty((particles, 2 * n), dtype=dtype)
            serial(theta, columns, start, n, want)
            np.testing.assert_allclose(want, naive.lstm_mean_states(theta, columns, start, n),
                                       rtol=DTYPE_TOLERANCE[dtype], atol=DTYPE_TOLERANCE[dtype])
            for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
                numba.set_num_threads(threads)
                got = np.full_like(want, np.nan)
                parallel(theta, columns, start, n, got)
                assert np.array_equal(got, want), (n, p, particles, threads)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(kernels.lstm_mean_states(theta, columns, start, n, parallel=True),
                          kernels.lstm_mean_states(theta, columns, start, n))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 10), p=st.integers(1, 4), particles=st.integers(1, 40),
       length=st.integers(1, 6), dtype=st.sampled_from([np.float64, np.float32]),
       seed=st.integers(0, 2**31))
def test_population_gradient_matches_single_vector_kernel(n, p, particles, length, dtype,
                                                          seed):
    """Row i is the single-vector kernel's answer for particle i: bit-identical on the
    particle-major path (the same code), within 1e-12 (float64) / 2e-6 (float32) relative
    to the largest entry on the batch-major path (SIMD across particles, sums in another
    association)."""
    from mcdpf.kernels.gradient import GRADIENT_BATCH_MAX_WORK

    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((particles, kernels.lstm_parameter_count(n, p))).astype(dtype)
    columns = rng.standard_normal((length, p)).astype(dtype)
    start = (0.5 * rng.standard_normal((particles, 2 * n))).astype(dtype)
    predictions, gradient, state = kernels.lstm_population_gradient(theta, columns, start, n)
    single = [kernels.lstm_prediction_gradient(theta[i], columns, start[i], n)
              for i in range(particles)]
    want_predictions = np.array([s[0] for s in single])
    want_gradient = np.array([s[1] for s in single])
    want_state = np.array([s[2] for s in single])
    assert gradient.dtype == dtype and state.dtype == dtype
    if n * (n + p) > GRADIENT_BATCH_MAX_WORK:
        assert np.array_equal(gradient, want_gradient)
        assert np.array_equal(state, want_state)
        assert np.array_equal(predictions, want_predictions)
    else:
        tolerance = 1e-12 if dtype == np.float64 else 2e-6
        scale = max(1.0, np.abs(want_gradient).max())
        np.testing.assert_allclose(gradient, want_gradient, rtol=0, atol=tolerance * scale)
        np.testing.assert_allclose(state, want_state, rtol=0, atol=tolerance)
        np.testing.assert_allclose(predictions, want_predictions, rtol=0,
                                   atol=tolerance * max(1.0, np.abs(want_predictions).max()))


@pytest.mark.parametrize("n", [2, 18])
def test_population_gradient_matches_finite_differences(n):
    """Both paths (batch-major at n = 2, particle-major at n = 18) against central
    differences of the forward kernel's prediction, step 1e-6, tolerance 1e-5."""
    p, particles, length = 2, 3, 4
    rng = np.random.default_rng(n)
    size = kernels.lstm_parameter_count(n, p)
    theta = 0.5 * rng.standard_normal((particles, size))
    columns = rng.standard_normal((length, p))
    start = 0.5 * rng.standard_normal((particles, 2 * n))
    predictions, gradient, state = kernels.lstm_population_gradient(theta, columns, start, n)
    np.testing.assert_allclose(state, naive.lstm_mean_states(theta, columns, start, n),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(predictions, np.sum(theta[:, -n:] * state[:, n:], axis=1),
                               rtol=1e-12, atol=1e-12)
    step = 1e-6
    for k in rng.choice(size, 25, replace=False):
        shifted = theta.copy()
        shifted[:, k] += step
        up = kernels.lstm_population_gradient(shifted, columns, start, n)[0]
        shifted[:, k] -= 2 * step
        down = kernels.lstm_population_gradient(shifted, columns, start, n)[0]
        np.testing.assert_allclose(gradient[:, k], (up - down) / (2 * step), rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize("n", [2, 18])
def test_population_gradient_parallel_bit_identical(n):
    import numba

    p, particles, length = 3, 203 if n < 10 else 41, 5
    rng = np.random.default_rng(11)
    theta = rng.standard_normal((particles, kernels.lstm_parameter_count(n, p)))
    columns = rng.standard_normal((length, p))
    start = rng.standard_normal((particles, 2 * n))
    want = kernels.lstm_population_gradient(theta, columns, start, n)
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            got = kernels.lstm_population_gradient(theta, columns, start, n, parallel=True)
            for g, w in zip(got, want, strict=True):
                assert np.array_equal(g, w)
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_population_gradient_particle_path_is_bit_identical(dtype):
    """Above GRADIENT_BATCH_MAX_WORK the population kernel runs the single-vector code."""
    from mcdpf.kernels.gradient import GRADIENT_BATCH_MAX_WORK

    n, p, particles, length = 17, 2, 5, 4
    assert n * (n + p) > GRADIENT_BATCH_MAX_WORK
    rng = np.random.default_rng(5)
    theta = (0.5 * rng.standard_normal((particles, kernels.lstm_parameter_count(n, p))))
    theta = theta.astype(dtype)
    columns = rng.standard_normal((length, p)).astype(dtype)
    start = (0.5 * rng.standard_normal((particles, 2 * n))).astype(dtype)
    predictions, gradient, state = kernels.lstm_population_gradient(theta, columns, start, n)
    for i in range(particles):
        prediction, want_gradient, want_state = kernels.lstm_prediction_gradient(
            theta[i], columns, start[i], n)
        assert predictions[i] == prediction
        assert np.array_equal(gradient[i], want_gradient)
        assert np.array_equal(state[i], want_state)


@pytest.mark.parametrize("gradient_dtype", [np.float64, np.float32])
def test_adam_update_matches_reference_over_many_steps(gradient_dtype):
    """The kernel against Kingma & Ba's update in numpy, 50 steps of random gradients of
    varied scale (float64 moments either way; rounding differences only, hence 1e-12)."""
    rng = np.random.default_rng(11)
    size = 37
    theta, first, second = rng.standard_normal(size), np.zeros(size), np.zeros(size)
    want = (theta.copy(), first.copy(), second.copy())
    for t in range(1, 51):
        gradient = (rng.standard_normal(size) * 10.0 ** rng.uniform(-3, 2, size)).astype(
            gradient_dtype)
        kernels.adam_update(theta, first, second, gradient, 0.02, 0.9, 0.999, 1e-8, t)
        want = naive.adam_update(*want, gradient.astype(np.float64), 0.02, 0.9, 0.999, 1e-8, t)
        for got, expected in zip((theta, first, second), want, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def test_adam_first_step_moves_every_parameter_by_the_step_size():
    """At t = 1 the bias-corrected step is alpha g / (|g| + eps): alpha against the gradient's
    sign (Kingma & Ba, section 2.1), whatever the gradient's scale."""
    gradient = np.array([1e-3, -2.0, 50.0, -7e-2])
    theta = np.zeros(4)
    kernels.adam_update(theta, np.zeros(4), np.zeros(4), gradient, 0.05, 0.9, 0.999, 1e-12, 1)
    np.testing.assert_allclose(theta, -0.05 * np.sign(gradient), rtol=1e-8)


def test_adam_update_checks_its_arrays():
    with pytest.raises(TypeError, match="second_moment must be C-contiguous float64"):
        kernels.adam_update(np.zeros(3), np.zeros(3), np.zeros(3, dtype=np.float32),
                            np.zeros(3), 0.1, 0.9, 0.999, 1e-8, 1)
    with pytest.raises(ValueError, match="gradient has shape"):
        kernels.adam_update(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(4), 0.1, 0.9,
                            0.999, 1e-8, 1)
    with pytest.raises(ValueError, match="updates must be >= 1"):
        kernels.adam_update(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3), 0.1, 0.9,
                            0.999, 1e-8, 0)
