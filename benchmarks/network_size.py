"""dpf on networks of 16-64 nodes: the walk length and exponent that make migration help.

    python benchmarks/network_size.py [--seeds 1,2,3] [--study NAME,...] [--variants ...]
        [--jobs 2] [--out benchmarks/results/network_size] [--check-mpi] [--report]

The setting of issue 16 ("network size"): a teacher LSTM (``data.source =
"synthetic-lstm"``, n = 2) interleaved over the nodes, model n = 2, N = 80 particles per
node, 400 steps; final = the final-10 % MSE, mean over nodes (noise floor 0.010). Every
variant runs for every seed; the table gives the mean and the spread (min .. max over
seeds) of the final MSE and of dpf's mean ESS after the walk (as a fraction of N).

A network of K nodes runs **in one process** (:class:`InProcessNetwork`): each node's
learner is built exactly as ``mcdpf train`` builds it, on a neighbourhood whose
exchanges go through shared memory between K greenlets (``pip install greenlet``) or
threads instead of MPI, so a 64-node study fits a 2-core machine. Results are stored
cell by cell; a rerun adds only the missing seeds (``--report`` prints the tables). The
learners, random streams and data are the CLI's, so a run here gives the same
predictions as ``mpiexec -n K mcdpf train`` with the same configuration (``--check-mpi``
compares them on a 4-node ring and fails if they differ).

Studies (``--study``): ``torus16`` (the 4x4 torus, where the rule was tuned),
``random16`` (``topologies/random16.toml``, validation), ``hk16``, ``co2-16`` and
``sunspots16`` (real series interleaved over the 4x4 torus, validation) and ``torus64``
(8x8 torus, accuracy only, 60 steps; run it with ``--out
benchmarks/results/network_size/k64``).
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from importlib import resources
from pathlib import Path

# common pins the BLAS and numba threads before numpy loads
# isort: off
from common import REPO, RESULTS, mpiexec, to_toml, write_json
import numpy as np
# isort: on

from mcdpf import load_config
from mcdpf.algorithms import LearnerContext, build_learner
from mcdpf.comm import COUNT_BYTES, STAMP_BYTES
from mcdpf.models import build_model
from mcdpf.preparation import StreamTable, load_stream
from mcdpf.report import FINAL_FRACTION
from mcdpf.results import finite_mean
from mcdpf.rundir import read_run
from mcdpf.topology.files import build_topology

try:  # cooperative node switching without OS threads, when greenlet is installed
    import greenlet
except ImportError:
    greenlet = None


class InProcessNetwork:
    """The K nodes of one in-process network: their mailboxes and their scheduling.

    Each node runs as a greenlet (``pip install greenlet``: the nodes take turns at every
    exchange, no OS scheduling on a loaded machine) or else as a thread behind a barrier.
    """

    def __init__(self, nodes: int):
        self.mail = {}
        self.barrier = None if greenlet is not None else threading.Barrier(nodes)

    def wait(self) -> None:
        """Return once every node has posted its records of this exchange."""
        if self.barrier is None:
            greenlet.getcurrent().parent.switch()
        else:
            self.barrier.wait()

    def run(self, work, nodes: int) -> None:
        """``work(node)`` for every node, in lockstep at each exchange."""
        if self.barrier is None:
            lets = [greenlet.greenlet(lambda node=node: work(node)) for node in range(nodes)]
            while not all(let.dead for let in lets):
                for let in lets:
                    if not let.dead:
                        let.switch()
            return
        threads = [threading.Thread(target=work, args=(node,)) for node in range(nodes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


class InProcessNeighbourhood:
    """A node's exchanges with its neighbours through an :class:`InProcessNetwork`.

    The contract of :class:`mcdpf.comm.Neighbourhood` (``start_exchange`` /
    ``finish_exchange``, ``exchange``, ``exchange_vectors``, ``allgather``,
    ``allgatherv``, ``goodbye``, ``free``): the same records in the same order, and the
    same bytes counted (its counts, stamps and handshakes). Mail is keyed by the
    exchange's number, which every node counts alike.
    """

    def __init__(self, network: InProcessNetwork, node: int, neighbours):
        self.network, self.node, self.neighbours = network, node, list(neighbours)
        self.degree = len(self.neighbours)
        self.exchanges = 0

    def _swap(self, outgoing: list) -> list:
        """Post ``outgoing[i]`` to neighbour ``i``, wait for every node; theirs, in order."""
        mail = self.network.mail
        self.exchanges += 1
        for neighbour, item in zip(self.neighbours, outgoing, strict=True):
            mail[self.exchanges, self.node, neighbour] = item
        self.network.wait()
        return [mail.pop((self.exchanges, neighbour, self.node))
                for neighbour in self.neighbours]

    def start_exchange(self, records, counts, allocate=None, stamp=None):
        """Post each neighbour its records, wait for every node, collect the arrivals."""
        bounds = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        parts = self._swap([records[bounds[i]:bounds[i + 1]].copy()
                            for i in range(self.degree)])
        received = np.concatenate(parts) if parts else np.empty(0, dtype=records.dtype)
        if allocate is not None:
            target = allocate(received.size)
            target[...] = received
            received = target
        sent = int(np.sum(counts))
        header = self.degree * (STAMP_BYTES if stamp is not None else COUNT_BYTES)
        return None, received, records, header + sent * records.dtype.itemsize, sent

    @staticmethod
    def finish_exchange(pending):
        """The received records, bytes sent and particles sent of an exchange."""
        _, received, _, sent_bytes, sent = pending
        return received, sent_bytes, sent

    def exchange(self, records, counts, stamp=None):
        """Blocking :meth:`start_exchange` + :meth:`finish_exchange`: (received, bytes)."""
        received, sent_bytes, _ = self.finish_exchange(
            self.start_exchange(records, counts, stamp=stamp))
        return received, sent_bytes

    def exchange_vectors(self, step, outgoing):
        """Vector ``outgoing[i]`` to neighbour ``i``; theirs (float64) and bytes sent."""
        if self.degree == 0:
            return [], 0
        pieces = self._swap([np.array(v, dtype=np.float64) for v in outgoing])
        return pieces, self.degree * STAMP_BYTES + sum(int(v.size) * 8 for v in outgoing)

    def allgather(self, vector, stamp=None):
        """Every neighbour's copy of a same-shaped array: (degree, *shape), bytes sent."""
        vector = np.ascontiguousarray(vector)
        if self.degree == 0:
            return np.empty((0, *vector.shape), dtype=vector.dtype), 0
        gathered = np.stack(self._swap([vector.copy()] * self.degree))
        header = STAMP_BYTES if stamp is not None else 0
        return gathered, self.degree * (header + vector.nbytes)

    def allgatherv(self, vector, stamp):
        """Every neighbour's float64 vector, of any length each; bytes sent."""
        vector = np.ascontiguousarray(vector, dtype=np.float64)
        if self.degree == 0:
            return [], 0
        return (self._swap([vector.copy()] * self.degree),
                self.degree * (STAMP_BYTES + vector.nbytes))

    def goodbye(self, step):
        """Nothing to check: every in-process node takes the same steps."""

    def free(self):
        """Nothing to release."""


