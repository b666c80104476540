"""``launch/dpf-best.toml`` (or a candidate) against dekf in the frontier's interleaved settings.

    python benchmarks/dpf_best.py [--config launch/dpf-best.toml] [--set KEY=VALUE ...]
        [--settings hk-interleave,co2-interleave,sunspots-interleave] [--seeds 1,2,3,4,5]
        [--topology topologies/random10.toml] [--out benchmarks/results/dpf_best]

Issue 16's target for the seeds' method: the configuration in which particles migrate
(``run.algorithm = "dpf"``) reaches a final-10 % network MSE within 10 % of dekf's (or
below) at no more than 10x dekf's bytes per node per step, on real non-IID data (the
frontier's interleaved settings: 4-node paper ring, the papers' model n = 2). For every
setting one ``mpiexec -n 4`` job runs dekf exactly as ``benchmarks/frontier.py`` does and
the candidate (``--config`` with the setting's data overrides of the frontier, then
``--set``) for every seed. ``--topology FILE`` puts both on another graph (one rank per
node of the file, data interleaved over its nodes): the configuration off the ring it was
tuned on. Prints a Markdown table (mean ± std over seeds; ratios of the
means) and writes ``dpf_best.md`` and ``dpf_best.json`` into ``--out`` (unless
``--no-write``: tuning runs).
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# common pins the BLAS and numba threads before numpy loads
# isort: off
from common import REPO, RESULTS, mpiexec, spread, write_json
from frontier import SETTINGS, VARIANTS, measure
# isort: on

CONFIG = str(REPO / "launch" / "dpf-best.toml")
INTERLEAVED = ("hk-interleave", "co2-interleave", "sunspots-interleave")
NODES = 4
MSE_SLACK = 1.10  # within 10 % of dekf's final MSE
BYTES_FACTOR = 10  # at most 10x dekf's bytes per node per step


def worker(setting, seeds, config_path, overrides, output, topology=None):
    """Under mpiexec: dekf and the candidate for every seed (both on ``topology``'s graph
    if given); rank 0 writes the rows."""
    from mpi4py import MPI

    from mcdpf.config import load_config
    from mcdpf.driver import train

    comm = MPI.COMM_WORLD
    base, common = SETTINGS[setting]
    data = [item for item in common if item.startswith("data.")]
    graph = [f"topology.file={topology}"] if topology else []
    runs = {"dekf": (base, [*common, *VARIANTS["dekf"][1], *graph]),
            "dpf": (config_path, [*data, *overrides, *graph])}
    rows = []
    for name, (path, extra) in runs.items():
        for seed in seeds:
            config = load_config(path, [*extra, f"run.seed={seed}", "run.progress_seconds=0"])
            row = {"setting": setting, "variant": name, "seed": seed,
                   **measure(comm, config, train)}
            row["bytes_per_node_step"] = row["bytes_per_step"] / comm.size
            rows.append(row)
            if comm.rank == 0:
                print(f"  {setting}: {name} seed {seed}: final {row['final_mse']:.5f} "
                      f"{row['bytes_per_node_step']:.0f} B/node/step", flush=True)
    if comm.rank == 0:
        Path(output).write_text(json.dumps(rows))


def summarise(rows):
    """Per setting: dekf's and the candidate's spreads and the target's verdict."""
    summary = {}
    for setting in dict.fromkeys(row["setting"] for row in rows):
        entry = {}
        for name in ("dekf", "dpf"):
            mine = [row for row in rows if row["setting"] == setting and row["variant"] == name]
            entry[name] = {key: spread([row[key] for row in mine])
                           for key in ("final_mse", "bytes_per_node_step")}
        entry["mse_ratio"] = entry["dpf"]["final_mse"]["mean"] / entry["dekf"]["final_mse"][
            "mean"]
        entry["bytes_ratio"] = (entry["dpf"]["bytes_per_node_step"]["mean"]
                                / entry["dekf"]["bytes_per_node_step"]["mean"])
        entry["target"] = entry["mse_ratio"] <= MSE_SLACK and entry["bytes_ratio"] <= BYTES_FACTOR
        summary[setting] = entry
    return summary


def markdown(summary, seeds, command):
    lines = [f"Final-10 % network MSE and bytes per node per step, mean ± std over seeds "
             f"{','.join(map(str, seeds))}; ratios of the means (target: MSE ratio <= "
             f"{MSE_SLACK:.2f}, bytes ratio <= {BYTES_FACTOR}). Command: `{command}`", "",
             "| setting | dekf final MSE | dpf final MSE | MSE ratio | dekf B/node/step | "
             "dpf B/node/step | bytes ratio | target |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for setting, entry in summary.items():
        dekf, dpf = entry["dekf"], entry["dpf"]
        lines.append(
            f"| {setting} | {dekf['final_mse']['mean']:.5f} ± {dekf['final_mse']['std']:.5f} | "
            f"{dpf['final_mse']['mean']:.5f} ± {dpf['final_mse']['std']:.5f} | "
            f"{entry['mse_ratio']:.3f} | {dekf['bytes_per_node_step']['mean']:.0f} | "
            f"{dpf['bytes_per_node_step']['mean']:.0f} | {entry['bytes_ratio']:.2f} | "
            f"{'met' if entry['target'] else 'not met'} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override of the candidate (repeatable)")
    parser.add_argument("--settings", default=",".join(INTERLEAVED))
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--topology", metavar="FILE",
                        help="a topology file for both (default: each one's own, the ring)")
    parser.add_argument("--out", default=str(RESULTS / "dpf_best"))
    parser.add_argument("--no-write", action="store_true", help="print only (tuning)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    topology = str(Path(args.topology).resolve()) if args.topology else None
    if args.worker:
        worker(args.worker[0], seeds, args.config, args.set, args.worker[1], topology)
        return
    settings = [s for s in args.settings.split(",") if s]
    for setting in settings:
        if setting not in SETTINGS:
            parser.error(f"unknown setting {setting!r}; settings are {', '.join(SETTINGS)}")
    nodes = NODES
    if topology:
        from mcdpf.errors import InputError
        from mcdpf.topology.files import read_topology_file

        try:
            nodes = read_topology_file(topology).nodes
        except InputError as error:
            parser.error(str(error))
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for setting in settings:
            output = Path(directory) / f"{setting}.json"
            print(f"{setting}:", flush=True)
            subprocess.run([mpiexec(), "-n", str(nodes), sys.executable, __file__, "--worker",
                            setting, str(output), "--seeds", args.seeds, "--config",
                            args.config, *[f"--set={item}" for item in args.set],
                            *(["--topology", topology] if topology else [])], check=True)
            rows += json.loads(output.read_text())
    summary = summarise(rows)
    command = " ".join(["python benchmarks/dpf_best.py", *sys.argv[1:]])
    table = markdown(summary, seeds, command)
    print(table)
    if not args.no_write:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "dpf_best.md").write_text(table + "\n")
        write_json(out / "dpf_best.json", {"seeds": seeds, "config": args.config,
                                           "overrides": args.set, "topology": args.topology,
                                           "nodes": nodes, "summary": summary,
                                           "runs": rows})


if __name__ == "__main__":
    main()
