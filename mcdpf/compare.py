"""Compare algorithms on one configuration: one table, one running-MSE figure.

``mpiexec -n K mcdpf compare CONFIG --algorithms pf,dpf,... [--seeds 1,2,3] --out DIR``
runs every algorithm for every seed (default: the configuration's ``run.seed``) on the
same streams, in the same MPI job, each into ``DIR/<algorithm>/seed-<s>/`` (the usual
per-rank outputs). Every variant is loaded and validated before the first run exactly as
``mcdpf train CONFIG --set run.algorithm=A --set run.seed=S`` would load it, so a
comparison runs nothing that ``train`` refuses. The first rank then writes

- ``DIR/comparison.json``: per algorithm the network MSE, final MSE, bytes per step and
  steps per second, as mean and standard deviation over seeds, plus the network-mean
  running-MSE curve of every seed;
- ``DIR/comparison.md``: the same as a Markdown table;
- ``DIR/comparison.png``: running MSE against time, one curve per algorithm (the mean over
  seeds, with the seeds' range shaded) — the form of the papers' Fig. 2 and 3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import comm as comm_layer
from .learner import AlgorithmTraits
from .registry import ALGORITHMS
from .report import running_mse, summarize, to_json
from .results import finite_mean


def algorithm_traits(name: str) -> AlgorithmTraits:
    """The registered traits of ``name`` (label, line style); defaults if not registered."""
    return ALGORITHMS.entry(name).traits if name in ALGORITHMS else AlgorithmTraits()


def run_directory(out_dir: Path, algorithm: str, seed: int) -> Path:
    """Where one algorithm's run for one seed goes."""
    return Path(out_dir) / algorithm / f"seed-{seed}"


def comparison_variants(load, algorithms: list[str], seeds: list[int]) -> dict:
    """The configuration of every run, ``{(algorithm, seed): Config}``, seeds outermost.

    ``load(overrides)`` loads the comparison's configuration with these ``--set``
    overrides added (:func:`~mcdpf.config.load_config`): each variant is validated as
    ``mcdpf train`` validates it. Progress lines are off (one line per finished run).
    """
    variants = {}
    for seed in seeds:
        for algorithm in algorithms:
            config = load([f"run.algorithm=\"{algorithm}\"", f"run.seed={seed}"])
            variants[algorithm, seed] = config.replace("run", progress_seconds=0.0)
    return variants


def check_variants(comm, variants: dict) -> None:
    """Set-up collectives: every variant passes the set-up checks ``mcdpf train`` makes.

    Raises the first :class:`~mcdpf.errors.InputError` of any rank on every rank, before
    any run starts (nothing is written).
    """
    from .elastic import ResumePlan
    from .preparation import agree_setup, prepare_node

    size, rank = comm.Get_size(), comm.Get_rank()
    for variant in variants.values():
        agree_setup(comm, lambda variant=variant: prepare_node(
            variant, ResumePlan.fresh(size), rank, None, False))


def run_comparison(comm, variants: dict, out_dir: Path, force: bool = False,
                   report=None, watch=None):
    """Train every variant (:func:`comparison_variants`); all ranks call this.

    With ``watch`` (:class:`~mcdpf.shutdown.SignalWatch`) a signal stops the current run
    at an agreed step and no further run starts; returns its
    :class:`~mcdpf.shutdown.Stop` (``None``: every run finished).
    """
    from .driver import train

    first = True
    for (algorithm, seed), variant in variants.items():
        target = run_directory(out_dir, algorithm, seed)
        result = train(comm, variant, target, force=force, warn=first, watch=watch)
        first = False
        stop = result["stop"]
        if report is not None and (stop is None or stop.finished):
            report(algorithm, seed, result)
        if stop is not None:
            return stop
    comm_layer.idle_barrier(comm)  # shutdown collective: every node file written before
    return None                    # rank 0 reads them (pf's ranks end independently)


def _network_curve(run_dir: Path) -> np.ndarray:
    from .rundir import read_run

    curves = [running_mse(r.datasets["squared_error"]) for r in read_run(run_dir)]
    return np.nanmean(np.vstack(curves), axis=0)


