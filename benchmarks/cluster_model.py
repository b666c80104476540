"""Cluster performance model: step time and weak scaling of dpf, rpf and dekf at K = 1 .. 1024.

    python benchmarks/cluster_model.py [--quick] [--json benchmarks/results/cluster_model.json]
                                       [--plot benchmarks/results/cluster_model.png]

Predicts the per-step time of ``dpf``, ``rpf`` and ``dekf`` at K = 1, 2, 4, 16, 64, 256,
1024 nodes (one MPI rank per network node, one rank per core) on the ``ring``, 2-D
``torus`` and ``random`` graphs of :func:`mcdpf.topology.named_topology`, from constants
measured on this machine and documented interconnect figures, and the weak-scaling
efficiency ``E(K) = T(1) / T(K)`` (same work per node). Two model sizes:

- **papers' scale**: n = 2, p = 2, m = 2, N = 80, s = 3, float64, the papers' simple walk
  (P_move = 1);
- **n = 16**: n = 16, p = 4, m = 10, N = 1000, s = 3, float64, the lazy walk (P_move = 0.5).

What is measured here (printed, and written to the JSON with its spread):

- ``t_col``: seconds per particle-column of the LSTM forward (``lstm_mean_states``);
- ``t_normal``: seconds per normal of the fused gather + noise kernel (``gather_add_normal``,
  the parameter noise, rows of n_theta) and of ``normal_rows`` on rows of 2n (the state
  noise, regenerated for every arrival);
- the pf step's overhead beyond kernel + noise (``a0 + a1 N``: fitted over N), dpf's walk
  overhead per walk step (``w0 + w1 N_held + w_move N_moved``: dpf at K = 1, and dpf on a
  loopback neighbourhood whose movers come straight back, i.e. the walk's local work
  without MPI), rpf's overhead per extra stream (a particle filter over b copies of the
  node's stream) and per relayed measurement (``Relay`` on a fake neighbourhood);
- dekf: one linearisation (``lstm_prediction_gradient`` through the learner), one EKF
  update (``gaussian_update`` through the learner), ``P += qI``, and the rest of a step;
- MPI (``mpiexec -n 2``): ping-pong and ``Neighbor_alltoallv`` of 8 B .. 4 MB, each fitted
  ``t = latency + bytes / bandwidth``; the per-call cost of a neighbourhood collective on
  an empty graph; the cost of each extra neighbour (graphs with the other rank listed
  r = 1, 2, 4 times); and mcdpf's own exchange wrappers (``Neighbourhood.exchange``,
  ``exchange_vectors``, ``allgatherv`` + ``allgather``), whose time beyond the modelled
  transport is their software cost.

Compute constants are CPU time of this thread (``time.thread_time``, minimum over repeats):
the machine is shared, and a cluster core runs one rank. MPI constants are wall time.

Model (per step and node ``k`` with degree ``d_k``; ``e(n)`` is the expected maximum of n
standard normals; the step time reported is the maximum over nodes, because neighbour
exchanges couple each node to its neighbours and, transitively over steps, the slowest node
paces the network):

- **dpf**: own work ``N m t_col + N n_theta t_normal + N 2n t_state + a0 + a1 N_held``;
  then ``s`` walk steps, each ``w0 + w1 h + w_move h P + a (m t_col + 2n t_state)`` with
  ``h`` the expected particles held (``h <- h A``, from N at every node; on irregular graphs
  loads follow the walk) and ``a`` the expected arrivals, plus their fluctuation
  ``sqrt(a) e(d_k + 1)`` (Poisson arrivals; a node waits for the busiest neighbour), then
  one exchange: a stamped handshake (16 B per neighbour) and the records (``16 + (n_theta +
  2n) 8`` B each, ``h_k A[k, j]`` to neighbour j). The walk segment is the maximum over
  the node's closed neighbourhood (it must wait for its neighbours' records).
- **rpf**: ``N |ball| m t_col + N n_theta t_normal + N 2n |ball| t_state + a0 + a1 N +
  (|ball| - 1) c_stream + c_relay (measurements received)``; communication
  ``min(hops, diameter)`` rounds (hops default = diameter), each a handshake +
  ``Neighbor_alltoallv`` of packed measurements (``(4 + m p) 8`` B each) counted from the
  relay plan of the actual graph (the same rule as :class:`mcdpf.rpf.RelayPlan`, checked
  against it at K = 16). With the default every node holds every node's data: the compute
  grows like K, it cannot weak-scale; bounded hops (1, 2) are reported beside it.
- **dekf**: ``fixed + (P += qI) + (1 + d_k)(linearise + EKF update)``, the maximum over the
  closed neighbourhood; communication a handshake + ``Neighbor_allgatherv`` of the
  measurement (``2 + 2n + m p`` doubles) + ``Neighbor_allgather`` of the estimate
  (``n_theta`` doubles).
- **An exchange** (``c`` sequential MPI calls): software ``s_op`` (measured locally: wrapper
  time minus its modelled local transport) ``+ (d_k - 1) c_nbr c`` plus, per call, the
  transport ``max(shm, net)``: ``shm = alpha_shm + bytes to on-host neighbours / beta_shm``
  (this machine's MPI, alpha_shm = fitted latency minus the per-call cost), ``net =
  alpha_net + bytes through the host's NIC / beta_net`` (documented figures). Ranks are
  placed in blocks of ``ranks_per_host`` consecutive ranks (default 64, one NIC per host,
  full duplex: the NIC term uses the larger of the host's off-host bytes out and in); with
  64 ranks per host K <= 64 never leaves the host. ``ranks_per_host = 1`` is reported as
  a sensitivity case.
- **Jitter**: ``sigma e(d_k + 1)`` per step, sigma the robust (MAD) standard deviation of
  this machine's pf step CPU time: neighbour-only coupling makes a node wait for the
  slowest of its closed neighbourhood, not of all K (a global barrier would give about
  ``sigma sqrt(2 ln K)``, recorded for comparison).

Assumptions not modelled: network congestion beyond the NIC (full bisection), shared-memory
bandwidth contention between the ranks of a host, MPI eager/rendezvous switches (Hockney
``alpha + bytes / beta`` throughout), asynchronous progress (MPICH progresses only inside
calls: no overlap, as measured in the README), a different CPU on the cluster (all compute
constants are this machine's).

Validation: the model with this machine's MPI constants (both ranks on one host) against
real learners (as in ``benchmarks/step.py``) at K = 1 (one process) and K = 2
(``mpiexec -n 2``, a 2-node ring), printed as predicted, measured and measured/predicted.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np  # noqa: E402  (common pins the thread count first)
from common import RESULTS, best_time, mpiexec, table, write_json

CLOCK = time.thread_time
KS = (1, 2, 4, 16, 64, 256, 1024)
QUICK_KS = (1, 2, 4, 16, 64)
TOPOLOGIES = ("ring", "torus", "random")
RANKS_PER_HOST = 64
ROUNDS = 3
STAMP_BYTES = 16
RELAY_HEADER = 4


@dataclass(frozen=True)
class Scenario:
    """One model size: LSTM, sequence, particles, walk."""

    key: str
    label: str
    n: int
    p: int
    m: int
    particles: int
    walk_steps: int
    walk: str

    @property
    def n_theta(self) -> int:
        """LSTM parameters ``4n(n+p) + 5n``."""
        return 4 * self.n * (self.n + self.p) + 5 * self.n

    @property
    def n_carry(self) -> int:
        """Carried state ``[c_bar, y_bar]``."""
        return 2 * self.n

    @property
    def record_bytes(self) -> int:
        """A migrating particle: id, log-weight, theta, carried state (float64)."""
        return 16 + (self.n_theta + self.n_carry) * 8

    @property
    def relay_bytes(self) -> int:
        """A relayed measurement ``[origin, observed, m, d, X...]`` (float64)."""
        return (RELAY_HEADER + self.m * self.p) * 8

    @property
    def dekf_measurement_bytes(self) -> int:
        """dekf's shared measurement ``[observed, d, state..., X...]`` (float64)."""
        return (2 + self.n_carry + self.m * self.p) * 8

    @property
    def dekf_estimate_bytes(self) -> int:
        """dekf's shared intermediate estimate (float64)."""
        return self.n_theta * 8


