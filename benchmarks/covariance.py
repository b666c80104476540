"""Covariance forms of the EKF family: accuracy and cost per step against n_theta.

    python benchmarks/covariance.py [--algorithm dekf] [--sizes 2,8,16,64] [--seeds 1,2,3]
        [--steps 1000] [--rank 10] [--cost-only] [--out benchmarks/results/covariance]

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
  every size, so that the scaling with n_theta is seen without the LSTM's gradient. The
  three updates run in turn through ``form.updates`` (as the learners call them: full and
  decoupled defer each downdate into the next pass), beside one ``form.update`` after
  another and, for full and decoupled, beside a plain numba loop of the same update (one
  row's product, then its downdate, row after row: :func:`naive_block_update`, the
  kernel as written before the eight-row, deferred one), and one vectorised read of the
  covariance's memory (numpy's sum: the floor of one pass). ``--cost-only`` skips the
  accuracy part.

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
from numba import njit
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


@njit(cache=True, error_model="numpy")
def naive_block_update(means, blocks, starts, index, offsets, gradient, prediction, target,
                       noise_variance, products):
    """One Gaussian's EKF update of a block-diagonal (or, one block, dense) covariance.

    The plain loop: every row's product ``(P g)_a`` summed in column order, then ``s``,
    the mean and the downdate ``P -= u u^T / s`` row after row.
    """
    quadratic = 0.0
    for k in range(offsets.shape[0] - 1):
        first, size, start = offsets[k], offsets[k + 1] - offsets[k], starts[k]
        for a in range(size):
            total = 0.0
            for c in range(size):
                total += blocks[start + a * size + c] * gradient[index[first + c]]
            products[first + a] = total
            quadratic += gradient[index[first + a]] * total
    s = noise_variance + quadratic
    gain, inverse = (target - prediction) / s, 1.0 / s
    for k in range(offsets.shape[0] - 1):
        first, size, start = offsets[k], offsets[k + 1] - offsets[k], starts[k]
        for a in range(size):
            means[index[first + a]] += products[first + a] * gain
            scaled = products[first + a] * inverse
            for c in range(size):
                blocks[start + a * size + c] -= scaled * products[first + c]


def naive_step(form, state, gradients):
    """The time update and the measurements through :func:`naive_block_update`."""
    from mcdpf.kernels import dense_layout

    working = form.time_update(state, 1e-4)
    name = next(iter(working))
    blocks = working[name].reshape(-1)
    layout = dense_layout(form.size) if form.name == "full" else form.layout
    means, products = np.zeros(form.size), np.empty(form.size)
    for gradient in gradients:
        naive_block_update(means, blocks, *layout, gradient[0], 0.0, 0.1, 0.01, products)


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

            def in_turn(state=state, form=form, means=means, gradients=gradients):
                working = form.time_update(state, 1e-4)
                with form.updates(working) as updates:
                    for gradient in gradients:
                        updates.update(means, gradient, np.zeros(1), 0.1, np.array([0.01]))

            def one_by_one(state=state, form=form, means=means, gradients=gradients):
                working = form.time_update(state, 1e-4)
                for gradient in gradients:
                    form.update(working, means, gradient, np.zeros(1), 0.1, np.array([0.01]))

            def timed(step):
                return best_time(step, repeats=3, target_seconds=0.2, clock=time.thread_time)

            row["seconds_per_step"] = timed(in_turn)
            row["one_by_one_seconds"] = timed(one_by_one)
            row["naive_seconds"] = (timed(lambda form=form, state=state, gradients=gradients:
                                          naive_step(form, state, gradients))
                                    if name in ("full", "decoupled") else None)
            # the floor of one pass: numpy's vectorised sum over the covariance's memory
            row["read_seconds"] = timed(lambda state=state: [array.sum()
                                                             for array in state.values()])
            rows.append(row)
            print(f"  cost n={size} {name}: {row['seconds_per_step'] * 1e3:.3f} ms/step "
                  f"(one by one {row['one_by_one_seconds'] * 1e3:.3f}"
                  + (f", plain loop {row['naive_seconds'] * 1e3:.3f}"
                     if row["naive_seconds"] else "")
                  + f"; one read of P {row['read_seconds'] * 1e3:.3f})", flush=True)
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
    return "\n".join(lines + [""] + cost_lines(costs)) + "\n"


def cost_lines(costs):
    """The cost table: per form and size, in turn / one by one / plain loop, and memory."""
    lines = ["Covariance work alone per step (time update + 3 measurement updates, one "
             "thread, CPU time; memory of one covariance): through `form.updates` (as the "
             "learners run them) / one `form.update` after another / a plain numba loop "
             "(full and decoupled); in brackets one vectorised read of the covariance "
             "(numpy's sum), the floor of one pass over it:", "",
             "| model n (n_theta) | " + " | ".join(FORMS) + " |",
             "|---|" + "---|" * len(FORMS)]
    for size in sorted({cost["n"] for cost in costs}):
        cells = []
        for form in FORMS:
            (cost,) = [c for c in costs if c["n"] == size and c["form"] == form]
            if cost["seconds_per_step"] is None:
                cells.append(f"refused (memory), {cost['bytes'] / 1e6:.3g} MB")
                continue
            times = [cost["seconds_per_step"], cost["one_by_one_seconds"],
                     cost["naive_seconds"]]
            cells.append(" / ".join(f"{value * 1e3:.3g}" for value in times if value)
                         + f" ms ({cost['read_seconds'] * 1e3:.2g} ms), "
                         f"{cost['bytes'] / 1e6:.3g} MB")
        n_params = costs[[c["n"] for c in costs].index(size)]["n_params"]
        lines.append(f"| {size} ({n_params:,}) | " + " | ".join(cells) + " |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithm", default="dekf", choices=("ekf", "dekf"))
    parser.add_argument("--sizes", default="2,8,16,64")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--cost-only", action="store_true",
                        help="only the covariance cost table (no mpiexec training)")
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.cost_only:
        text = "\n".join(cost_lines(costs)) + "\n"
        print("\n" + text)
        (out / "covariance-cost.md").write_text(text)
        write_json(out / "covariance-cost.json", {"command": " ".join(sys.argv),
                                                  "costs": costs})
        return
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "rows.json"
        subprocess.run([mpiexec(), "-n", "4", sys.executable, __file__, "--worker",
                        str(output), "--algorithm", args.algorithm, "--sizes", args.sizes,
                        "--seeds", args.seeds, "--steps", str(args.steps), "--rank",
                        str(args.rank)], check=True)
        rows = json.loads(output.read_text())
    text = markdown(rows, costs, args)
    print("\n" + text)
    (out / "covariance.md").write_text(text)
    write_json(out / "covariance.json", {"command": " ".join(sys.argv), "rows": rows,
                                         "costs": costs})


if __name__ == "__main__":
    main()
