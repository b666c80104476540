"""Covariance forms of the EKF family: accuracy and cost per step against n_theta.

    python benchmarks/covariance.py [--algorithm dekf] [--sizes 2,8,16,64] [--seeds 1,2,3]
        [--steps 1000] [--rank 10] [--out benchmarks/results/covariance]

Two measurements, side by side in one run:

- **accuracy**: one ``mpiexec -n 4`` job trains ``--algorithm`` (ekf or dekf) with every
  ``ekf.covariance`` form, every model size ``model.n`` and every seed on issue 16's
  teacher (``data.source = "synthetic-lstm"``, teacher n = 8, p = 4,
  ``model.init_std = 0.3``, the 4-node ring, interleaved) and records the final-10 %
  network MSE (mean over nodes), the bytes per node per step and the steps per second
  (4 ranks sharing the machine's cores). A form whose covariance does not fit
  ``ekf.max_memory_gb`` (the default 4 GB) is reported as refused, not run.
- **cost**: in this process, the CPU time (``time.thread_time``, one thread) of one step
  of the covariance alone (time update, then three measurement updates: a dekf node on
  the ring) with random gradients, and the memory of one covariance, for every form at
  every size, so that the scaling with n_theta is seen without the LSTM's gradient.

Speed numbers come from a shared machine and are noisy; the scaling with n_theta is
what they show. Writes ``covariance.md`` and ``covariance.json`` into ``--out``.
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# common pins the BLAS and numba threads before numpy loads
# isort: off
from common import RESULTS, best_time, mpiexec, write_json
import numpy as np
# isort: on

FORMS = ("full", "diagonal", "decoupled", "lowrank")
TEACHER = ["data.source=synthetic-lstm", "data.teacher_hidden=8", "data.input_dim=4",
           "model.init_std=0.3", "data.partition=interleave", "run.progress_seconds=0"]
MEASUREMENTS_PER_STEP = 3  # a dekf node on the ring: its own label and two neighbours'


def form_overrides(form, rank, section="ekf"):
    """``--set`` items of one covariance form in ``section`` (ekf, or filter for particles)."""
    return [f"{section}.covariance={form}"] + ([f"{section}.rank={rank}"]
                                               if form == "lowrank" else [])


def worker(algorithm, sizes, seeds, steps, rank, output):
    """Under mpiexec -n 4: every form, size and seed; rank 0 writes the rows."""
    from mpi4py import MPI

    from mcdpf.config import load_config
    from mcdpf.driver import train
    from mcdpf.errors import InputError

    comm = MPI.COMM_WORLD
    rows = []
    for size in sizes:
        for form in FORMS:
            for seed in seeds:
                config = load_config({"topology": {"name": "ring", "nodes": 4}}, [
                    *TEACHER, f"run.algorithm={algorithm}", f"model.n={size}",
                    f"run.steps={steps}", f"run.seed={seed}", *form_overrides(form, rank)])
                row = {"n": size, "form": form, "seed": seed}
                try:
                    result = train(comm, config, None, write=False, warn=False)
                except InputError as error:
                    rows.append({**row, "refused": str(error)})
                    break
                errors = result["datasets"]["squared_error"]
                tail = max(1, math.ceil(0.1 * errors.size))
                mine = [np.nanmean(errors[-tail:]),
                        float(result["datasets"]["bytes_sent"].mean()),
                        float(result["attributes"]["loop_seconds"])]
                everyone = np.array(comm.allgather(mine))
                rows.append({**row, "n_params": int(result["attributes"]["n_params"]),
                             "final_mse": float(everyone[:, 0].mean()),
                             "bytes_per_node_step": float(everyone[:, 1].mean()),
                             "steps_per_second": errors.size / float(everyone[:, 2].max())})
                if comm.rank == 0:
                    print(f"  n={size} {form} seed {seed}: final {rows[-1]['final_mse']:.5f} "
                          f"{rows[-1]['steps_per_second']:.1f} steps/s", flush=True)
    if comm.rank == 0:
        Path(output).write_text(json.dumps(rows))


def covariance_cost(sizes, rank, max_memory_gb=4.0):
    """CPU seconds of one step of each form's covariance work, and its memory."""
    from mcdpf.covariance import build_covariance
    from mcdpf.models import LSTMModel

    rng = np.random.default_rng(0)
    rows = []
    for size in sizes:
        model = LSTMModel(hidden=size, inputs=4, carry_state=True, init_std=0.3,
                          dtype=np.dtype("float64"))
        for name in FORMS:
            form = build_covariance(name, model, rank)
            row = {"n": size, "n_params": model.n_params, "form": name,
                   "bytes": form.nbytes()}
            if 2 * form.nbytes() > max_memory_gb * 1024 ** 3:
                rows.append({**row, "seconds_per_step": None})
                continue
            state = form.initial(1, 0.09)
            means = np.zeros((1, model.n_params))
            gradients = 0.1 * rng.standard_normal((MEASUREMENTS_PER_STEP, 1, model.n_params))

            def step(state=state, form=form, means=means, gradients=gradients):
                working = form.time_update(state, 1e-4)
                for gradient in gradients:
                    form.update(working, means, gradient, np.zeros(1), 0.1, np.array([0.01]))

            seconds = best_time(step, repeats=3, target_seconds=0.2, clock=time.thread_time)
            rows.append({**row, "seconds_per_step": seconds})
            print(f"  cost n={size} {name}: {seconds * 1e3:.3f} ms/step", flush=True)
    return rows


