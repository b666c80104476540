"""Issue 16's model-size target: particle configurations against ekf, dekf, sgd and adam.

    python benchmarks/model_size.py [--n 16] [--seeds 1,2] [--steps 1000]
        [--variants LABEL,...] [--chosen-from TUNING.json,...] [--timeout 1800]
        [--out benchmarks/results/model_size]

On issue 16's teacher (``covariance.TEACHER``: ``data.source = "synthetic-lstm"``, teacher
n = 8, p = 4, ``model.init_std = 0.3``, interleaved) on the 4-node ring, every variant of
``VARIANTS`` (or those named by ``--variants``) trains for every seed and model size, one
``mpiexec -n 4 python -m mcdpf train`` each (``scale.run_training``: final-10 % network
MSE, bytes per node per step, steps/s of the slowest rank, peak resident memory of the
largest rank). The seeds are the outer loop, so that the machine's load drifts over every
variant alike; all variants run in this one invocation, so their steps/s compare.

Variants form families: ``ekf``, ``dekf`` (each covariance form), ``sgd``, ``adam`` (each
step size) and ``particle`` (rpf with Gaussian particles: N and covariance form). Each
baseline family's best variant is the one with the smallest mean final MSE. The target
holds for a particle variant when its mean final MSE is at or below the best baseline's,
its bytes per node per step at most ``BYTES_FACTOR`` x dekf's and its steps/s at least
``SPEED_FACTOR`` x dekf's (dekf in its best form). ``--chosen-from`` takes the variants
from a tuning run's JSON instead: each baseline family's best and the best particle
variant (the lowest MSE among those holding the target, else among those within the cost
bounds, else overall), so that other seeds test the choice untuned. A variant that mcdpf
refuses (exit 2, e.g. a covariance above ``ekf.max_memory_gb``) or that outlives
``--timeout`` is listed with the reason. Writes ``model_size.md`` and ``model_size.json``.

Steps/s come from 4 ranks sharing the machine's cores with other jobs: noisy, and
comparable only within one invocation.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# common pins the BLAS and numba threads before numpy loads
# isort: off
from common import RESULTS, spread, write_json
from covariance import FORMS, TEACHER, form_overrides
from scale import parameter_count, run_training
# isort: on

NODES = 4
RANK = 10  # lowrank's r, as in benchmarks/covariance.py
BYTES_FACTOR = 10.0
SPEED_FACTOR = 0.25
BASELINES = ("ekf", "dekf", "sgd", "adam")
SGD_RATES = (0.03, 0.1, 0.3, 1.0)
ADAM_RATES = (0.003, 0.01, 0.03)
PARTICLES = (1, 2, 3, 5, 10, 20)
WEIGHT_TEMPERINGS = (0.0, 0.01, 0.1)
GAUSSIAN = ["run.algorithm=rpf", "filter.kernel=gaussian", "filter.ess_threshold=0.5"]
# The EKF family's noise (q = filter.state_noise, r = filter.obs_noise), for the Kalman
# baselines and the Gaussian particles alike: the configuration's (q = 4e-4, r = 0.01),
# and smaller q (a smaller gain per measurement) and r (a larger one).
NOISES = {"": [], " q=1e-4": ["filter.state_noise=0.0001"],
          " q=2.5e-5": ["filter.state_noise=0.000025"],
          " q=2.5e-5 r=0.005": ["filter.state_noise=0.000025", "filter.obs_noise=0.005"],
          " q=1e-5": ["filter.state_noise=0.00001"],
          " q=1e-5 r=0.005": ["filter.state_noise=0.00001", "filter.obs_noise=0.005"],
          " q=1e-5 r=0.0025": ["filter.state_noise=0.00001", "filter.obs_noise=0.0025"],
          " q=5e-6": ["filter.state_noise=0.000005"],
          " q=5e-6 r=0.005": ["filter.state_noise=0.000005", "filter.obs_noise=0.005"],
          " q=5e-6 r=0.0025": ["filter.state_noise=0.000005", "filter.obs_noise=0.0025"],
          # and another prior covariance P0 (ekf.initial_variance; default init_std^2 = 0.09)
          **{f" q=1e-5{r} P0={p0:g}": ["filter.state_noise=0.00001", *obs,
                                       f"ekf.initial_variance={p0}"]
             for p0 in (0.0225, 0.04, 0.16, 0.36)
             for r, obs in (("", []), (" r=0.005", ["filter.obs_noise=0.005"]))}}


def all_variants() -> dict[str, tuple[str, list[str]]]:
    """label -> (family, ``--set`` items) of every variant."""
    variants = {}
    for algorithm in ("ekf", "dekf"):
        for form in FORMS:
            for suffix, noise in NOISES.items():
                variants[f"{algorithm} {form}{suffix}"] = (algorithm, [
                    f"run.algorithm={algorithm}", *form_overrides(form, RANK), *noise])
    for rate in SGD_RATES:
        variants[f"sgd lr={rate:g}"] = ("sgd", ["run.algorithm=sgd", f"sgd.learning_rate={rate}"])
    for rate in ADAM_RATES:
        variants[f"adam lr={rate:g}"] = ("adam", ["run.algorithm=adam",
                                                  f"adam.learning_rate={rate}"])
    def gaussian(particles, form, noise, *extra):
        """rpf with ``particles`` Gaussian particles of ``form``, ``noise`` and ``extra``."""
        return ("particle", [*GAUSSIAN, f"filter.particles={particles}",
                             *form_overrides(form, RANK, section="filter"), *noise, *extra])

    for particles in PARTICLES:
        for form in FORMS:
            for suffix, noise in NOISES.items():
                variants[f"rpf N={particles} {form}{suffix}"] = gaussian(particles, form, noise)
    # an ensemble: Gaussian particles whose weights take their likelihoods to the power
    # eta (filter.weight_tempering), so that they stay distinct and average their predictions
    for particles in PARTICLES[1:]:
        for form in FORMS:
            for suffix, noise in NOISES.items():
                for eta in WEIGHT_TEMPERINGS:
                    variants[f"rpf N={particles} {form}{suffix} eta={eta:g}"] = gaussian(
                        particles, form, noise, f"filter.weight_tempering={eta}")
    # an ablation of dekf's combination step: one Gaussian particle relayed one hop is an
    # EKF on the same 3 measurements as a dekf node on the ring, without the averaging
    for form in FORMS:
        for suffix, noise in NOISES.items():
            variants[f"rpf N=1 {form}{suffix} hops=1"] = gaussian(1, form, noise, "relay.hops=1")
    return variants


VARIANTS = all_variants()


def summarise(rows) -> dict:
    """Per model size: every variant's spread over seeds (or its reason) and the target."""
    sizes = {}
    for row in rows:
        size = sizes.setdefault(str(row["n"]), {"n": row["n"], "n_params": row["n_params"],
                                                "variants": {}})
        size["variants"].setdefault(row["variant"], []).append(row)
    for size in sizes.values():
        for label, runs in size["variants"].items():
            done = [run for run in runs if run["status"] == "ok"]
            entry = {"family": VARIANTS[label][0], "seeds": [run["seed"] for run in done],
                     "final_mse_by_seed": [run["final_mse"] for run in done]}
            for measure in ("final_mse", "bytes_per_node_step", "steps_per_second",
                            "peak_mb"):
                if done:
                    entry[measure] = spread([run[measure] for run in done])
            failed = [run for run in runs if run["status"] != "ok"]
            if failed:
                entry.update(status=failed[0]["status"], reason=failed[0]["reason"])
            size["variants"][label] = entry
        size["target"] = target(size["variants"])
    return sizes


