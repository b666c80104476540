"""Are two source trees' outputs bit-identical? The 10-configuration HK check.

    python benchmarks/identity.py [--old f06e2fa] [--new .] [--work DIR] [--only NAME ...]

``--old`` and ``--new`` are source trees, each a directory or a git revision of this
repository (exported with ``git archive`` into the work directory); the defaults are v2
(f06e2fa) and this tree. Each configuration of ``CONFIGURATIONS`` (the HK exchange data,
2 ranks on a ring, 30 steps, checkpoints every 5, ``run.record_estimates``: the eight
algorithms of v2, its best configuration, a linearized dpf with a float32 wire on a lazy
walk) runs once per tree, one after the other, under ``mpiexec -n 2`` with the tree on
``PYTHONPATH`` and a numba cache of its own. Then, in the newer tree only, the dpf run is
killed at a step and resumed, and compared with its uninterrupted run.

Every dataset and attribute of every node's HDF5 file is compared exactly (dtype, shape
and bytes), timings (``*_seconds``) excepted; JSON attributes (``config``, ``topology``)
are compared key by key. What only the newer tree writes is listed as an addition, not a
difference; a difference is printed with the dataset's name and its first differing index.
Prints a table, writes ``benchmarks/results/identity.json``; exit code 1 on any difference.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import h5py
import numpy as np
from common import RESULTS, mpiexec, table, write_json

REPO = Path(__file__).resolve().parents[1]
RANKS = 2
BASE = """\
[run]
algorithm = "dpf"
seed = 1
steps = 30
checkpoint_every = 5
record_estimates = true
progress_seconds = 0

[topology]
name = "ring"

[data]
source = "hk-exchange"
window = 2
partition = "replicate"

[model]
kind = "lstm"
n = 2
carry_state = true
init_std = 0.5

[filter]
particles = 40
state_noise = 0.0004
obs_noise = 0.01
walk_steps = 3

[sgd]
learning_rate = 0.1
"""
# name: the --sets on top of BASE.
CONFIGURATIONS = {
    **{name: [f"run.algorithm={name}"]
       for name in ("pf", "cpf", "dpf", "rpf", "ekf", "dekf", "sgd", "dsgd")},
    "rpf-best": ["run.algorithm=rpf", "filter.kernel=gaussian", "filter.particles=5",
                 "filter.ess_threshold=0.5", "relay.weights=uniform"],
    "dpf-linearized-f32-lazy": ["run.algorithm=dpf", "filter.proposal=linearized",
                                "filter.wire_dtype=float32", "topology.walk=lazy"],
}
RESUMED = ("dpf", 1, 17)  # configuration, killed node, step: newer tree only


def source_tree(given: str, work: Path) -> tuple[Path, str]:
    """``given`` as a directory, else a git revision of this repository exported to
    ``work``; and its git revision (``+`` when a directory has uncommitted changes)."""
    if Path(given).is_dir():
        tree = Path(given).resolve()
        git = ["git", "-C", str(tree)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True)
        if head.returncode != 0:
            return tree, str(tree)
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return tree, head.stdout.strip() + ("+" if dirty else "")
    revision = subprocess.run(["git", "rev-parse", "--short", given], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.strip()
    tree = work / f"tree-{revision}"
    if not tree.exists():
        archive = subprocess.run(["git", "archive", revision], cwd=REPO, check=True,
                                 capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tree, filter="data")
    return tree, revision


def environment(tree: Path, cache: Path) -> dict:
    """``tree`` first on the path, its own numba cache; checked by importing mcdpf."""
    env = {**os.environ, "PYTHONPATH": str(tree), "NUMBA_CACHE_DIR": str(cache)}
    # Run from ``tree``: `python -m` puts the working directory before PYTHONPATH.
    imported = subprocess.run([sys.executable, "-c", "import mcdpf; print(mcdpf.__file__)"],
                              capture_output=True, text=True, env=env, cwd=tree, check=True)
    if not Path(imported.stdout.strip()).is_relative_to(tree):
        raise SystemExit(f"{tree}: python imports {imported.stdout.strip()} instead")
    return env


def train(tree: Path, cache: Path, config: Path, out: Path, sets: list[str],
          resume: bool = False) -> subprocess.CompletedProcess:
    """``mpiexec -n 2 python -m mcdpf train`` of ``tree`` (its own numba cache) into
    ``out``, or resuming it."""
    command = [mpiexec(), "-n", str(RANKS), sys.executable, "-m", "mcdpf", "train",
               str(config), "--quiet", *(["--resume", str(out)] if resume
                                         else ["--out", str(out), "--force"])]
    for assignment in sets:
        command += ["--set", assignment]
    return subprocess.run(command, capture_output=True, text=True, cwd=tree,
                          env=environment(tree, cache), timeout=1800)


def first_difference(a: np.ndarray, b: np.ndarray) -> str | None:
    """Where two arrays first differ bit for bit (None: identical)."""
    if a.dtype != b.dtype:
        return f"dtype {a.dtype} != {b.dtype}"
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    if a.dtype.kind == "O":
        flat = [i for i, (x, y) in enumerate(zip(a.ravel(), b.ravel(), strict=True)) if x != y]
    else:
        bytes_a = a.reshape(-1).view(np.uint8).reshape(a.size, -1)
        bytes_b = b.reshape(-1).view(np.uint8).reshape(b.size, -1)
        flat = np.flatnonzero(np.any(bytes_a != bytes_b, axis=1)).tolist()
    if not flat:
        return None
    index = np.unravel_index(flat[0], a.shape) if a.shape else ()
    where = tuple(int(i) for i in index)
    return f"index {where}: {a.ravel()[flat[0]]!r} != {b.ravel()[flat[0]]!r}"


def as_json(value):
    """A JSON attribute's value, else None."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return None


