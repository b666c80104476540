"""Particle-LSTM forward kernels against this machine's limits, side by side in one run.

    python benchmarks/kernels.py [--json benchmarks/results/kernels.json] [--plot FILE.png]

Single-thread figures are timed with this thread's CPU time (``time.thread_time``), so
that other processes sharing the cores do not inflate them; the thread-scaling table runs
in a child process with ``NUMBA_NUM_THREADS=2`` and is timed in wall time. Figures:

- the machine's single-thread matrix-multiply rate (numpy, float32 and float64);
- the large model (n = 64, p = 16, N = 512 particles with their own weights, m = 10):
  both mcdpf kernels and a numpy-batched reference (``einsum`` + batched ``matmul``), in
  GFLOP/s counting the ``8 n (n + p)`` FLOPs of the gate products per particle-column;
  ``theta`` on a cache line as the filters allocate it, and the particle-major kernel
  again with ``theta`` 16 bytes off a line (numpy's own alignment);
- the papers' scale (n = 2, p = 2, N = 80, m = 2, float64): particle-columns per second,
  the kernel alone and through its checking wrapper;
- a sweep over n that locates the crossover between the two kernels (the threshold
  ``BATCH_MAJOR_MAX_WORK`` in ``mcdpf/kernels/__init__.py``);
- the population gradient (``lstm_population_gradient_kernel``) beside N calls of the
  single-vector gradient kernel, in particle-columns per second;
- thread scaling of the parallel kernels, 1 and 2 threads (wall time; the load average
  is recorded, since other processes on a 2-core machine take a share of the cores).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import common  # noqa: F401  (first: pins BLAS and numba to one thread before numpy loads)
import numpy as np
from common import RESULTS, best_time, matmul_rate, table, write_json

from mcdpf.kernels import (
    BATCH_MAJOR_MAX_WORK,
    aligned_empty,
    lstm_mean_states,
    lstm_parameter_count,
)
from mcdpf.kernels.gradient import (
    GRADIENT_BATCH_MAX_WORK,
    lstm_population_gradient_kernel,
    lstm_population_gradient_parallel_kernel,
    lstm_prediction_gradient_kernel,
)
from mcdpf.kernels.lstm import (
    lstm_batch_major_kernel,
    lstm_batch_major_parallel_kernel,
    lstm_particle_major_kernel,
    lstm_particle_major_parallel_kernel,
)

CPU = time.thread_time

KERNELS = {"particle-major": lstm_particle_major_kernel, "batch-major": lstm_batch_major_kernel}


def numpy_batched(theta, columns, start, n):
    """Reference: the same forward pass as whole-population numpy operations."""
    count = theta.shape[0]
    p = columns.shape[1]
    gates, width = 4 * n, p + n
    weights = theta[:, :gates * width].reshape(count, gates, width)
    biases = theta[:, gates * width:gates * width + gates]
    c, y = start[:, :n].copy(), start[:, n:].copy()
    c_sum, y_sum = np.zeros_like(c), np.zeros_like(y)
    projected = biases[:, None, :] + np.einsum("lj,igj->ilg", columns, weights[:, :, :p])
    recurrent = weights[:, :, p:]
    for step in range(columns.shape[0]):
        a = projected[:, step] + np.matmul(recurrent, y[:, :, None])[:, :, 0]
        i = 1 / (1 + np.exp(-a[:, :n]))
        f = 1 / (1 + np.exp(-a[:, n:2 * n]))
        z = np.tanh(a[:, 2 * n:3 * n])
        o = 1 / (1 + np.exp(-a[:, 3 * n:]))
        c = i * z + f * c
        y = o * np.tanh(c)
        c_sum += c
        y_sum += y
    return np.concatenate([c_sum, y_sum], axis=1) / columns.shape[0]


def problem(n, p, count, length, dtype, seed=0):
    """theta on a cache line, as the filters' propagation allocates it (aligned_empty)."""
    rng = np.random.default_rng(seed)
    theta = aligned_empty((count, lstm_parameter_count(n, p)), dtype)
    theta[:] = 0.3 * rng.standard_normal(theta.shape)
    columns = rng.standard_normal((length, p)).astype(dtype)
    start = (0.1 * rng.standard_normal((count, 2 * n))).astype(dtype)
    return theta, columns, start


