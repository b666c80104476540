"""Reproduce the papers' experiments and go beyond them: every figure and table of the
docs/results.md.

    python benchmarks/reproduce.py [--seeds 1,2,3,4,5] [--out benchmarks/results/reproduction]

Starts ``mpiexec`` jobs (4 ranks, 8 for the sparse random graph) and writes into --out:

- ``fig2-hk-exchange.{png,md,json}``: every algorithm on the exchange-rate data (the
  papers' Fig. 2 setting, ``launch/hk-exchange.toml``), mean over seeds with their range;
- ``fig3-sentences.{png,md,json}``: the same on the sentence corpus (Fig. 3,
  ``launch/sentences.toml``);
- ``claims.md``: the papers' three claims, each with the numbers that decide it;
- ``sensitivity.md``: the settings the papers leave open (partition, scaling,
  initialisation, periodic or lazy walk), one at a time, for dpf, cpf, pf and ekf;
- ``theorem1.{png,md,json}``: on the linear-Gaussian model, the distance of DPF's node
  estimates to the exact centralized posterior (a Kalman filter), in posterior standard
  deviations, as s and N grow, for the papers' periodic 4-ring, its lazy version, a
  complete graph and a sparse random graph, against each walk's SLEM; the centralized PF
  with the same total particle count shows the Monte Carlo floor;
- ``communication.{png,md}``: bytes per step against final MSE for every algorithm and
  for DPF at several (N, s), on the exchange-rate data;
- ``node-loss.md``: the surviving nodes' error after node 2 of the paper ring leaves at
  step 250, against the same run without the loss.

``--only PART[,PART]`` runs some parts: figures (with claims and communication),
sensitivity, theorem, node-loss.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# common pins the BLAS and numba threads before numpy loads
# isort: off
from common import REPO, RESULTS, mpiexec
import numpy as np
# isort: on

ALGORITHMS = "pf,dpf,cpf,rpf,sgd,ekf,dekf,dsgd,adam,dadam"
THEOREM_STEPS = 120
THEOREM_WALKS = (1, 2, 4, 8, 16, 32)
THEOREM_PARTICLES = (100, 1000)
THEOREM_TOPOLOGIES = {
    "paper ring (periodic)": ("file", str(REPO / "topologies" / "paper-ring4.toml"), None, 4),
    "paper ring, lazy": ("file", str(REPO / "topologies" / "paper-ring4.toml"), "lazy", 4),
    "complete": ("name", "complete", None, 4),
    "sparse random": ("name", "random", None, 8),
}
SENSITIVITY = {
    "default (replicate, minmax, init 0.5, paper A)": [],
    "partition interleave": ["data.partition=interleave"],
    "scaling zscore": ["data.scaling=zscore"],
    "init_std 0.1": ["model.init_std=0.1"],
    "init_std 1.0": ["model.init_std=1.0"],
    "lazy walk (I + A)/2": ["topology.walk=lazy"],
}
COMMUNICATION_SWEEP = [(20, 3), (80, 1), (80, 3), (80, 6), (200, 3)]


def mcdpf(ranks, *args):
    command = [mpiexec(), "-n", str(ranks), sys.executable, "-m", "mcdpf", *map(str, args)]
    print("+", " ".join(command[2:]).replace(sys.executable, "python"), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def compare(config, out, seeds, algorithms=ALGORITHMS, overrides=(), title=""):
    args = ["compare", config, "--algorithms", algorithms, "--seeds", seeds, "--out", out,
            "--force", "--title", title]
    for override in overrides:
        args += ["--set", override]
    mcdpf(4, *args)
    return json.loads((Path(out) / "comparison.json").read_text())


def copy_figure(work, results, name):
    for suffix in ("png", "md", "json"):
        shutil.copy(Path(work) / f"comparison.{suffix}", Path(results) / f"{name}.{suffix}")


def steps_to_reach(curve, level):
    below = np.flatnonzero(np.asarray(curve) <= level)
    return int(below[0]) + 1 if below.size else None


def claims(hk, sentences):
    """The papers' claims with the numbers that decide them."""
    def mean_curve(comparison, algorithm):
        return np.mean(comparison["algorithms"][algorithm]["running_mse"], axis=0)

    def final(comparison, algorithm):
        return comparison["algorithms"][algorithm]["network_final_mse"]["mean"]

    lines = ["| claim | measure | numbers (mean over seeds) | verdict here |",
             "| --- | --- | --- | --- |"]
    # 1. DPF converges fastest on the exchange-rate data.
    best_final = min(final(hk, a) for a in hk["algorithms"])
    level = 2.0 * best_final
    reach = {a: steps_to_reach(mean_curve(hk, a), level) for a in hk["algorithms"]}
    ranked = sorted(reach, key=lambda a: (reach[a] is None, reach[a] or 0))
    numbers = ", ".join(f"{a} {reach[a] if reach[a] else 'never'}" for a in ranked)
    verdict = "confirmed" if ranked[0] == "dpf" else f"not confirmed: {ranked[0]} fastest"
    lines.append(f"| DPF converges fastest on the exchange-rate data | steps until the "
                 f"network running MSE first reaches {level:.4g} (2x the best final MSE) | "
                 f"{numbers} | {verdict} |")
    # 2. DPF reaches the lowest steady-state error on sentences.
    finals = {a: final(sentences, a) for a in sentences["algorithms"]}
    ranked = sorted(finals, key=finals.get)
    numbers = ", ".join(f"{a} {finals[a]:.4f}" for a in ranked)
    verdict = "confirmed" if ranked[0] == "dpf" else f"not confirmed: {ranked[0]} lowest"
    lines.append(f"| DPF reaches the lowest steady-state error on sentences | final-10% MSE | "
                 f"{numbers} | {verdict} |")
    # 3. EKF is worst on the nonlinear model.
    verdicts = []
    for label, comparison in (("exchange rates", hk), ("sentences", sentences)):
        finals = {a: final(comparison, a) for a in comparison["algorithms"]}
        worst = max(finals, key=finals.get)
        rank = sorted(finals, key=finals.get).index("ekf") + 1
        verdicts.append((label, finals["ekf"], rank, len(finals), worst))
    numbers = "; ".join(f"{label}: ekf {value:.4f}, rank {rank} of {count} (worst: {worst})"
                        for label, value, rank, count, worst in verdicts)
    confirmed = all(worst == "ekf" for *_, worst in verdicts)
    lines.append(f"| EKF is worst on the nonlinear model | final-10% MSE rank (1 = best) | "
                 f"{numbers} | {'confirmed' if confirmed else 'not confirmed'} |")
    return "\n".join(lines)


