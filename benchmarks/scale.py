"""The scale grid: network size K x model size n x every algorithm and named variant.

    python benchmarks/scale.py [--K 4,16,64] [--n 2,16,64] [--algorithms NAME,...]
        [--variants LABEL,...] [--datasets seattle-weather,synthetic] [--seeds 1,2,3] [--steps 300]
        [--timeout 900] [--quick] [--add] [--in-process] [--out benchmarks/results/scale]
    python benchmarks/scale.py --merge DIR [--out benchmarks/results/scale]

Every cell (data set, K, n) trains every registered algorithm (``mcdpf.registry.
ALGORITHMS``, so algorithms added later appear by themselves) and every named variant of
``VARIANTS`` whose algorithm is registered, for every seed, each run as ``mpiexec -n K
python -m mcdpf train`` under a timeout (``--timeout`` seconds per run), on a ring
(K = 4) or the most square torus (K >= 16), the model an LSTM of output size n, p = 4.
Data sets: ``seattle-weather`` (real daily weather, 4 series, interleaved: node k holds
days k, k + K, ...; each node gets at most (1461 - 2) // K steps) and ``synthetic`` (the
``synthetic-lstm`` teacher of the same size: teacher n = model n, p = 4, interleaved).

Per run: the final-10 % network MSE (``mcdpf.report.summarize``, as ``mcdpf report
--json``), bytes sent per node per step, steps per second of the slowest rank's loop and
the peak resident memory of the largest rank (``ru_maxrss`` of the reaped ranks). A
variant whose keys the installed configuration refuses, or that its algorithm refuses at
set-up (exit 2), is *skipped* with the one-line reason; a cell whose estimated memory
exceeds the machine's, or whose run outlives the timeout, is *infeasible* with the
reason. Nothing is dropped silently. The outputs are rewritten after every run, and with
``--add`` the runs already in ``--out``'s ``scale.json`` are kept and not repeated (but
a run that outlived a shorter ``--timeout`` than this command's is tried again), so
that a grid too large for one sitting is built by several commands (each is listed in the
outputs). Outputs in ``--out``: ``scale.md``
(the commands, the winner and the table of every cell), ``scale.json`` (machine, versions,
every number) and ``scale.png`` (final MSE per variant per cell). K above the core count runs
oversubscribed: its MSE and bytes hold, its steps/s measure time sharing, not speed. With
``--in-process`` each network runs in one process instead (``benchmarks/network_size.py``'s
in-process nodes: the same learners, predictions and bytes as ``mpiexec``, without 64
busy-polling ranks on 2 cores); its steps/s and peak memory are then the whole network's.
"""

import argparse
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# common pins the BLAS and numba threads before numpy loads
# isort: off
from common import REPO, RESULTS, machine_info, mpiexec, spread, to_toml
import numpy as np
# isort: on