def time_kernels(n, p, count, length, dtype, with_numpy=True):
    theta, columns, start = problem(n, p, count, length, dtype)
    out = np.empty((count, 2 * n), dtype=dtype)
    reference = numpy_batched(theta, columns, start, n)
    seconds = {}
    for name, kernel in KERNELS.items():
        kernel(theta, columns, start, n, out)
        tolerance = 1e-4 if dtype == np.float32 else 1e-10
        assert np.allclose(out, reference, atol=tolerance), name  # same result
        seconds[name] = best_time(lambda k=kernel: k(theta, columns, start, n, out), clock=CPU)
    # the same parameters 16 bytes past a cache line (where numpy's allocations start)
    shifted = aligned_empty(theta.size * theta.itemsize + 16, np.uint8)[16:].view(dtype)
    shifted = shifted.reshape(theta.shape)
    shifted[:] = theta
    seconds["particle-major, 16 B off a line"] = best_time(
        lambda: lstm_particle_major_kernel(shifted, columns, start, n, out), clock=CPU)
    seconds["wrapper"] = best_time(lambda: lstm_mean_states(theta, columns, start, n, out),
                                   clock=CPU)
    if with_numpy:
        seconds["numpy"] = best_time(lambda: numpy_batched(theta, columns, start, n),
                                     repeats=5, clock=CPU)
    return seconds


def time_gradients(n, p, count, length):
    """Population gradient kernel against N calls of the single-vector kernel (CPU time)."""
    theta, columns, start = problem(n, p, count, length, np.float64)
    theta *= 0.5
    gradient = np.empty_like(theta)
    state = np.empty((count, 2 * n))
    predictions = np.empty(count)

    def single():
        for i in range(count):
            predictions[i] = lstm_prediction_gradient_kernel(theta[i], columns, start[i], n,
                                                             gradient[i], state[i])

    single()
    want = gradient.copy()
    lstm_population_gradient_kernel(theta, columns, start, n, gradient, state, predictions)
    assert np.allclose(gradient, want, rtol=0, atol=1e-12 * max(1, np.abs(want).max()))
    return {"population": best_time(lambda: lstm_population_gradient_kernel(
                theta, columns, start, n, gradient, state, predictions), clock=CPU),
            "single-vector x N": best_time(single, repeats=5, clock=CPU)}


THREAD_CASES = [("particle-major", 16, 4, 8192, 10), ("batch-major", 2, 2, 8192, 10),
                ("batch-major", 2, 2, 80, 2), ("particle-major", 64, 16, 512, 10),
                ("gradient", 2, 2, 8192, 2), ("gradient", 16, 2, 2048, 10)]


def thread_scaling():
    """Run :func:`thread_child` in a process with two numba threads; its JSON result."""
    load = os.getloadavg()[0]
    environment = dict(os.environ, NUMBA_NUM_THREADS="2")
    done = subprocess.run([sys.executable, __file__, "--thread-child"], env=environment,
                          capture_output=True, text=True, check=True)
    return {"load_average": load, "rows": json.loads(done.stdout.strip().splitlines()[-1])}