SCENARIOS = (
    Scenario("papers", "papers' scale (n=2 p=2 m=2 N=80 s=3, simple walk)", 2, 2, 2, 80, 3,
             "simple"),
    Scenario("n16", "n=16 p=4 m=10 N=1000 s=3 (lazy walk)", 16, 4, 10, 1000, 3, "lazy"),
)


@dataclass(frozen=True)
class Interconnect:
    """Hockney parameters of a network (MPI-level one-way latency, bandwidth) and source."""

    name: str
    latency: float
    bandwidth: float
    source: str


INTERCONNECTS = (
    # Vendor page: Azure HBv3 (200 Gb/s HDR InfiniBand, non-blocking fat tree),
    # learn.microsoft.com/azure/virtual-machines/hbv3-performance, stored as
    # MicrosoftDocs/azure-docs articles/virtual-machines/hbv3-performance.md:
    # "RDMA latency & bandwidth: 1.2 microseconds (1-byte), 192 Gb/s (one-way)".
    Interconnect("InfiniBand HDR", 1.2e-6, 192e9 / 8,
                 "Azure HBv3 performance page (learn.microsoft.com/azure/virtual-machines/"
                 "hbv3-performance; MicrosoftDocs/azure-docs articles/virtual-machines/"
                 "hbv3-performance.md): RDMA latency 1.2 us (1 byte), 192 Gb/s one-way on "
                 "200 Gb/s HDR InfiniBand (hbv3-series.md)"),
    # Bandwidth: OLCF Frontier user guide (olcf/olcf-user-docs, systems/
    # frontier_user_guide.rst): "[4x] HPE Slingshot 200 Gbps (25 GB/s) NICs"; achieved
    # ~20 GB/s in fi_pingpong with HPE's CXI provider (ofiwg/libfabric issue #9802).
    # Latency: no Slingshot-11 MPI latency figure was found in the stored sources; 2 us is
    # the typical published figure quoted in the brief, an assumption here.
    Interconnect("HPE Slingshot-11", 2.0e-6, 20e9,
                 "bandwidth: 200 Gb/s (25 GB/s) per NIC, OLCF Frontier user guide "
                 "(olcf/olcf-user-docs systems/frontier_user_guide.rst); ~20 GB/s achieved "
                 "by fi_pingpong with HPE's libfabric CXI provider (ofiwg/libfabric issue "
                 "#9802), used here; latency 2 us: typical published figure, not found in "
                 "the stored sources (assumption)"),
    # Latency: MPICH over TCP, osu_latency small messages 24.6-26 us (gist
    # jfgrimm/3af692a5475bdd4ed836b5a18197a209, a 1 GbE-class link; TCP latency is
    # dominated by the kernel's stack, not the line rate). Bandwidth: 25 Gb/s line rate =
    # 3.125 GB/s; 2.5 GB/s (80 %) assumed for TCP.
    Interconnect("25 GbE TCP", 25e-6, 2.5e9,
                 "latency: MPICH over TCP osu_latency 24.6-26 us for small messages (gist "
                 "jfgrimm/3af692a5475bdd4ed836b5a18197a209, measured on a 1 GbE-class link; "
                 "TCP latency is the kernel stack's); bandwidth: 25 Gb/s line rate = "
                 "3.1 GB/s, 2.5 GB/s (80 %) assumed achievable over TCP"),
)


# ====================================================================== learners
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