def spread(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def markdown(rows, costs, args):
    lines = [f"`{args.algorithm}` on issue 16's teacher (teacher n = 8, p = 4, "
             f"model.init_std = 0.3, 4-node ring, interleave), {args.steps} steps, seeds "
             f"{args.seeds}; final-10 % network MSE (mean ± std over seeds), bytes per node "
             "per step, steps/s (4 ranks sharing a loaded 2-core machine: noisy).", "",
             "| model n (n_theta) | form | final MSE | bytes/node/step | steps/s |",
             "|---|---|---|---|---|"]
    keys = sorted({(row["n"], row["form"]) for row in rows},
                  key=lambda key: (key[0], FORMS.index(key[1])))
    for size, form in keys:
        runs = [row for row in rows if row["n"] == size and row["form"] == form]
        if "refused" in runs[0]:
            lines.append(f"| {size} | {form} | refused: {runs[0]['refused']} | | |")
            continue
        mse, std = spread([run["final_mse"] for run in runs])
        speed, _ = spread([run["steps_per_second"] for run in runs])
        lines.append(f"| {size} ({runs[0]['n_params']:,}) | {form} | {mse:.4f} ± {std:.4f} | "
                     f"{runs[0]['bytes_per_node_step']:.0f} | {speed:.1f} |")
    lines += ["", "Covariance work alone per step (time update + 3 measurement updates, one "
              "thread, CPU time; memory of one covariance):", "",
              "| model n (n_theta) | " + " | ".join(FORMS) + " |",
              "|---|" + "---|" * len(FORMS)]
    for size in sorted({cost["n"] for cost in costs}):
        cells = []
        for form in FORMS:
            (cost,) = [c for c in costs if c["n"] == size and c["form"] == form]
            time_text = ("refused (memory)" if cost["seconds_per_step"] is None
                         else f"{cost['seconds_per_step'] * 1e3:.3g} ms")
            cells.append(f"{time_text}, {cost['bytes'] / 1e6:.3g} MB")
        n_params = costs[[c["n"] for c in costs].index(size)]["n_params"]
        lines.append(f"| {size} ({n_params:,}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithm", default="dekf", choices=("ekf", "dekf"))
    parser.add_argument("--sizes", default="2,8,16,64")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--out", default=str(RESULTS / "covariance"))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(value) for value in args.sizes.split(",")]
    seeds = [int(value) for value in args.seeds.split(",")]
    if args.worker:
        worker(args.algorithm, sizes, seeds, args.steps, args.rank, args.worker)
        return
    print("cost of the covariance work per step:")
    costs = covariance_cost(sizes, args.rank)
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "rows.json"
        subprocess.run([mpiexec(), "-n", "4", sys.executable, __file__, "--worker",
                        str(output), "--algorithm", args.algorithm, "--sizes", args.sizes,
                        "--seeds", args.seeds, "--steps", str(args.steps), "--rank",
                        str(args.rank)], check=True)
        rows = json.loads(output.read_text())
    text = markdown(rows, costs, args)
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "covariance.md").write_text(text)
    write_json(out / "covariance.json", {"command": " ".join(sys.argv), "rows": rows,
                                         "costs": costs})


if __name__ == "__main__":
    main()
