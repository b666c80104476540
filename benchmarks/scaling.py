"""Cost against work: step time against N, n, m and K; weak scaling; bytes against n.

    python benchmarks/scaling.py [--max-ranks 2] [--json benchmarks/results/scaling.json]
                                 [--plot benchmarks/results/scaling.png]

Starts ``mpiexec -n K`` on itself for K = 1 .. --max-ranks (one rank per core: going
beyond the core count measures oversubscription, not scaling; the core count is
recorded). Every figure is the training loop's time per step (start-up excluded) on
synthetic-lstm data, ``s = 3``, a ring of K nodes:

- log-log slopes of step time against N (particles), n (LSTM size), m (sequence length)
  for dpf, pf, sgd, adam, ekf, dekf, beside the papers' complexity claims;
- weak scaling 1 -> K (same work per node) at the papers' scale and at n = 16 with short
  and long sequences (the compute per migrated byte grows with m);
- bytes sent per step against n for dpf, dekf, dsgd, dadam.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# common pins the BLAS and numba threads before numpy loads
# isort: off
from common import RESULTS, mpiexec, table, write_json
import numpy as np
# isort: on

BASE = {"particles": 100, "n": 2, "m": 4}
SWEEPS = {
    "particles": [50, 100, 200, 400, 800, 1600],
    "n": [2, 4, 8, 16],
    "m": [2, 4, 8, 16, 32],
}
ALGORITHMS = ("dpf", "pf", "sgd", "adam", "ekf", "dekf")
SINGLE_ESTIMATE = ("sgd", "adam", "ekf", "dekf")
PAPER = {"dpf": "O(N (n^2 + n p))", "pf": "O(N (n^2 + n p))",
         "sgd": "O(n^4 + n^2 p^2)", "adam": "sgd's (not in the papers)",
         "ekf": "O(n^8 + n^4 p^4)", "dekf": "O(n^8 + n^4 p^4)"}
STEPS = 60
WEAK = {"papers' scale (n=2, N=80, m=2)": {"particles": 80, "n": 2, "m": 2},
        "n=16, N=2000, m=8": {"particles": 2000, "n": 16, "m": 8},
        "n=16, N=2000, m=32": {"particles": 2000, "n": 16, "m": 32}}


def seconds_per_step(comm, directory, algorithm, particles, n, m, steps=STEPS):
    from mcdpf.config import load_config
    from mcdpf.driver import train

    config = load_config(None, [
        "topology.name=ring", f"run.algorithm={algorithm}", f"run.steps={steps}",
        "run.progress_seconds=0", "data.source=synthetic-lstm", f"data.min_length={m}",
        f"data.max_length={m}", f"model.n={n}", f"filter.particles={particles}",
        "filter.walk_steps=3", "filter.overlap=false"])
    result = train(comm, config, Path(directory) / "run", force=True, warn=False)
    loop = comm.allreduce(result["attributes"]["loop_seconds"], op=max_op())
    return loop / steps, float(result["datasets"]["bytes_sent"].mean())


def max_op():
    from mpi4py import MPI

    return MPI.MAX


def worker(output, mode):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    directory = comm.bcast(tempfile.mkdtemp() if comm.rank == 0 else None)
    rows = []

    def measure(**point):
        seconds, sent = seconds_per_step(comm, directory, **point)
        seconds, sent = seconds_per_step(comm, directory, **point)  # second run: warm
        rows.append({**point, "ranks": comm.size, "seconds": seconds, "bytes": sent})

    if mode == "sweeps":
        for algorithm in ALGORITHMS:
            measure(algorithm=algorithm, **BASE)
            for key, values in SWEEPS.items():
                if key == "particles" and algorithm in SINGLE_ESTIMATE:
                    continue  # a single estimate: no particles
                for value in values:
                    if value != BASE[key]:
                        measure(algorithm=algorithm, **dict(BASE, **{key: value}))
        for n in SWEEPS["n"]:
            for algorithm in ("dsgd", "dadam"):
                measure(algorithm=algorithm, **dict(BASE, n=n))
    else:
        for point in WEAK.values():
            measure(algorithm="dpf", **point)
    if comm.rank == 0:
        Path(output).write_text(json.dumps(rows))


def run_workers(ranks, mode):
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "rows.json"
        subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, __file__, "--worker",
                        str(output), "--mode", mode], check=True)
        return json.loads(output.read_text())


def sweep_points(rows, algorithm, key):
    """``[(value, seconds)]`` of one sweep: ``key`` varies, the rest stays at BASE."""
    points = {}
    for row in rows:
        if row["algorithm"] == algorithm and all(row[k] == BASE[k] for k in BASE if k != key):
            points.setdefault(row[key], row["seconds"])
    return sorted(points.items())


def slope(xs, ys):
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-ranks", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--json", default=str(RESULTS / "scaling.json"))
    parser.add_argument("--plot", default=str(RESULTS / "scaling.png"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="sweeps", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.mode)
        return

    rows = run_workers(args.max_ranks, "sweeps")
    slopes = []
    for algorithm in ALGORITHMS:
        entry = {"algorithm": algorithm, "paper": PAPER[algorithm]}
        for key in SWEEPS:
            points = sweep_points(rows, algorithm, key)
            entry[key] = slope(*zip(*points, strict=True)) if len(points) > 1 else float("nan")
        slopes.append(entry)
    print(f"log-log slope of step time (K={args.max_ranks} ring, s=3, base N={BASE['particles']}, "
          f"n={BASE['n']}, m={BASE['m']}, p=2); N sweep {SWEEPS['particles']}, n sweep "
          f"{SWEEPS['n']}, m sweep {SWEEPS['m']}")
    print(table(slopes, [("algorithm", "algorithm", ""), ("particles", "vs N", ".2f"),
                         ("n", "vs n", ".2f"), ("m", "vs m", ".2f"),
                         ("paper", "papers' complexity", "")]))

    from mcdpf.algorithms import traits

    bytes_rows = [{"algorithm": r["algorithm"], "n": r["n"], "bytes": r["bytes"]}
                  for r in rows if traits(r["algorithm"]).communicating
                  and r["particles"] == BASE["particles"] and r["m"] == BASE["m"]]
    print("\nbytes sent per step per node against n (N=100, m=4, s=3)")
    print(table(bytes_rows, [("algorithm", "algorithm", ""), ("n", "n", "d"),
                             ("bytes", "bytes/step", ".0f")]))

    weak = []
    for ranks in range(1, args.max_ranks + 1):
        for (label, _), row in zip(WEAK.items(), run_workers(ranks, "weak"), strict=True):
            weak.append({"setting": label, "ranks": ranks, "us": row["seconds"] * 1e6})
    for row in weak:
        first = next(w for w in weak if w["setting"] == row["setting"] and w["ranks"] == 1)
        row["efficiency"] = first["us"] / row["us"]
    print(f"\nweak scaling, dpf, same work per node, 1 .. {args.max_ranks} ranks on "
          f"{os.cpu_count()} cores (efficiency = step time at 1 rank / at K ranks)")
    print(table(weak, [("setting", "setting", ""), ("ranks", "ranks", "d"),
                       ("us", "us/step", ".1f"), ("efficiency", "efficiency", ".0%")]))
    write_json(args.json, {"cores": os.cpu_count(), "max_ranks": args.max_ranks,
                           "base": BASE, "sweeps": SWEEPS, "rows": rows, "slopes": slopes,
                           "bytes": bytes_rows, "weak": weak})
    plot(rows, args.plot)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6), dpi=110)
    for axis, key in zip(axes, SWEEPS, strict=True):
        for algorithm in ALGORITHMS:
            points = sweep_points(rows, algorithm, key)
            if len(points) > 1:
                axis.loglog(*zip(*points, strict=True), "o-", label=algorithm, ms=3)
        axis.set_xlabel({"particles": "N", "n": "n", "m": "m"}[key])
        axis.set_ylabel("seconds per step")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