def config_for(algorithm, sc: Scenario, nodes, topology="ring", hops=None, particles=None):
    """The configuration of ``benchmarks/step.py``'s learners, for a scenario."""
    from mcdpf.config import load_config

    table_ = {"topology": {"name": topology, "nodes": nodes, "walk": sc.walk},
              "model": {"n": sc.n, "dtype": "float64", "init_std": 0.3},
              "filter": {"particles": particles or sc.particles,
                         "central_particles": particles or sc.particles,
                         "walk_steps": sc.walk_steps},
              "run": {"algorithm": algorithm, "threads": 1}}
    if hops:
        table_["relay"] = {"hops": hops}
    return load_config(table_)


def learner_for(algorithm, sc: Scenario, nodes=1, comm=None, neighbourhood=None,
                particles=None, hops=None):
    """A learner at node 0 (or ``comm.rank``) of a ring of ``nodes`` (step.py's pattern)."""
    from mcdpf.algorithms import LearnerContext, build_learner
    from mcdpf.models import build_model
    from mcdpf.topology import named_topology

    config = config_for(algorithm, sc, nodes, particles=particles, hops=hops)
    model = build_model(config.model, sc.p)
    topology = named_topology("ring", nodes, walk=sc.walk)
    rank = 0 if comm is None else comm.rank
    if neighbourhood is None and comm is not None:
        from mcdpf.comm import Neighbourhood

        neighbourhood = Neighbourhood(comm, topology.neighbours(rank))
    learner = build_learner(algorithm, LearnerContext(config, model, topology, rank,
                                                      neighbourhood))
    return learner, model, config, neighbourhood


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


def robust_std(values) -> float:
    values = np.asarray(values)
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def fit_line(x, y):
    """Least-squares ``y = a + b x`` with ``a, b >= 0`` (costs): (a, b).

    A negative slope or intercept (noise on a shared machine) is set to zero and the other
    coefficient refitted alone.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    b, a = np.polyfit(x, y, 1)
    if b < 0:
        a, b = max(float(np.mean(y)), 0.0), 0.0
    elif a < 0:
        a, b = 0.0, max(float(np.dot(x, y) / np.dot(x, x)), 0.0)
    return float(a), float(b)


def fit_hockney(sizes, seconds):
    """``t = latency + bytes / bandwidth`` by least squares on relative errors."""
    sizes, seconds = np.asarray(sizes, dtype=float), np.asarray(seconds, dtype=float)
    design = np.stack([np.ones_like(sizes), sizes], axis=1) / seconds[:, None]
    (latency, per_byte), *_ = np.linalg.lstsq(design, np.ones_like(sizes), rcond=None)
    return {"latency": float(latency), "bandwidth": float(1.0 / per_byte) if per_byte > 0
            else float("inf")}


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
        learner, *_ = learner_for("pf", sc, particles=n_particles)
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

        learner, *_, hood = learner_for("dpf", sc, comm=MPI.COMM_SELF, particles=n_particles)
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
        learner, *_ = learner_for("dpf", sc, nodes=2, neighbourhood=Loopback(),
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

    config = config_for("pf", sc, 1)
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

    learner, model, _, hood = learner_for("dekf", sc, comm=MPI.COMM_SELF)
    times, state = step_times(learner, columns, steps)
    hood.free()
    estimate, carry = state.estimate, state.carry
    covariance = state.covariance.copy()
    pending = learner.linearise(0, estimate, carry, columns)
    lin = spread(lambda: learner.linearise(0, estimate, carry, columns), repeats)
    upd = spread(lambda: learner.measurement_update(estimate, covariance, 0.1,
                                                    pending.prediction, pending.gradient),
                 repeats)
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
        means, covariance[None], jacobian, np.zeros(1), 0.0, np.ones(1)), repeats)["min"]
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

        model = build_model(config_for("dpf", sc, 2).model, sc.p)
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
        learner, *_ = learner_for("dpf", sc, nodes=2, neighbourhood=hood)
        return learner, hood
    learner, _, _, hood = learner_for(algorithm, sc, comm=MPI.COMM_SELF)
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
            learner, _, _, hood = learner_for(algorithm, sc, nodes=2, comm=comm)
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
        command = [mpiexec(), "-n", "2", sys.executable, __file__, f"--{mode}-worker",
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


def local_network(mpi: dict) -> dict:
    """This machine's MPI as the model's constants (fits, per-call, per-neighbour)."""
    ping = fit_hockney([r["bytes"] for r in mpi["ping_pong"]],
                       [r["seconds"] for r in mpi["ping_pong"]])
    neighbour = fit_hockney([r["bytes"] for r in mpi["neighbor_alltoallv"]],
                            [r["seconds"] for r in mpi["neighbor_alltoallv"]])
    call = mpi["call_seconds"]
    rows = mpi["handshake_by_neighbours"]
    per_neighbour = fit_line([r["neighbours"] for r in rows], [r["handshake"] for r in rows])[1] \
        if len(rows) > 1 else 0.0
    shm = {"latency": max(neighbour["latency"] - call, 0.0),
           "bandwidth": neighbour["bandwidth"]}
    software = {}
    for key, ops in mpi["wrappers"].items():
        software[key] = {}
        for op, row in ops.items():
            transport = sum(shm["latency"] + b / shm["bandwidth"] for b in row["bytes"])
            software[key][op] = {"calls": len(row["bytes"]),
                                 "software": max(row["wrapper"] - transport, 0.0),
                                 "wrapper": row["wrapper"], "bare": row["bare"],
                                 "wrapper_overhead": row["wrapper"] - row["bare"]}
    return {"ping_pong": ping, "neighbor_alltoallv": neighbour, "call": call,
            "per_neighbour": max(per_neighbour, 0.0), "shm": shm, "software": software}


# ====================================================================== graphs
_DISTANCES: dict = {}


class Graph:
    """A topology's facts for the model: neighbours, directed edges, distances, placement."""

    def __init__(self, name: str, nodes: int, walk: str):
        from mcdpf.topology import named_topology

        self.topology = named_topology(name, nodes, walk=walk)
        self.name, self.nodes = name, nodes
        self.neighbours = [self.topology.neighbours(k) for k in range(nodes)]
        self.degree = np.array([len(a) for a in self.neighbours])
        self.src = np.repeat(np.arange(nodes), self.degree)
        self.dst = np.array([j for a in self.neighbours for j in a], dtype=np.int64)
        self.transition = np.asarray(self.topology.transition)
        self.closed = [[k, *a] for k, a in enumerate(self.neighbours)]
        self._relay: dict = {}

    @property
    def distances(self) -> np.ndarray:
        """All-pairs hop distances (cached per graph)."""
        key = (self.name, self.nodes)
        if key not in _DISTANCES:
            _DISTANCES[key] = np.array([self.topology.distances(k) for k in range(self.nodes)],
                                       dtype=np.int32)
        return _DISTANCES[key]

    @property
    def diameter(self) -> int:
        return int(self.distances.max())

    def neighbourhood_max(self, values: np.ndarray) -> np.ndarray:
        """``max_{j in N[k]} values[j]`` for every node."""
        return np.array([values[c].max() for c in self.closed])

    def relay_counts(self, hops: int) -> np.ndarray:
        """``counts[r, e]``: measurements sent along directed edge ``e`` in round ``r + 1``.

        The rule of :class:`mcdpf.rpf.RelayPlan`: a measurement of origin ``o`` reaches
        ``v`` (``1 <= d(o, v) <= rounds``) from the lowest-numbered neighbour of ``v`` one
        hop closer to ``o``, in round ``d(o, v)``.
        """
        if hops in self._relay:
            return self._relay[hops]
        rounds = min(hops, self.diameter)
        distance = self.distances
        width = max(int(self.degree.max()), 1)
        padded = np.full((self.nodes, width), -1, dtype=np.int64)
        for k, a in enumerate(self.neighbours):
            padded[k, :len(a)] = a
        edge_index = np.full((self.nodes, self.nodes), -1, dtype=np.int64)
        edge_index[self.src, self.dst] = np.arange(self.src.size)
        counts = np.zeros((rounds, self.src.size), dtype=np.int64)
        targets = np.arange(self.nodes)
        for origin in range(self.nodes):
            depth = distance[origin]
            reach = (depth >= 1) & (depth <= rounds)
            candidates = np.where(padded >= 0, distance[origin][np.maximum(padded, 0)], -9)
            is_parent = candidates == (depth[:, None] - 1)
            parent = np.where(is_parent, padded, self.nodes).min(axis=1)
            v = targets[reach]
            np.add.at(counts, (depth[v] - 1, edge_index[parent[v], v]), 1)
        self._relay[hops] = counts
        return counts

    def check_relay(self, hops: int) -> bool:
        """Whether :meth:`relay_counts` equals :class:`mcdpf.rpf.RelayPlan` at every node."""
        from mcdpf.rpf import RelayPlan

        counts = self.relay_counts(hops)
        for node in range(self.nodes):
            plan = RelayPlan(self.topology, node, hops)
            for r, forwards in enumerate(plan.forwards):
                for position, origins in enumerate(forwards):
                    e = int(np.flatnonzero((self.src == node)
                                           & (self.dst == plan.neighbours[position]))[0])
                    if counts[r, e] != len(origins):
                        return False
        return True