def simulate(overrides, nodes: int, document: dict | None = None) -> dict:
    """Train one configuration on ``nodes`` in-process nodes; the study's numbers.

    ``document`` (a configuration mapping, default the defaults) is read with
    ``overrides`` (a mapping or ``--set`` items) as :func:`mcdpf.load_config` does. Every
    algorithm runs; the nodes take turns at every exchange. Returns ``final_mse`` (final
    10 % MSE as ``mcdpf report``: the mean over nodes of each node's last
    ceil(10 % of the steps)), ``mse``, ``ess`` (mean over nodes and steps of the ESS after
    the step's update, as a fraction of N; NaN without particles), ``bytes`` (per node
    per step), ``steps``, ``seconds`` (the whole network's loop) and, for dpf,
    ``walk_steps`` (the s every node used).
    """
    config = load_config(document or {}, overrides)
    topology = build_topology(config.topology, nodes)
    streams = [load_stream(config, nodes, node)[0] for node in range(nodes)]
    model = build_model(config.model, streams[0].input_dim)
    streams = [stream.astype(model.dtype) for stream in streams]
    steps = min(stream.steps for stream in streams)
    algorithm = config.run.algorithm
    table = StreamTable(streams, [np.zeros(steps, dtype=bool)] * nodes)
    network = InProcessNetwork(nodes)
    errors = np.zeros((nodes, steps))
    ess = np.zeros((nodes, steps))
    sent = np.zeros((nodes, steps))
    learners = [build_learner(algorithm, LearnerContext(
        config=config, model=model, topology=topology, node=node,
        neighbourhood=InProcessNeighbourhood(network, node, topology.neighbours(node)),
        measurements=table)) for node in range(nodes)]

    def run(node):
        learner, stream = learners[node], streams[node]
        state = learner.initial_state()
        for t in range(steps):
            prediction, pending = learner.predict(state, t, stream.sequence(t))
            target = float(stream.targets[t])
            state, info = learner.learn(state, pending, target)
            errors[node, t] = (target - prediction) ** 2
            ess[node, t] = info.ess
            sent[node, t] = info.bytes_sent

    started = time.perf_counter()
    if algorithm == "cpf":
        # Every node's oracle holds the same population: run node 0's, and let every
        # node predict its own label from it (what each rank of ``mcdpf train`` does).
        state = learners[0].initial_state()
        for t in range(steps):
            pendings = [learner.predict(state, t, stream.sequence(t))
                        for learner, stream in zip(learners, streams, strict=True)]
            for node, (prediction, _) in enumerate(pendings):
                errors[node, t] = (float(streams[node].targets[t]) - prediction) ** 2
            state, info = learners[0].learn(state, pendings[0][1],
                                            float(streams[0].targets[t]))
            ess[:, t] = info.ess
    else:
        network.run(run, nodes)
    seconds = time.perf_counter() - started
    tail = max(1, math.ceil(FINAL_FRACTION * steps))
    count = learners[0].count if hasattr(learners[0], "count") else 1
    finite = np.isfinite(ess)
    # as ``mcdpf report``: each node's mean, then the mean over nodes (the same sums)
    result = {"final_mse": float(np.mean([finite_mean(row[-tail:]) for row in errors])),
              "mse": float(np.mean([finite_mean(row) for row in errors])),
              "ess": float(ess[finite].mean() / count) if finite.any() else math.nan,
              "bytes": float(sent.mean()),
              "steps": steps, "seconds": seconds,
              "errors": errors}
    if algorithm == "dpf":
        result["walk_steps"] = int(learners[0].walk_steps)
    return result


