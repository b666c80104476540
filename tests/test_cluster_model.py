"""Smoke test of the cluster performance model (benchmarks/cluster_model.py --quick).

Checks that the script runs from a fresh install and that its tables and JSON have the
documented shape; no timing is asserted (the machine is shared).
"""

import json
import math
import sys

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
