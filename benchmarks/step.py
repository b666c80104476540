"""Whole steps against their own kernels, noise against numpy, threads, dpf's efficiency.

    python benchmarks/step.py [--json benchmarks/results/step.json]
    python benchmarks/step.py --recommended-only [--runs 4] [--json FILE]

Everything side by side in one run (the machine's speed drifts between runs):

- **noise**: ns per normal of the fused gather + counter-based noise kernel, float32 and
  float64, beside numpy's ``Generator.standard_normal`` on the same shapes;
- **step / kernel** (one rank, one thread): the whole pf, cpf and ekf step through the
  real learner (predict + learn: noise, kernels, weights, resampling, Python) beside its
  own model kernel on the same work (the particle LSTM forward of N particles on the
  step's sequence; the EKF's gradient of one vector), at the papers' scale (n = 2, p = 2,
  N = 80, m = 2, float64), n = 16 (p = 4, N = 1000, m = 10, float64) and n = 64 (p = 16,
  N = 512, m = 10, float32); for pf also against a plain numba forward of the same work
  (one loop per particle, ``np.tanh`` and ``np.exp``, no noise);
- **recommended configurations at n = 64** (``mpiexec -n 2``, a 2-node ring, p = 4,
  sequences of 5 rows, float64): ``launch/scale-best.toml``'s n = 64 form (rpf, two
  Gaussian particles of decoupled covariance, weight tempering 0.01, the same work as the
  file's 0) and
  ``launch/dpf-best.toml`` at n = 64 (dpf, 4 rank-2 Gaussians, s = 2): the whole step
  through the real learner against the time spent inside it in its own kernels
  (:class:`KernelClock`: the gradient of every particle and the covariance form's time
  and measurement updates); ``--recommended-only`` runs this part alone, ``--runs`` times
  in turn, and writes JSON only with ``--json``;
- **threads**: the pf step at n = 16, p = 4, N = 8192, m = 10 with 1 and 2 numba threads
  (``run.threads``), and whether the estimates are bit-identical;
- **dpf, rpf on 2 ranks** (``mpiexec -n 2``, a lazy 2-ring, s = 3, n = 16, N = 1000,
  m = 10): the step, and dpf's *inherent-work efficiency* = pf 1-rank step x (1 + s P) /
  dpf 2-rank step, where MCDPF scores a particle at every node it reaches (``1 + s P`` LSTM
  evaluations per particle and step, P = 0.5 the move probability); persistent
  neighbourhood collectives (``Neighbor_alltoallv_init``, MPI-4) against the blocking and
  non-blocking ones on the same exchange;
- **papers' scale, 10^6 particles** per node at n = 2: pf steps per second (one thread;
  float32 also on 2 threads).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# common pins the BLAS and numba threads before numpy loads
# isort: off
from common import RESULTS, best_time, learner_for, mpiexec, table, write_json
import numpy as np
# isort: on

REPEATS = 7
SHAPES = {"papers' scale": dict(n=2, p=2, particles=80, length=2, dtype="float64"),
          "n=16": dict(n=16, p=4, particles=1000, length=10, dtype="float64"),
          "n=64": dict(n=64, p=16, particles=512, length=10, dtype="float32")}


def sequence(p, length, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal((length, p)).astype(dtype)


def step_seconds(learner, columns, steps=12, warm=3):
    """Median seconds of a whole predict + learn step, and the final state."""
    state = learner.initial_state()
    times = []
    for t in range(warm + steps):
        started = time.perf_counter()
        _, pending = learner.predict(state, t, columns)
        state, _ = learner.learn(state, pending, 0.1)
        if t >= warm:
            times.append(time.perf_counter() - started)
    return float(np.median(times)), state


def kernel_seconds(theta, columns, n):
    from mcdpf.kernels import lstm_mean_states

    start = np.zeros((theta.shape[0], 2 * n), dtype=theta.dtype)
    out = np.empty_like(start)
    return best_time(lambda: lstm_mean_states(theta, columns, start, n, out), repeats=REPEATS)


def plain_forward_seconds(theta, columns, n):
    """A plain numba forward of the same work: one loop per particle, np.tanh/np.exp."""
    from numba import njit

    @njit(cache=True)
    def plain(theta, columns, hidden, out):
        count = theta.shape[0]
        length, inputs = columns.shape
        gates = 4 * hidden
        width = inputs + hidden
        for i in range(count):
            c = np.zeros(hidden, dtype=theta.dtype)
            y = np.zeros(hidden, dtype=theta.dtype)
            cs = np.zeros(hidden, dtype=theta.dtype)
            ys = np.zeros(hidden, dtype=theta.dtype)
            for step in range(length):
                a = np.empty(gates, dtype=theta.dtype)
                for r in range(gates):
                    total = theta[i, gates * width + r]
                    for j in range(inputs):
                        total += theta[i, r * width + j] * columns[step, j]
                    for j in range(hidden):
                        total += theta[i, r * width + inputs + j] * y[j]
                    a[r] = total
                for u in range(hidden):
                    ig = 1.0 / (1.0 + np.exp(-a[u]))
                    fg = 1.0 / (1.0 + np.exp(-a[hidden + u]))
                    zg = np.tanh(a[2 * hidden + u])
                    og = 1.0 / (1.0 + np.exp(-a[3 * hidden + u]))
                    c[u] = ig * zg + fg * c[u]
                    y[u] = og * np.tanh(c[u])
                    cs[u] += c[u]
                    ys[u] += y[u]
            for u in range(hidden):
                out[i, u] = cs[u] / length
                out[i, hidden + u] = ys[u] / length

    out = np.empty((theta.shape[0], 2 * n), dtype=theta.dtype)
    return best_time(lambda: plain(theta, columns, n, out), repeats=REPEATS)


def ekf_kernel_seconds(estimate, model, columns, n):
    """The EKF's own kernels on one step: the gradient and the covariance update."""
    from mcdpf.kernels import gaussian_update, lstm_prediction_gradient

    theta = estimate.astype(model.dtype)
    carry = np.zeros(2 * n, dtype=model.dtype)
    gradient = best_time(lambda: lstm_prediction_gradient(theta, columns, carry, n),
                         repeats=REPEATS)
    size = estimate.size
    means, covariance = estimate[None, :].copy(), np.eye(size)[None, :, :].copy()
    jacobian = np.ones((1, size))
    update = best_time(lambda: gaussian_update(means, covariance, jacobian, np.zeros(1), 0.0,
                                               np.ones(1)), repeats=REPEATS)
    return gradient + update