def series(name: str) -> str:
    """Path of a real series shipped in ``mcdpf/datasets/series``."""
    return str(resources.files("mcdpf.datasets").joinpath("series").joinpath(f"{name}.csv"))


SYNTHETIC = {"data.source": "synthetic-lstm", "data.partition": "interleave", "model.n": 2,
             "run.steps": 400}
TORUS16 = {"topology.name": "torus", "topology.nodes": 16}
REAL = {"data.partition": "interleave", "data.window": 2, "model.n": 2}
STUDIES = {
    # name: (nodes, overrides, role)
    "torus16": (16, {**TORUS16, **SYNTHETIC}, "tuned on"),
    "random16": (16, {"topology.file": str(REPO / "topologies" / "random16.toml"),
                      **SYNTHETIC}, "validation"),
    "hk16": (16, {**TORUS16, **REAL, "data.source": "hk-exchange"}, "validation (real)"),
    "co2-16": (16, {**TORUS16, **REAL, "data.source": "csv", "data.path": series("co2")},
               "validation (real)"),
    "sunspots16": (16, {**TORUS16, **REAL, "data.source": "csv",
                        "data.path": series("sunspots")}, "validation (real)"),
    "torus64": (64, {"topology.name": "torus", "topology.nodes": 64, **SYNTHETIC,
                     "run.steps": 60}, "accuracy only (64 nodes, 60 steps)"),
}
# pf and the oracle never use the graph: on the same nodes' data their numbers are the
# same on every topology (checked: random16 seed 1 gave torus16's numbers to the bit)
GRAPH_FREE = ("pf", "cpf (oracle)")
SAME_DATA = {"random16": "torus16"}
COMMON = {"filter.particles": 80, "run.progress_seconds": 0}
RECOMMENDED = {"filter.walk_steps": "auto", "filter.visit_tempering": 0.5}
VARIANTS = {
    "pf": {"run.algorithm": "pf"},
    "cpf (oracle)": {"run.algorithm": "cpf"},
    "dpf s=3": {"run.algorithm": "dpf", "filter.walk_steps": 3},
    "dpf auto": {"run.algorithm": "dpf", "filter.walk_steps": "auto"},
    "dpf recommended": {"run.algorithm": "dpf", **RECOMMENDED},
}


