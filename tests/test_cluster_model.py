"""Smoke test of the cluster performance model (benchmarks/cluster_model.py --quick).

Checks that the script runs from a fresh install and that its tables and JSON have the
documented shape; no timing is asserted (the machine is shared).
"""

import json
import math
import sys

import numpy as np
from support import REPO, run


def test_cluster_model_quick_writes_tables_json_and_plot(tmp_path):
    out = tmp_path / "cluster_model.json"
    picture = tmp_path / "cluster_model.png"
    result = run([sys.executable, str(REPO / "benchmarks" / "cluster_model.py"), "--quick",
                  "--json", out, "--plot", picture])
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    for heading in ("Constants measured here", "MPI here", "Predicted step ms",
                    "Placement sensitivity", "Validation on this machine"):
        assert heading in text
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    data = json.loads(out.read_text())
    assert data["quick"] is True
    ks = data["ks"]
    assert ks[0] == 1 and ks == sorted(ks)
    assert data["relay_plan_check_k16"] is True
    assert {i["name"] for i in data["interconnects"]} == {
        "InfiniBand HDR", "HPE Slingshot-11", "25 GbE TCP"}
    assert all(i["source"] and i["latency"] > 0 and i["bandwidth"] > 0
               for i in data["interconnects"])
    assert data["assumptions"]

    for scenario in ("papers", "n16"):
        constants = data["constants"][scenario]
        for key in ("t_col", "t_normal", "t_state", "dekf_update", "dekf_linearise"):
            assert constants[key] > 0, key
        assert set(data["predictions"][scenario]) == {i["name"] for i in data["interconnects"]}
        for rows in data["predictions"][scenario].values():
            names = {(row["algorithm"], row["topology"]) for row in rows}
            assert names == {(a, t) for a in ("dpf", "rpf hops=diam", "rpf hops=1",
                                              "rpf hops=2", "dekf")
                             for t in ("ring", "torus", "random")}
            for row in rows:
                by_k = row["by_K"]
                assert [int(k) for k in by_k] == ks
                assert by_k["1"]["efficiency"] == 1.0
                for point in by_k.values():
                    assert point["step"] > 0 and math.isfinite(point["step"])
                    assert point["step"] >= point["compute"] >= 0
                    assert 0 < point["efficiency"] <= 1.5

    local = data["mpi_local_model"]
    assert local["ping_pong"]["latency"] > 0 and local["ping_pong"]["bandwidth"] > 0
    validation = data["validation"]
    assert {(r["scenario"], r["algorithm"], r["K"]) for r in validation} == {
        (s, a, k) for s in ("papers", "n16") for a in ("dpf", "rpf", "dekf") for k in (1, 2)}
    for row in validation:
        assert row["predicted_ms"] > 0 and row["measured_median_ms"] > 0
        assert row["ratio"] > 0


# ---------------------------------------------------------------- the model on fixed constants
def cluster_model_module():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from cluster import model

    return model


CONSTANTS = {"t_col": 1e-7, "t_normal": 2e-9, "t_state": 3e-9, "pf_a0": 1e-5, "pf_a1": 1e-8,
             "walk_w0": 2e-6, "walk_w1": 5e-9, "walk_w_move": 7e-9, "c_stream": 4e-6,
             "c_relay": 1e-6, "sigma_step": 3e-6, "dekf_fixed": 5e-6,
             "dekf_time_update": 2e-6, "dekf_linearise": 8e-6, "dekf_update": 9e-6}
SOFTWARE = {"dpf_exchange": {"software": 4e-6}, "rpf_round": {"software": 3e-6},
            "dekf_exchange": {"software": 6e-6}}


def fixed_model(ranks_per_host=64, scenario=0):
    model = cluster_model_module()
    network = model.Network("test", net_latency=2e-6, net_bandwidth=1e10, shm_latency=1e-6,
                            shm_bandwidth=5e9, per_neighbour=5e-7,
                            ranks_per_host=ranks_per_host)
    return model, model.ClusterModel(model.SCENARIOS[scenario], CONSTANTS, SOFTWARE, network)


def test_model_on_one_node_is_the_local_work_alone():
    """K = 1: no exchange; dpf's walk only stays home; rpf is a pf of the node's stream."""
    model, cluster = fixed_model()
    sc, c = cluster.sc, CONSTANTS
    alone = model.graph("ring", 1, sc.walk)
    own = sc.particles * (sc.m * c["t_col"] + sc.n_theta * c["t_normal"]
                          + sc.n_carry * c["t_state"])
    dpf = cluster.dpf(alone)
    walk = sc.walk_steps * (c["walk_w0"] + c["walk_w1"] * sc.particles)
    assert math.isclose(dpf["step"], own + c["pf_a0"] + c["pf_a1"] * sc.particles + walk)
    assert dpf["comm"] == 0 and dpf["jitter"] == 0 and dpf["bytes_per_step_max"] == 0
    rpf = cluster.rpf(alone, None)
    assert math.isclose(rpf["step"], own + c["pf_a0"] + c["pf_a1"] * sc.particles)
    dekf = cluster.dekf(alone)
    assert math.isclose(dekf["step"], c["dekf_fixed"] + c["dekf_time_update"]
                        + c["dekf_linearise"] + c["dekf_update"])


