"""A node fed live, one sequence at a time: predict before the label, then learn.

    mpiexec -n 4 python -m mpi4py launch/live_stream.py [--config CONFIG.toml] [--steps 200]
    printf '0.1 0.2 | 0.3 ...' | mpiexec -n 2 python -m mpi4py launch/live_stream.py --stdin

With a generator (default) every rank simulates its own sensor: a drifting signal read
1 to 3 times per step, the label being the next value. With ``--stdin`` rank 0 reads one
step per line, ``x_1 x_2 ... x_m | d`` (scalar readings, then the label after ``|``, or
``-`` for a step without data), and hands every rank the same step (each node sees the
same stream). Every prediction is printed as it comes, with the node and step.
"""

import argparse
import sys

import numpy as np
from mpi4py import MPI

import mcdpf


def simulated_sensor(node: int, steps: int):
    """``(readings (m, 1), next value)`` of one node's drifting signal, one step at a time."""
    rng = np.random.default_rng([7, node])
    value = 0.0
    for _ in range(steps):
        readings = value + 0.03 * rng.standard_normal((int(rng.integers(1, 4)), 1))
        value = 0.95 * value + 0.1 * rng.standard_normal()
        yield readings, value


def parse_step(line: str, number: int):
    """``(columns or None, label or None)`` of one line ``x_1 ... x_m | d``."""
    readings, _, label = line.partition("|")
    try:
        values = [float(v) for v in readings.split() if v != "-"]
        label = label.strip()
        label = None if label in ("", "-") else float(label)
    except ValueError as error:
        raise SystemExit(f"live_stream: standard input line {number}: {error} (expected "
                         "'x_1 ... x_m | d', '-' for no data)") from None
    return (np.array(values)[:, None] if values else None), label


def standard_input(comm):
    """Steps read by rank 0 from standard input, shared with every rank."""
    number = 0
    while True:
        line = sys.stdin.readline() if comm.rank == 0 else None
        line = comm.bcast(line, root=0)
        number += 1
        if not line:
            return
        if line.strip():
            yield parse_step(line, number)


def main():
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="configuration (TOML); default: a lazy ring, dpf")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--stdin", action="store_true", help="read steps from standard input")
    parser.add_argument("--every", type=int, default=1, help="print every this many steps")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    if args.config:
        config = mcdpf.load_config(args.config)
    else:
        config = mcdpf.load_config({
            "run": {"algorithm": "dpf", "seed": 2},
            "topology": {"name": "ring", "walk": "lazy"},
            "model": {"n": 2, "init_std": 0.3},
            "filter": {"particles": 100, "state_noise": 1e-4, "obs_noise": 0.01}})
    source = standard_input(comm) if args.stdin else simulated_sensor(comm.rank, args.steps)
    errors = []
    with mcdpf.Node(config, comm, input_dim=1) as node:
        for columns, label in source:
            prediction = node.predict(columns)
            step = node.step
            info = node.learn(label)
            if label is not None and columns is not None:
                errors.append((label - prediction) ** 2)
            if step % args.every == 0:
                shown = "-" if label is None else f"{label:+.4f}"
                print(f"node {comm.rank} step {step}: prediction {prediction:+.4f} "
                      f"label {shown} "
                      f"(ESS {info.ess:.1f}, {info.bytes_sent} bytes sent)", flush=True)
        mse = float(np.mean(errors)) if errors else float("nan")
        print(f"node {comm.rank}: {node.step} steps, MSE {mse:.5f}", flush=True)


if __name__ == "__main__":
    main()
