"""Cost of a checkpoint against the time step, and its bytes on disk.

    python benchmarks/checkpoint.py [--json benchmarks/results/checkpoint.json]

Starts ``mpiexec -n 2`` on itself: a 2-node ring, one rank per node. For ``dpf``, ``pf``
and ``ekf`` at the papers' scale (HK exchange-rate data, ``launch/hk-exchange.toml``:
n = 2, N = 80, s = 3) and at n = 16, N = 1000 (synthetic-lstm data), it runs the
training loop of :mod:`mcdpf.driver` (``Node``, ``Recorder``, ``Checkpointer``, exactly
as ``mcdpf train`` does) and measures on rank 0:

- the step time: median over the steps of a pass without checkpoints;
- the checkpoint time: the wall time the loop spends in one checkpoint, median over the
  checkpoints of a pass with ``run.checkpoint_every = 10``, for every way of writing
  them (``run.checkpoint_async`` false: the loop writes the file; true: the loop hands a
  copy to a writer thread);
- the bytes of one checkpoint file;
- the cost of a checkpoint every 10 steps: checkpoint time / (10 step times), and the
  loop of the pass with checkpoints against the pass without (end to end, so it also
  counts what a writer thread takes from the rank's core).

Timings are wall times on whatever machine runs this (see the JSON's ``machine``);
every pass runs ``ROUNDS`` times and the fastest is kept.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
from common import REPO, RESULTS, mpiexec, table, write_json

EVERY = 10
ROUNDS = 3
SCALES = {
    "papers (HK, n=2, N=80)": {"base": "hk", "steps": 500},
    "n=16, N=1000 (synthetic)": {"base": "large", "steps": 100},
}
ALGORITHMS = ("dpf", "pf", "ekf")
WRITERS = {"synchronous": False, "writer thread": True}


def configuration(base: str, algorithm: str, asynchronous: bool, every: int):
    from mcdpf.config import load_config

    if base == "hk":
        settings = tomllib.loads((REPO / "launch" / "hk-exchange.toml").read_text())
    else:
        settings = {"data": {"source": "synthetic-lstm"}, "model": {"n": 16},
                    "filter": {"particles": 1000}}
    settings["topology"] = {"name": "ring"}
    settings.setdefault("run", {}).update(
        algorithm=algorithm, progress_seconds=0, checkpoint_every=every,
        checkpoint_async=asynchronous)
    return load_config(settings)


def one_pass(comm, config, steps: int, run_dir):
    """(step times, checkpoint times, seconds of the whole loop) of one training pass."""
    from mcdpf.checkpointing import Checkpointer
    from mcdpf.node import Node
    from mcdpf.preparation import load_stream
    from mcdpf.recording import Recorder
    from mcdpf.resume import checkpoints_to_keep
    from mcdpf.topology import build_topology

    topology = build_topology(config.topology, comm.size)
    stream, _ = load_stream(config, comm.size, comm.rank)
    stream = stream.astype(np.dtype(config.model.dtype))
    node = Node(config, comm, stream.input_dim, topology=topology)
    recorder = Recorder(steps, node.model.n_params, config.run.record_estimates)
    every = config.run.checkpoint_every
    checkpointer = Checkpointer(run_dir, comm.rank, checkpoints_to_keep(config, topology),
                                config.run.checkpoint_async) if every else None
    step_times, checkpoint_times = [], []
    comm.Barrier()
    started = time.perf_counter()
    for t in range(steps):
        step_start = time.perf_counter()
        target = float(stream.targets[t])
        prediction = node.predict(stream.sequence(t))
        info = node.learn(target)
        recorder.record(t, target, prediction, info, 0.0, node.estimate)
        step_end = time.perf_counter()
        step_times.append(step_end - step_start)
        if every and (t + 1) % every == 0 and t + 1 < steps:
            checkpointer.save(t + 1, node.checkpoint_state(), recorder.data,
                              {**node.checkpoint_attributes(), "loop_seconds": 0.0})
            checkpoint_times.append(time.perf_counter() - step_end)
    if checkpointer is not None:
        checkpointer.close()
    seconds = time.perf_counter() - started
    node.close(handshake=False)
    return np.array(step_times[10:]), np.array(checkpoint_times), seconds


def worker() -> None:
    from mpi4py import MPI

    from mcdpf.rundir import RunDirectory

    comm = MPI.COMM_WORLD
    rows = []
    with tempfile.TemporaryDirectory(prefix="mcdpf-checkpoint-") as scratch:
        scratch = comm.bcast(scratch, root=0)
        for scale, spec in SCALES.items():
            for algorithm in ALGORITHMS:
                plain = [one_pass(comm, configuration(spec["base"], algorithm, False, 0),
                                  spec["steps"], None) for _ in range(ROUNDS)]
                step = min(float(np.median(times)) for times, _, _ in plain)
                loop = min(seconds for _, _, seconds in plain)
                for writer, asynchronous in WRITERS.items():
                    run_dir = RunDirectory(Path(scratch) / f"{algorithm}-{writer}-{scale}")
                    config = configuration(spec["base"], algorithm, asynchronous, EVERY)
                    passes = [one_pass(comm, config, spec["steps"], run_dir)
                              for _ in range(ROUNDS)]
                    checkpoint = min(float(np.median(times)) for _, times, _ in passes)
                    with_checkpoints = min(seconds for _, _, seconds in passes)
                    newest = run_dir.checkpoint_steps(comm.rank)[-1]
                    size = run_dir.checkpoint_file(comm.rank, newest).stat().st_size
                    rows.append({
                        "scale": scale, "algorithm": algorithm, "writer": writer,
                        "step_ms": 1e3 * step, "checkpoint_ms": 1e3 * checkpoint,
                        "checkpoint_kB": size / 1e3,
                        "cost_percent": 100 * checkpoint / (EVERY * step),
                        "loop_overhead_percent": 100 * (with_checkpoints - loop) / loop,
                    })
                    if comm.rank == 0:
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if comm.rank == 0:
        print(json.dumps(rows))


COLUMNS = [("scale", "scale", ""), ("algorithm", "algorithm", ""), ("writer", "writer", ""),
           ("step_ms", "step ms", ".3f"), ("checkpoint_ms", "checkpoint ms", ".3f"),
           ("checkpoint_kB", "kB", ".0f"), ("cost_percent", "cost % (C=10)", ".1f"),
           ("loop_overhead_percent", "loop +%", ".1f")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=str(RESULTS / "checkpoint.json"))
    parser.add_argument("--before", help="JSON of an earlier run to keep beside this one")
    args = parser.parse_args()
    if args.worker:
        worker()
        return
    result = subprocess.run([mpiexec(), "-n", "2", sys.executable, __file__, "--worker"],
                            capture_output=True, text=True, check=True, cwd=REPO)
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    print(table(rows, COLUMNS))
    payload = {
        "description": __doc__.split("\n\n", 2)[2].strip(),
        "settings": {"ranks": 2, "checkpoint_every": EVERY, "rounds": ROUNDS,
                     "scales": SCALES, "algorithms": ALGORITHMS, "writers": list(WRITERS)},
        "results": rows,
    }
    if args.before:
        payload["before"] = json.loads(Path(args.before).read_text())["results"]
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
