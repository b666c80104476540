"""Start-up cost: JIT compilation paid once per machine (on-disk cache), not per run.

    python benchmarks/startup.py [--ranks 2] [--json benchmarks/results/startup.json]

Runs a tiny ``mcdpf train`` job three times with a fresh, private ``NUMBA_CACHE_DIR``:
cold (empty cache: every kernel compiles), then warm twice (kernels load from the cache).
Reports the run's own ``startup_seconds`` (process start to the first time step: imports,
set-up, kernel loading or compilation; the largest over ranks) and the whole command's
wall time.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, mpiexec, table, write_json

CONFIG = ('[topology]\nname = "ring"\n[run]\nsteps = 5\nprogress_seconds = 0\n'
          '[data]\nsource = "synthetic-lstm"\n[filter]\nparticles = 20\n')


def run_once(ranks, config, out, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    started = time.perf_counter()
    subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, "-m", "mcdpf", "train",
                    str(config), "--out", str(out), "--force", "--quiet"], check=True,
                   env=env, capture_output=True)
    wall = time.perf_counter() - started
    summary = json.loads(subprocess.run([sys.executable, "-m", "mcdpf", "report", str(out),
                                         "--json"], capture_output=True, text=True,
                                        check=True).stdout)
    startup = max(node["startup_seconds"] for node in summary["nodes"])
    return wall, startup


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--json", default=str(RESULTS / "startup.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        config = directory / "tiny.toml"
        config.write_text(CONFIG)
        cache = directory / "numba-cache"
        for label in ("cold (empty cache)", "warm", "warm"):
            wall, startup = run_once(args.ranks, config, directory / "run", cache)
            rows.append({"run": label, "startup": startup, "wall": wall})
        cached = sum(1 for _ in cache.rglob("*.nbc"))
    print(f"start-up of a {args.ranks}-rank mcdpf train job with a private NUMBA_CACHE_DIR "
          f"({cached} compiled kernel variants cached)")
    print(table(rows, [("run", "run", ""), ("startup", "start-up s", ".2f"),
                       ("wall", "whole command s", ".2f")]))
    write_json(args.json, {"ranks": args.ranks, "rows": rows, "cached_variants": cached})


if __name__ == "__main__":
    main()