_GRAPHS: dict = {}


def graph(name, nodes, walk) -> Graph:
    key = (name, nodes, walk)
    if key not in _GRAPHS:
        _GRAPHS[key] = Graph(name, nodes, walk)
    return _GRAPHS[key]


_EMAX: dict = {}


def expected_max_normal(count: int) -> float:
    """``E[max of count iid N(0, 1)]`` (0 for count <= 1)."""
    if count <= 1:
        return 0.0
    if count not in _EMAX:
        x = np.linspace(-9.0, 9.0, 6001)
        phi = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1.0 + np.array([math.erf(v / math.sqrt(2)) for v in x]))
        _EMAX[count] = float(np.trapezoid(x * count * phi * cdf ** (count - 1), x))
    return _EMAX[count]


# ====================================================================== the model
@dataclass(frozen=True)
class Network:
    """Where messages go: this host's MPI for on-host neighbours, the interconnect beyond."""

    name: str
    net_latency: float
    net_bandwidth: float
    shm_latency: float
    shm_bandwidth: float
    per_neighbour: float
    ranks_per_host: int


class ClusterModel:
    """Per-step time of dpf, rpf and dekf at every node of a graph, from the constants.

    Parameters
    ----------
    scenario
        The model size.
    constants
        :func:`compute_constants` of the scenario.
    software
        Software seconds per exchange kind (:func:`local_network` ``software[scenario]``).
    network
        The :class:`Network`.
    """

    def __init__(self, scenario: Scenario, constants: dict, software: dict, network: Network):
        self.sc, self.c, self.software, self.net = scenario, constants, software, network

    # ------------------------------------------------------------------ communication
    def transport(self, g: Graph, edge_bytes: np.ndarray) -> np.ndarray:
        """One MPI call's transport time at every node: ``max(shm, net)``."""
        net, k = self.net, g.nodes
        host = np.arange(k) // net.ranks_per_host
        remote = host[g.src] != host[g.dst]
        local_out = np.bincount(g.src[~remote], edge_bytes[~remote], minlength=k)
        local_in = np.bincount(g.dst[~remote], edge_bytes[~remote], minlength=k)
        has_local = np.bincount(g.src[~remote], minlength=k) > 0
        has_remote = np.bincount(g.src[remote], minlength=k) > 0
        hosts = host.max() + 1
        nic_out = np.bincount(host[g.src[remote]], edge_bytes[remote], minlength=hosts)
        nic_in = np.bincount(host[g.dst[remote]], edge_bytes[remote], minlength=hosts)
        nic = np.maximum(nic_out, nic_in)[host]
        shm = np.where(has_local, net.shm_latency
                       + np.maximum(local_out, local_in) / net.shm_bandwidth, 0.0)
        wire = np.where(has_remote, net.net_latency + nic / net.net_bandwidth, 0.0)
        return np.maximum(shm, wire)

    def exchange(self, g: Graph, kind: str, calls: list[np.ndarray]) -> np.ndarray:
        """An exchange of sequential calls (per-edge bytes each): software + transports."""
        software = self.software[kind]["software"]
        extra = np.maximum(g.degree - 1, 0) * self.net.per_neighbour * len(calls)
        total = software + extra + sum(self.transport(g, b) for b in calls)
        return np.where(g.degree > 0, total, 0.0)

    def jitter(self, g: Graph) -> np.ndarray:
        sigma = self.c["sigma_step"]
        return np.array([sigma * expected_max_normal(len(c)) for c in g.closed])

    # ------------------------------------------------------------------ algorithms
    def own(self, particles, streams=1):
        sc, c = self.sc, self.c
        return particles * (streams * sc.m * c["t_col"] + sc.n_theta * c["t_normal"]
                            + streams * sc.n_carry * c["t_state"])

    def dpf(self, g: Graph) -> dict:
        sc, c = self.sc, self.c
        a = g.transition
        held = np.full(g.nodes, float(sc.particles))
        per_arrival = sc.m * c["t_col"] + sc.n_carry * c["t_state"]
        walk = np.zeros(g.nodes)
        comm = np.zeros(g.nodes)
        stamps = np.full(g.src.size, float(STAMP_BYTES))
        for _ in range(sc.walk_steps):
            stay = held * np.diag(a)
            after = held @ a
            arrivals = after - stay
            moved = held - stay
            fluctuation = np.array([math.sqrt(max(arrivals[k], 0.0))
                                    * expected_max_normal(len(g.closed[k]))
                                    for k in range(g.nodes)])
            segment = c["walk_w0"] + c["walk_w1"] * held + c["walk_w_move"] * moved \
                + per_arrival * (arrivals + fluctuation)
            walk += g.neighbourhood_max(segment)
            records = held[g.src] * a[g.src, g.dst] * sc.record_bytes
            comm += self.exchange(g, "dpf_exchange", [stamps, records])
            held = after
        compute = self.own(sc.particles) + c["pf_a0"] + c["pf_a1"] * held + walk
        return self.total(g, compute, comm, bytes_out=sc.walk_steps * STAMP_BYTES * g.degree
                          + sc.walk_steps * sc.particles * (1 - np.diag(a)) * sc.record_bytes)

    def rpf(self, g: Graph, hops: int | None) -> dict:
        sc, c = self.sc, self.c
        hops = hops or max(g.diameter, 1)
        if g.nodes == 1:
            ball = np.ones(1)
            received = np.zeros(1)
            comm = np.zeros(1)
            sent = np.zeros(1)
        else:
            ball = (g.distances <= hops).sum(axis=1).astype(float)
            counts = g.relay_counts(hops)
            received = np.bincount(g.dst, counts.sum(axis=0), minlength=g.nodes)
            stamps = np.full(g.src.size, float(STAMP_BYTES))
            comm = np.zeros(g.nodes)
            for round_counts in counts:
                comm += g.neighbourhood_max(self.exchange(
                    g, "rpf_round", [stamps, round_counts * float(sc.relay_bytes)]))
            sent = np.bincount(g.src, counts.sum(axis=0), minlength=g.nodes) * sc.relay_bytes \
                + counts.shape[0] * STAMP_BYTES * g.degree
        compute = self.own(sc.particles, ball) + c["pf_a0"] + c["pf_a1"] * sc.particles \
            + (ball - 1) * c["c_stream"] + received * c["c_relay"]
        result = self.total(g, g.neighbourhood_max(compute), comm, bytes_out=sent)
        result.update({"hops": int(hops), "rounds": int(min(hops, g.diameter)),
                       "ball_max": int(ball.max()),
                       "carried_state_mb": float(sc.particles * sc.n_carry * ball.max() * 8
                                                 / 1e6)})
        return result

    def dekf(self, g: Graph) -> dict:
        sc, c = self.sc, self.c
        compute = c["dekf_fixed"] + c["dekf_time_update"] \
            + (1 + g.degree) * (c["dekf_linearise"] + c["dekf_update"])
        calls = [np.full(g.src.size, float(b)) for b in
                 (STAMP_BYTES, sc.dekf_measurement_bytes, sc.dekf_estimate_bytes)]
        comm = self.exchange(g, "dekf_exchange", calls)
        return self.total(g, g.neighbourhood_max(compute), comm,
                          bytes_out=g.degree * sum(int(b[0]) if b.size else 0 for b in calls))

    def total(self, g: Graph, compute, comm, bytes_out) -> dict:
        jitter = self.jitter(g)
        step = compute + comm + jitter
        slowest = int(np.argmax(step))
        return {"step": float(step[slowest]), "mean_node": float(step.mean()),
                "compute": float(compute[slowest]), "comm": float(comm[slowest]),
                "jitter": float(jitter[slowest]),
                "global_barrier_jitter": float(self.c["sigma_step"]
                                               * math.sqrt(2 * math.log(g.nodes))),
                "bytes_per_step_max": float(np.max(bytes_out))}


