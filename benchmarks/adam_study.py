"""The seeded study that chose ``[adam] learning_rate``'s default (docs/algorithms.md).

    python benchmarks/adam_study.py [--seeds 1,2,3,4,5] [--rates 0.003,0.01,0.03,0.1,0.3]
        [--out benchmarks/results/adam]

Every step size of ``adam`` and ``dadam`` (``sgd`` and ``dsgd`` at the configuration's own
``sgd.learning_rate`` beside them) runs for every seed on the 4-node paper ring, by
:mod:`frontier`'s worker (one ``mpiexec -n 4`` job per setting, final-10 % network MSE).
The step size is chosen on the tuning settings only (``synthetic-lstm``, ``hk-replicate``,
``hk-interleave``): the one with the smallest mean, over those settings, of its final MSE
relative to the best step size's in that setting (each setting weighs the same, whatever
its MSE scale). The validation settings (co2 and sunspots, replicate and interleave; never
used to choose) then show whether the choice carries over. Writes ``adam-study.md`` and
``adam-study.json`` into ``--out``.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# common pins the BLAS and numba threads before numpy loads
# isort: off
from common import RESULTS, mpiexec, write_json
import frontier
import numpy as np
# isort: on

TUNING = ("synthetic-lstm", "hk-replicate", "hk-interleave")
VALIDATION = ("co2-replicate", "co2-interleave", "sunspots-replicate", "sunspots-interleave")
ALGORITHMS = ("adam", "dadam")
REFERENCES = ("sgd", "dsgd")


def variant(algorithm: str, rate: float) -> str:
    """The study's name of one algorithm at one step size."""
    return f"{algorithm} lr={rate:g}"


def add_variants(rates) -> list[str]:
    """Register every (algorithm, step size) as a frontier variant; return all names."""
    names = list(REFERENCES)
    for algorithm in ALGORITHMS:
        for rate in rates:
            name = variant(algorithm, rate)
            frontier.VARIANTS[name] = ("gradient", [f"run.algorithm={algorithm}",
                                                    f"adam.learning_rate={rate}"])
            names.append(name)
    return names


def choose(summary, rates, algorithm="adam") -> tuple[float, dict]:
    """The step size with the smallest mean relative final MSE over the tuning settings."""
    relative = {}
    for rate in rates:
        ratios = []
        for setting in TUNING:
            finals = {r: summary[setting][variant(algorithm, r)]["final_mse"]["mean"]
                      for r in rates}
            ratios.append(finals[rate] / min(finals.values()))
        relative[rate] = float(np.mean(ratios))
    return min(relative, key=relative.get), relative


def markdown(summary, rates, chosen, relative, seeds, command) -> str:
    lines = [f"`{command}`", "",
             f"Final-10 % network MSE, mean ± std over seeds {','.join(map(str, seeds))} "
             "(4-node paper ring, model n = 2). Tuning settings choose the step size; "
             "validation settings were never used to choose.", "",
             "| step size | mean relative final MSE on the tuning settings (adam) |",
             "| --- | --- |"]
    lines += [f"| {rate:g}{' (chosen)' if rate == chosen else ''} | {relative[rate]:.3f} |"
              for rate in rates]
    settings = [s for s in (*TUNING, *VALIDATION) if s in summary]
    lines += ["", "| variant | " + " | ".join(settings) + " |",
              "| --- |" + " --- |" * len(settings)]
    for name in summary[settings[0]]:
        cells = []
        for setting in settings:
            entry = summary[setting][name]["final_mse"]
            best = min(v["final_mse"]["mean"] for v in summary[setting].values())
            mark = "**" if entry["mean"] == best else ""
            cells.append(f"{mark}{entry['mean']:.5f} ± {entry['std']:.5f}{mark}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Settings: " + ", ".join(f"{s} ({'tuning' if s in TUNING else 'validation'})"
                                            for s in settings) + "; bold: the best "
              "variant of the setting."]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated run seeds")
    parser.add_argument("--rates", default="0.003,0.01,0.03,0.1,0.3",
                        help="comma-separated Adam step sizes")
    parser.add_argument("--out", default=str(RESULTS / "adam"), help="output directory")
    parser.add_argument("--steps", type=int, default=0, help="limit every run (smoke tests)")
    parser.add_argument("--worker", nargs=2, metavar=("SETTING", "OUTPUT"),
                        help="internal: run one setting under mpiexec, rows to OUTPUT")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    names = add_variants(rates)
    if args.worker:
        setting, output = args.worker
        frontier.worker(setting, seeds, names, output, args.steps)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for setting in (*TUNING, *VALIDATION):
            output = Path(directory) / f"{setting}.json"
            print(f"{setting}:", flush=True)
            subprocess.run([mpiexec(), "-n", "4", sys.executable, __file__, "--worker",
                            setting, str(output), "--seeds", args.seeds, "--rates",
                            args.rates, "--steps", str(args.steps)], check=True)
            rows += json.loads(output.read_text())
    summary = frontier.summarise(rows)
    chosen, relative = choose(summary, rates)
    command = "python benchmarks/adam_study.py " + " ".join(sys.argv[1:])
    text = markdown(summary, rates, chosen, relative, seeds, command.strip())
    (out / "adam-study.md").write_text(text + "\n")
    write_json(out / "adam-study.json", {
        "seeds": seeds, "rates": rates, "chosen": chosen, "relative": relative,
        "summary": {setting: {name: {k: v for k, v in entry.items() if k != "runs"}
                              for name, entry in variants.items()}
                    for setting, variants in summary.items()}, "runs": rows})
    print(text)


if __name__ == "__main__":
    main()