def run_one(job):
    """One (study, variant, seed) cell, in its own process."""
    study, variant, seed = job
    nodes, overrides, _ = STUDIES[study]
    result = simulate({**COMMON, **overrides, **VARIANTS[variant], "run.seed": seed}, nodes)
    result.pop("errors")
    return study, variant, seed, result


def spread(values) -> str:
    """``mean (min .. max)``."""
    values = np.asarray(values)
    return f"{values.mean():.5f} ({values.min():.5f} .. {values.max():.5f})"


def markdown(rows: list[dict]) -> str:
    """One table per study: the variants' final MSE and ESS with their spread over seeds."""
    lines = []
    for study in dict.fromkeys(row["study"] for row in rows):
        nodes, _, role = STUDIES[study]
        lines += [f"\n### {study} ({nodes} nodes; {role})",
                  "", "| variant | s | final MSE, mean (min .. max) | vs pf | vs cpf | "
                  "ESS / N after the walk | bytes / node / step | seeds |",
                  "|---|---|---|---|---|---|---|---|"]
        cells = {row["variant"]: row for row in rows if row["study"] == study}
        reference = {name: np.mean(cells[name]["final_mse"]) for name in ("pf", "cpf (oracle)")
                     if name in cells}
        seeds = lambda row: ",".join(map(str, sorted(row["seeds"])))  # noqa: E731
        for variant, row in cells.items():
            if row.get("same_as"):
                variant = f"{variant} (= {row['same_as']}: no graph)"
            mean = np.mean(row["final_mse"])
            versus = [f"{100 * (mean / reference[name] - 1):+.1f} %" if name in reference
                      else "" for name in ("pf", "cpf (oracle)")]
            lines.append(f"| {variant} | {row['walk_steps'] or ''} | {spread(row['final_mse'])} "
                         f"| {versus[0]} | {versus[1]} | {spread(row['ess'])} "
                         f"| {np.mean(row['bytes']):.0f} | {seeds(row)} |")
    return "\n".join(lines)


CHECKED = {  # the algorithms --check-mpi compares, each exercising other exchanges
    "dpf": {"run.algorithm": "dpf", "filter.walk_steps": "auto", "filter.particles": 30},
    "dekf": {"run.algorithm": "dekf"},
    "dsgd": {"run.algorithm": "dsgd"},
    "rpf gaussian": {"run.algorithm": "rpf", "filter.kernel": "gaussian",
                     "filter.particles": 2, "relay.hops": 2},
}