VARIANTS = (("dpf", None), ("rpf", None), ("rpf", 1), ("rpf", 2), ("dekf", None))


def variant_name(algorithm, hops):
    if algorithm != "rpf":
        return algorithm
    return "rpf hops=diam" if hops is None else f"rpf hops={hops}"


def predict(model: ClusterModel, ks) -> list[dict]:
    rows = []
    for topology in TOPOLOGIES:
        for algorithm, hops in VARIANTS:
            series = {}
            for k in ks:
                g = graph(topology, k, model.sc.walk)
                result = model.dpf(g) if algorithm == "dpf" else (
                    model.rpf(g, hops) if algorithm == "rpf" else model.dekf(g))
                series[k] = result
            base = series[ks[0]]["step"]
            for k in ks:
                series[k]["efficiency"] = base / series[k]["step"]
            rows.append({"algorithm": variant_name(algorithm, hops), "topology": topology,
                         "by_K": {str(k): v for k, v in series.items()}})
    return rows


def prediction_table(rows, ks) -> str:
    cells = []
    for row in rows:
        cell = {"alg": row["algorithm"], "topology": row["topology"]}
        for k in ks:
            r = row["by_K"][str(k)]
            cell[str(k)] = f"{r['step'] * 1e3:.3g} ({r['efficiency']:.2g})"
        cells.append(cell)
    return table(cells, [("alg", "algorithm", ""), ("topology", "topology", "")]
                 + [(str(k), f"K={k}", "") for k in ks])


