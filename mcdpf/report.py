"""Reports on a finished run: per-node and network MSE, timing, bytes, running-MSE plot.

Definitions (DESIGN §2, §6):

- a node's ``mse`` is the mean squared prediction error over its steps (skipped steps
  excluded); ``final_mse`` the same over the last 10 % of steps (at least one);
- ``network_mse`` is the mean over nodes of ``mse``;
- the running MSE at step ``t`` is the time average of the squared errors up to ``t``;
- ``steps_per_second`` is ``steps`` divided by the slowest node's loop time (start-up and
  JIT compilation excluded).

Units: ``mse``, ``final_mse`` and ``network_mse`` are in the units the learner saw
(``mse_units``: ``scaled`` when the source scaled the data, e.g. ``hk-exchange`` and
``csv`` to [-1, 1] by default; ``original`` when it did not; ``unknown`` for runs written
before the scaling was recorded). ``mse_original``, ``final_mse_original`` and
``network_mse_original`` are the same in the data's original units
(:mod:`mcdpf.results`).

Departures are shown per node: the step a node left the network (``dropped_at``) and,
for a node lost in a crash, the step its records are valid until (``valid_until``: the
records of later steps, up to its departure, were lost with it). The run's resumes
(``resumes.json``) and automatic restarts (``restarts.json``) are listed after the table.
"""

from __future__ import annotations

import json
import math

import numpy as np

from .results import finite_mean
from .rundir import RunDirectory, read_run

FINAL_FRACTION = 0.1


def running_mse(squared_error: np.ndarray) -> np.ndarray:
    """Time-averaged squared error up to each step (skipped steps left out)."""
    valid = np.isfinite(squared_error)
    totals = np.cumsum(np.where(valid, squared_error, 0.0))
    counts = np.cumsum(valid)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def node_summary(node: int, datasets: dict, attributes: dict) -> dict:
    """One node's entry of the report (JSON-ready)."""
    from .results import scaling_of, units_of

    steps = int(attributes["steps"])
    tail = max(1, math.ceil(FINAL_FRACTION * steps))
    errors = datasets["squared_error"]
    bytes_sent = datasets["bytes_sent"]
    scaling = scaling_of(attributes)
    original = math.nan * errors if scaling is None else (
        scaling.target_to_original(datasets["target"])
        - scaling.target_to_original(datasets["prediction"])) ** 2
    return {
        "node": int(node),
        "mse": finite_mean(errors),
        "final_mse": finite_mean(errors[-tail:]),
        "mse_original": finite_mean(original),
        "final_mse_original": finite_mean(original[-tail:]),
        "mse_units": units_of(scaling),
        "scaling": None if scaling is None else scaling.method,
        "bytes_sent": int(bytes_sent.sum()),
        "bytes_per_step": float(bytes_sent.mean()),
        "bytes_per_particle_move": (float(bytes_sent.sum() / moves) if (
            moves := int(datasets["particles_sent"].sum())) else None),
        "theta_mean": datasets["theta_mean"].tolist(),
        "loop_seconds": float(attributes["loop_seconds"]),
        "startup_seconds": float(attributes["startup_seconds"]),
        "compile_seconds": float(attributes.get("compile_seconds", 0.0)),
        "mean_ess": finite_mean(datasets["ess"]),
        "dropped_at": int(attributes.get("dropped_at", -1)),
        "valid_until": int(attributes.get("valid_until", steps)),
        "empty_walks": int(attributes.get("empty_walks", 0)),
        "degenerate_steps": int(attributes.get("degenerate_steps", 0)),
        "skipped_steps": int(attributes.get("skipped_steps", 0)),
    }


def summarize(run_dir) -> dict:
    """The report of a run directory as a JSON-ready dictionary."""
    records = read_run(run_dir)
    first = records[0].attributes
    steps = int(first["steps"])
    nodes = [node_summary(record.node, record.datasets, record.attributes)
             for record in records]
    slowest = max(node["loop_seconds"] for node in nodes)
    run = RunDirectory(run_dir)
    return {
        "run_dir": str(run_dir),
        "algorithm": first["algorithm"],
        "n_nodes": int(first["n_nodes"]),
        "steps": steps,
        "model": first["model_kind"],
        "n_params": int(first["n_params"]),
        "walk_steps": int(first.get("walk_steps", 0)),
        "network_mse": float(np.mean([n["mse"] for n in nodes])),
        "network_final_mse": float(np.mean([n["final_mse"] for n in nodes])),
        "mse_units": _common([n["mse_units"] for n in nodes]),
        "scaling": _common([n["scaling"] for n in nodes]),
        "network_mse_original": float(np.mean([n["mse_original"] for n in nodes])),
        "network_final_mse_original": float(np.mean([n["final_mse_original"]
                                                     for n in nodes])),
        "steps_per_second": steps / slowest if slowest > 0 else math.inf,
        "loop_seconds": slowest,
        "compile_seconds": max(node["compile_seconds"] for node in nodes),
        "bytes_sent": int(sum(n["bytes_sent"] for n in nodes)),
        "bytes_per_step": float(sum(n["bytes_per_step"] for n in nodes)),
        "nodes": nodes,
        "resumes": run.read_resumes(),
        "restarts": run.read_json(run.restarts_file, []),
    }