GAUSSIAN = ["filter.kernel=gaussian", "filter.ess_threshold=0.5"]
LOWRANK = ["filter.covariance=lowrank", "filter.rank=2"]
# Named variants: (label, overrides). A variant whose keys or values its cell refuses (a
# subspace larger than the model, a covariance its algorithm cannot use) is skipped with
# the configuration's own message.
VARIANTS = [
    ("rpf gaussian N=5", ["run.algorithm=rpf", "filter.particles=5", *GAUSSIAN]),
    ("rpf gaussian N=5 diagonal", ["run.algorithm=rpf", "filter.particles=5", *GAUSSIAN,
                                   "filter.covariance=diagonal"]),
    ("rpf gaussian N=1 q=2.5e-5 (scale-best)", ["run.algorithm=rpf", "filter.particles=1",
                                                *GAUSSIAN, "filter.state_noise=0.000025"]),
    ("rpf gaussian N=1 decoupled q=2.5e-5 (scale-best n=64)", [
        "run.algorithm=rpf", "filter.particles=1", *GAUSSIAN, "filter.covariance=decoupled",
        "filter.state_noise=0.000025"]),
    ("dpf gaussian lowrank N=4 walk=auto", ["run.algorithm=dpf", "filter.particles=4",
                                            *GAUSSIAN, *LOWRANK, "filter.walk_steps=auto",
                                            "filter.wire_dtype=float32"]),
    ("dpf walk=auto centred", ["run.algorithm=dpf", "filter.walk_steps=auto",
                               "filter.visit_centering=true"]),
    ("dpf centred", ["run.algorithm=dpf", "filter.visit_centering=true"]),
    ("pf subspace d=32", ["run.algorithm=pf", "filter.subspace=32"]),
    ("dpf subspace d=32 walk=auto centred", ["run.algorithm=dpf", "filter.subspace=32",
                                             "filter.walk_steps=auto",
                                             "filter.visit_centering=true"]),
    ("ekf diagonal", ["run.algorithm=ekf", "ekf.covariance=diagonal"]),
    ("dekf diagonal", ["run.algorithm=dekf", "ekf.covariance=diagonal"]),
    ("dekf decoupled", ["run.algorithm=dekf", "ekf.covariance=decoupled"]),
    ("dekf lowrank", ["run.algorithm=dekf", "ekf.covariance=lowrank"]),
]
INPUT_DIM = 4
WINDOW = 2
SEATTLE_DAYS = 1461
BASE = {
    "run": {"progress_seconds": 0.0},
    "model": {"kind": "lstm", "carry_state": True, "init_std": 0.5},
    "filter": {"particles": 80, "state_noise": 0.0004, "obs_noise": 0.01, "walk_steps": 3},
    "sgd": {"learning_rate": 0.1},
}
DATASETS = {
    "seattle-weather": {"source": "seattle-weather", "window": WINDOW,
                        "partition": "interleave"},
    "synthetic": {"source": "synthetic-lstm", "input_dim": INPUT_DIM,
                  "partition": "interleave"},
}
MEMORY_COPIES = 4  # covariance, its copy with q I, the gain's and the update's temporaries
QUICK = {"K": [2], "n": [2], "algorithms": ["sgd", "dekf", "ekf"], "seeds": [1], "steps": 20,
         "variants": ["ekf diagonal"]}

# A rank's peak resident memory: run the command, then read the reaped children's maximum.
PEAK = ("import resource, subprocess, sys\n"
        "code = subprocess.run(sys.argv[2:]).returncode\n"
        "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN)"
        ".ru_maxrss * 1024))\n"
        "if code < 0:\n"
        "    print(f'killed by signal {-code}'"
        " + (' (SIGKILL: out of memory?)' if code == -9 else ''), file=sys.stderr)\n"
        "sys.exit(code if code >= 0 else 128 - code)\n")


def parameter_count(n: int, p: int = INPUT_DIM) -> int:
    """The LSTM's weights: 4 n (n + p) + 5 n."""
    return 4 * n * (n + p) + 5 * n


def variants(algorithms, names=None):
    """(label, algorithm, overrides) of every registered algorithm and named variant."""
    from mcdpf.registry import ALGORITHMS

    rows = [(name, name, [f"run.algorithm={name}"]) for name in ALGORITHMS
            if algorithms is None or name in algorithms]
    for label, overrides in VARIANTS:
        algorithm = overrides[0].split("=", 1)[1]
        if algorithm in ALGORITHMS and (algorithms is None or algorithm in algorithms) and \
                (names is None or label in names):
            rows.append((label, algorithm, overrides))
    return rows