# ====================================================================== main
def measure_k1(quick) -> dict:
    """Real dpf, rpf, dekf steps at K = 1 in this process (wall time, as the K = 2 run)."""
    from mpi4py import MPI

    result = {}
    for sc in SCENARIOS:
        steps = (8 if quick else 40) if sc.key == "papers" else (4 if quick else 15)
        for algorithm in ("dpf", "rpf", "dekf"):
            learner, _, _, hood = learner_for(algorithm, sc, comm=MPI.COMM_SELF)
            times, _ = step_times(learner, sequence(sc), steps, clock=time.perf_counter)
            hood.free()
            result[f"{sc.key}/{algorithm}"] = times.tolist()
            alone, hood = control_learner(algorithm, sc)
            times, _ = step_times(alone, sequence(sc), steps, clock=time.perf_counter)
            result[f"{sc.key}/{algorithm}/control"] = times.tolist()
    return result


def validation_rows(constants, local, measured1, measured2) -> list[dict]:
    rows = []
    for sc in SCENARIOS:
        network = Network("this machine", float("nan"), float("nan"),
                          local["shm"]["latency"], local["shm"]["bandwidth"],
                          local["per_neighbour"], ranks_per_host=2)
        model = ClusterModel(sc, constants[sc.key], local["software"][sc.key], network)
        for k, measured in ((1, measured1), (2, measured2)):
            g = graph("ring", k, sc.walk)
            for algorithm in ("dpf", "rpf", "dekf"):
                predicted = (model.dpf(g) if algorithm == "dpf" else
                             model.rpf(g, None) if algorithm == "rpf" else model.dekf(g))
                times = np.array(measured[f"{sc.key}/{algorithm}"])
                row = {"scenario": sc.key, "algorithm": algorithm, "K": k,
                       "predicted_ms": predicted["step"] * 1e3,
                       "predicted_comm_ms": predicted["comm"] * 1e3,
                       "measured_median_ms": float(np.median(times)) * 1e3,
                       "measured_p10_ms": float(np.percentile(times, 10)) * 1e3,
                       "ratio": float(np.median(times)) / predicted["step"],
                       "ratio_p10": float(np.percentile(times, 10)) / predicted["step"],
                       "corun_ms": float("nan"), "contention": float("nan"),
                       "ratio_corrected": float("nan")}
                if k == 2:
                    corun = np.median(measured[f"{sc.key}/{algorithm}/corun"])
                    solo = np.median(measured1[f"{sc.key}/{algorithm}/control"])
                    row["corun_ms"] = float(corun) * 1e3
                    row["contention"] = float(corun / solo)
                    corrected = (predicted["step"] - predicted["comm"]) * row["contention"] \
                        + predicted["comm"]
                    row["predicted_corrected_ms"] = corrected * 1e3
                    row["ratio_corrected"] = float(np.median(times)) / corrected
                rows.append(row)
    return rows


