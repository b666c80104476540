"""Your own numpy arrays in, a RunResult out, and a plot: mcdpf as a library.

    mpiexec -n 4 python -m mpi4py launch/custom_data.py [--algorithm dpf] [--steps 300]
        [--plot custom.png] [--out RUN_DIR]

Every rank builds its own node's data (here: a noisy nonlinear function of a random
walk, seen through sequences of 1 to 4 noisy readings per step), trains with
``mcdpf.train``, and rank 0 plots every node's running error. ``python -m mpi4py`` makes
an exception on one rank end the whole job.
"""

import argparse

import numpy as np
from mpi4py import MPI

import mcdpf


def node_data(node: int, steps: int, seed: int = 0):
    """Sequences (m_t, 2) and labels (T,) of one node: its own readings of a shared signal."""
    rng = np.random.default_rng([seed, node])
    signal = np.cumsum(np.random.default_rng(seed).normal(0.0, 0.05, steps + 1))
    sequences, targets = [], []
    for t in range(steps):
        readings = int(rng.integers(1, 5))
        level = signal[t] + 0.05 * rng.standard_normal(readings)
        slope = np.full(readings, signal[t] - signal[max(t - 1, 0)])
        sequences.append(np.column_stack([level, 10 * slope]))
        targets.append(np.tanh(signal[t + 1]) + 0.02 * rng.standard_normal())
    return sequences, np.array(targets)


def main():
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="dpf", choices=mcdpf.ALGORITHMS.names())
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--particles", type=int, default=200)
    parser.add_argument("--plot", default="custom.png")
    parser.add_argument("--out", help="also write the run directory (as mcdpf train)")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD

    config = mcdpf.load_config({
        "run": {"algorithm": args.algorithm, "seed": 1, "progress_seconds": 0},
        "topology": {"name": "ring", "walk": "lazy"},
        "model": {"n": 2, "init_std": 0.3},
        "filter": {"particles": args.particles, "state_noise": 1e-4, "obs_noise": 0.005,
                   "walk_steps": 3},
    })
    sequences, targets = node_data(comm.rank, args.steps)
    stream = mcdpf.Stream.from_sequences(sequences, targets)
    result = mcdpf.train(config, comm, stream=stream, out=args.out)

    running = np.cumsum(result.squared_error) / np.arange(1, args.steps + 1)
    curves = comm.gather(running, root=0)  # user code may use any collective it likes
    summary = comm.gather(result.report(), root=0)
    if comm.rank == 0:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 3.6), dpi=110)
        for node, curve in enumerate(curves):
            axis.plot(curve, lw=1, label=f"node {node}")
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_ylabel("running MSE")
        axis.set_title(f"{args.algorithm} on {comm.size} nodes")
        axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(args.plot)
        for node in summary:
            print(f"node {node['node']}: MSE {node['mse']:.5f}, final MSE "
                  f"{node['final_mse']:.5f}, {node['bytes_per_step']:.0f} bytes/step")
        print(f"{result.steps_per_second:.0f} steps/s on rank 0; plot written to {args.plot}")


if __name__ == "__main__":
    main()