def check_mpi(steps: int = 30) -> None:
    """The in-process network against ``mpiexec -n 4 mcdpf train`` on a 4-node ring: the
    squared errors bit for bit and the bytes sent, for every algorithm of ``CHECKED``."""
    for name, variant in CHECKED.items():
        overrides = {**COMMON, "topology.name": "ring", "topology.nodes": 4, **SYNTHETIC,
                     "run.steps": steps, **variant}
        here = simulate(overrides, 4)
        with tempfile.TemporaryDirectory() as scratch:
            config, out = Path(scratch) / "c.toml", Path(scratch) / "run"
            config.write_text(to_toml(overrides))
            subprocess.run([mpiexec(), "-n", "4", sys.executable, "-m", "mcdpf", "train",
                            str(config), "--out", str(out)], check=True,
                           capture_output=True, timeout=900)
            records = read_run(out)
            errors = np.array([record.datasets["squared_error"] for record in records])
            sent = np.array([record.datasets["bytes_sent"] for record in records])
        if not np.array_equal(errors, here["errors"]):
            raise SystemExit(f"{name}: the in-process network's predictions differ from "
                             "mpiexec's")
        if sent.mean() != here["bytes"]:
            raise SystemExit(f"{name}: the in-process network counts {here['bytes']:.1f} "
                             f"bytes per node per step, mpiexec {sent.mean():.1f}")
        print(f"{name}: in-process network = mpiexec -n 4 (squared errors bit for bit, "
              "bytes sent)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--study", default="torus16,random16,co2-16,hk16,sunspots16")
    parser.add_argument("--variants", default="dpf recommended,pf,cpf (oracle),dpf s=3")
    parser.add_argument("--jobs", type=int, default=2, help="processes in parallel")
    parser.add_argument("--out", default=str(RESULTS / "network_size"))
    parser.add_argument("--check-mpi", action="store_true",
                        help="only compare the in-process network with mpiexec")
    parser.add_argument("--report", action="store_true", help="only print the stored tables")
    parser.add_argument("--simulate", metavar="JOB.json",
                        help="run one job {document, settings, nodes} in process and write "
                             "its numbers to JOB.result.json (benchmarks/scale.py uses it)")
    args = parser.parse_args()
    if args.simulate:
        simulate_job(Path(args.simulate))
        return
    if args.check_mpi:  # only the check, not a study
        check_mpi()
        return
    if args.report:
        report(Path(args.out))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    # seed by seed, so that a study cut short has every variant for its first seeds
    jobs = [(study, variant, seed) for seed in seeds for study in args.study.split(",")
            for variant in args.variants.split(",")]
    out = Path(args.out)
    stored = out / "network_size.json"
    cells = {}
    if stored.exists():  # earlier invocations' cells: this one adds the missing seeds
        for row in json.loads(stored.read_text())["rows"]:
            cells[row["study"], row["variant"]] = row
    jobs = [job for job in jobs if job[2] not in cells.get(job[:2], {}).get("seeds", ())
            and not (job[0] in SAME_DATA and job[1] in GRAPH_FREE)]
    with ProcessPoolExecutor(args.jobs) as pool:
        for future in as_completed([pool.submit(run_one, job) for job in jobs]):
            study, variant, seed, result = future.result()
            print(f"{study:>10} {variant:>18} seed {seed}: final MSE "
                  f"{result['final_mse']:.5f}, ESS/N {result['ess']:.3f}", flush=True)
            cell = cells.setdefault((study, variant), {
                "study": study, "variant": variant, "seeds": [], "final_mse": [], "mse": [],
                "ess": [], "bytes": [], "walk_steps": result.get("walk_steps", 0)})
            cell["seeds"].append(seed)
            for key in ("final_mse", "mse", "ess", "bytes"):
                cell[key].append(result[key])
            write(out, cells)
    report(out)


def simulate_job(job: Path) -> None:
    """:func:`simulate` of a job file; a configuration the learners refuse exits 2 with
    its one-line reason, as ``mcdpf train`` does."""
    from mcdpf.errors import InputError

    spec = json.loads(job.read_text())
    try:
        result = simulate(spec["settings"], spec["nodes"], spec["document"])
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    result.pop("errors")
    job.with_suffix(".result.json").write_text(json.dumps(result) + "\n")


def write(out: Path, cells: dict) -> None:
    """The tables (Markdown) and every number (JSON) of the cells so far."""
    cells = dict(cells)
    for study, source in SAME_DATA.items():
        for variant in GRAPH_FREE:
            if (source, variant) in cells and (study, variant) not in cells:
                cells[study, variant] = {**cells[source, variant], "study": study,
                                         "same_as": source}
    rows = sorted(cells.values(), key=lambda row: (list(STUDIES).index(row["study"]),
                                                   list(VARIANTS).index(row["variant"])))
    table = markdown(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "network_size.md").write_text(table + "\n")
    payload = {"variants": VARIANTS, "common": COMMON, "rows": rows,
               "studies": {name: {"nodes": nodes, "overrides": overrides, "role": role}
                           for name, (nodes, overrides, role) in STUDIES.items()}}
    (out / "network_size.json").write_text(json.dumps(payload, indent=1) + "\n")


def report(out: Path) -> None:
    """Print the stored tables and record the machine in the JSON."""
    print((out / "network_size.md").read_text())
    write_json(out / "network_size.json", json.loads((out / "network_size.json").read_text()))


if __name__ == "__main__":
    main()
