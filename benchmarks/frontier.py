"""The accuracy / communication / speed frontier of every algorithm and particle variant.

    python benchmarks/frontier.py [--seeds 1,2,3,4,5] [--settings NAME,...]
        [--out benchmarks/results/frontier]

For every setting (below) one ``mpiexec -n 4`` job trains every variant for every seed on
the 4-node paper ring (in memory, no files) and records the final-10 % network MSE, the
network MSE, the bytes the whole network sends per step and the steps per second (4 ranks
sharing the machine's cores; the same for every variant). Then it writes into ``--out``:

- ``frontier.png``: final MSE against bytes per step and against steps per second, one
  row of panels per setting, the Pareto frontier of each panel marked;
- ``frontier.md``: one table per setting (mean +- std over seeds, frontier membership)
  and the targets of issue "particle methods that win" checked against the diffusion EKF;
- ``frontier.json``: every number.

Settings: ``hk-replicate`` (``launch/hk-exchange.toml``, the papers' Fig. 2 setting),
``hk-interleave`` (the same, ``data.partition = "interleave"``), ``sentences``
(``launch/sentences.toml``), ``synthetic-lstm`` (a teacher LSTM, 300 steps), and three
real series never used to choose a setting, run in the HK setting (``data.source =
"csv"``, shipped in ``mcdpf/datasets/series``): ``co2``, ``sunspots`` (replicate and
interleave) and ``macro`` (replicate and interleave).
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

# common pins the BLAS and numba threads before numpy loads
# isort: off
from common import REPO, RESULTS, mpiexec, spread, write_json
import numpy as np
# isort: on

HK = str(REPO / "launch" / "hk-exchange.toml")
SENTENCES = str(REPO / "launch" / "sentences.toml")


def series(name):
    return str(resources.files("mcdpf.datasets").joinpath("series").joinpath(f"{name}.csv"))


def csv_setting(name, partition):
    return (HK, ["data.source=csv", f"data.path={series(name)}", f"data.partition={partition}"])


SETTINGS = {
    "hk-replicate": (HK, []),
    "hk-interleave": (HK, ["data.partition=interleave"]),
    "sentences": (SENTENCES, []),
    "synthetic-lstm": (HK, ["data.source=synthetic-lstm", "run.steps=300",
                            "data.partition=interleave"]),
    "co2-replicate": csv_setting("co2", "replicate"),
    "co2-interleave": csv_setting("co2", "interleave"),
    "sunspots-replicate": csv_setting("sunspots", "replicate"),
    "sunspots-interleave": csv_setting("sunspots", "interleave"),
    "macro-replicate": csv_setting("macro", "replicate"),
    "macro-interleave": csv_setting("macro", "interleave"),
}
TUNED_ON = ("hk-replicate", "hk-interleave")

GAUSSIAN = ["filter.kernel=gaussian", "filter.ess_threshold=0.5"]
LEAN = ["filter.wire_dtype=float32", "filter.visit_centering=true", "topology.walk=lazy"]
VARIANTS = {
    # name: (family, overrides)
    "sgd": ("gradient", ["run.algorithm=sgd"]),
    "dsgd": ("gradient", ["run.algorithm=dsgd"]),
    "adam": ("gradient", ["run.algorithm=adam"]),
    "dadam": ("gradient", ["run.algorithm=dadam"]),
    "ekf": ("kalman", ["run.algorithm=ekf"]),
    "dekf": ("kalman", ["run.algorithm=dekf"]),
    "pf N=80": ("local particles", ["run.algorithm=pf", "filter.particles=80"]),
    "pf gaussian N=5": ("local particles", ["run.algorithm=pf", "filter.particles=5",
                                            *GAUSSIAN]),
    "cpf N=320 (oracle)": ("oracle", ["run.algorithm=cpf", "filter.particles=80"]),
    "dpf N=80 (Algorithm 1)": ("dpf", ["run.algorithm=dpf", "filter.particles=80"]),
    "dpf N=400 (Algorithm 1)": ("dpf", ["run.algorithm=dpf", "filter.particles=400"]),
    "dpf N=2000 (Algorithm 1)": ("dpf", ["run.algorithm=dpf", "filter.particles=2000"]),
    "dpf N=80 lean": ("dpf", ["run.algorithm=dpf", "filter.particles=80", *LEAN]),
    "dpf N=400 lean": ("dpf", ["run.algorithm=dpf", "filter.particles=400", *LEAN]),
    "dpf N=80 lean linearized": ("dpf", ["run.algorithm=dpf", "filter.particles=80", *LEAN,
                                         "filter.proposal=linearized"]),
    "rpf N=80": ("rpf point", ["run.algorithm=rpf", "filter.particles=80"]),
    "rpf N=500": ("rpf point", ["run.algorithm=rpf", "filter.particles=500"]),
    "rpf N=2000": ("rpf point", ["run.algorithm=rpf", "filter.particles=2000"]),
    "rpf N=500 linearized": ("rpf point", ["run.algorithm=rpf", "filter.particles=500",
                                           "filter.proposal=linearized"]),
    "rpf gaussian N=1": ("rpf gaussian", ["run.algorithm=rpf", "filter.particles=1",
                                          *GAUSSIAN]),
    "rpf gaussian N=5": ("rpf gaussian", ["run.algorithm=rpf", "filter.particles=5",
                                          *GAUSSIAN]),
    "rpf gaussian N=20": ("rpf gaussian", ["run.algorithm=rpf", "filter.particles=20",
                                           *GAUSSIAN]),
    "rpf gaussian N=5 walk": ("rpf gaussian", ["run.algorithm=rpf", "filter.particles=5",
                                               *GAUSSIAN, "relay.weights=walk"]),
    "rpf gaussian N=5 hops=1": ("rpf gaussian", ["run.algorithm=rpf", "filter.particles=5",
                                                 *GAUSSIAN, "relay.hops=1"]),
}
BEST = "rpf gaussian N=5"  # launch/hk-exchange-best.toml
STYLE = {"gradient": ("tab:blue", "s"), "kalman": ("tab:green", "D"),
         "local particles": ("tab:orange", "v"), "oracle": ("black", "x"),
         "dpf": ("tab:red", "o"), "rpf point": ("tab:purple", "^"),
         "rpf gaussian": ("tab:olive", "*")}


def measure(comm, config, train):
    """Train ``config`` on every rank of ``comm`` (in memory); the network's measures.

    ``final_mse`` and ``mse`` (means over nodes of the final-10 % and whole-run MSE),
    ``bytes_per_step`` (the whole network's), ``steps_per_second`` (the slowest rank's).
    """
    result = train(comm, config, None, write=False, warn=False)
    errors = result["datasets"]["squared_error"]
    tail = max(1, math.ceil(0.1 * errors.size))
    mine = [np.nanmean(errors[-tail:]), np.nanmean(errors),
            float(result["datasets"]["bytes_sent"].mean()),
            float(result["attributes"]["loop_seconds"])]
    everyone = np.array(comm.allgather(mine))
    return {"final_mse": float(everyone[:, 0].mean()), "mse": float(everyone[:, 1].mean()),
            "bytes_per_step": float(everyone[:, 2].sum()),
            "steps_per_second": errors.size / float(everyone[:, 3].max())}


def worker(setting, seeds, variants, output, steps):
    """Under mpiexec: every variant and seed of one setting; rank 0 writes the rows."""
    from mpi4py import MPI

    from mcdpf.config import load_config
    from mcdpf.driver import train

    comm = MPI.COMM_WORLD
    config_path, common = SETTINGS[setting]
    rows = []
    for name in variants:
        family, overrides = VARIANTS[name]
        for seed in seeds:
            extra = [f"run.steps={steps}"] if steps else []
            config = load_config(config_path, [*common, *overrides, *extra,
                                               f"run.seed={seed}", "run.progress_seconds=0"])
            rows.append({"setting": setting, "variant": name, "family": family,
                         "seed": seed, **measure(comm, config, train)})
            if comm.rank == 0:
                print(f"  {setting}: {name} seed {seed}: final {rows[-1]['final_mse']:.5f} "
                      f"{rows[-1]['bytes_per_step']:.0f} B/step "
                      f"{rows[-1]['steps_per_second']:.0f} steps/s", flush=True)
    if comm.rank == 0:
        Path(output).write_text(json.dumps(rows))


def summarise(rows):
    """Per setting and variant: mean and std over seeds of every measure."""
    summary = {}
    for row in rows:
        entry = summary.setdefault(row["setting"], {}).setdefault(
            row["variant"], {"family": row["family"], "runs": []})
        entry["runs"].append(row)
    for variants in summary.values():
        for entry in variants.values():
            for key in ("final_mse", "mse", "bytes_per_step", "steps_per_second"):
                entry[key] = spread([run[key] for run in entry["runs"]])
    return summary


def pareto(points, larger_is_better_x=False):
    """Indices of the points not dominated in (x, final MSE) (x: cost, or speed)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = False
        for j, (u, v) in enumerate(points):
            better_x = u > x if larger_is_better_x else u < x
            no_worse_x = u >= x if larger_is_better_x else u <= x
            if j != i and no_worse_x and v <= y and (better_x or v < y):
                dominated = True
                break
        if not dominated:
            front.append(i)
    return front