def best(variants, family, among=None):
    """The label of ``family``'s variant with the smallest mean final MSE (None: none ran)."""
    ranked = [(entry["final_mse"]["mean"], label) for label, entry in variants.items()
              if entry["family"] == family and "final_mse" in entry
              and (among is None or label in among)]
    return min(ranked)[1] if ranked else None


def target(variants) -> dict:
    """Issue 16's model-size target, computed for every particle variant that ran."""
    chosen = {family: best(variants, family) for family in BASELINES}
    ran = {family: label for family, label in chosen.items() if label}
    result = {"best": chosen, "missing": [family for family in BASELINES if not chosen[family]]}
    if not ran or not chosen["dekf"]:
        return {**result, "particles": {}, "holds": False, "chosen": None}
    baseline = min(ran.values(), key=lambda label: variants[label]["final_mse"]["mean"])
    dekf = variants[chosen["dekf"]]
    bound = variants[baseline]["final_mse"]["mean"]
    particles = {}
    for label, entry in variants.items():
        if entry["family"] != "particle" or "final_mse" not in entry:
            continue
        mse = entry["final_mse"]["mean"]
        bytes_ratio = entry["bytes_per_node_step"]["mean"] / \
            dekf["bytes_per_node_step"]["mean"]
        speed_ratio = entry["steps_per_second"]["mean"] / dekf["steps_per_second"]["mean"]
        reference = dict(zip(variants[baseline]["seeds"],
                             variants[baseline]["final_mse_by_seed"], strict=True))
        wins = sum(value <= reference[seed] for seed, value in
                   zip(entry["seeds"], entry["final_mse_by_seed"], strict=True)
                   if seed in reference)
        particles[label] = {
            "mse_ratio": mse / bound, "bytes_ratio": bytes_ratio, "speed_ratio": speed_ratio,
            "accuracy": mse <= bound, "bytes": bytes_ratio <= BYTES_FACTOR,
            "speed": speed_ratio >= SPEED_FACTOR, "seeds_at_or_below": wins,
            "seeds": len(entry["seeds"])}
        particles[label]["holds"] = all(particles[label][key]
                                        for key in ("accuracy", "bytes", "speed"))
    holding = [label for label, check in particles.items() if check["holds"]]
    affordable = [label for label, check in particles.items()
                  if check["bytes"] and check["speed"]]
    pick = best(variants, "particle", holding or affordable or None)
    return {**result, "baseline": baseline, "bound": bound, "dekf": chosen["dekf"],
            "particles": particles, "holds": bool(holding), "chosen": pick}