def available_memory() -> int:
    """MemAvailable of /proc/meminfo in bytes (0 if unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def covariance_bytes(config) -> int:
    """Estimated bytes of the full covariances one rank holds (0: no full covariance)."""
    form = getattr(getattr(config, "ekf", None), "covariance", "full")
    algorithm = config.run.algorithm
    n_theta = parameter_count(config.model.n, INPUT_DIM)
    if algorithm in ("ekf", "dekf") and form == "full":
        count = 1
    elif config.filter.kernel == "gaussian" and \
            getattr(config.filter, "covariance", "full") == "full":
        count = config.filter.particles * (config.topology.nodes if algorithm == "cpf" else 1)
    else:
        return 0
    return MEMORY_COPIES * count * n_theta ** 2 * 8


def cell_steps(dataset, nodes, steps):
    """Steps per node: the request, capped by the real data set's length."""
    if dataset == "seattle-weather":
        return min(steps, (SEATTLE_DAYS - WINDOW) // nodes)
    return steps


def topology(nodes):
    return {"name": "ring", "nodes": nodes} if nodes <= 4 else {"name": "torus", "nodes": nodes}


def run_cell(dataset, nodes, n, label, overrides, seed, steps, timeout, work,
             in_process=False):
    """One run: a row with status ok / skipped / infeasible and its numbers or reason
    (``in_process``: the K nodes in one process, :func:`run_in_process`)."""
    from mcdpf.config import load_config
    from mcdpf.errors import InputError

    row = {"dataset": dataset, "K": nodes, "n": n, "n_params": parameter_count(n),
           "variant": label, "seed": seed, "steps": steps}
    document = {section: dict(keys) for section, keys in BASE.items()}
    document["topology"] = topology(nodes)
    document["data"] = dict(DATASETS[dataset], **({"teacher_hidden": n}
                                                   if dataset == "synthetic" else {}))
    document["model"]["n"] = n
    settings = [*overrides, f"run.seed={seed}", f"run.steps={steps}"]
    try:
        config = load_config(document, settings)
    except InputError as error:
        return dict(row, status="skipped", reason=str(error))
    need = nodes * covariance_bytes(config)
    if need > 0.8 * available_memory():
        return dict(row, status="infeasible",
                    reason=f"memory: full covariances need ~{need / 2**30:.1f} GB on {nodes} "
                           f"ranks, {available_memory() / 2**30:.1f} GB available")
    path = Path(work) / f"{dataset}-K{nodes}-n{n}-{label.replace(' ', '_')}-{seed}"
    if in_process:
        return dict(row, runner="in-process",
                    **run_in_process(document, settings, nodes, timeout, path))
    return dict(row, **run_training(document, settings, nodes, timeout, path))


def run_training(document, settings, nodes, timeout, path) -> dict:
    """``mpiexec -n nodes python -m mcdpf train`` of ``document`` with ``settings`` (``--set``
    items) in the new directory ``path``, under ``timeout`` seconds.

    Returns ``status`` ok with final_mse, mse, bytes_per_node_step, steps_per_second and
    peak_mb (the largest rank's peak resident memory), or skipped (exit 2: the one-line
    reason), infeasible (over the timeout) or failed, with ``reason``.
    """
    from mcdpf.report import summarize

    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(document))
    toml = path / "config.toml"
    toml.write_text(to_toml(document))
    peak_file = path / "peak"
    command = [sys.executable, "-c", PEAK, str(peak_file), mpiexec(), "-n", str(nodes),
               sys.executable, "-m", "mcdpf", "train", str(toml), "--quiet", "--out",
               str(path / "run"), *[arg for item in settings for arg in ("--set", item)]]
    failure = finish(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True), timeout)
    if failure:
        return failure
    summary = summarize(path / "run")
    return dict(status="ok", final_mse=summary["network_final_mse"],
                mse=summary["network_mse"],
                bytes_per_node_step=summary["bytes_per_step"] / nodes,
                steps_per_second=summary["steps_per_second"],
                peak_mb=int(peak_file.read_text()) / 2**20)


def run_in_process(document, settings, nodes, timeout, path) -> dict:
    """:func:`run_training`'s numbers from a network run in one process
    (``benchmarks/network_size.py --simulate``: every node's learner as ``mcdpf train``
    builds it, the exchanges through shared memory; the same predictions and bytes as
    ``mpiexec``, checked by ``network_size.py --check-mpi``), under ``timeout`` seconds.

    Its steps/s are the whole network's on one core, its peak memory the whole network's.
    """
    path.mkdir(parents=True)
    job = path / "job.json"
    job.write_text(json.dumps({"document": document, "settings": settings, "nodes": nodes}))
    peak_file = path / "peak"
    command = [sys.executable, "-c", PEAK, str(peak_file), sys.executable,
               str(REPO / "benchmarks" / "network_size.py"), "--simulate", str(job)]
    failure = finish(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True), timeout)
    if failure:
        return failure
    result = json.loads(job.with_suffix(".result.json").read_text())
    return dict(status="ok", final_mse=result["final_mse"], mse=result["mse"],
                bytes_per_node_step=result["bytes"],
                steps_per_second=result["steps"] / result["seconds"],
                peak_mb=int(peak_file.read_text()) / 2**20)


