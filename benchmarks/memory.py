"""Peak resident memory per rank against N and n, beside the particle arrays' own size.

    python benchmarks/memory.py [--json benchmarks/results/memory.json]

Every point is a fresh ``mpiexec`` job (peak RSS only grows within a process) running a
few steps of pf (1 rank) or dpf (2 ranks, ring) on synthetic-lstm data, float64; the
figure is the largest ``ru_maxrss`` over ranks. "Particle arrays" are what the filter
holds per node: parameters, carried state and its noise, log-weights and ids,
``N (n_theta + 4n) * 8 + 16 N`` bytes. "Fixed" is the peak of the same run with N = 10
(interpreter, numpy, numba, compiled kernels, MPI). Target: peak < 3 x arrays + fixed.
The largest point is 10^5 particles at n = 16 (n_theta = 1232: about 1 GB of parameters).
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from common import RESULTS, mpiexec, table, write_json

POINTS = [(algorithm, particles, n) for algorithm in ("pf", "dpf")
          for n in (2, 16) for particles in (10, 1000, 10000, 100000)]
STEPS = 3


def worker(algorithm, particles, n, output):
    from mpi4py import MPI

    from mcdpf.config import load_config
    from mcdpf.driver import train

    comm = MPI.COMM_WORLD
    directory = comm.bcast(tempfile.mkdtemp() if comm.rank == 0 else None)
    config = load_config(None, ["topology.name=ring", f"run.algorithm={algorithm}",
                                f"run.steps={STEPS}", "run.progress_seconds=0",
                                "data.source=synthetic-lstm", "data.min_length=4",
                                "data.max_length=4", f"model.n={n}",
                                f"filter.particles={particles}", "filter.walk_steps=3"])
    result = train(comm, config, Path(directory) / "run", force=True, warn=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peaks = comm.gather(peak)
    if comm.rank == 0:
        Path(output).write_text(json.dumps({"peak": max(peaks),
                                            "n_params": result["attributes"]["n_params"],
                                            "loop_seconds": result["attributes"]
                                            ["loop_seconds"]}))


def measure(algorithm, particles, n):
    from mcdpf.registry import ALGORITHMS

    ranks = 2 if ALGORITHMS.entry(algorithm).traits.communicating else 1
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "peak.json"
        subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, __file__, "--worker",
                        algorithm, str(particles), str(n), str(output)], check=True)
        return json.loads(output.read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(RESULTS / "memory.json"))
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        algorithm, particles, n, output = args.worker
        worker(algorithm, int(particles), int(n), output)
        return
    rows = []
    fixed = {}
    for algorithm, particles, n in POINTS:
        measured = measure(algorithm, particles, n)
        arrays = particles * (measured["n_params"] + 4 * n) * 8 + 16 * particles
        if particles == 10:
            fixed[(algorithm, n)] = measured["peak"] - arrays
        base = fixed[(algorithm, n)]
        rows.append({"algorithm": algorithm, "n": n, "particles": particles,
                     "n_params": measured["n_params"], "arrays_mb": arrays / 2**20,
                     "peak_mb": measured["peak"] / 2**20, "fixed_mb": base / 2**20,
                     "ratio": (measured["peak"] - base) / arrays,
                     "seconds_per_step": measured["loop_seconds"] / STEPS})
    print("peak resident memory per rank (largest over ranks); ratio = (peak - fixed) / "
          "particle arrays, target < 3")
    print(table(rows, [("algorithm", "algorithm", ""), ("n", "n", "d"),
                       ("particles", "N", "d"), ("arrays_mb", "arrays MB", ".1f"),
                       ("peak_mb", "peak MB", ".1f"), ("fixed_mb", "fixed MB", ".1f"),
                       ("ratio", "ratio", ".2f"), ("seconds_per_step", "s/step", ".3f")]))
    write_json(args.json, {"rows": rows, "steps": STEPS})


if __name__ == "__main__":
    main()
