"""Particles in a subspace (``filter.subspace = d``) against full-space pf and dpf.

    python benchmarks/subspace.py [--seeds 1,2] [--steps 300] [--particles 100]
        [--dims 16,64,256] [--out benchmarks/results/subspace]

The issue-16 model-size setting: a synthetic-lstm teacher (n = 8, p = 4), model n = 16
(1 360 weights), ``model.init_std = 0.3``, a 4-node ring, interleaved. One
``mpiexec -n 4`` job trains pf and dpf in the full space and in subspaces of each ``d``
for every seed and records the final-10 % network MSE (mean over nodes) and the bytes a
node sends per step (mean over nodes and steps). Prints a Markdown table (mean and
spread over seeds) and writes ``subspace.json`` and ``subspace.md`` into ``--out``.
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

# common pins the BLAS and numba threads before numpy loads
# isort: off
from common import RESULTS, mpiexec, write_json
import numpy as np
# isort: on

SETTING = {"topology": {"name": "ring", "nodes": 4},
           "data": {"source": "synthetic-lstm", "partition": "interleave", "input_dim": 4,
                    "teacher_hidden": 8},
           "model": {"n": 16, "init_std": 0.3}}


def worker(output, seeds, steps, particles, dims):
    """Under mpiexec: every algorithm, d and seed; rank 0 writes the rows."""
    from mpi4py import MPI

    from mcdpf.config import load_config
    from mcdpf.driver import train

    comm = MPI.COMM_WORLD
    rows = []
    for algorithm in ("pf", "dpf"):
        for dimension in [0, *dims]:
            for seed in seeds:
                config = load_config(SETTING, [
                    f"run.algorithm={algorithm}", f"run.seed={seed}", f"run.steps={steps}",
                    "run.progress_seconds=0", f"filter.particles={particles}",
                    f"filter.subspace={dimension}"])
                result = train(comm, config, None, write=False, warn=False)
                errors = result["datasets"]["squared_error"]
                tail = max(1, math.ceil(0.1 * errors.size))
                mine = [np.nanmean(errors[-tail:]),
                        float(result["datasets"]["bytes_sent"].mean())]
                everyone = np.array(comm.allgather(mine))
                rows.append({"algorithm": algorithm, "subspace": dimension, "seed": seed,
                             "final_mse": float(everyone[:, 0].mean()),
                             "bytes_per_node_step": float(everyone[:, 1].mean())})
                if comm.rank == 0:
                    print(f"  {algorithm} d={dimension or 'full'} seed {seed}: final "
                          f"{rows[-1]['final_mse']:.5f}, "
                          f"{rows[-1]['bytes_per_node_step']:.0f} B/node/step", flush=True)
    if comm.rank == 0:
        Path(output).write_text(json.dumps(rows))


def markdown(rows, seeds):
    """One row per (algorithm, d): mean, min and max over seeds."""
    lines = [f"| algorithm | d | final-10% MSE, mean (min-max over {len(seeds)} seeds) | "
             "bytes / node / step |", "| --- | --- | --- | --- |"]
    keys = sorted({(r["algorithm"], r["subspace"]) for r in rows},
                  key=lambda k: (k[0] != "pf", k[1] or 10 ** 9))
    for algorithm, dimension in keys:
        chosen = [r for r in rows if (r["algorithm"], r["subspace"]) == (algorithm, dimension)]
        final = np.array([r["final_mse"] for r in chosen])
        sent = np.mean([r["bytes_per_node_step"] for r in chosen])
        lines.append(f"| {algorithm} | {dimension or 'full (1360)'} | {final.mean():.4f} "
                     f"({final.min():.4f}-{final.max():.4f}) | {sent:,.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--particles", type=int, default=100)
    parser.add_argument("--dims", default="16,64,256")
    parser.add_argument("--out", default=str(RESULTS / "subspace"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    if args.worker:
        worker(args.worker, seeds, args.steps, args.particles, dims)
        return
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "rows.json"
        subprocess.run([mpiexec(), "-n", "4", sys.executable, __file__, "--worker",
                        str(output), "--seeds", args.seeds, "--steps", str(args.steps),
                        "--particles", str(args.particles), "--dims", args.dims], check=True)
        rows = json.loads(output.read_text())
    table = markdown(rows, seeds)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "subspace.md").write_text(table + "\n")
    write_json(out / "subspace.json", {"setting": SETTING, "seeds": seeds, "steps": args.steps,
                                       "particles": args.particles, "rows": rows})


if __name__ == "__main__":
    main()