def noise_rows():
    from mcdpf.kernels import gather_add_normal, warm_up

    rows = []
    for label, (count, width, dtype) in {"n=64 float32": (512, 20800, np.float32),
                                         "n=16 float64": (1000, 1392, np.float64),
                                         "papers' scale float64": (80, 46, np.float64)}.items():
        warm_up(dtype)
        source = np.zeros((count, width), dtype=dtype)
        out = np.empty_like(source)
        ancestors = np.arange(count, dtype=np.int64)
        ids = np.arange(count, dtype=np.int64)
        generator = np.random.default_rng(0)
        ours = best_time(lambda s=source, a=ancestors, i=ids, o=out: gather_add_normal(
            s, a, i, 1, (3, 4), 0.02, out=o), repeats=REPEATS)
        numpy = best_time(lambda g=generator, o=out, d=dtype: g.standard_normal(out=o, dtype=d),
                          repeats=REPEATS)
        values = count * width
        rows.append({"shape": f"{label} ({count} x {width})", "ours_ns": ours / values * 1e9,
                     "numpy_ns": numpy / values * 1e9, "speedup": numpy / ours})
    return rows


def step_rows():
    from mcdpf.kernels import warm_up

    rows = []
    for label, shape in SHAPES.items():
        n, p, count, length, dtype = (shape[k] for k in ("n", "p", "particles", "length",
                                                         "dtype"))
        warm_up(np.dtype(dtype))
        columns = sequence(p, length, dtype)
        for algorithm in ("pf", "cpf", "ekf"):
            if algorithm == "ekf" and n > 16:
                continue  # its 20800^2 covariance (3.5 GB) is refused by ekf.max_memory_gb
            learner, model = learner_for(algorithm, n, p, count, dtype)
            seconds, state = step_seconds(learner, columns)
            if algorithm == "ekf":
                kernel = ekf_kernel_seconds(state.estimate, model, columns, n)
                plain = float("nan")
            else:
                theta = np.ascontiguousarray(state.particles.parameters())
                kernel = kernel_seconds(theta, columns, n)
                plain = plain_forward_seconds(theta, columns, n) if algorithm == "pf" \
                    else float("nan")
            rows.append({"setting": label, "algorithm": algorithm, "step_ms": seconds * 1e3,
                         "kernel_ms": kernel * 1e3, "ratio": seconds / kernel,
                         "plain_forward_ms": plain * 1e3,
                         "vs_plain": plain / seconds if np.isfinite(plain) else float("nan")})
    return rows


