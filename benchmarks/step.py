"""Whole DPF step at the papers' setting against a floor measured in the same run.

    python benchmarks/step.py [--ranks 2] [--json benchmarks/results/step.json]

Starts ``mpiexec -n RANKS`` on itself. The papers' setting: HK exchange-rate data
replicated on every node, LSTM n = 2 (p = 2, m = 2), N = 80, s = 3, here on a RANKS-node
ring (one rank per core). In the same job it measures

- the DPF step time through the real learner (predict + update, no file output), with
  the first walk exchange overlapping the prediction and without (``filter.overlap``);
- the floor: ``s`` bare mpi4py neighbour exchanges of the same sizes (counts by
  ``Neighbor_alltoall``, records by ``Neighbor_alltoallv``) plus the kernel time of the
  ``s + 1`` LSTM evaluations a step needs;
- a profile of where the rest of a step goes (cProfile, rank 0).
"""

import argparse
import cProfile
import io
import json
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
from common import RESULTS, mpiexec, write_json

STEPS = 300
ROUNDS = 5


def learner_for(comm, overlap: bool, seed=1):
    from mcdpf.algorithms import LearnerContext, build_learner
    from mcdpf.comm import Neighbourhood
    from mcdpf.config import load_config
    from mcdpf.models import build_model
    from mcdpf.topology import named_topology

    config = load_config(None, ["topology.name=ring", "model.n=2", "filter.particles=80",
                                "filter.walk_steps=3", "filter.state_noise=0.0004",
                                "filter.obs_noise=0.01", f"filter.overlap={str(overlap).lower()}",
                                f"run.seed={seed}"])
    topology = named_topology("ring", comm.size)
    model = build_model(config.model, 2)
    neighbourhood = Neighbourhood(comm, topology.neighbours(comm.rank))
    learner = build_learner("dpf", LearnerContext(config, model, topology, comm.rank,
                                                  neighbourhood))
    return learner, neighbourhood, config


def run_steps(comm, learner, stream, steps):
    """Per-step wall times of ``steps`` steps (after 20 warm-up steps)."""
    times = []
    for t in range(steps + 20):
        columns = stream.sequence(t % stream.steps)
        target = float(stream.targets[t % stream.steps])
        started = time.perf_counter()
        learner.predict(columns)
        learner.update(target)
        if t >= 20:
            times.append(time.perf_counter() - started)
    return np.array(times)


def bare_exchange(comm, neighbourhood, record_bytes, counts, repeats=2000):
    """Seconds per counts + records neighbour exchange of the given sizes."""
    from mpi4py import MPI

    degree = neighbourhood.degree
    graph = neighbourhood.graph
    record = MPI.BYTE.Create_contiguous(record_bytes).Commit()
    send_counts = np.array(counts, dtype=np.int32)
    recv_counts = np.empty(degree, dtype=np.int32)
    send = np.zeros(int(send_counts.sum()) * record_bytes + 1, dtype=np.uint8)
    recv = np.zeros(4 * send.size, dtype=np.uint8)
    displacements = np.concatenate([[0], np.cumsum(send_counts)[:-1]]).astype(np.int32)
    comm.Barrier()
    started = time.perf_counter()
    for _ in range(repeats):
        graph.Neighbor_alltoall(send_counts, recv_counts)
        recv_displacements = np.concatenate([[0], np.cumsum(recv_counts)[:-1]]).astype(
            np.int32)
        graph.Neighbor_alltoallv([send, (send_counts, displacements), record],
                                 [recv, (recv_counts, recv_displacements), record])
    seconds = (time.perf_counter() - started) / repeats
    record.Free()
    return seconds


def kernel_seconds(learner, stream):
    """Seconds of one LSTM evaluation of N particles on a papers' sequence (kernel only)."""
    from mcdpf.kernels import lstm_kernel_for

    particles = learner.particles
    columns = np.ascontiguousarray(stream.sequence(0))
    start = np.zeros((particles.size, 4))
    out = np.empty_like(start)
    kernel = lstm_kernel_for(2, 2)
    kernel(particles.theta, columns, start, 2, out)
    best = np.inf
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(2000):
            kernel(particles.theta, columns, start, 2, out)
        best = min(best, (time.perf_counter() - started) / 2000)
    return best