def markdown(sizes, command, steps) -> str:
    lines = ["# Model size: particle configurations against the baselines", "",
             f"Command: `{command}`", "",
             f"Issue 16's teacher (synthetic-lstm, teacher n = 8, p = 4, model.init_std = 0.3, "
             f"4-node ring, interleave), {steps} steps. Final-10 % network MSE (mean ± std "
             "over seeds), bytes per node per step, steps/s of the slowest rank, peak "
             "resident memory of the largest rank. 4 ranks share a loaded machine: steps/s "
             "are noisy and compare only within this run. Target: a particle variant's MSE "
             f"at or below the best baseline's, at <= {BYTES_FACTOR:g}x dekf's bytes and "
             f">= {SPEED_FACTOR:g}x dekf's steps/s (dekf in its best form).", ""]
    for size in sizes.values():
        goal = size["target"]
        lines += [f"## model n = {size['n']} ({size['n_params']:,} weights)", ""]
        lines += ["| variant | final MSE | seeds | bytes/node/step | steps/s | peak MB/rank "
                  "| MSE / best baseline | bytes / dekf | steps/s / dekf | target |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        order = sorted(size["variants"].items(), key=lambda item: (
            item[1]["family"] == "particle",
            item[1].get("final_mse", {}).get("mean", float("inf"))))
        for label, entry in order:
            check = goal["particles"].get(label)
            name = f"**{label}**" if label in (goal.get("baseline"), goal["chosen"]) else label
            if "final_mse" not in entry:
                reason = f"{entry['status']}: {entry['reason']}".replace("|", "/")
                lines.append(f"| {name} | {reason} | | | | | | | | |")
                continue
            cells = [f"{entry['final_mse']['mean']:.4f} ± {entry['final_mse']['std']:.4f}",
                     ",".join(map(str, entry["seeds"])),
                     f"{entry['bytes_per_node_step']['mean']:.0f}",
                     f"{entry['steps_per_second']['mean']:.1f}",
                     f"{entry['peak_mb']['mean']:.0f}"]
            if check:
                cells += [f"{check['mse_ratio']:.3f} ({check['seeds_at_or_below']}/"
                          f"{check['seeds']} seeds ≤)", f"{check['bytes_ratio']:.3f}",
                          f"{check['speed_ratio']:.2f}", "holds" if check["holds"] else
                          "no: " + ", ".join(key for key in ("accuracy", "bytes", "speed")
                                             if not check[key])]
            else:
                cells += ["", "", "", f"best {entry['family']}" if
                          goal["best"].get(entry["family"]) == label else ""]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        if goal["missing"]:
            lines.append(f"Baselines that did not run: {', '.join(goal['missing'])}.")
        if goal["chosen"]:
            lines.append(f"Best baseline: **{goal['baseline']}** "
                         f"({goal['bound']:.4f}); dekf's best form: {goal['dekf']}. "
                         f"Target {'holds' if goal['holds'] else 'does not hold'}; "
                         f"chosen particle variant: **{goal['chosen']}**.")
        lines.append("")
    return "\n".join(lines)