def threads_worker(output):
    """Runs with NUMBA_NUM_THREADS=2: pf at 1 and 2 threads, same bits? 10^6 on 2 threads."""
    from mcdpf.kernels import set_threads, warm_up

    n, p, count, length, dtype = 16, 4, 8192, 10, "float64"
    warm_up(np.dtype(dtype), parallel=True)
    columns = sequence(p, length, dtype)
    result = {}
    for threads in (1, 2):
        set_threads(threads)
        learner, _ = learner_for("pf", n, p, count, dtype, threads=threads)
        seconds, state = step_seconds(learner, columns, steps=6, warm=2)
        result[threads] = (seconds, state.estimate.tolist())
    # the 10^6-particle target with both cores of this machine (float32)
    learner, _ = learner_for("pf", 2, 2, 1_000_000, "float32", threads=2)
    result["million"], _ = step_seconds(learner, sequence(2, 2, "float32"), steps=4, warm=1)
    Path(output).write_text(json.dumps(result))


def threads_row():
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "threads.json"
        env = {**os.environ, "NUMBA_NUM_THREADS": "2"}
        subprocess.run([sys.executable, __file__, "--threads-worker", str(output)], check=True,
                       env=env)
        result = json.loads(output.read_text())
    one, two = result["1"], result["2"]
    return {"setting": "pf n=16 p=4 N=8192 m=10 float64", "one_thread_ms": one[0] * 1e3,
            "two_threads_ms": two[0] * 1e3, "speedup": one[0] / two[0],
            "bit_identical": one[1] == two[1], "million_float32_two_threads_ms":
            result["million"] * 1e3}


def mpi_worker(output):
    """Under mpiexec -n 2: dpf and rpf steps, bare exchanges, persistent collectives."""
    from mpi4py import MPI

    from mcdpf.kernels import warm_up

    comm = MPI.COMM_WORLD
    n, p, count, length, dtype = 16, 4, 1000, 10, "float64"
    warm_up(np.dtype(dtype))
    columns = sequence(p, length, dtype, seed=comm.rank)
    result = {}
    for algorithm, extra in (("dpf", {}), ("dpf", {"wire_dtype": "float32"}),
                             ("rpf", {})):
        learner, _ = learner_for(algorithm, n, p, count, dtype, comm=comm, nodes=2, **extra)
        comm.Barrier()
        seconds, _ = step_seconds(learner, columns)
        name = algorithm + ("-float32-wire" if extra else "")
        result[name] = max(comm.allgather(seconds))
        learner.benchmark_neighbourhood.free()
    result["exchange"] = exchange_timings(comm)
    if comm.rank == 0:
        Path(output).write_text(json.dumps(result))


# issue 16's recommended configurations in their n = 64 forms, on the teacher's shape
# (p = 4, sequences of 2-8 rows: 5 on average), float64, q = 2.5e-5, r = 0.01
RECOMMENDED = {
    "scale-best n=64 (rpf, 2 decoupled Gaussians, eta=0.01)": ("rpf", dict(
        kernel="gaussian", particles=2, covariance="decoupled", weight_tempering=0.01,
        ess_threshold=0.5)),
    "dpf-best n=64 (dpf, 4 rank-2 Gaussians, s=2)": ("dpf", dict(
        kernel="gaussian", particles=4, covariance="lowrank", rank=2, walk_steps=2,
        wire_dtype="float32")),
}


