"""Seconds from a signal to the end of ``mpiexec -n 4 mcdpf train launch/hk-exchange.toml``.

    python benchmarks/signal_exit.py [--ranks 4] [--at 100]

For each delivery route (the launcher, its process group, one rank) and signal, starts
the papers' setting, waits until rank 0's progress line passes step ``--at``, sends the
signal, and prints the exit code and the seconds until ``mpiexec`` ended (a wall-clock
figure of this machine at this moment: it shows that the job ends, not how fast).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = str(Path(sys.executable).with_name("mpiexec"))
ROUTES = (("launcher", signal.SIGINT), ("group", signal.SIGTERM), ("rank", signal.SIGUSR1),
          ("rank", signal.SIGHUP))


def measure(ranks: int, at: int, route: str, number: int, out: Path) -> tuple[int, float]:
    """(exit code, seconds from the signal to the launcher's end) of one stopped run."""
    command = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "mcdpf", "train",
               str(REPO / "launch" / "hk-exchange.toml"), "--out", str(out), "--force",
               "--set", "run.progress_seconds=0.05"]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, start_new_session=True, cwd=REPO)
    passed = threading.Event()

    def read():
        for line in job.stderr:
            for part in line.split("\r"):
                if part.startswith("mcdpf: step ") and int(part.split()[2].split("/")[0]) > at:
                    passed.set()

    threading.Thread(target=read, daemon=True).start()
    if not passed.wait(900):
        job.kill()
        raise SystemExit(f"{route}: the run did not pass step {at}")
    sent = time.monotonic()
    if route == "launcher":
        os.kill(job.pid, number)
    elif route == "group":
        os.killpg(job.pid, number)
    else:
        os.kill(json.loads((out / "processes.json").read_text())[ranks - 1]["pid"], number)
    code = job.wait(300)
    return code, time.monotonic() - sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--at", type=int, default=100)
    args = parser.parse_args()
    print("| route | signal | exit code | seconds to exit |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for route, number in ROUTES:
            code, seconds = measure(args.ranks, args.at, route, number, Path(scratch) / "hk")
            print(f"| {route} | {signal.Signals(number).name} | {code} | {seconds:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