def finish(process, timeout) -> dict | None:
    """Wait for a run's process; None if it succeeded, else its status and reason
    (infeasible: over ``timeout`` seconds; skipped: exit 2 and its one line; failed)."""
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return {"status": "infeasible", "reason": f"time budget: over {timeout:.0f} s"}
    if process.returncode == 2:
        lines = [line for line in stderr.splitlines() if line.strip()]
        return {"status": "skipped", "reason": lines[-1] if lines else "exit 2"}
    if process.returncode != 0:
        return {"status": "failed", "reason": f"exit {process.returncode}: "
                f"{stderr.strip().splitlines()[-1] if stderr.strip() else ''}"}
    return None


def summarise(rows):
    """Per cell and variant: mean and std over seeds, or the reason it did not run."""
    cells = {}
    for row in rows:
        key = f"{row['dataset']} K={row['K']} n={row['n']}"
        cell = cells.setdefault(key, {"dataset": row["dataset"], "K": row["K"], "n": row["n"],
                                      "n_params": row["n_params"], "steps": row["steps"],
                                      "variants": {}})
        cell["variants"].setdefault(row["variant"], []).append(row)
    for cell in cells.values():
        for label, runs in cell["variants"].items():
            done = [run for run in runs if run["status"] == "ok"]
            entry = {"seeds": [run["seed"] for run in done]}
            if done:
                for measure in ("final_mse", "bytes_per_node_step", "steps_per_second",
                                "peak_mb"):
                    entry[measure] = spread([run[measure] for run in done])
            if any(run.get("runner") == "in-process" for run in done):
                entry["runner"] = "in-process"
            others = [run for run in runs if run["status"] != "ok"]
            if others:
                entry["status"] = others[0]["status"]
                entry["reason"] = others[0]["reason"]
            cell["variants"][label] = entry
        ranked = [(entry["final_mse"]["mean"], label)
                  for label, entry in cell["variants"].items() if "final_mse" in entry]
        cell["winner"] = min(ranked)[1] if ranked else None
    return cells


PARTICLE_ALGORITHMS = ("pf", "cpf", "rpf", "dpf")


def best_of(cell, algorithms=None):
    """(label, mean final MSE, bytes per node per step) of the best variant that ran among
    those of ``algorithms`` (all when None); None when none ran."""
    ranked = [(entry["final_mse"]["mean"], label, entry["bytes_per_node_step"]["mean"])
              for label, entry in cell["variants"].items() if "final_mse" in entry and
              (algorithms is None or label.split()[0] in algorithms)]
    if not ranked:
        return None
    mse, label, sent = min(ranked)
    return label, mse, sent


def overview(cells) -> list[str]:
    """One row per cell: the winner, the best Kalman baseline, the best particle variant,
    the best dpf (particles migrate) and pf (no communication), each with its final MSE
    relative to the winner's and its bytes per node per step."""
    columns = [("winner", None), ("best ekf/dekf", ("ekf", "dekf")),
               ("best sgd/adam", ("sgd", "dsgd", "adam", "dadam")),
               ("best particle filter", PARTICLE_ALGORITHMS), ("best dpf", ("dpf",)),
               ("pf", ("pf",))]
    lines = ["## Overview", "",
             "Per cell: the best variant of each family, its final MSE and (in brackets) "
             "bytes per node per step; below the winner, the ratio of its final MSE to the "
             "winner's.", "", "| cell | seeds | " +
             " | ".join(name for name, _ in columns) + " |",
             "| --- | --- | " + " | ".join("---" for _ in columns) + " |"]
    for key, cell in cells.items():
        winner = best_of(cell)
        if winner is None:
            continue
        seeds = max(len(entry.get("seeds", [])) for entry in cell["variants"].values())
        shown = []
        for name, algorithms in columns:
            found = best_of(cell, algorithms)
            if name == "pf":
                found = ("pf", cell["variants"]["pf"]["final_mse"]["mean"], 0.0) if \
                    "final_mse" in cell["variants"].get("pf", {}) else None
            if found is None:
                shown.append("-")
                continue
            label, mse, sent = found
            ratio = "" if name == "winner" else f", {mse / winner[1]:.2f}×"
            shown.append(f"{label}: {mse:.4g}{ratio} ({sent:,.0f} B)")
        lines.append(f"| {key} | {seeds} | " + " | ".join(shown) + " |")
    return lines + [""]