class KernelClock:
    """Seconds spent inside a Gaussian particle's own kernels: the model's gradient of every
    particle (``population_gradient``) and its covariance form's time and measurement
    updates (``time_update``: ``P + q I`` as new arrays, the copy included; ``_update``,
    ``_downdate``), wrapped in place while the clock is on (a
    ``with`` block; ``seconds`` accumulates)."""

    def __init__(self):
        from mcdpf.covariance import CovarianceForm
        from mcdpf.models import LSTMModel
        from mcdpf.registry import COVARIANCES

        self.seconds = 0.0
        self.wrapped = [(LSTMModel, "population_gradient")] + [
            (form, name) for form in {*(COVARIANCES[name] for name in COVARIANCES),
                                      CovarianceForm}
            for name in ("time_update", "_update", "_downdate") if name in vars(form)]

    def __enter__(self):
        self.originals = [getattr(owner, name) for owner, name in self.wrapped]
        for (owner, name), original in zip(self.wrapped, self.originals, strict=True):
            setattr(owner, name, self._timed(original))
        return self

    def _timed(self, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
        return timed

    def __exit__(self, *exc):
        for (owner, name), original in zip(self.wrapped, self.originals, strict=True):
            setattr(owner, name, original)


def recommended_worker(output, steps=40, warm=5):
    """Under mpiexec -n 2: each recommended configuration's whole step (predict + learn,
    through the real learner and its neighbour exchanges) and the time in its own kernels."""
    from mpi4py import MPI

    from mcdpf.kernels import warm_up

    comm = MPI.COMM_WORLD
    n, p, length, dtype = 64, 4, 5, "float64"
    warm_up(np.dtype(dtype))
    columns = sequence(p, length, dtype, seed=comm.rank)
    result = {}
    for label, (algorithm, settings) in RECOMMENDED.items():
        extra = {key: value for key, value in settings.items() if key != "particles"}
        learner, _ = learner_for(algorithm, n, p, settings["particles"], dtype, comm=comm,
                                 nodes=2, state_noise=2.5e-5, obs_noise=0.01, **extra)
        state = learner.initial_state()
        step = kernel = 0.0
        comm.Barrier()
        with KernelClock() as clock:
            for t in range(warm + steps):
                if t == warm:
                    started, in_kernels = time.perf_counter(), clock.seconds
                _, pending = learner.predict(state, t, columns)
                state, _ = learner.learn(state, pending, 0.1)
            step = time.perf_counter() - started
            kernel = clock.seconds - in_kernels
        everyone = comm.allgather((step, kernel))
        slowest = max(everyone)
        result[label] = {"setting": label, "step_ms": slowest[0] / steps * 1e3,
                         "kernel_ms": slowest[1] / steps * 1e3,
                         "ratio": slowest[0] / slowest[1],
                         "ratio_per_rank": [s / k for s, k in everyone]}
        learner.benchmark_neighbourhood.free()
    if comm.rank == 0:
        Path(output).write_text(json.dumps(list(result.values())))


def two_rank_rows(worker):
    """What this script's ``--{worker}`` writes when run under ``mpiexec -n 2``."""
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / f"{worker}.json"
        subprocess.run([mpiexec(), "-n", "2", sys.executable, __file__, f"--{worker}",
                        str(output)], check=True)
        return json.loads(output.read_text())


def exchange_timings(comm, count=500, record_bytes=9872, repeats=300):
    """Seconds per record exchange: blocking, non-blocking, persistent (MPI-4)."""
    from mpi4py import MPI

    graph = comm.Create_dist_graph_adjacent([1 - comm.rank], [1 - comm.rank], reorder=False)
    record = MPI.BYTE.Create_contiguous(record_bytes).Commit()
    send = np.zeros(count * record_bytes, dtype=np.uint8)
    recv = np.zeros_like(send)
    spec = ([send, ([count], [0]), record], [recv, ([count], [0]), record])
    timings = {}
    for name in ("blocking", "non-blocking", "persistent"):
        persistent = None
        if name == "persistent":
            try:
                persistent = graph.Neighbor_alltoallv_init(*spec)
            except (AttributeError, NotImplementedError, MPI.Exception):
                timings[name] = float("nan")
                continue
        comm.Barrier()
        started = time.perf_counter()
        for _ in range(repeats):
            if name == "blocking":
                graph.Neighbor_alltoallv(*spec)
            elif name == "non-blocking":
                graph.Ineighbor_alltoallv(*spec).Wait()
            else:
                persistent.Start()
                persistent.Wait()
        timings[name] = (time.perf_counter() - started) / repeats
        if persistent is not None:
            persistent.Free()
    record.Free()
    graph.Free()
    return timings


def million_rows():
    from mcdpf.kernels import warm_up

    rows = []
    for dtype in ("float64", "float32"):
        warm_up(np.dtype(dtype))
        learner, _ = learner_for("pf", 2, 2, 1_000_000, dtype)
        seconds, _ = step_seconds(learner, sequence(2, 2, dtype), steps=4, warm=1)
        rows.append({"setting": f"pf, n=2 p=2 m=2, N=10^6, {dtype}", "step_ms": seconds * 1e3,
                     "steps_per_second": 1.0 / seconds})
    return rows


def print_recommended(rows):
    print("\nRecommended configurations at n = 64 (2 ranks, a 2-node ring, p=4 m=5 float64; "
          "kernels: the gradient of every particle and the covariance updates; target <= 2)")
    print(table(rows, [("setting", "setting", ""), ("step_ms", "step ms", ".3f"),
                       ("kernel_ms", "kernels ms", ".3f"), ("ratio", "step/kernels", ".2f")]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None,
                        help=f"output (default {RESULTS / 'step.json'}; with "
                             "--recommended-only: none unless given)")
    parser.add_argument("--threads-worker", help=argparse.SUPPRESS)
    parser.add_argument("--mpi-worker", help=argparse.SUPPRESS)
    parser.add_argument("--recommended-worker", help=argparse.SUPPRESS)
    parser.add_argument("--recommended-only", action="store_true",
                        help="only the recommended configurations (written with --json)")
    parser.add_argument("--runs", type=int, default=1,
                        help="--recommended-only: measure this many times in turn")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: must be at least 1")
    if args.recommended_worker:
        recommended_worker(args.recommended_worker)
        return
    if args.recommended_only:
        runs = []
        for _ in range(args.runs):
            runs.append(two_rank_rows("recommended-worker"))
            print_recommended(runs[-1])
        if args.json:
            ratios = {row["setting"]: [run_rows[i]["ratio"] for run_rows in runs]
                      for i, row in enumerate(runs[0])}
            write_json(args.json, {"command": "python benchmarks/step.py "
                                   + " ".join(sys.argv[1:]), "runs": runs,
                                   "ratio_range": {setting: [min(values), max(values)]
                                                   for setting, values in ratios.items()}})
        return
    if args.threads_worker:
        threads_worker(args.threads_worker)
        return
    if args.mpi_worker:
        mpi_worker(args.mpi_worker)
        return
    from mcdpf.allocator import keep_freed_memory

    keep_freed_memory()
    result = {"noise": noise_rows()}
    print("Noise: ns per normal (fused gather + counter-based noise, one thread) beside numpy")
    print(table(result["noise"], [("shape", "shape", ""), ("ours_ns", "ours ns", ".2f"),
                                  ("numpy_ns", "numpy ns", ".2f"), ("speedup", "x", ".1f")]))
    result["steps"] = step_rows()
    print("\nWhole step / own kernel (one rank, one thread; targets: pf <= 2 at n=16 and n=64, "
          "pf >= 1.5x the plain numba forward)")
    print(table(result["steps"], [("setting", "setting", ""), ("algorithm", "alg", ""),
                                  ("step_ms", "step ms", ".3f"), ("kernel_ms", "kernel ms", ".3f"),
                                  ("ratio", "step/kernel", ".2f"),
                                  ("plain_forward_ms", "plain fwd ms", ".3f"),
                                  ("vs_plain", "plain/step", ".2f")]))
    result["recommended"] = two_rank_rows("recommended-worker")
    print_recommended(result["recommended"])
    result["threads"] = threads_row()
    row = result["threads"]
    print(f"\nThreads ({row['setting']}): 1 thread {row['one_thread_ms']:.1f} ms, 2 threads "
          f"{row['two_threads_ms']:.1f} ms: x{row['speedup']:.2f} (target >= 1.8); "
          f"bit-identical estimates: {row['bit_identical']}")
    mpi = two_rank_rows("mpi-worker")
    pf_single, _ = step_seconds(learner_for("pf", 16, 4, 1000, "float64")[0],
                                sequence(4, 10, "float64"))
    walk_work = 1 + 3 * 0.5
    mpi["pf_one_rank"] = pf_single
    mpi["efficiency"] = pf_single * walk_work / mpi["dpf"]
    mpi["efficiency_float32_wire"] = pf_single * walk_work / mpi["dpf-float32-wire"]
    result["two_ranks"] = mpi
    print(f"\nTwo ranks (lazy 2-ring, s=3, n=16 p=4 N=1000 m=10): pf 1 rank "
          f"{pf_single * 1e3:.2f} ms, dpf {mpi['dpf'] * 1e3:.2f} ms, dpf float32 wire "
          f"{mpi['dpf-float32-wire'] * 1e3:.2f} ms, rpf {mpi['rpf'] * 1e3:.2f} ms")
    print(f"  dpf inherent-work efficiency = pf x (1 + s P) / dpf = {mpi['efficiency']:.2f} "
          f"(float32 wire {mpi['efficiency_float32_wire']:.2f}; target >= 0.8)")
    exchange = mpi["exchange"]
    print("  500 records of 9872 B to the neighbour: " + ", ".join(
        f"{name} {seconds * 1e6:.0f} us" for name, seconds in exchange.items()))
    result["million"] = million_rows()
    two = result["threads"]["million_float32_two_threads_ms"] / 1e3
    result["million"].append({"setting": "pf, n=2 p=2 m=2, N=10^6, float32, 2 threads",
                              "step_ms": two * 1e3, "steps_per_second": 1.0 / two})
    for row in result["million"]:
        print(f"\nPapers' scale, 10^6 particles ({row['setting']}): {row['step_ms']:.0f} ms "
              f"per step, {row['steps_per_second']:.1f} steps/s (target >= 10)")
    write_json(args.json or RESULTS / "step.json", result)


if __name__ == "__main__":
    main()