def _common(values: list):
    """The value every node shares, else ``"mixed"``."""
    return values[0] if len(set(values)) == 1 else "mixed"


def departure(node: dict, steps: int) -> str:
    """``left at step S`` (and which records were lost) for a node that left; else ``""``."""
    if node["dropped_at"] < 0 and node["valid_until"] >= steps:
        return ""
    end = node["dropped_at"] if node["dropped_at"] >= 0 else steps
    words = [f"left at step {node['dropped_at']}"] if node["dropped_at"] >= 0 else []
    if node["valid_until"] < end:
        words.append(f"steps {node['valid_until']}..{end - 1} lost")
    return ", ".join(words)


def units_line(summary: dict) -> str:
    """Which units the MSEs are in, and the network MSE in the data's units if scaled."""
    from .results import units_sentence

    line = f"MSE in {units_sentence(summary['mse_units'], summary['scaling'])}"
    if summary["mse_units"] in ("scaled", "mixed"):
        line += (f"; in the data's original units: network MSE "
                 f"{summary['network_mse_original']:.6g}, final-10% MSE "
                 f"{summary['network_final_mse_original']:.6g}")
    return line


def format_report(summary: dict) -> str:
    """Human-readable table of a summary."""
    lines = [
        f"run {summary['run_dir']}: {summary['algorithm']} on {summary['n_nodes']} nodes, "
        f"{summary['steps']} steps, {summary['model']} model ({summary['n_params']} "
        "parameters)",
        f"network MSE {summary['network_mse']:.6g}   final-10% MSE "
        f"{summary['network_final_mse']:.6g}   {summary['steps_per_second']:.1f} steps/s   "
        f"{summary['bytes_per_step']:.0f} bytes/step (network)",
        units_line(summary),
        "",
        f"{'node':>4}  {'MSE':>11}  {'final MSE':>11}  {'bytes/step':>10}  {'mean ESS':>9}  "
        f"{'loop s':>8}  departure",
    ]
    for node in summary["nodes"]:
        lines.append((f"{node['node']:>4}  {node['mse']:>11.6g}  {node['final_mse']:>11.6g}  "
                      f"{node['bytes_per_step']:>10.0f}  {node['mean_ess']:>9.1f}  "
                      f"{node['loop_seconds']:>8.2f}  "
                      f"{departure(node, summary['steps'])}").rstrip())
    for resume in summary["resumes"]:
        left = f" without node{'s' if len(resume['without']) > 1 else ''} " + \
            ", ".join(map(str, resume["without"])) if resume["without"] else ""
        lines.append(f"resumed at step {resume['step']}{left}"
                     f"{' on ' + str(resume['ranks']) + ' ranks' if 'ranks' in resume else ''}"
                     f" ({resume.get('cause', 'manual')}, {resume.get('time', '?')})")
    if summary["restarts"]:
        lines.append(f"{len(summary['restarts'])} automatic restart"
                     f"{'s' if len(summary['restarts']) > 1 else ''} (restarts.json)")
    return "\n".join(lines)


def plot_running_mse(run_dir, path) -> None:
    """PNG of every node's running MSE against time, and the network mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_run(run_dir)
    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=120)
    curves = []
    for record in records:
        curve = running_mse(record.datasets["squared_error"])
        curves.append(curve)
        axis.plot(np.arange(1, curve.size + 1), curve, lw=1, alpha=0.8,
                  label=f"node {record.node}")
    mean_curve = np.nanmean(np.vstack(curves), axis=0)
    axis.plot(np.arange(1, mean_curve.size + 1), mean_curve, color="black", lw=2,
              label="network mean")
    attributes = records[0].attributes
    axis.set_xlabel("time step t")
    axis.set_ylabel("running MSE")
    axis.set_yscale("log")
    axis.set_title(f"{attributes['algorithm']}, {attributes['n_nodes']} nodes")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def to_json(summary: dict) -> str:
    """Strict JSON of a summary (NaN and infinities become null)."""
    return json.dumps(_finite_or_none(summary))