def plot(path, predictions, ks):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(SCENARIOS), figsize=(11, 4), sharey=True)
    for axis, sc in zip(axes, SCENARIOS, strict=True):
        rows = predictions[sc.key]["InfiniBand HDR"]
        for row in rows:
            if row["topology"] != "torus":
                continue
            axis.plot(ks, [row["by_K"][str(k)]["efficiency"] for k in ks], marker="o",
                      label=row["algorithm"])
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("nodes K (one rank per core, 64 per host)")
        axis.set_title(f"{sc.label}\n2-D torus, InfiniBand HDR", fontsize=9)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("weak-scaling efficiency T(1)/T(K)")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"written: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(RESULTS / "cluster_model.json"))
    parser.add_argument("--plot", default=str(RESULTS / "cluster_model.png"))
    parser.add_argument("--quick", action="store_true",
                        help="few repeats, K <= 64, small MPI sizes (smoke test)")
    parser.add_argument("--mpi-constants-worker", help=argparse.SUPPRESS)
    parser.add_argument("--validation-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mpi_constants_worker:
        mpi_constants_worker(args.mpi_constants_worker, args.quick)
        return
    if args.validation_worker:
        validation_worker(args.validation_worker, args.quick)
        return
    from mcdpf.allocator import keep_freed_memory

    keep_freed_memory()
    started = time.perf_counter()
    ks = QUICK_KS if args.quick else KS
    load = os.getloadavg()[0]

    constants = {sc.key: compute_constants(sc, args.quick) for sc in SCENARIOS}
    # The machine is shared and drifts: the MPI constants and the validation runs are
    # taken in interleaved rounds, and each figure is its least disturbed round's.
    rounds = []
    for _ in range(1 if args.quick else ROUNDS):
        rounds.append({"load_average": os.getloadavg()[0],
                       "mpi": run_mpi("mpi-constants", args.quick),
                       "K1": measure_k1(args.quick),
                       "K2": run_mpi("validation", args.quick)})
    mpi = min_over_runs([r["mpi"] for r in rounds])
    measured1 = least_disturbed([r["K1"] for r in rounds])
    measured2 = least_disturbed([r["K2"] for r in rounds])
    local = local_network(mpi)
    print(f"Constants measured here (CPU time of one thread, min over repeats; load average "
          f"{load:.1f} on {os.cpu_count()} cores)")
    rows = []
    for sc in SCENARIOS:
        c = constants[sc.key]
        rows.append({"scenario": sc.key, "t_col": c["t_col"] * 1e9,
                     "t_col_med": c["spread"]["t_col"]["median"] * 1e9,
                     "t_normal": c["t_normal"] * 1e9, "t_state": c["t_state"] * 1e9,
                     "a0": c["pf_a0"] * 1e6, "a1": c["pf_a1"] * 1e9,
                     "w0": c["walk_w0"] * 1e6, "w1": c["walk_w1"] * 1e9,
                     "wmove": c["walk_w_move"] * 1e9, "stream": c["c_stream"] * 1e6,
                     "relay": c["c_relay"] * 1e6, "sigma": c["sigma_step"] * 1e6})
    print(table(rows, [("scenario", "size", ""), ("t_col", "t_col ns", ".1f"),
                       ("t_col_med", "(median)", ".1f"), ("t_normal", "t_normal ns", ".2f"),
                       ("t_state", "t_state ns", ".2f"), ("a0", "pf a0 us", ".1f"),
                       ("a1", "pf a1 ns/N", ".0f"), ("w0", "walk w0 us", ".1f"),
                       ("w1", "w1 ns/N", ".0f"), ("wmove", "w_move ns", ".0f"),
                       ("stream", "stream us", ".1f"), ("relay", "relay us", ".2f"),
                       ("sigma", "sigma us", ".1f")]))
    rows = [{"scenario": sc.key, "lin": constants[sc.key]["dekf_linearise"] * 1e6,
             "grad": constants[sc.key]["kernel_gradient"] * 1e6,
             "kupd": constants[sc.key]["kernel_gaussian_update"] * 1e6,
             "upd": constants[sc.key]["dekf_update"] * 1e6,
             "diag": constants[sc.key]["dekf_time_update"] * 1e6,
             "fixed": constants[sc.key]["dekf_fixed"] * 1e6,
             "step": constants[sc.key]["dekf_k1_step"] * 1e6} for sc in SCENARIOS]
    print("\ndekf pieces (us): linearise = lstm_prediction_gradient through the learner, "
          "update = gaussian_update on (1, n_theta, n_theta)")
    print(table(rows, [("scenario", "size", ""), ("lin", "linearise", ".1f"),
                       ("grad", "(gradient kernel)", ".1f"), ("upd", "EKF update", ".1f"),
                       ("kupd", "(gaussian_update)", ".1f"), ("diag", "P += qI", ".1f"),
                       ("fixed", "rest", ".1f"), ("step", "K=1 step", ".1f")]))
    print(f"\nMPI here ({mpi_library()}), 2 ranks on one host: ping-pong "
          f"{local['ping_pong']['latency'] * 1e6:.2f} us + bytes / "
          f"{local['ping_pong']['bandwidth'] / 1e9:.2f} GB/s; Neighbor_alltoallv "
          f"{local['neighbor_alltoallv']['latency'] * 1e6:.2f} us + bytes / "
          f"{local['neighbor_alltoallv']['bandwidth'] / 1e9:.2f} GB/s; per call "
          f"{local['call'] * 1e6:.2f} us; per extra neighbour "
          f"{local['per_neighbour'] * 1e6:.2f} us")
    print(table([{"bytes": p["bytes"], "pp": p["seconds"] * 1e6, "nb": n["seconds"] * 1e6}
                 for p, n in zip(mpi["ping_pong"], mpi["neighbor_alltoallv"], strict=True)],
                [("bytes", "bytes", "d"), ("pp", "ping-pong one-way us", ".2f"),
                 ("nb", "Neighbor_alltoallv us", ".2f")]))
    rows = [{"scenario": key, "op": op, "wrapper": v["wrapper"] * 1e6, "bare": v["bare"] * 1e6,
             "software": v["software"] * 1e6}
            for key, ops in local["software"].items() for op, v in ops.items()]
    print("\nmcdpf's exchanges at K = 2 sizes (us): wrapper, the bare MPI calls, software "
          "= wrapper - modelled local transport")
    print(table(rows, [("scenario", "size", ""), ("op", "exchange", ""),
                       ("wrapper", "wrapper", ".1f"), ("bare", "bare MPI", ".1f"),
                       ("software", "software", ".1f")]))

    relay_checked = {f"{name} hops={hops}": graph(name, 16, "lazy").check_relay(hops)
                     for name in TOPOLOGIES for hops in (1, 2, graph(name, 16, "lazy").diameter)}
    print(f"\nrelay counts equal mcdpf.rpf.RelayPlan at K = 16: {all(relay_checked.values())}")

    predictions, placement = {}, []
    for sc in SCENARIOS:
        predictions[sc.key] = {}
        for interconnect in INTERCONNECTS:
            network = Network(interconnect.name, interconnect.latency, interconnect.bandwidth,
                              local["shm"]["latency"], local["shm"]["bandwidth"],
                              local["per_neighbour"], RANKS_PER_HOST)
            model = ClusterModel(sc, constants[sc.key], local["software"][sc.key], network)
            rows = predict(model, ks)
            predictions[sc.key][interconnect.name] = rows
            print(f"\nPredicted step ms (weak-scaling efficiency T(1)/T(K)): {sc.label}, "
                  f"{interconnect.name} ({interconnect.latency * 1e6:g} us, "
                  f"{interconnect.bandwidth / 1e9:g} GB/s), {RANKS_PER_HOST} ranks per host")
            print(prediction_table(rows, ks))
        ib = INTERCONNECTS[0]
        for per_host in (1, RANKS_PER_HOST):
            network = Network(ib.name, ib.latency, ib.bandwidth, local["shm"]["latency"],
                              local["shm"]["bandwidth"], local["per_neighbour"], per_host)
            model = ClusterModel(sc, constants[sc.key], local["software"][sc.key], network)
            for row in predict(model, (ks[0], ks[-1])):
                if row["topology"] == "ring":
                    continue
                last = row["by_K"][str(ks[-1])]
                placement.append({"scenario": sc.key, "ranks_per_host": per_host,
                                  "algorithm": row["algorithm"], "topology": row["topology"],
                                  "step_ms": last["step"] * 1e3, "comm_ms": last["comm"] * 1e3,
                                  "efficiency": last["efficiency"]})
    print(f"\nPlacement sensitivity at K = {ks[-1]}, InfiniBand HDR: ranks per host 1 "
          f"(every neighbour remote, a NIC each) vs {RANKS_PER_HOST} (one NIC shared)")
    print(table(placement, [("scenario", "size", ""), ("ranks_per_host", "ranks/host", "d"),
                            ("algorithm", "algorithm", ""), ("topology", "topology", ""),
                            ("step_ms", "step ms", ".3g"), ("comm_ms", "comm ms", ".3g"),
                            ("efficiency", "efficiency", ".2g")]))

    validation = validation_rows(constants, local, measured1, measured2)
    print(f"\nValidation on this machine (model with this machine's MPI; measured: real "
          f"learners, wall time, K=2 under mpiexec -n 2, the round with the lowest median of "
          f"{len(rounds)}; load averages {[round(r['load_average'], 1) for r in rounds]})")
    print(table(validation, [("scenario", "size", ""), ("algorithm", "alg", ""), ("K", "K", "d"),
                             ("predicted_ms", "predicted ms", ".3f"),
                             ("predicted_comm_ms", "of which comm", ".3f"),
                             ("measured_median_ms", "measured median", ".3f"),
                             ("measured_p10_ms", "measured p10", ".3f"),
                             ("ratio", "median/pred", ".2f"), ("ratio_p10", "p10/pred", ".2f"),
                             ("contention", "co-run/solo", ".2f"),
                             ("ratio_corrected", "median/(pred x contention)", ".2f")]))
    print("  co-run/solo: the K = 2 step's local work without MPI (dpf on the loopback, rpf "
          "and dekf at K = 1) on both ranks at once under mpiexec -n 2, over the same work "
          "alone in one process (medians): what sharing this machine's 2 cores and memory "
          "does to two ranks side by side; the last column scales the predicted compute by "
          "it")

    result = {
        "quick": args.quick,
        "load_average": load,
        "seconds": time.perf_counter() - started,
        "ks": list(ks),
        "topologies": list(TOPOLOGIES),
        "ranks_per_host": RANKS_PER_HOST,
        "scenarios": {sc.key: {**asdict(sc), "n_theta": sc.n_theta,
                               "record_bytes": sc.record_bytes, "relay_bytes": sc.relay_bytes,
                               "dekf_bytes": [sc.dekf_measurement_bytes,
                                              sc.dekf_estimate_bytes]} for sc in SCENARIOS},
        "interconnects": [asdict(i) for i in INTERCONNECTS],
        "assumptions": ASSUMPTIONS,
        "constants": constants,
        "mpi_measured": mpi,
        "mpi_local_model": local,
        "relay_plan_check_k16": all(relay_checked.values()),
        "predictions": predictions,
        "placement_sensitivity": placement,
        "validation": validation,
        "validation_raw_seconds": {"K1": measured1, "K2": measured2},
        "rounds": [{"load_average": r["load_average"],
                    "medians_K1": {k: float(np.median(v)) for k, v in r["K1"].items()},
                    "medians_K2": {k: float(np.median(v)) for k, v in r["K2"].items()}}
                   for r in rounds],
    }
    write_json(args.json, result)
    if args.plot:
        plot(args.plot, predictions, ks)


def mpi_library() -> str:
    try:
        from mpi4py import MPI

        return MPI.Get_library_version().splitlines()[0].strip()
    except Exception:  # noqa: BLE001 - info only
        return "unknown MPI"


ASSUMPTIONS = [
    "one MPI rank per network node and per core; ranks placed in blocks of ranks_per_host "
    "(64) consecutive ranks per host, one NIC per host, full duplex",
    "compute constants are this machine's single-thread CPU time (thread_time, min over "
    "repeats); a cluster core of another CPU scales them",
    "dpf: (1 + s P) N m t_col of LSTM work, noise N (n_theta t_normal + 2n t_state) plus 2n "
    "t_state per arrival (state noise regenerated), pf overhead a0 + a1 N, walk overhead "
    "w0 + w1 N_held + w_move N_moved per walk step; expected loads from h <- h A; Poisson "
    "arrival fluctuation sqrt(a) e(d+1); walk segment = max over the closed neighbourhood",
    "papers' scale uses the simple walk (P_move = 1), n = 16 the lazy walk (P_move = 0.5); "
    "at K = 1 nothing moves",
    "rpf: N |ball| m t_col + noise N (n_theta t_normal + 2n |ball| t_state) + a0 + a1 N + "
    "(|ball| - 1) c_stream + c_relay per received measurement; min(hops, diameter) rounds, "
    "each handshake + Neighbor_alltoallv, bytes from the RelayPlan rule on the actual graph; "
    "default hops = diameter (every node holds all K streams)",
    "dekf: rest + (P += qI) + (1 + degree)(linearise + EKF update); handshake + "
    "Neighbor_allgatherv(measurement) + Neighbor_allgather(estimate)",
    "exchange = measured software cost of mcdpf's wrapper (beyond its local transport) + "
    "per extra neighbour cost per call + per call max(shm, net) Hockney transport; shm = "
    "this machine's 2-rank MPI without memory-bandwidth contention; net = documented "
    "interconnect figures, the NIC shared by the host's ranks",
    "no overlap of communication and computation (MPICH progresses inside calls only)",
    "no network congestion beyond the NIC (full bisection), no eager/rendezvous switch",
    "jitter: sigma e(d+1) per step, sigma = robust std of this machine's pf step CPU time "
    "(neighbour-only coupling; a global barrier would give sigma sqrt(2 ln K), recorded)",
    "steady state: the step time is the maximum over nodes (neighbour coupling propagates)",
]


if __name__ == "__main__":
    main()