def markdown(cells, commands, cores) -> str:
    lines = ["# Scale grid", "", "Commands:", "", *[f"    {command}" for command in commands],
             "",
             "Final-10 % network MSE (mean ± std over the seeds that ran), bytes sent per node "
             "per step, steps per second of the slowest rank, peak resident memory of the "
             f"largest rank. This machine has {cores} cores: K above {cores} runs "
             "oversubscribed, so its steps/s measure time sharing, not speed (accuracy and "
             "bytes only).", ""]
    lines += overview(cells)
    for key, cell in cells.items():
        lines += [f"## {key} ({cell['n_params']} weights, {cell['steps']} steps per node)", ""]
        lines.append(f"Winner: **{cell['winner']}**" if cell["winner"] else
                     "Winner: none (no variant ran)")
        lines += ["", "| variant | final MSE | bytes/node/step | steps/s | peak MB | note |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for label, entry in sorted(cell["variants"].items(),
                                   key=lambda item: item[1].get("final_mse", {})
                                   .get("mean", math.inf)):
            note = f"{entry['status']}: {entry['reason']}" if "status" in entry else ""
            if entry.get("runner") == "in-process":
                note = "in one process: steps/s and peak MB of the whole network" + (
                    f"; {note}" if note else "")
            note = note.replace("|", "/")
            if "final_mse" in entry:
                mse = entry["final_mse"]
                lines.append(f"| {label} | {mse['mean']:.4g} ± {mse['std']:.2g} | "
                             f"{entry['bytes_per_node_step']['mean']:.0f} | "
                             f"{entry['steps_per_second']['mean']:.1f} | "
                             f"{entry['peak_mb']['mean']:.0f} | {note} |")
            else:
                lines.append(f"| {label} | - | - | - | - | {note} |")
        lines.append("")
    return "\n".join(lines)