def sensitivity(work, seeds):
    rows = []
    for label, overrides in SENSITIVITY.items():
        result = compare(REPO / "launch" / "hk-exchange.toml",
                         Path(work) / "sensitivity" / label.split()[0], seeds,
                         "dpf,cpf,pf,ekf", overrides)
        row = {"variant": label}
        for algorithm, values in result["algorithms"].items():
            spread = values["network_final_mse"]
            row[algorithm] = f"{spread['mean']:.4f} ± {spread['std']:.4f}"
        rows.append(row)
    header = "| variant | dpf | cpf | pf | ekf |\n| --- | --- | --- | --- | --- |"
    body = "\n".join(f"| {r['variant']} | {r['dpf']} | {r['cpf']} | {r['pf']} | {r['ekf']} |"
                     for r in rows)
    return ("HK exchange-rate data, final-10% network MSE (mean ± std over seeds); one "
            "setting changed at a time from launch/hk-exchange.toml\n\n" + header + "\n" + body)


def theorem_worker(kind, value, walk, seeds, output):
    """Under mpiexec: distance to the exact centralized posterior for every (N, s)."""
    from mpi4py import MPI

    from mcdpf.config import load_config
    from mcdpf.driver import train
    from mcdpf.kalman import kalman_filter
    from mcdpf.sources import node_stream
    from mcdpf.topology import build_topology

    comm = MPI.COMM_WORLD
    directory = Path(comm.bcast(tempfile.mkdtemp() if comm.rank == 0 else None))
    q, r, prior = 0.0004, 0.01, 1.0
    base = [f"topology.{kind}={value}", f"run.steps={THEOREM_STEPS}",
            "run.record_estimates=true", "run.progress_seconds=0",
            "data.source=linear-gaussian", "data.input_dim=2", "data.drift_std=0.02",
            "data.noise_std=0.1", "model.kind=linear", f"model.init_std={prior}",
            f"filter.state_noise={q}", f"filter.obs_noise={r}"]
    if walk:
        base.append(f"topology.walk={walk}")
    rows = []
    for seed in seeds:
        config = load_config(None, base + [f"data.seed={seed}", f"run.seed={seed}"])
        streams = [node_stream(config.data, THEOREM_STEPS, comm.size, k)
                   for k in range(comm.size)]
        means, covariances = kalman_filter(streams, q, r, prior ** 2)
        precision = np.linalg.inv(covariances[20:])

        def distance(run, means=means, precision=precision):
            gap = (run["datasets"]["theta_estimates"] - means)[20:]
            mine = np.sqrt(np.einsum("ti,tij,tj->t", gap, precision, gap)).mean()
            return float(np.mean(comm.allgather(mine)))

        for particles in THEOREM_PARTICLES:
            for walk_steps in THEOREM_WALKS:
                variant = config.replace("filter", particles=particles, walk_steps=walk_steps)
                run = train(comm, variant, directory / "dpf", force=True, warn=False)
                rows.append({"seed": seed, "algorithm": "dpf", "particles": particles,
                             "walk_steps": walk_steps, "distance": distance(run)})
            central = config.replace("run", algorithm="cpf").replace(
                "filter", particles=particles)
            run = train(comm, central, directory / "cpf", force=True, warn=False)
            rows.append({"seed": seed, "algorithm": "cpf", "particles": particles,
                         "walk_steps": 0, "distance": distance(run)})
    topology = build_topology(config.topology, comm.size)
    if comm.rank == 0:
        Path(output).write_text(json.dumps({"rows": rows, "slem": topology.slem,
                                            "period": topology.period,
                                            "nodes": comm.size}))