def test_dekf_on_a_ring_by_hand():
    """Every node of a ring: two neighbours' measurements, three exchange calls on one host
    (shm transport), jitter sigma e(3); computed by hand from the constants."""
    model, cluster = fixed_model()
    sc, c, net = cluster.sc, CONSTANTS, cluster.net
    ring = model.graph("ring", 8, sc.walk)
    compute = c["dekf_fixed"] + c["dekf_time_update"] + 3 * (c["dekf_linearise"]
                                                              + c["dekf_update"])
    sizes = (model.STAMP_BYTES, sc.dekf_measurement_bytes, sc.dekf_estimate_bytes)
    # a node sends each call's bytes to both neighbours and receives as much
    transport = sum(net.shm_latency + 2 * size / net.shm_bandwidth for size in sizes)
    comm = SOFTWARE["dekf_exchange"]["software"] + 1 * net.per_neighbour * 3 + transport
    jitter = c["sigma_step"] * model.expected_max_normal(3)
    result = cluster.dekf(ring)
    assert math.isclose(result["compute"], compute)
    assert math.isclose(result["comm"], comm)
    assert math.isclose(result["step"], compute + comm + jitter)
    assert result["bytes_per_step_max"] == 2 * sum(sizes)


def test_off_host_neighbours_pay_the_interconnect():
    """One rank per host: every neighbour is remote, so the transport is the interconnect's
    (latency 2 us, 10 GB/s), not shared memory's (1 us, 5 GB/s); either way a node's
    bytes to both ring neighbours share one channel."""
    model, on_host = fixed_model(ranks_per_host=64)
    _, off_host = fixed_model(ranks_per_host=1)
    ring = model.graph("ring", 8, on_host.sc.walk)
    edge_bytes = np.full(ring.src.size, 1e6)
    np.testing.assert_allclose(on_host.transport(ring, edge_bytes), 1e-6 + 2e6 / 5e9)
    np.testing.assert_allclose(off_host.transport(ring, edge_bytes), 2e-6 + 2e6 / 1e10)


def test_relay_counts_come_from_relay_plan_and_deliver_once():
    """Ring of 8, hops = diameter 4: every node receives the 7 other measurements once; in
    round r each node forwards along each edge the origins r hops behind it."""
    from mcdpf.rpf import RelayPlan

    model = cluster_model_module()
    ring = model.graph("ring", 8, "lazy")
    counts = ring.relay_counts(ring.diameter)
    assert counts.shape == (4, ring.src.size)
    assert ring.relay_complete(ring.diameter) and ring.relay_complete(1)
    received = np.bincount(ring.dst, counts.sum(axis=0), minlength=8)
    assert np.all(received == 7)
    plan = RelayPlan(ring.topology, 3, ring.diameter)
    for r, forwards in enumerate(plan.forwards):
        for position, origins in enumerate(forwards):
            edge = np.flatnonzero((ring.src == 3) & (ring.dst == plan.neighbours[position]))[0]
            assert counts[r, edge] == len(origins)


def test_model_fits_and_order_statistics():
    model = cluster_model_module()
    x = np.array([1.0, 2.0, 4.0, 8.0])
    assert np.allclose(model.fit_line(x, 3.0 + 0.5 * x), (3.0, 0.5))
    assert model.fit_line(x, 5.0 - x) == (np.mean(5.0 - x), 0.0)  # negative slope: flat
    sizes = np.array([8.0, 512.0, 32768.0, 262144.0])
    fitted = model.fit_hockney(sizes, 2e-6 + sizes / 4e9)
    assert math.isclose(fitted["latency"], 2e-6, rel_tol=1e-6)
    assert math.isclose(fitted["bandwidth"], 4e9, rel_tol=1e-6)
    assert model.expected_max_normal(1) == 0.0
    assert math.isclose(model.expected_max_normal(2), 1 / math.sqrt(math.pi), rel_tol=1e-6)
    assert model.expected_max_normal(5) > model.expected_max_normal(3)


def test_weak_scaling_efficiency_is_relative_to_the_first_k():
    model, cluster = fixed_model()
    rows = model.predict(cluster, (1, 4, 16))
    assert {row["algorithm"] for row in rows} == {"dpf", "rpf hops=diam", "rpf hops=1",
                                                 "rpf hops=2", "dekf"}
    for row in rows:
        steps = {k: v["step"] for k, v in row["by_K"].items()}
        for k, point in row["by_K"].items():
            assert math.isclose(point["efficiency"], steps["1"] / steps[k])
