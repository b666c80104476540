"""The cluster performance model: per-step time of dpf, rpf and dekf on any graph.

Pure arithmetic on constants (no timing, no MPI): the model sizes (:class:`Scenario`), the
interconnects' documented figures (:data:`INTERCONNECTS`), the graphs' facts
(:class:`Graph`, relay counts from :class:`mcdpf.rpf.RelayPlan`), the fits that turn
measurements into constants (:func:`fit_line`, :func:`fit_hockney`, :func:`local_network`)
and :class:`ClusterModel` itself. The model's equations are documented in
``benchmarks/cluster_model.py``; its measured inputs come from :mod:`cluster.measure`.
"""

import math
from dataclasses import dataclass

import numpy as np

KS = (1, 2, 4, 16, 64, 256, 1024)
QUICK_KS = (1, 2, 4, 16, 64)
TOPOLOGIES = ("ring", "torus", "random")
RANKS_PER_HOST = 64
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
_RELAY_COUNTS: dict = {}


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

        Read from :class:`mcdpf.rpf.RelayPlan` at every node (the plans of one graph and
        ``hops`` are shared by every walk and scenario).
        """
        from mcdpf.rpf import RelayPlan

        key = (self.name, self.nodes, hops)
        if key not in _RELAY_COUNTS:
            known = KnownDistances(self.topology, self.distances)
            first_edge = np.concatenate([[0], np.cumsum(self.degree)])
            counts = np.zeros((min(hops, self.diameter), self.src.size), dtype=np.int64)
            for node in range(self.nodes):
                plan = RelayPlan(known, node, hops)
                for r, forwards in enumerate(plan.forwards):
                    for position, origins in enumerate(forwards):
                        counts[r, first_edge[node] + position] = len(origins)
            _RELAY_COUNTS[key] = counts
        return _RELAY_COUNTS[key]

    def relay_complete(self, hops: int) -> bool:
        """Whether the plans deliver every measurement within ``hops`` exactly once."""
        received = np.bincount(self.dst, self.relay_counts(hops).sum(axis=0),
                               minlength=self.nodes)
        return bool(np.array_equal(received, (self.distances <= hops).sum(axis=1) - 1))


class KnownDistances:
    """A topology whose hop distances are computed once.

    :class:`mcdpf.rpf.RelayPlan` asks for every node's distances at every node; on 1024
    nodes recomputing them would dominate the model.
    """

    def __init__(self, topology, distances: np.ndarray):
        self._topology = topology
        self._distances = distances

    def distances(self, node: int) -> np.ndarray:
        """Hop distance from ``node`` to every node."""
        return self._distances[node]

    def __getattr__(self, name):
        return getattr(self._topology, name)


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