def _spread(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if values.size > 1 else 0.0,
            "values": values.tolist()}


def summarize_comparison(out_dir: Path, algorithms: list[str], seeds: list[int]) -> dict:
    """Collect every run of a comparison into one dictionary."""
    results = {}
    for algorithm in algorithms:
        summaries = [summarize(run_directory(out_dir, algorithm, s)) for s in seeds]
        curves = [_network_curve(run_directory(out_dir, algorithm, s)) for s in seeds]
        results[algorithm] = {
            "network_mse": _spread([s["network_mse"] for s in summaries]),
            "network_final_mse": _spread([s["network_final_mse"] for s in summaries]),
            "bytes_per_step": _spread([s["bytes_per_step"] for s in summaries]),
            "steps_per_second": _spread([s["steps_per_second"] for s in summaries]),
            "running_mse": [c.tolist() for c in curves],
        }
    first = summarize(run_directory(out_dir, algorithms[0], seeds[0]))
    return {"n_nodes": first["n_nodes"], "steps": first["steps"], "seeds": list(seeds),
            "algorithms": results}


def _cell(spread: dict, fmt: str) -> str:
    if len(spread["values"]) > 1:
        return f"{format(spread['mean'], fmt)} ± {format(spread['std'], fmt)}"
    return format(spread["mean"], fmt)


def comparison_table(comparison: dict) -> str:
    """Markdown table: one row per algorithm."""
    seeds = len(comparison["seeds"])
    lines = [f"{comparison['n_nodes']} nodes, {comparison['steps']} steps, "
             f"{seeds} seed{'s' if seeds > 1 else ''} (mean ± std over seeds)", "",
             "| algorithm | network MSE | final-10% MSE | bytes/step (network) | steps/s |",
             "| --- | --- | --- | --- | --- |"]
    for algorithm, row in comparison["algorithms"].items():
        lines.append(f"| {algorithm} | {_cell(row['network_mse'], '.4g')} | "
                     f"{_cell(row['network_final_mse'], '.4g')} | "
                     f"{row['bytes_per_step']['mean']:.0f} | "
                     f"{row['steps_per_second']['mean']:.0f} |")
    return "\n".join(lines)


def plot_comparison(comparison: dict, path, title: str = "") -> None:
    """Running MSE against time, one curve per algorithm (mean over seeds, range shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=120)
    for algorithm, row in comparison["algorithms"].items():
        curves = np.array(row["running_mse"])
        steps = np.arange(1, curves.shape[1] + 1)
        traits = algorithm_traits(algorithm)
        color = traits.color
        axis.plot(steps, curves.mean(axis=0), color=color, ls=traits.linestyle, lw=1.6,
                  label=traits.label or algorithm)
        if curves.shape[0] > 1:
            axis.fill_between(steps, curves.min(axis=0), curves.max(axis=0), color=color,
                              alpha=0.15, lw=0)
    axis.set_xlabel("time step t")
    axis.set_ylabel("running MSE (network mean)")
    axis.set_yscale("log")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    if title:
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_comparison(out_dir: Path, algorithms, seeds, title: str = "") -> dict:
    """Summarise a finished comparison into JSON, Markdown and PNG; return it."""
    out_dir = Path(out_dir)
    comparison = summarize_comparison(out_dir, algorithms, seeds)
    (out_dir / "comparison.json").write_text(to_json(comparison))
    (out_dir / "comparison.md").write_text(comparison_table(comparison) + "\n")
    plot_comparison(comparison, out_dir / "comparison.png", title)
    return comparison


def parse_list(text: str, kind=str) -> list:
    """``"a,b,c"`` -> list, empty items dropped."""
    return [kind(item.strip()) for item in text.split(",") if item.strip()]


def describe_run(algorithm: str, seed: int, result: dict) -> str:
    """One progress line per finished run."""
    errors = result["datasets"]["squared_error"]
    mse = finite_mean(errors)
    return (f"mcdpf compare: {algorithm} seed {seed}: node-0 MSE {mse:.5g} in "
            f"{result['attributes']['loop_seconds']:.2f} s")