def compare_json(name: str, old, new, report: dict) -> None:
    """Key by key: keys only in ``new`` are additions."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old.keys() - new.keys():
            report["differences"].append(f"{name}.{key}: only in the older tree")
        for key in new.keys() - old.keys():
            report["additions"].append(f"{name}.{key}")
        for key in old.keys() & new.keys():
            compare_json(f"{name}.{key}", old[key], new[key], report)
    elif old != new:
        report["differences"].append(f"{name}: {old!r} != {new!r}")


def compare_attributes(prefix: str, old, new, report: dict) -> None:
    for key in old.keys() - new.keys():
        report["differences"].append(f"{prefix}@{key}: only in the older tree")
    for key in new.keys() - old.keys():
        report["additions"].append(f"{prefix}@{key}")
    for key in sorted(old.keys() & new.keys()):
        if key.endswith("_seconds"):
            continue
        report["attributes"] += 1
        a, b = old[key], new[key]
        if as_json(a) is not None and as_json(b) is not None:
            compare_json(f"{prefix}@{key}", as_json(a), as_json(b), report)
            continue
        difference = first_difference(np.asarray(a), np.asarray(b))
        if difference is not None:
            report["differences"].append(f"{prefix}@{key}: {difference}")


def compare_runs(old_dir: Path, new_dir: Path) -> dict:
    """Every dataset and attribute of every node file of two run directories."""
    report = {"datasets": 0, "attributes": 0, "differences": [], "additions": []}
    old_files = sorted(p.name for p in old_dir.glob("node-*.h5"))
    new_files = sorted(p.name for p in new_dir.glob("node-*.h5"))
    if old_files != new_files or len(old_files) != RANKS:
        report["differences"].append(f"node files {old_files} != {new_files}")
    for file_name in sorted(set(old_files) & set(new_files)):
        with h5py.File(old_dir / file_name) as old, h5py.File(new_dir / file_name) as new:
            names = {"old": [], "new": []}
            old.visit(names["old"].append)
            new.visit(names["new"].append)
            compare_attributes(file_name, old.attrs, new.attrs, report)
            for name in sorted(set(names["old"]) - set(names["new"])):
                report["differences"].append(f"{file_name}:{name}: only in the older tree")
            for name in sorted(set(names["new"]) - set(names["old"])):
                report["additions"].append(f"{file_name}:{name}")
            for name in sorted(set(names["old"]) & set(names["new"])):
                where = f"{file_name}:{name}"
                compare_attributes(where, old[name].attrs, new[name].attrs, report)
                if not isinstance(old[name], h5py.Dataset) or name.endswith("_seconds"):
                    continue
                report["datasets"] += 1
                difference = first_difference(old[name][()], new[name][()])
                if difference is not None:
                    report["differences"].append(f"{where}: {difference}")
    return report


def run_checked(label: str, *args, **kwargs) -> None:
    result = train(*args, **kwargs)
    if result.returncode != 0:
        raise SystemExit(f"{label}: exit {result.returncode}\n{result.stderr[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="f06e2fa", help="older tree: directory or revision")
    parser.add_argument("--new", default=str(REPO), help="newer tree: directory or revision")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep runs and numba caches here (default: a temporary dir)")
    parser.add_argument("--only", nargs="+", choices=[*CONFIGURATIONS, "resume"],
                        help="run these configurations only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = (args.work or Path(scratch)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        (old, old_label), (new, new_label) = (source_tree(args.old, work),
                                              source_tree(args.new, work))
        trees = {"old": old, "new": new}
        config = work / "hk-identity.toml"
        config.write_text(BASE)
        rows = []
        for name, sets in CONFIGURATIONS.items():
            if args.only and name not in args.only:
                continue
            for side, tree in trees.items():
                run_checked(f"{name} ({side})", tree, work / f"numba-{side}", config,
                            work / side / name, sets)
            rows.append({"configuration": name, "compared": f"{old_label} / {new_label}",
                         "directories": (f"old/{name}", f"new/{name}"),
                         **compare_runs(work / "old" / name, work / "new" / name)})
            print_row(rows[-1])
        if not args.only or "resume" in args.only:
            name, node, step = RESUMED
            sets = CONFIGURATIONS[name]
            cache, uninterrupted = work / "numba-new", work / "new" / name
            if not any(row["configuration"] == name for row in rows):
                run_checked(f"{name} (new)", trees["new"], cache, config, uninterrupted, sets)
            killed = work / "new" / f"{name}-killed"
            crashed = train(trees["new"], cache, config, killed,
                            [*sets, f"faults.kill=[[{node}, {step}]]"])
            if crashed.returncode in (0, 2) or f"rank {node}: faults.kill" not in crashed.stderr:
                raise SystemExit(f"the kill at step {step} did not happen: {crashed.stderr}")
            resumed = train(trees["new"], cache, config, killed, [], resume=True)
            if resumed.returncode != 0:
                raise SystemExit(f"resume: exit {resumed.returncode}\n{resumed.stderr}")
            rows.append({"configuration": f"{name} killed at {step}, resumed",
                         "compared": f"{new_label}: uninterrupted / resumed",
                         "directories": (f"new/{name}", f"new/{name}-killed"),
                         **compare_runs(uninterrupted, killed)})
            print_row(rows[-1])
    directories = set()
    for row in rows:
        directories.update(row.pop("directories"))
        row["result"] = "differs" if row["differences"] else "identical"
        row["n_differences"], row["n_additions"] = len(row["differences"]), len(row["additions"])
    print()
    print(table(rows, [("configuration", "configuration", ""), ("compared", "trees", ""),
                       ("datasets", "datasets", "d"),
                       ("attributes", "attributes", "d"), ("n_additions", "additions", "d"),
                       ("n_differences", "differences", "d"), ("result", "result", "")]))
    write_json(RESULTS / "identity.json",
               {"command": "python benchmarks/identity.py " + " ".join(sys.argv[1:]),
                "trees": {"old": old_label, "new": new_label}, "ranks": RANKS,
                "base_config": BASE, "configurations": CONFIGURATIONS,
                "resumed": dict(zip(("configuration", "node", "step"), RESUMED, strict=True)),
                "run_directories": len(directories),
                "rows": rows})
    return 1 if any(row["differences"] for row in rows) else 0


def print_row(row: dict) -> None:
    print(f"{row['configuration']}: {row['datasets']} datasets, {row['attributes']} attributes, "
          f"{len(row['additions'])} additions, {len(row['differences'])} differences",
          flush=True)
    for difference in row["differences"]:
        print(f"  DIFFERS {difference}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