def theorem(results, seeds):
    summary = {}
    for label, (kind, value, walk, ranks) in THEOREM_TOPOLOGIES.items():
        with tempfile.TemporaryDirectory() as directory:
            output = Path(directory) / "theorem.json"
            command = [mpiexec(), "-n", str(ranks), sys.executable, __file__,
                       "--theorem-worker", kind, value, walk or "", seeds, str(output)]
            print("+", f"mpiexec -n {ranks} theorem worker: {label}", flush=True)
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            summary[label] = json.loads(output.read_text())
    lines = ["Linear-Gaussian model, T = 120, K nodes as listed; mean Mahalanobis distance "
             "(steps 20..120, all nodes, mean over seeds) between node estimates and the "
             "exact centralized Kalman posterior, in posterior standard deviations. cpf: "
             "the centralized PF with N * K particles (Monte Carlo floor).", "",
             "| topology | K | SLEM | period | N | " + " | ".join(f"s={s}" for s in THEOREM_WALKS)
             + " | cpf |", "| --- " * (6 + len(THEOREM_WALKS)) + "|"]
    for label, data in summary.items():
        for particles in THEOREM_PARTICLES:
            cells = []
            for walk_steps in THEOREM_WALKS:
                values = [r["distance"] for r in data["rows"] if r["algorithm"] == "dpf"
                          and r["particles"] == particles and r["walk_steps"] == walk_steps]
                cells.append(f"{np.mean(values):.3f}")
            central = np.mean([r["distance"] for r in data["rows"] if r["algorithm"] == "cpf"
                               and r["particles"] == particles])
            lines.append(f"| {label} | {data['nodes']} | {data['slem']:.3f} | "
                         f"{data['period']} | {particles} | " + " | ".join(cells)
                         + f" | {central:.3f} |")
    text = "\n".join(lines)
    (Path(results) / "theorem1.md").write_text(text + "\n")
    (Path(results) / "theorem1.json").write_text(json.dumps(summary))
    plot_theorem(summary, Path(results) / "theorem1.png")
    return text