def chosen_variants(paths) -> dict[str, list[str]]:
    """Per model size, the variants tuning runs chose (each baseline's best, the particle).

    ``paths`` is a comma-separated list of tuning runs' ``model_size.json``; their runs are
    pooled (a variant in several of them keeps every seed's run).
    """
    rows = [row for path in paths.split(",")
            for row in json.loads(Path(path).read_text())["runs"]]
    return {key: [label for label in (*size["target"]["best"].values(),
                                      size["target"]["chosen"]) if label]
            for key, size in summarise(rows).items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="16", help="comma-separated model sizes")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated labels (default: all): {', '.join(VARIANTS)}")
    parser.add_argument("--chosen-from", default=None,
                        help="tuning runs' model_size.json (comma-separated): run the "
                        "variants they chose")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--out", default=str(RESULTS / "model_size"))
    args = parser.parse_args()
    sizes = [int(value) for value in args.n.split(",")]
    seeds = [int(value) for value in args.seeds.split(",")]
    plan = {str(n): args.variants.split(",") if args.variants else list(VARIANTS)
            for n in sizes}
    if args.chosen_from:
        chosen = chosen_variants(args.chosen_from)
        plan = {str(n): chosen[str(n)] for n in sizes if str(n) in chosen}
        if not plan:
            parser.error(f"--chosen-from {args.chosen_from}: none of --n {args.n} in it")
    unknown = [label for labels in plan.values() for label in labels if label not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown[0]!r}")
    command = "python benchmarks/model_size.py " + " ".join(sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, refused, started = [], set(), time.time()
    with tempfile.TemporaryDirectory() as work:
        for seed in seeds:
            for key, labels in plan.items():
                for label in labels:
                    if (key, label) in refused:
                        continue  # the other seeds fail for the same reason
                    family, overrides = VARIANTS[label]
                    settings = [*TEACHER, f"model.n={key}", *overrides, f"run.seed={seed}",
                                f"run.steps={args.steps}"]
                    path = Path(work) / f"n{key}-{label.replace(' ', '_')}-{seed}"
                    row = {"n": int(key), "n_params": parameter_count(int(key)),
                           "variant": label, "seed": seed, "steps": args.steps,
                           **run_training({"topology": {"name": "ring", "nodes": NODES}},
                                          settings, NODES, args.timeout, path)}
                    rows.append(row)
                    if row["status"] != "ok":
                        refused.add((key, label))
                    shown = (f"final {row['final_mse']:.5f}, {row['steps_per_second']:.1f} "
                             f"steps/s" if row["status"] == "ok"
                             else f"{row['status']}: {row['reason']}")
                    print(f"n={key} {label} seed {seed}: {shown}", flush=True)
            summary = summarise(rows)  # after every seed: an interrupted run keeps its rows
            text = markdown(summary, command.strip(), args.steps)
            (out / "model_size.md").write_text(text)
            write_json(out / "model_size.json", {
                "command": command.strip(), "steps": args.steps, "seeds": seeds,
                "plan": plan, "seconds": time.time() - started, "sizes": summary,
                "runs": rows})
    print("\n" + text)


if __name__ == "__main__":
    main()
