"""Measurements for the cluster performance model (this machine's constants).

Compute constants in this process (CPU time of this thread, :func:`compute_constants`);
MPI constants and the K = 2 validation runs under ``mpiexec -n 2``
(:func:`mpi_constants_worker`, :func:`validation_worker`, started by :func:`run_mpi` as
``benchmarks/cluster_model.py --mpi-constants-worker FILE`` and ``--validation-worker
FILE``); the K = 1 validation runs in this process (:func:`measure_k1`). Learners are
:func:`common.learner_for`'s, at each :class:`~cluster.model.Scenario`'s size.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import best_time, config_for, learner_for, mpiexec

from .model import SCENARIOS, STAMP_BYTES, Scenario, fit_line, robust_std

CLOCK = time.thread_time
ROUNDS = 3
SCRIPT = Path(__file__).resolve().parents[1] / "cluster_model.py"


class Loopback:
    """A neighbourhood whose movers come straight back: dpf's walk without MPI."""

    degree = 1

    def start_exchange(self, records, counts, allocate=None, stamp=None):
        return records

    @staticmethod
    def finish_exchange(pending):
        return pending, 0, pending.shape[0]

    def free(self):
        pass


def scenario_config(algorithm, sc: Scenario, nodes):
    """:func:`common.config_for` at the scenario's size and walk."""
    return config_for(algorithm, sc.n, sc.particles, nodes=nodes, walk=sc.walk,
                      walk_steps=sc.walk_steps)


def scenario_learner(algorithm, sc: Scenario, nodes=1, comm=None, neighbourhood=None,
                     particles=None):
    """``(learner, model, neighbourhood)`` of :func:`common.learner_for` for a scenario."""
    learner, model = learner_for(algorithm, sc.n, sc.p, particles or sc.particles, "float64",
                                 comm=comm, nodes=nodes, walk=sc.walk,
                                 walk_steps=sc.walk_steps, neighbourhood=neighbourhood)
    return learner, model, learner.benchmark_neighbourhood


def sequence(sc: Scenario, seed=0):
    return np.random.default_rng(seed).standard_normal((sc.m, sc.p))


def step_times(learner, columns, steps, warm=3, clock=CLOCK):
    """Seconds of every whole predict + learn step after ``warm`` steps."""
    state = learner.initial_state()
    times = []
    for t in range(warm + steps):
        started = clock()
        _, pending = learner.predict(state, t, columns)
        state, _ = learner.learn(state, pending, 0.1)
        if t >= warm:
            times.append(clock() - started)
    return np.array(times), state


def spread(function, repeats, clock=CLOCK, target=0.01):
    """``best_time`` taken ``repeats`` times: min, median, max seconds per call."""
    samples = [best_time(function, repeats=1, clock=clock, target_seconds=target)
               for _ in range(repeats)]
    return {"min": float(np.min(samples)), "median": float(np.median(samples)),
            "max": float(np.max(samples))}