def targets(variants):
    """The issue's targets against dekf: final MSE <= dekf's, <= 10x bytes, >= 1/4 speed."""
    dekf = variants.get("dekf")
    if dekf is None:
        return []
    checks = []
    for name, entry in variants.items():
        if entry["family"] not in ("dpf", "rpf point", "rpf gaussian", "local particles"):
            continue
        accurate = entry["final_mse"]["mean"] <= dekf["final_mse"]["mean"]
        lean = entry["bytes_per_step"]["mean"] <= 10 * dekf["bytes_per_step"]["mean"]
        fast = entry["steps_per_second"]["mean"] >= dekf["steps_per_second"]["mean"] / 4
        checks.append({"variant": name, "accurate": accurate, "lean": lean, "fast": fast,
                       "all": accurate and lean and fast})
    return checks


def markdown(summary, seeds):
    lines = [f"Final-10% network MSE (mean ± std over seeds {','.join(map(str, seeds))}), "
             "bytes per step of the whole 4-node network, steps per second (4 ranks sharing "
             "the machine); F: on the Pareto frontier of MSE vs bytes / vs steps per second.",
             ""]
    for setting, variants in summary.items():
        names = list(variants)
        bytes_front = {names[i] for i in pareto(
            [(v["bytes_per_step"]["mean"], v["final_mse"]["mean"]) for v in variants.values()])}
        speed_front = {names[i] for i in pareto(
            [(v["steps_per_second"]["mean"], v["final_mse"]["mean"])
             for v in variants.values()], larger_is_better_x=True)}
        tuned = " (settings chosen here)" if setting in TUNED_ON else \
            " (validation: never used to choose a setting)"
        lines += [f"### {setting}{tuned}", "",
                  "| variant | final-10% MSE | network MSE | bytes/step | steps/s | F bytes | "
                  "F speed |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, entry in variants.items():
            lines.append(
                f"| {name} | {entry['final_mse']['mean']:.5f} ± {entry['final_mse']['std']:.5f} "
                f"| {entry['mse']['mean']:.5f} ± {entry['mse']['std']:.5f} | "
                f"{entry['bytes_per_step']['mean']:.0f} | "
                f"{entry['steps_per_second']['mean']:.0f} | "
                f"{'F' if name in bytes_front else ''} | {'F' if name in speed_front else ''} |")
        winners = [c["variant"] for c in targets(variants) if c["all"]]
        lines += ["", "Particle variants at or below dekf's final MSE with at most 10x its "
                  "bytes and at least 1/4 of its steps/s: " + (", ".join(winners) or "none"),
                  ""]
    return "\n".join(lines)


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(summary)
    figure, axes = plt.subplots(len(settings), 2, figsize=(11, 3.2 * len(settings)), dpi=100,
                                squeeze=False)
    for row, setting in enumerate(settings):
        variants = summary[setting]
        for column, (key, label, larger) in enumerate(
                [("bytes_per_step", "bytes per step (network, log; 0 drawn at 1)", False),
                 ("steps_per_second", "steps per second (4 ranks)", True)]):
            axis = axes[row, column]
            points = [(max(v[key]["mean"], 1.0), v["final_mse"]["mean"])
                      for v in variants.values()]
            front = pareto(points, larger_is_better_x=larger)
            for (x, y), (name, entry) in zip(points, variants.items(), strict=True):
                color, marker = STYLE[entry["family"]]
                axis.errorbar(x, y, yerr=entry["final_mse"]["std"], fmt=marker, color=color,
                              ms=6, alpha=0.85, capsize=2)
                if name in (BEST, "dekf", "dpf N=80 (Algorithm 1)"):
                    axis.annotate(name, (x, y), fontsize=6, xytext=(3, 3),
                                  textcoords="offset points")
            order = sorted(front, key=lambda i: points[i][0])
            axis.plot([points[i][0] for i in order], [points[i][1] for i in order], "k--",
                      lw=0.8, alpha=0.6)
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xlabel(label, fontsize=8)
            axis.set_ylabel("final-10% MSE", fontsize=8)
            axis.set_title(setting, fontsize=9)
            axis.grid(True, which="both", alpha=0.3)
    handles = [plt.Line2D([], [], color=c, marker=m, ls="", label=family)
               for family, (c, m) in STYLE.items()]
    handles.append(plt.Line2D([], [], color="k", ls="--", label="Pareto frontier"))
    figure.legend(handles=handles, loc="upper center", ncol=4, fontsize=8)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated variant names (default: all)")
    parser.add_argument("--out", default=str(RESULTS / "frontier"))
    parser.add_argument("--steps", type=int, default=0, help="limit every run (smoke tests)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}")
    if args.worker:
        setting, output = args.worker
        worker(setting, seeds, variants, output, args.steps)
        return
    settings = [s for s in args.settings.split(",") if s]
    for setting in settings:
        if setting not in SETTINGS:
            parser.error(f"unknown setting {setting!r}; settings are {', '.join(SETTINGS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for setting in settings:
            output = Path(directory) / f"{setting}.json"
            print(f"{setting}:", flush=True)
            subprocess.run([mpiexec(), "-n", "4", sys.executable, __file__, "--worker", setting,
                            str(output), "--seeds", args.seeds, "--variants", ",".join(variants),
                            "--steps", str(args.steps)], check=True)
            rows += json.loads(output.read_text())
    summary = summarise(rows)
    (out / "frontier.md").write_text(markdown(summary, seeds) + "\n")
    plot(summary, out / "frontier.png")
    checks = {setting: targets(variants) for setting, variants in summary.items()}
    write_json(out / "frontier.json", {"seeds": seeds, "summary": {
        setting: {name: {k: v for k, v in entry.items() if k != "runs"}
                  for name, entry in variants.items()} for setting, variants in summary.items()},
        "runs": rows, "targets": checks})
    print(markdown(summary, seeds))


if __name__ == "__main__":
    main()