def thread_child():
    """Wall time of each parallel kernel with 1 and 2 threads (and its serial kernel)."""
    import numba

    serial = {"particle-major": lstm_particle_major_kernel,
              "batch-major": lstm_batch_major_kernel,
              "gradient": lstm_population_gradient_kernel}
    parallel = {"particle-major": lstm_particle_major_parallel_kernel,
                "batch-major": lstm_batch_major_parallel_kernel,
                "gradient": lstm_population_gradient_parallel_kernel}
    rows = []
    for kind, n, p, count, length in THREAD_CASES:
        theta, columns, start = problem(n, p, count, length, np.float64)
        state = np.empty((count, 2 * n))
        if kind == "gradient":
            gradient, predictions = np.empty_like(theta), np.empty(count)
            arguments = (theta, columns, start, n, gradient, state, predictions)
        else:
            arguments = (theta, columns, start, n, state)
        row = {"kernel": kind, "n": n, "p": p, "N": count, "m": length,
               "serial_ms": best_time(lambda k=serial[kind], a=arguments: k(*a)) * 1e3}
        for threads, key in ((1, "one_ms"), (2, "two_ms")):
            numba.set_num_threads(threads)
            row[key] = best_time(lambda k=parallel[kind], a=arguments: k(*a), repeats=11) * 1e3
        row["speedup"] = row["one_ms"] / row["two_ms"]
        rows.append(row)
    print(json.dumps(rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(RESULTS / "kernels.json"))
    parser.add_argument("--plot", default=str(RESULTS / "kernel-crossover.png"))
    parser.add_argument("--thread-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.thread_child:
        thread_child()
        return

    peak32 = matmul_rate(np.float32, clock=CPU)
    peak64 = matmul_rate(np.float64, clock=CPU)
    print(f"single-thread matmul (numpy, 1024^2): float32 {peak32 / 1e9:.1f} GFLOP/s, "
          f"float64 {peak64 / 1e9:.1f} GFLOP/s\n")

    large_rows = []
    n, p, count, length = 64, 16, 512, 10
    flops = 8 * n * (n + p) * count * length
    for dtype, peak in ((np.float32, peak32), (np.float64, peak64)):
        seconds = time_kernels(n, p, count, length, dtype)
        for name in ("particle-major", "particle-major, 16 B off a line", "batch-major",
                     "numpy"):
            rate = flops / seconds[name]
            large_rows.append({"dtype": np.dtype(dtype).name, "implementation": name,
                               "ms": seconds[name] * 1e3, "gflops": rate / 1e9,
                               "of_matmul": rate / peak,
                               "vs_numpy": seconds["numpy"] / seconds[name]})
    print(f"large model: n={n}, p={p}, N={count}, m={length} "
          f"({8 * n * (n + p)} FLOP per particle-column)")
    print(table(large_rows, [("dtype", "dtype", ""), ("implementation", "kernel", ""),
                             ("ms", "ms/call", ".2f"), ("gflops", "GFLOP/s", ".1f"),
                             ("of_matmul", "of matmul", ".1%"),
                             ("vs_numpy", "x numpy", ".1f")]))

    small_rows = []
    n, p, count, length = 2, 2, 80, 2
    seconds = time_kernels(n, p, count, length, np.float64)
    for name in ("batch-major", "particle-major", "wrapper", "numpy"):
        small_rows.append({"implementation": name, "us": seconds[name] * 1e6,
                           "mpc": count * length / seconds[name] / 1e6})
    print(f"\npapers' scale: n={n}, p={p}, N={count}, m={length}, float64 "
          f"(wrapper = the checking wrapper around the batch-major kernel)")
    print(table(small_rows, [("implementation", "kernel", ""), ("us", "us/call", ".2f"),
                             ("mpc", "M particle-columns/s", ".1f")]))

    sweep = []
    for n in (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32):
        p = 2
        seconds = time_kernels(n, p, 512, 5, np.float64, with_numpy=False)
        sweep.append({"n": n, "p": p, "work": n * (n + p),
                      "batch_us": seconds["batch-major"] * 1e6,
                      "particle_us": seconds["particle-major"] * 1e6,
                      "faster": min(("batch-major", "particle-major"),
                                    key=lambda k: seconds[k]),
                      "chosen": "batch-major" if n * (n + p) <= BATCH_MAJOR_MAX_WORK
                      else "particle-major"})
    print(f"\nkernel crossover (p=2, N=512, m=5, float64); mcdpf picks batch-major when "
          f"n (n + p) <= {BATCH_MAJOR_MAX_WORK}")
    print(table(sweep, [("n", "n", "d"), ("work", "n(n+p)", "d"),
                        ("batch_us", "batch-major us", ".1f"),
                        ("particle_us", "particle-major us", ".1f"),
                        ("faster", "faster", ""), ("chosen", "chosen", "")]))

    gradient_rows = []
    for n, p, count, length in ((2, 2, 1000, 2), (16, 2, 1000, 10)):
        seconds = time_gradients(n, p, count, length)
        for name in ("population", "single-vector x N"):
            gradient_rows.append({"n": n, "N": count, "m": length, "implementation": name,
                                  "path": ("batch-major" if n * (n + p) <= GRADIENT_BATCH_MAX_WORK
                                           else "particle-major") if name == "population"
                                  else "-",
                                  "ms": seconds[name] * 1e3,
                                  "mpc": count * length / seconds[name] / 1e6,
                                  "speedup": seconds["single-vector x N"] / seconds[name]})
    print("\npopulation gradient (p=2, float64): d_hat, d d_hat / d theta and [c_bar, y_bar] "
          "of every particle")
    print(table(gradient_rows, [("n", "n", "d"), ("N", "N", "d"), ("m", "m", "d"),
                                ("implementation", "implementation", ""), ("path", "path", ""),
                                ("ms", "ms/call", ".3f"),
                                ("mpc", "M particle-columns/s", ".2f"),
                                ("speedup", "x single", ".1f")]))

    threads = thread_scaling()
    print(f"\nthread scaling (wall time, float64, load average {threads['load_average']:.2f} "
          f"before): parallel kernels with 1 and 2 numba threads")
    print(table(threads["rows"], [("kernel", "kernel", ""), ("n", "n", "d"), ("p", "p", "d"),
                                  ("N", "N", "d"), ("m", "m", "d"),
                                  ("serial_ms", "serial ms", ".2f"),
                                  ("one_ms", "1 thread ms", ".2f"),
                                  ("two_ms", "2 threads ms", ".2f"),
                                  ("speedup", "speedup", ".2f")]))

    large32 = {r["implementation"]: r for r in large_rows if r["dtype"] == "float32"}
    small = {r["implementation"]: r for r in small_rows}
    targets = {
        "large_float32_of_matmul": large32["particle-major"]["of_matmul"],
        "large_float32_of_matmul_target": 0.35,
        "large_float32_vs_numpy": large32["particle-major"]["vs_numpy"],
        "large_float32_vs_numpy_target": 4.0,
        "small_mpc": small["batch-major"]["mpc"],
        "small_mpc_target": 50.0,
        "threads_speedup": next(r["speedup"] for r in threads["rows"]
                                if r["kernel"] == "particle-major" and r["n"] == 16),
        "threads_speedup_target": 1.8,
    }
    print("\ntargets: large float32 {:.1%} of matmul (target 35%), {:.1f}x numpy (target 4x); "
          "papers' scale {:.1f} M particle-columns/s (target 50); 2 threads {:.2f}x "
          "(target 1.8x)".format(
              targets["large_float32_of_matmul"], targets["large_float32_vs_numpy"],
              targets["small_mpc"], targets["threads_speedup"]))
    write_json(args.json, {"timing": "single-thread figures: thread CPU time; threads: wall",
                           "matmul_gflops": {"float32": peak32 / 1e9, "float64": peak64 / 1e9},
                           "large": large_rows, "small": small_rows, "crossover": sweep,
                           "gradient": gradient_rows, "threads": threads,
                           "targets": targets})
    plot(sweep, args.plot)


def plot(sweep, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.8), dpi=120)
    work = [row["work"] for row in sweep]
    axis.loglog(work, [row["batch_us"] for row in sweep], "o-", label="batch-major")
    axis.loglog(work, [row["particle_us"] for row in sweep], "s-", label="particle-major")
    axis.axvline(BATCH_MAJOR_MAX_WORK, color="gray", ls="--", lw=1, label="threshold")
    axis.set_xlabel("n (n + p)")
    axis.set_ylabel("us per call (N = 512, m = 5)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