def figure(cells, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(cells)
    columns = min(4, len(keys))
    rows = math.ceil(len(keys) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows),
                             squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        entries = [(label, entry) for label, entry in cells[key]["variants"].items()]
        values = [entry["final_mse"]["mean"] if "final_mse" in entry else np.nan
                  for _, entry in entries]
        errors = [entry["final_mse"]["std"] if "final_mse" in entry else 0.0
                  for _, entry in entries]
        colours = ["tab:green" if label == cells[key]["winner"] else "tab:blue"
                   for label, _ in entries]
        ax.barh(range(len(entries)), values, xerr=errors, color=colours)
        ax.set_yticks(range(len(entries)), [label for label, _ in entries], fontsize=7)
        for index, value in enumerate(values):
            if not np.isfinite(value):
                ax.text(0.01, index, "not run", va="center", fontsize=7, color="tab:red",
                        transform=ax.get_yaxis_transform())
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("final-10 % MSE", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)  # written after every run: do not keep each figure open


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", default="4,16,64", help="node counts")
    parser.add_argument("--n", default="2,16,64", help="LSTM output sizes")
    parser.add_argument("--algorithms", default=None,
                        help="registered algorithms to run (default: all) with their variants")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--steps", type=int, default=300,
                        help="steps per node (capped by the real data set's length)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--variants", default=None,
                        help="named variants (labels of VARIANTS) to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="a tiny grid (smoke test)")
    parser.add_argument("--add", action="store_true",
                        help="keep the runs of --out's scale.json and run only the new ones")
    parser.add_argument("--in-process", action="store_true",
                        help="run each network in one process (network_size.py's "
                             "in-process nodes) instead of mpiexec: for K far above the "
                             "core count")
    parser.add_argument("--merge", metavar="DIR",
                        help="only add the runs and commands of DIR's scale.json (a part of "
                             "the grid run elsewhere with --out DIR) to --out's, and rewrite")
    parser.add_argument("--out", default=str(RESULTS / "scale"))
    args = parser.parse_args()
    if args.merge:
        merge(Path(args.out), Path(args.merge))
        return
    if args.quick:
        grid = dict(QUICK)
    else:
        grid = {"K": [int(k) for k in args.K.split(",")], "n": [int(n) for n in
                                                              args.n.split(",")],
                "algorithms": args.algorithms.split(",") if args.algorithms else None,
                "seeds": [int(s) for s in args.seeds.split(",")], "steps": args.steps,
                "variants": args.variants.split(",") if args.variants else None}
    datasets = args.datasets.split(",")
    unknown = [name for name in datasets if name not in DATASETS]
    if unknown:
        parser.error(f"--datasets: unknown {unknown[0]!r} (known: {', '.join(DATASETS)})")
    plan = variants(grid["algorithms"], grid["variants"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commands = ["python benchmarks/scale.py " + shlex.join(sys.argv[1:])]
    rows = []
    if args.add and (out / "scale.json").exists():
        before = json.loads((out / "scale.json").read_text())
        rows = before["runs"]
        commands = before["commands"] + commands
    # a run that outlived a shorter timeout than this command's is tried again
    done = {run_key(row) for row in rows
            if outlived(row) is None or outlived(row) >= args.timeout}
    started = time.time()
    with tempfile.TemporaryDirectory() as work:
        for dataset in datasets:
            for nodes in grid["K"]:
                for n in grid["n"]:
                    steps = cell_steps(dataset, nodes, grid["steps"])
                    for label, _, overrides in plan:
                        for seed in grid["seeds"]:
                            if (dataset, nodes, n, label, seed, steps) in done:
                                continue
                            row = run_cell(dataset, nodes, n, label, overrides, seed, steps,
                                           args.timeout, work, args.in_process)
                            rows = [old for old in rows if run_key(old) != run_key(row)]
                            rows.append(row)
                            shown = (f"final {row['final_mse']:.4g}" if row["status"] == "ok"
                                     else f"{row['status']}: {row['reason']}")
                            print(f"{dataset} K={nodes} n={n} {label} seed {seed}: {shown}",
                                  flush=True)
                            # after every run, so that an interrupted grid keeps what it ran
                            write(out, rows, commands, time.time() - started)
                            if row["status"] != "ok":
                                break  # the other seeds fail for the same reason
    print(f"written: {out / 'scale.md'}, scale.json, scale.png")


def merge(out, other):
    """Add ``other``'s runs (those ``out`` lacks) and commands to ``out``'s outputs."""
    mine, theirs = (json.loads((path / "scale.json").read_text()) for path in (out, other))
    done = {run_key(row) for row in mine["runs"]}
    rows = mine["runs"] + [row for row in theirs["runs"] if run_key(row) not in done]
    commands = mine["commands"] + [command for command in theirs["commands"]
                                   if command not in mine["commands"]]
    write(out, rows, commands, mine["seconds"] + theirs["seconds"])
    print(f"merged {len(rows) - len(mine['runs'])} runs of {other} into {out / 'scale.json'}")


def outlived(row) -> float | None:
    """The timeout (seconds) a run outlived, None if it did not."""
    prefix = "time budget: over "
    if row["status"] == "infeasible" and row["reason"].startswith(prefix):
        return float(row["reason"][len(prefix):].split()[0])
    return None


def run_key(row):
    """What identifies a run: data set, K, n, variant, seed and steps."""
    return row["dataset"], row["K"], row["n"], row["variant"], row["seed"], row["steps"]


def write(out, rows, commands, seconds):
    """scale.md, scale.json and scale.png of the runs so far (``commands``: every command
    whose runs they hold; ``seconds``: the last command's time)."""
    cells = summarise(rows)
    machine = machine_info()
    (out / "scale.md").write_text(markdown(cells, commands, machine["cores"]))
    # through a temporary file, so that a kill while writing leaves the last whole JSON
    partial = out / "scale.json.partial"
    partial.write_text(json.dumps(
        {"machine": machine, "command": commands[-1], "commands": commands,
         "variants": [[label, overrides] for label, overrides in VARIANTS],
         "seconds": seconds, "cells": cells, "runs": rows}, indent=1) + "\n")
    os.replace(partial, out / "scale.json")
    figure(cells, out / "scale.png")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
