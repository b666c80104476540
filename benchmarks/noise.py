"""Counter-based Gaussian noise against numpy and against memory speed, side by side in one run.

    python benchmarks/noise.py [--json benchmarks/results/noise.json]

For each shape (N particles x P parameters) and dtype, nanoseconds per normal of

- numpy's ``Generator.standard_normal(dtype=...)``, allocating and filling ``out=``;
- the mcdpf kernels (one thread): ``normal_rows_kernel`` (``out = scale z``),
  ``add_normal_rows_kernel`` (``out += scale z``) and ``gather_add_normal_kernel``
  (``out = source[ancestors] + scale z``, resampling and propagation in one pass), beside
  numpy doing the same gather and noise in two passes;
- the ``*_parallel_kernel`` twins at 1 and 2 threads (speedup);
- memory references on the same arrays: ``np.copyto(out, source)`` and
  ``out[:] = source[ancestors]``, i.e. what moving the bytes alone costs.

Targets (single thread): <= 1.5 ns per float32 normal, <= 3 ns per float64 normal.
"""

import os

os.environ.setdefault("NUMBA_NUM_THREADS", str(os.cpu_count() or 1))  # before common

import argparse  # noqa: E402

import numpy as np  # noqa: E402
from common import RESULTS, best_time, table, write_json  # noqa: E402

from mcdpf.kernels import get_num_threads, set_num_threads, stream_key  # noqa: E402
from mcdpf.kernels.counter_rng import (  # noqa: E402
    add_normal_rows_kernel,
    add_normal_rows_parallel_kernel,
    gather_add_normal_kernel,
    gather_add_normal_parallel_kernel,
    normal_rows_kernel,
    normal_rows_parallel_kernel,
)

SHAPES = [(512, 20800, np.float32), (512, 20800, np.float64), (1000, 1232, np.float64),
          (80, 46, np.float64)]
TARGETS = {"float32": 1.5, "float64": 3.0}  # ns per normal, one thread
SCALE = 0.01
STEP = 17


def measure(rows, columns, dtype, threads):
    key = stream_key(2024, 1)
    rng = np.random.default_rng(0)
    source = rng.standard_normal((rows, columns)).astype(dtype)
    ancestors = np.sort(rng.integers(0, rows, rows))
    ids = np.arange(rows, dtype=np.int64) + 10**6
    out = np.empty_like(source)
    count = rows * columns
    args = (ids, STEP, key[0], key[1], SCALE)
    kernels = {
        "normal_rows": lambda k: k(out, *args),
        "add_normal_rows": lambda k: k(out, *args),
        "gather_add_normal": lambda k: k(out, source, ancestors, *args),
    }
    serial = {"normal_rows": normal_rows_kernel, "add_normal_rows": add_normal_rows_kernel,
              "gather_add_normal": gather_add_normal_kernel}
    parallel = {"normal_rows": normal_rows_parallel_kernel,
                "add_normal_rows": add_normal_rows_parallel_kernel,
                "gather_add_normal": gather_add_normal_parallel_kernel}
    seconds = {}

    noise = np.empty_like(source)

    def numpy_gather_noise():  # preallocated buffers, the fastest numpy way
        np.take(source, ancestors, axis=0, out=out)
        rng.standard_normal(dtype=dtype, out=noise)
        np.multiply(noise, SCALE, out=noise)
        np.add(out, noise, out=out)

    seconds["numpy standard_normal"] = best_time(
        lambda: rng.standard_normal((rows, columns), dtype=dtype))
    seconds["numpy standard_normal(out=)"] = best_time(
        lambda: rng.standard_normal(dtype=dtype, out=out))
    seconds["numpy gather + noise"] = best_time(numpy_gather_noise)
    seconds["copy: np.copyto(out, source)"] = best_time(lambda: np.copyto(out, source))
    seconds["gather: out[:] = source[ancestors]"] = best_time(
        lambda: np.take(source, ancestors, axis=0, out=out))
    set_num_threads(1)
    for name, kernel in serial.items():
        seconds[name] = best_time(lambda k=kernel, f=kernels[name]: f(k))
    for count_threads in sorted({1, threads}):
        set_num_threads(count_threads)
        for name, kernel in parallel.items():
            seconds[f"{name} parallel x{count_threads}"] = best_time(
                lambda k=kernel, f=kernels[name]: f(k))
    set_num_threads(threads)
    return {name: value / count * 1e9 for name, value in seconds.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(RESULTS / "noise.json"))
    args = parser.parse_args()
    threads = get_num_threads()

    rows = []
    for n, p, dtype in SHAPES:
        ns = measure(n, p, dtype, threads)
        dtype_name = np.dtype(dtype).name
        numpy_ns = ns["numpy standard_normal(out=)"]
        copy_ns = ns["copy: np.copyto(out, source)"]
        for name, value in ns.items():
            row = {"shape": f"{n}x{p}", "dtype": dtype_name, "implementation": name,
                   "ns_per_normal": value, "vs_numpy": numpy_ns / value,
                   "vs_copy": value / copy_ns}
            base = name.split(" parallel")[0]
            if " parallel x" in name:
                row["speedup"] = ns[f"{base} parallel x1"] / value
            rows.append(row)
        print(f"\nN={n} x P={p}, {dtype_name} ({n * p * np.dtype(dtype).itemsize / 2**20:.1f} "
              f"MiB per array); x numpy = numpy standard_normal(out=) / this; x copy = this / "
              f"np.copyto")
        shown = [r for r in rows if r["shape"] == f"{n}x{p}" and r["dtype"] == dtype_name]
        for r in shown:
            r.setdefault("speedup", float("nan"))
        print(table(shown, [("implementation", "implementation", ""),
                            ("ns_per_normal", "ns/normal", ".3f"),
                            ("vs_numpy", "x numpy", ".1f"), ("vs_copy", "x copy", ".2f"),
                            ("speedup", "thread speedup", ".2f")]))

    def find(shape, dtype, name):
        return next(r["ns_per_normal"] for r in rows if r["shape"] == shape
                    and r["dtype"] == dtype and r["implementation"] == name)

    targets = {}
    for shape, dtype in (("512x20800", "float32"), ("1000x1232", "float64")):
        for name in ("normal_rows", "add_normal_rows", "gather_add_normal"):
            value = find(shape, dtype, name)
            targets[f"{name} {dtype} {shape}"] = {"ns_per_normal": value,
                                                  "target": TARGETS[dtype],
                                                  "met": value <= TARGETS[dtype]}
    print(f"\ntargets (one thread): float32 <= {TARGETS['float32']} ns, float64 <= "
          f"{TARGETS['float64']} ns per normal")
    for name, entry in targets.items():
        print(f"  {name}: {entry['ns_per_normal']:.3f} ns "
              f"({'met' if entry['met'] else 'MISSED'})")
    for row in rows:
        if row["speedup"] != row["speedup"]:  # nan: not a parallel row
            del row["speedup"]
    write_json(args.json, {"threads": threads, "scale": SCALE, "rows": rows,
                           "targets": targets})


if __name__ == "__main__":
    main()