def plot_theorem(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(THEOREM_PARTICLES), figsize=(11, 4), dpi=110,
                                sharey=True)
    for axis, particles in zip(axes, THEOREM_PARTICLES, strict=True):
        for index, (label, data) in enumerate(summary.items()):
            color = f"C{index}"
            values = [np.mean([r["distance"] for r in data["rows"] if r["algorithm"] == "dpf"
                               and r["particles"] == particles and r["walk_steps"] == s])
                      for s in THEOREM_WALKS]
            axis.loglog(THEOREM_WALKS, values, "o-", color=color,
                        label=f"{label} (K={data['nodes']}, SLEM {data['slem']:.2f})")
            central = np.mean([r["distance"] for r in data["rows"] if r["algorithm"] == "cpf"
                               and r["particles"] == particles])
            axis.axhline(central, color=color, ls=":", lw=1)
        axis.set_title(f"N = {particles} particles per node (dotted: centralized PF)")
        axis.set_xlabel("walk steps s")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("distance to the exact posterior (posterior sd)")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)


def communication(work, results, hk, seeds):
    level = 2.0 * min(row["network_final_mse"]["mean"] for row in hk["algorithms"].values())

    def point(label, row):
        reach = steps_to_reach(np.mean(row["running_mse"], axis=0), level)
        bytes_per_step = row["bytes_per_step"]["mean"]
        return {"label": label, "bytes": bytes_per_step,
                "mse": row["network_final_mse"]["mean"], "steps": reach,
                "to_reach": None if reach is None else reach * bytes_per_step}

    points = [point(name, row) for name, row in hk["algorithms"].items()]
    for particles, walk_steps in COMMUNICATION_SWEEP:
        result = compare(REPO / "launch" / "hk-exchange.toml",
                         Path(work) / "communication" / f"dpf-{particles}-{walk_steps}",
                         seeds, "dpf", [f"filter.particles={particles}",
                                        f"filter.walk_steps={walk_steps}"])
        points.append(point(f"dpf N={particles} s={walk_steps}",
                            result["algorithms"]["dpf"]))
    lines = ["HK exchange-rate data, 4-node paper ring; bytes sent per step by the whole "
             "network, the final-10% network MSE, and the bytes sent until the network "
             f"running MSE (mean over seeds) first reaches {level:.4g} (2x the best final "
             "MSE). cpf is an oracle: a real central node would also need every node's "
             "data each step.", "",
             "| run | bytes/step (network) | final-10% MSE | steps to reach | bytes to reach |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {p['label']} | {p['bytes']:.0f} | {p['mse']:.4f} | "
              f"{p['steps'] if p['steps'] else 'never'} | "
              f"{'—' if p['to_reach'] is None else format(p['to_reach'], '.3g')} |"
              for p in points]
    text = "\n".join(lines)
    (Path(results) / "communication.md").write_text(text + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    for point in points:
        x = max(point["bytes"], 1.0)
        marker = "s" if point["label"].startswith("dpf N=") else "o"
        axis.scatter(x, point["mse"], marker=marker)
        axis.annotate(point["label"], (x, point["mse"]), fontsize=7,
                      xytext=(3, 3), textcoords="offset points")
    axis.set_xscale("log")
    axis.set_xlabel("bytes sent per step, whole network (no communication plotted at 1)")
    axis.set_ylabel("final-10% network MSE")
    axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(Path(results) / "communication.png")
    return text


def node_loss(work, results, seeds):
    """Survivors' MSE after node 2 leaves at step 250, against no loss (every diffusion
    algorithm and dpf)."""
    from mcdpf.report import summarize

    drop_node, drop_step = 2, 250
    rows = []
    for algorithm in ("dpf", "dekf", "dsgd", "dadam"):
        values = {"intact": [], "node 2 lost": []}
        for seed in seeds.split(","):
            for label, extra in (("intact", []),
                                 ("node 2 lost", [f"faults.drop=[[{drop_node}, {drop_step}]]"])):
                out = Path(work) / "node-loss" / f"{algorithm}-{seed}-{label.split()[0]}"
                args = ["train", REPO / "launch" / "hk-exchange.toml", "--out", out, "--quiet",
                        "--force", "--set", f"run.algorithm={algorithm}", "--set",
                        f"run.seed={seed}"]
                for override in extra:
                    args += ["--set", override]
                mcdpf(4, *args)
                from mcdpf.rundir import read_run

                errors = [r.datasets["squared_error"][drop_step:] for r in read_run(out)
                          if r.node != drop_node]
                values[label].append(float(np.mean(errors)))
                summarize(out)  # the report reads the run back as a user would
        rows.append((algorithm, np.mean(values["intact"]), np.std(values["intact"]),
                     np.mean(values["node 2 lost"]), np.std(values["node 2 lost"])))
    lines = [f"HK exchange-rate data, 4-node paper ring; mean squared error of nodes 0, 1, 3 "
             f"over steps {drop_step}..499 (mean ± std over seeds)", "",
             "| algorithm | all nodes stay | node 2 leaves at step 250 |", "| --- | --- | --- |"]
    lines += [f"| {a} | {m0:.5f} ± {s0:.5f} | {m1:.5f} ± {s1:.5f} |"
              for a, m0, s0, m1, s1 in rows]
    text = "\n".join(lines)
    (Path(results) / "node-loss.md").write_text(text + "\n")
    return text


PARTS = ("figures", "sensitivity", "theorem", "node-loss")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts: {', '.join(PARTS)}")
    parser.add_argument("--out", default=str(RESULTS / "reproduction"))
    parser.add_argument("--theorem-worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.theorem_worker:
        kind, value, walk, seeds, output = args.theorem_worker
        theorem_worker(kind, value, walk or None, [int(s) for s in seeds.split(",")], output)
        return
    parts = [part for part in args.only.split(",") if part]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part {sorted(unknown)[0]!r}; parts are {', '.join(PARTS)}")
    results = Path(args.out)
    results.mkdir(parents=True, exist_ok=True)
    printed = []
    with tempfile.TemporaryDirectory() as work:
        if "figures" in parts:
            hk = compare(REPO / "launch" / "hk-exchange.toml", Path(work) / "hk", args.seeds,
                         title="Hong Kong exchange rate (papers' Fig. 2 setting)")
            copy_figure(Path(work) / "hk", results, "fig2-hk-exchange")
            sentences = compare(REPO / "launch" / "sentences.toml", Path(work) / "sentences",
                                args.seeds, title="Sentence corpus (papers' Fig. 3 setting)")
            copy_figure(Path(work) / "sentences", results, "fig3-sentences")
            claims_text = claims(hk, sentences)
            (results / "claims.md").write_text(claims_text + "\n")
            printed += [("Fig. 2", (results / "fig2-hk-exchange.md").read_text()),
                        ("Fig. 3", (results / "fig3-sentences.md").read_text()),
                        ("claims", claims_text),
                        ("communication", communication(work, results, hk, args.seeds))]
        if "sensitivity" in parts:
            sensitivity_text = sensitivity(work, args.seeds)
            (results / "sensitivity.md").write_text(sensitivity_text + "\n")
            printed.append(("sensitivity", sensitivity_text))
        if "theorem" in parts:
            printed.append(("Theorem 1", theorem(results, args.seeds)))
        if "node-loss" in parts:
            printed.append(("node loss", node_loss(work, results, args.seeds)))
    for title, text in printed:
        print(f"\n{title}\n{text}")
    print(f"\nwritten to {results}")


if __name__ == "__main__":
    main()