def worker(output: str) -> None:
    from mpi4py import MPI

    from mcdpf.kernels import warm_up
    from mcdpf.sources import hk_exchange_stream

    comm = MPI.COMM_WORLD
    warm_up(np.float64)
    stream = hk_exchange_stream(2)
    result = {"ranks": comm.size, "steps_per_round": STEPS, "rounds": ROUNDS}
    learners = {overlap: learner_for(comm, overlap) for overlap in (False, True)}
    _, neighbourhood, config = learners[False]
    learner = learners[False][0]
    record_bytes = learner.record_dtype.itemsize
    degree = neighbourhood.degree
    moved = [config.filter.particles // max(degree, 1)] * degree
    walk_steps = config.filter.walk_steps
    rounds = []
    # Interleaved rounds: the machine's speed drifts, so each round measures the step and
    # its floor back to back, and the ratio is taken within a round.
    for _ in range(ROUNDS):
        row = {}
        for overlap, (each, _, _) in learners.items():
            comm.Barrier()
            row[f"step_us_overlap_{overlap}"] = float(
                np.median(run_steps(comm, each, stream, STEPS)) * 1e6)
        row["bare_exchange_us"] = bare_exchange(comm, neighbourhood, record_bytes,
                                                moved) * 1e6
        row["kernel_us"] = kernel_seconds(learner, stream) * 1e6
        row["floor_us"] = walk_steps * row["bare_exchange_us"] \
            + (walk_steps + 1) * row["kernel_us"]
        best = min(row["step_us_overlap_False"], row["step_us_overlap_True"])
        row["ratio_to_floor"] = best / row["floor_us"]
        row["overlap_gain"] = row["step_us_overlap_False"] / row["step_us_overlap_True"]
        rounds.append(row)
    for key in rounds[0]:
        result[key] = float(np.median([row[key] for row in rounds]))
    result["ratio_to_floor_range"] = [min(r["ratio_to_floor"] for r in rounds),
                                      max(r["ratio_to_floor"] for r in rounds)]
    result["record_bytes"] = record_bytes
    result["rounds_detail"] = rounds
    profiler = cProfile.Profile()
    comm.Barrier()
    profiler.enable()
    run_steps(comm, learner, stream, 200)
    profiler.disable()
    for _, each_neighbourhood, _ in learners.values():
        each_neighbourhood.free()
    if comm.rank == 0:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(14)
        total = sum(v[2] for v in stats.stats.values())
        top = sorted(((v[2], f"{Path(k[0]).name}:{k[2]}") for k, v in stats.stats.items()),
                     reverse=True)[:12]
        result["profile_top"] = [{"where": where, "share": seconds / total}
                                 for seconds, where in top]
        Path(output).write_text(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--json", default=str(RESULTS / "step.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "step.json"
        subprocess.run([mpiexec(), "-n", str(args.ranks), sys.executable, __file__,
                        "--worker", str(output)], check=True)
        result = json.loads(output.read_text())
    print(f"DPF step, papers' setting (HK data, n=2, N=80, s=3) on a {result['ranks']}-node "
          f"ring, one rank per core:")
    print(f"  step, first exchange overlapping the prediction "
          f"{result['step_us_overlap_True']:8.1f} us")
    print(f"  step, no overlap                                "
          f"{result['step_us_overlap_False']:8.1f} us   overlap gain "
          f"x{result['overlap_gain']:.2f}")
    print(f"  floor = s x bare exchange ({result['bare_exchange_us']:.1f} us, "
          f"{result['record_bytes']} B records) + (s+1) x kernel ({result['kernel_us']:.1f} us)"
          f" = {result['floor_us']:.1f} us")
    low, high = result["ratio_to_floor_range"]
    print(f"  step / floor = {result['ratio_to_floor']:.2f} (median of {result['rounds']} "
          f"interleaved rounds, range {low:.2f} .. {high:.2f}; target <= 5)")
    print("  where a step's time goes (cProfile, rank 0, share of total):")
    for row in result["profile_top"]:
        print(f"    {row['share']:6.1%}  {row['where']}")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