# ====================================================================== compute constants
def compute_constants(sc: Scenario, quick: bool) -> dict:
    """Every compute constant of one scenario (CPU time of this thread)."""
    from mcdpf.kernels import (
        gather_add_normal,
        lstm_mean_states,
        normal_rows,
        stream_key,
        warm_up,
    )

    warm_up(np.float64)
    repeats = 3 if quick else 9
    steps = 6 if quick else 25
    count, rng = sc.particles, np.random.default_rng(0)
    theta = 0.3 * rng.standard_normal((count, sc.n_theta))
    columns = sequence(sc)
    start = np.zeros((count, sc.n_carry))
    out = np.empty_like(start)
    kernel = spread(lambda: lstm_mean_states(theta, columns, start, sc.n, out), repeats)
    source, noisy = np.zeros_like(theta), np.empty_like(theta)
    ancestors = ids = np.arange(count, dtype=np.int64)
    noise = spread(lambda: gather_add_normal(source, ancestors, ids, 1, stream_key(1, 2), 0.02,
                                             out=noisy), repeats)
    state = np.empty((count, sc.n_carry))
    state_noise = spread(lambda: normal_rows(state, ids, 1, stream_key(1, 3), 0.02), repeats)
    c = {"t_col": kernel["min"] / (count * sc.m),
         "t_normal": noise["min"] / (count * sc.n_theta),
         "t_state": state_noise["min"] / (count * sc.n_carry),
         "spread": {"t_col": {k: v / (count * sc.m) for k, v in kernel.items()},
                    "t_normal": {k: v / (count * sc.n_theta) for k, v in noise.items()},
                    "t_state": {k: v / (count * sc.n_carry) for k, v in state_noise.items()}}}

    def own(n_particles, streams=1):
        return n_particles * (streams * sc.m * c["t_col"] + sc.n_theta * c["t_normal"]
                              + streams * sc.n_carry * c["t_state"])

    # pf: overhead beyond kernel + noise, a0 + a1 N (fitted over N)
    counts = [count // 2, count, 2 * count] if not quick else [count // 2, count]
    pf_rows, sigma = [], None
    for n_particles in counts:
        learner, *_ = scenario_learner("pf", sc, particles=n_particles)
        times, _ = step_times(learner, columns, steps)
        pf_rows.append({"N": n_particles, "step": float(np.min(times)),
                        "median": float(np.median(times)), "max": float(np.max(times)),
                        "residual": float(np.min(times)) - own(n_particles)})
        if n_particles == count:
            sigma = robust_std(times)
    c["pf_a0"], c["pf_a1"] = fit_line([r["N"] for r in pf_rows], [r["residual"] for r in pf_rows])
    c["pf_rows"] = pf_rows
    c["sigma_step"] = sigma

    def pf_overhead(n_particles):
        return c["pf_a0"] + c["pf_a1"] * n_particles

    # dpf at K = 1 (nothing moves): per walk step w0 + w1 N
    s = sc.walk_steps
    dpf_rows = []
    for n_particles in counts:
        from mpi4py import MPI

        learner, *_, hood = scenario_learner("dpf", sc, comm=MPI.COMM_SELF,
                                             particles=n_particles)
        times, _ = step_times(learner, columns, steps)
        hood.free()
        pf_time = next(r["step"] for r in pf_rows if r["N"] == n_particles)
        dpf_rows.append({"N": n_particles, "step": float(np.min(times)),
                         "median": float(np.median(times)),
                         "per_walk_step": (float(np.min(times)) - pf_time) / s})
    c["walk_w0"], c["walk_w1"] = fit_line([r["N"] for r in dpf_rows],
                                          [r["per_walk_step"] for r in dpf_rows])
    c["dpf_k1_rows"] = dpf_rows

    # dpf on a loopback neighbourhood (movers come straight back): w_move per moved particle
    from mcdpf.topology import named_topology

    move = 1.0 - named_topology("ring", 2, walk=sc.walk).transition[0, 0]
    loop_rows = []
    for n_particles in counts:
        learner, *_ = scenario_learner("dpf", sc, nodes=2, neighbourhood=Loopback(),
                                       particles=n_particles)
        times, _ = step_times(learner, columns, steps)
        pf_time = next(r["step"] for r in pf_rows if r["N"] == n_particles)
        moved = n_particles * move
        score = moved * (sc.m * c["t_col"] + sc.n_carry * c["t_state"])
        extra = (float(np.min(times)) - pf_time) / s - score \
            - (c["walk_w0"] + c["walk_w1"] * n_particles)
        loop_rows.append({"N": n_particles, "step": float(np.min(times)),
                          "median": float(np.median(times)), "moved_per_walk_step": moved,
                          "w_move": extra / moved})
    c["walk_w_move"] = float(np.median([r["w_move"] for r in loop_rows]))
    c["dpf_loopback_rows"] = loop_rows
    c["loopback_move_probability"] = move

    # rpf: per extra stream (a particle filter over b copies of the node's stream)
    from mcdpf.filters import ParticleFilter, StreamPlan
    from mcdpf.models import build_model

    config = scenario_config("pf", sc, 1)
    model = build_model(config.model, sc.p)
    stream_rows = []
    for streams in ((1, 2, 4) if quick else (1, 2, 4, 8)):
        def measurements(step, cols, target, b=streams):
            return [(cols, target)] * b, 0

        plan = StreamPlan(tuple(range(streams)), own=0, measurements=measurements)
        learner = ParticleFilter(model, config.filter, config.run.seed, 0, count, plan)
        times, _ = step_times(learner, columns, steps)
        stream_rows.append({"streams": streams, "step": float(np.min(times)),
                            "residual": float(np.min(times)) - own(count, streams)
                            - pf_overhead(count)})
    _, c["c_stream"] = fit_line([r["streams"] for r in stream_rows],
                                [r["residual"] for r in stream_rows])
    c["rpf_stream_rows"] = stream_rows
    c["c_relay"] = relay_cost(sc, model, repeats)

    # dekf: linearise, EKF update, P += qI, the rest of a step (K = 1, degree 0)
    from mpi4py import MPI

    learner, model, hood = scenario_learner("dekf", sc, comm=MPI.COMM_SELF)
    times, state = step_times(learner, columns, steps)
    hood.free()
    estimate, carry = state.estimate, state.carry
    covariance = {name: array.copy() for name, array in state.covariance.items()}
    pending = learner.linearise(0, estimate, carry, columns)
    lin = spread(lambda: learner.linearise(0, estimate, carry, columns), repeats)

    def one_update():
        with learner.form.updates(covariance) as updates:  # its downdate applied at the end
            learner.measurement_update(estimate, updates, 0.1, pending.prediction,
                                       pending.gradient)

    upd = spread(one_update, repeats)
    diag = spread(lambda: learner.time_update(covariance), repeats)
    c["dekf_linearise"], c["dekf_update"], c["dekf_time_update"] = \
        lin["min"], upd["min"], diag["min"]
    # the bare kernels the learner calls (for reference: the model uses the learner's times)
    from mcdpf.kernels import gaussian_update, lstm_prediction_gradient

    theta = estimate.astype(np.float64)
    means, jacobian = estimate[None, :].copy(), np.ones((1, sc.n_theta))
    c["kernel_gradient"] = spread(lambda: lstm_prediction_gradient(theta, columns, carry, sc.n),
                                  repeats)["min"]
    c["kernel_gaussian_update"] = spread(lambda: gaussian_update(
        means, covariance["covariance"], jacobian, np.zeros(1), 0.0, np.ones(1)),
        repeats)["min"]
    c["dekf_k1_step"] = float(np.min(times))
    c["dekf_fixed"] = c["dekf_k1_step"] - lin["min"] - upd["min"] - diag["min"]
    c["spread"].update({"dekf_linearise": lin, "dekf_update": upd, "dekf_time_update": diag})
    return c


def relay_cost(sc: Scenario, model, repeats) -> float:
    """Seconds per relayed measurement: ``Relay`` handling M arrivals on a fake exchange."""
    from types import SimpleNamespace

    from mcdpf.rpf import Relay, pack

    arrivals = 32
    columns = sequence(sc)
    buffers = [np.concatenate([pack(o, columns, 0.1) for o in range(1, arrivals + 1)])]
    plan = SimpleNamespace(node=0, ball=list(range(arrivals + 1)), forwards=[[[0]]])

    class Fake:
        def exchange_vectors(self, step, outgoing):
            return buffers, 0

    relay = Relay(plan, Fake(), model)
    seconds = spread(lambda: relay(0, columns, 0.1), repeats)["min"]
    return seconds / arrivals



# ====================================================================== MPI constants
SIZES = (8, 64, 512, 4096, 32768, 262144, 2097152, 4194304)
QUICK_SIZES = (8, 512, 32768, 262144)


def timed_loop(comm, function, seconds_target, repeats):
    """Min over ``repeats`` batches of the mean seconds per call (both ranks in step)."""
    function()
    comm.Barrier()
    started = time.perf_counter()
    function()
    once = comm.allreduce(time.perf_counter() - started, op=_max())
    inner = max(3, min(20000, int(seconds_target / max(once, 1e-7))))
    best = float("inf")
    for _ in range(repeats):
        comm.Barrier()
        started = time.perf_counter()
        for _ in range(inner):
            function()
        best = min(best, (time.perf_counter() - started) / inner)
    return comm.allreduce(best, op=_max())


def _max():
    from mpi4py import MPI

    return MPI.MAX


def mpi_constants_worker(output, quick):
    """Under ``mpiexec -n 2``: ping-pong, neighbour exchanges, mcdpf's wrappers."""
    from mpi4py import MPI

    from mcdpf.allocator import keep_freed_memory
    from mcdpf.comm import Neighbourhood

    keep_freed_memory()
    comm = MPI.COMM_WORLD
    other = 1 - comm.rank
    repeats, target = (3, 0.005) if quick else (7, 0.02)
    sizes = QUICK_SIZES if quick else SIZES
    result = {"ping_pong": [], "neighbor_alltoallv": []}
    for size in sizes:
        send, recv = np.zeros(size, np.uint8), np.empty(size, np.uint8)

        def ping_pong(send=send, recv=recv):
            if comm.rank == 0:
                comm.Send(send, other)
                comm.Recv(recv, other)
            else:
                comm.Recv(recv, other)
                comm.Send(send, other)

        result["ping_pong"].append(
            {"bytes": size, "seconds": timed_loop(comm, ping_pong, target, repeats) / 2})
    graph = comm.Create_dist_graph_adjacent([other], [other], reorder=False)
    for size in sizes:
        send, recv = np.zeros(size, np.uint8), np.empty(size, np.uint8)
        spec = ([send, ([size], [0]), MPI.BYTE], [recv, ([size], [0]), MPI.BYTE])
        result["neighbor_alltoallv"].append(
            {"bytes": size, "seconds": timed_loop(comm, lambda s=spec: graph.Neighbor_alltoallv(
                *s), target, repeats)})
    # the per-call cost of a neighbourhood collective (empty graph, this rank alone)
    empty = MPI.COMM_SELF.Create_dist_graph_adjacent([], [], reorder=False)
    nothing = np.zeros(0, np.int64)
    result["call_seconds"] = best_time(lambda: empty.Neighbor_alltoall(nothing, nothing),
                                       repeats=repeats, target_seconds=target)
    empty.Free()
    # each extra neighbour: the other rank listed r times (a multigraph)
    extra = []
    for times_listed in (1, 2, 4):
        try:
            hood = Neighbourhood(comm, [other] * times_listed)
        except MPI.Exception:
            break
        counts = np.zeros(times_listed, np.int64)
        extra.append({"neighbours": times_listed,
                      "handshake": timed_loop(comm, lambda h=hood, c=counts: h.handshake(1, c),
                                              target, repeats)})
        hood.free()
    result["handshake_by_neighbours"] = extra
    # mcdpf's wrappers against the bare calls, at each scenario's K = 2 sizes
    hood = Neighbourhood(comm, [other])
    stamps, got = np.zeros((1, 2), np.int64), np.zeros((1, 2), np.int64)
    wrappers = {}
    for sc in SCENARIOS:
        from mcdpf.dpf import wire_record_dtype
        from mcdpf.models import build_model

        model = build_model(scenario_config("dpf", sc, 2).model, sc.p)
        records_count = int(round(sc.particles * _move_probability(sc)))
        records = np.zeros(records_count, dtype=wire_record_dtype(model))
        received = np.empty_like(records)
        record_type = MPI.BYTE.Create_contiguous(records.dtype.itemsize).Commit()
        counts = np.array([records_count])

        def bare_dpf(records=records, received=received, record_type=record_type,
                     count=records_count):
            graph.Neighbor_alltoall(stamps, got)
            graph.Ineighbor_alltoallv([records.view(np.uint8), ([count], [0]), record_type],
                                      [received.view(np.uint8), ([count], [0]), record_type]
                                      ).Wait()

        vector = np.zeros(sc.relay_bytes // 8)
        vector_in = np.empty_like(vector)
        measurement = np.zeros(sc.dekf_measurement_bytes // 8)
        measurement_in = np.empty_like(measurement)
        estimate = np.zeros(sc.n_theta)
        estimate_in = np.empty((1, sc.n_theta))

        def bare_rpf(vector=vector, vector_in=vector_in):
            graph.Neighbor_alltoall(stamps, got)
            graph.Neighbor_alltoallv([vector, ([vector.size], [0]), MPI.DOUBLE],
                                     [vector_in, ([vector.size], [0]), MPI.DOUBLE])

        def bare_dekf(measurement=measurement, measurement_in=measurement_in,
                      estimate=estimate, estimate_in=estimate_in):
            graph.Neighbor_alltoall(stamps, got)
            graph.Neighbor_allgatherv([measurement, MPI.DOUBLE],
                                      [measurement_in, ([measurement.size], [0]), MPI.DOUBLE])
            graph.Neighbor_allgather(estimate, estimate_in)

        def dekf_wrapper(measurement=measurement, estimate=estimate):
            hood.allgatherv(measurement, 1)
            hood.allgather(estimate)

        wrappers[sc.key] = {
            "dpf_exchange": {
                "bytes": [STAMP_BYTES, records.nbytes],
                "wrapper": timed_loop(comm, lambda r=records, c=counts: hood.exchange(
                    r, c, stamp=1), target, repeats),
                "bare": timed_loop(comm, bare_dpf, target, repeats)},
            "rpf_round": {
                "bytes": [STAMP_BYTES, vector.nbytes],
                "wrapper": timed_loop(comm, lambda v=vector: hood.exchange_vectors(1, [v]),
                                      target, repeats),
                "bare": timed_loop(comm, bare_rpf, target, repeats)},
            "dekf_exchange": {
                "bytes": [STAMP_BYTES, measurement.nbytes, estimate.nbytes],
                "wrapper": timed_loop(comm, dekf_wrapper, target, repeats),
                "bare": timed_loop(comm, bare_dekf, target, repeats)},
        }
        record_type.Free()
    result["wrappers"] = wrappers
    hood.free()
    graph.Free()
    if comm.rank == 0:
        Path(output).write_text(json.dumps(result))


def _move_probability(sc: Scenario) -> float:
    from mcdpf.topology import named_topology

    return 1.0 - float(named_topology("ring", 2, walk=sc.walk).transition[0, 0])


def control_learner(algorithm, sc: Scenario):
    """The K = 2 step's local work without MPI: dpf on the loopback; rpf, dekf at K = 1."""
    from mpi4py import MPI

    if algorithm == "dpf":
        hood = Loopback()
        learner, *_ = scenario_learner("dpf", sc, nodes=2, neighbourhood=hood)
        return learner, hood
    learner, _, hood = scenario_learner(algorithm, sc, comm=MPI.COMM_SELF)
    return learner, hood


def validation_worker(output, quick):
    """Under ``mpiexec -n 2``: real dpf, rpf, dekf steps on a 2-node ring (wall time)."""
    from mpi4py import MPI

    from mcdpf.allocator import keep_freed_memory
    from mcdpf.kernels import warm_up

    keep_freed_memory()
    comm = MPI.COMM_WORLD
    warm_up(np.float64)
    result = {}
    for sc in SCENARIOS:
        steps = (8 if quick else 40) if sc.key == "papers" else (4 if quick else 15)
        columns = sequence(sc, seed=comm.rank)
        for algorithm in ("dpf", "rpf", "dekf"):
            # control: the local work on both ranks at once, without communication (dpf
            # on the loopback, rpf and dekf at K = 1): what this shared machine (2 cores,
            # one memory system) does to two ranks computing side by side
            alone, hood = control_learner(algorithm, sc)
            comm.Barrier()
            times, _ = step_times(alone, columns, steps, clock=time.perf_counter)
            hood.free()
            result[f"{sc.key}/{algorithm}/corun"] = np.array(comm.allgather(
                times.tolist())).max(axis=0).tolist()
            learner, _, hood = scenario_learner(algorithm, sc, nodes=2, comm=comm)
            comm.Barrier()
            times, _ = step_times(learner, columns, steps, clock=time.perf_counter)
            hood.free()
            both = np.array(comm.allgather(times.tolist())).max(axis=0)
            result[f"{sc.key}/{algorithm}"] = both.tolist()
    if comm.rank == 0:
        Path(output).write_text(json.dumps(result))


def run_mpi(mode, quick):
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / f"{mode}.json"
        command = [mpiexec(), "-n", "2", sys.executable, str(SCRIPT), f"--{mode}-worker",
                   str(output)] + (["--quick"] if quick else [])
        subprocess.run(command, check=True, timeout=1800)
        return json.loads(output.read_text())


def least_disturbed(runs: list[dict]) -> dict:
    """Per key, the per-step times of the run with the lowest median."""
    return {key: min((run[key] for run in runs), key=np.median) for key in runs[0]}


def min_over_runs(runs: list[dict]) -> dict:
    """Every MPI time as its minimum over separate ``mpiexec`` runs (the machine drifts)."""
    best = json.loads(json.dumps(runs[0]))
    for run in runs[1:]:
        for key in ("ping_pong", "neighbor_alltoallv"):
            for row, other in zip(best[key], run[key], strict=True):
                row["seconds"] = min(row["seconds"], other["seconds"])
        best["call_seconds"] = min(best["call_seconds"], run["call_seconds"])
        for row, other in zip(best["handshake_by_neighbours"], run["handshake_by_neighbours"],
                              strict=False):
            row["handshake"] = min(row["handshake"], other["handshake"])
        for scenario, ops in best["wrappers"].items():
            for op, row in ops.items():
                for field in ("wrapper", "bare"):
                    row[field] = min(row[field], run["wrappers"][scenario][op][field])
    best["runs"] = [{"ping_pong_8B": r["ping_pong"][0]["seconds"],
                     "neighbor_alltoallv_8B": r["neighbor_alltoallv"][0]["seconds"],
                     "neighbor_alltoallv_max": r["neighbor_alltoallv"][-1]["seconds"]}
                    for r in runs]
    return best



def measure_k1(quick) -> dict:
    """Real dpf, rpf, dekf steps at K = 1 in this process (wall time, as the K = 2 run)."""
    from mpi4py import MPI

    result = {}
    for sc in SCENARIOS:
        steps = (8 if quick else 40) if sc.key == "papers" else (4 if quick else 15)
        for algorithm in ("dpf", "rpf", "dekf"):
            learner, _, hood = scenario_learner(algorithm, sc, comm=MPI.COMM_SELF)
            times, _ = step_times(learner, sequence(sc), steps, clock=time.perf_counter)
            hood.free()
            result[f"{sc.key}/{algorithm}"] = times.tolist()
            alone, hood = control_learner(algorithm, sc)
            times, _ = step_times(alone, sequence(sc), steps, clock=time.perf_counter)
            result[f"{sc.key}/{algorithm}/control"] = times.tolist()
    return result



def mpi_library() -> str:
    try:
        from mpi4py import MPI

        return MPI.Get_library_version().splitlines()[0].strip()
    except Exception:  # noqa: BLE001 - info only
        return "unknown MPI"


def measure(quick: bool) -> dict:
    """Every measurement: compute constants, then interleaved rounds of MPI and validation.

    The machine is shared and drifts: the MPI constants and the validation runs are taken
    in interleaved rounds, and each figure is its least disturbed round's.
    """
    from mcdpf.allocator import keep_freed_memory

    keep_freed_memory()
    started = time.perf_counter()
    load = os.getloadavg()[0]
    constants = {sc.key: compute_constants(sc, quick) for sc in SCENARIOS}
    rounds = []
    for _ in range(1 if quick else ROUNDS):
        rounds.append({"load_average": os.getloadavg()[0],
                       "mpi": run_mpi("mpi-constants", quick),
                       "K1": measure_k1(quick),
                       "K2": run_mpi("validation", quick)})
    return {"started": started, "load_average": load, "constants": constants,
            "rounds": rounds, "mpi": min_over_runs([r["mpi"] for r in rounds]),
            "K1": least_disturbed([r["K1"] for r in rounds]),
            "K2": least_disturbed([r["K2"] for r in rounds])}
