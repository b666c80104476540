"""The benchmark scripts run from a fresh install (smoke runs: tiny settings, no timing)."""

import json
import sys

import pytest
from support import REPO, run


def test_frontier_study_writes_its_figure_table_and_json(tmp_path):
    result = run([sys.executable, str(REPO / "benchmarks" / "frontier.py"), "--seeds", "1",
                  "--settings", "hk-interleave,macro-replicate", "--variants",
                  "dekf,rpf gaussian N=5,dpf N=80 lean", "--steps", "12", "--out", tmp_path])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "frontier.md").read_text()
    assert "### hk-interleave (settings chosen here)" in table
    assert "### macro-replicate (validation" in table
    data = json.loads((tmp_path / "frontier.json").read_text())
    assert set(data["summary"]) == {"hk-interleave", "macro-replicate"}
    assert len(data["runs"]) == 2 * 3
    for row in data["runs"]:
        assert row["final_mse"] > 0 and row["steps_per_second"] > 0
    dekf = data["summary"]["hk-interleave"]["dekf"]
    assert dekf["bytes_per_step"]["mean"] > 0


def test_adam_study_chooses_by_mean_relative_error_on_the_tuning_settings_only():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import adam_study

    def entry(final):
        return {"final_mse": {"mean": final, "std": 0.0}}

    # 0.01 is best on two of three tuning settings but 3x worse on the third; 0.1 is
    # within 10 % everywhere: mean ratios (1 + 1 + 3) / 3 against (1.1 + 1.1 + 1) / 3.
    finals = {"synthetic-lstm": (1.0, 1.1), "hk-replicate": (2.0, 2.2),
              "hk-interleave": (0.3, 0.1), "co2-interleave": (9.0, 1.0)}
    summary = {setting: {adam_study.variant("adam", rate): entry(final)
                         for rate, final in zip((0.01, 0.1), pair, strict=True)}
               for setting, pair in finals.items()}
    chosen, relative = adam_study.choose(summary, [0.01, 0.1])
    assert chosen == 0.1
    assert relative[0.01] == (1 + 1 + 3) / 3
    assert abs(relative[0.1] - (1.1 + 1.1 + 1) / 3) < 1e-12


def test_scale_grid_quick_writes_its_table_json_and_figure(tmp_path):
    result = run([sys.executable, str(REPO / "benchmarks" / "scale.py"), "--quick", "--out",
                  tmp_path], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "scale.json").read_text())
    assert data["machine"]["cores"] >= 1 and data["command"].startswith("python benchmarks")
    assert set(data["cells"]) == {"seattle-weather K=2 n=2", "synthetic K=2 n=2"}
    for cell in data["cells"].values():
        assert cell["winner"] in {"sgd", "ekf", "dekf", "ekf diagonal"}
        for name in ("sgd", "ekf", "dekf"):
            entry = cell["variants"][name]
            assert entry["final_mse"]["mean"] > 0 and entry["peak_mb"]["mean"] > 0
        assert cell["variants"]["dekf"]["bytes_per_node_step"]["mean"] > 0
    # a variant is never dropped: it ran, or it says why not
    labels = {row["variant"] for row in data["runs"]}
    assert "ekf diagonal" in labels
    for row in data["runs"]:
        assert row["status"] == "ok" or row["reason"]
    table = (tmp_path / "scale.md").read_text()
    assert "python benchmarks/scale.py --quick" in table and "Winner: **" in table


def test_scale_merge_adds_the_missing_runs_and_commands(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import scale

    def row(variant, seed, final):
        return {"dataset": "synthetic", "K": 2, "n": 2, "n_params": 58, "variant": variant,
                "seed": seed, "steps": 20, "status": "ok", "final_mse": final, "mse": final,
                "bytes_per_node_step": 0.0, "steps_per_second": 1.0, "peak_mb": 1.0}

    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir(), there.mkdir()
    scale.write(here, [row("sgd", 1, 0.5)], ["python benchmarks/scale.py A"], 1.0)
    # "there" repeats here's run (with another number: here's is kept) and adds two
    scale.write(there, [row("sgd", 1, 9.0), row("sgd", 2, 0.7), row("ekf", 1, 0.1)],
                ["python benchmarks/scale.py B"], 2.0)
    scale.merge(here, there)
    data = json.loads((here / "scale.json").read_text())
    assert data["commands"] == ["python benchmarks/scale.py A", "python benchmarks/scale.py B"]
    assert sorted((r["variant"], r["seed"], r["final_mse"]) for r in data["runs"]) == [
        ("ekf", 1, 0.1), ("sgd", 1, 0.5), ("sgd", 2, 0.7)]
    assert data["cells"]["synthetic K=2 n=2"]["winner"] == "ekf"
    assert "python benchmarks/scale.py B" in (here / "scale.md").read_text()
    # --add tries again what outlived a shorter timeout than its own, and only that
    assert scale.outlived({"status": "infeasible", "reason": "time budget: over 300 s"}) == 300
    assert scale.outlived({"status": "infeasible", "reason": "memory: ~2 GB"}) is None
    assert scale.outlived(row("sgd", 1, 0.5)) is None


@pytest.mark.parametrize("scheduling", ["greenlets", "threads"])
def test_in_process_network_equals_mpiexec_for_every_kind_of_exchange(scheduling):
    # network_size.check_mpi exits non-zero unless dpf's walk, dekf's and dsgd's
    # gathers and rpf's relay give mpiexec's squared errors bit for bit and its bytes
    if scheduling == "greenlets":
        pytest.importorskip("greenlet")
    code = ("import network_size as ns\n"
            f"ns.greenlet = {'ns.greenlet' if scheduling == 'greenlets' else 'None'}\n"
            "ns.check_mpi(steps=8)\n")
    result = run([sys.executable, "-c", code], cwd=REPO / "benchmarks", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("bit for bit, bytes sent") == 4, result.stdout


def test_model_size_target_is_computed_against_each_family_best():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import model_size

    def entry(family, mse, seeds, bytes_sent, speed):
        return {"family": family, "seeds": seeds, "final_mse_by_seed": mse,
                "final_mse": {"mean": sum(mse) / len(mse), "std": 0.0},
                "bytes_per_node_step": {"mean": bytes_sent}, "steps_per_second": {"mean": speed}}

    variants = {"dekf full": entry("dekf", [0.020, 0.022], [1, 2], 1000.0, 10.0),
                "dekf diagonal": entry("dekf", [0.030, 0.030], [1, 2], 1000.0, 40.0),
                "sgd lr=0.1": entry("sgd", [0.05, 0.05], [1, 2], 0.0, 999.0),
                "rpf N=1 full": entry("particle", [0.019, 0.022], [1, 2], 600.0, 3.0),
                "rpf N=5 full": entry("particle", [0.018, 0.018], [1, 2], 600.0, 2.0),
                "rpf N=2 full": entry("particle", [0.030, 0.010], [1, 2], 20000.0, 9.0)}
    goal = model_size.target(variants)
    # the bound is dekf full (the best baseline: ekf and adam missing); speed and bytes
    # against dekf full (dekf's best form), not the faster diagonal
    assert goal["baseline"] == "dekf full" and abs(goal["bound"] - 0.021) < 1e-12
    assert goal["missing"] == ["ekf", "adam"]
    checks = goal["particles"]
    assert checks["rpf N=1 full"]["holds"] and checks["rpf N=1 full"]["seeds_at_or_below"] == 2
    assert not checks["rpf N=5 full"]["holds"] and not checks["rpf N=5 full"]["speed"]
    assert checks["rpf N=5 full"]["accuracy"] and checks["rpf N=5 full"]["bytes"]
    assert not checks["rpf N=2 full"]["bytes"] and checks["rpf N=2 full"]["accuracy"]
    assert goal["holds"] and goal["chosen"] == "rpf N=1 full"


def test_model_size_runs_its_contenders_and_writes_table_and_json(tmp_path):
    labels = "dekf full,sgd lr=0.1,rpf N=1 diagonal"
    result = run([sys.executable, str(REPO / "benchmarks" / "model_size.py"), "--n", "2",
                  "--seeds", "1", "--steps", "12", "--variants", labels, "--out", tmp_path],
                 timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "model_size.json").read_text())
    size = data["sizes"]["2"]
    assert set(size["variants"]) == set(labels.split(","))
    for entry in size["variants"].values():
        assert entry["final_mse"]["mean"] > 0 and entry["peak_mb"]["mean"] > 0
    check = size["target"]["particles"]["rpf N=1 diagonal"]
    assert check["holds"] == (check["accuracy"] and check["bytes"] and check["speed"])
    assert size["target"]["missing"] == ["ekf", "adam"]
    table = (tmp_path / "model_size.md").read_text()
    assert "python benchmarks/model_size.py --n 2" in table and "rpf N=1 diagonal" in table
    # a tuning run's choice: every family's best and the particle variant
    again = run([sys.executable, str(REPO / "benchmarks" / "model_size.py"), "--n", "2",
                 "--seeds", "2", "--steps", "12", "--chosen-from",
                 str(tmp_path / "model_size.json"), "--out", tmp_path / "report"], timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "model_size.json").read_text())
    assert set(report["plan"]["2"]) == set(labels.split(","))
    assert report["seeds"] == [2]


def test_identity_compares_every_dataset_and_attribute_exactly(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import h5py
    import identity
    import numpy as np

    def write(directory, estimates, newer=False):
        directory.mkdir()
        for node in range(identity.RANKS):
            with h5py.File(directory / f"node-{node:04d}.h5", "w") as handle:
                handle["theta_estimates"] = estimates
                handle["step_seconds"] = np.random.default_rng().random(3)  # a timing
                handle.attrs["config"] = json.dumps({"run": {"seed": 1} | (
                    {"threads": 1} if newer else {})})
                handle.attrs["loop_seconds"] = float(newer)
                if newer:
                    handle["bytes_received"] = np.zeros(3)

    estimates = np.arange(6.0).reshape(3, 2)
    write(tmp_path / "old", estimates)
    write(tmp_path / "same", estimates, newer=True)
    same = identity.compare_runs(tmp_path / "old", tmp_path / "same")
    assert same["differences"] == [] and same["datasets"] == 2  # the timing left out
    assert "node-0001.h5:bytes_received" in same["additions"]
    assert "node-0000.h5@config.run.threads" in same["additions"]
    changed = estimates.copy()
    changed[2, 1] = np.nextafter(changed[2, 1], 9.0)  # one bit
    write(tmp_path / "changed", changed)
    differs = identity.compare_runs(tmp_path / "old", tmp_path / "changed")["differences"]
    assert len(differs) == identity.RANKS
    assert differs[0].startswith("node-0000.h5:theta_estimates: index (2, 1)")
    write(tmp_path / "retyped", estimates.astype(np.float32))
    retyped = identity.compare_runs(tmp_path / "old", tmp_path / "retyped")["differences"]
    assert "dtype float64 != float32" in retyped[0]


def test_step_times_the_recommended_configurations_and_their_kernels(tmp_path):
    """The clock inside a step: both rows, and no more time in kernels than in the step;
    ``--json`` keeps the printed rows and their ratios' range."""
    output = tmp_path / "recommended.json"
    result = run([sys.executable, str(REPO / "benchmarks" / "step.py"), "--recommended-only",
                  "--json", str(output)], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()
            if line.lstrip().startswith(("scale-best n=64", "dpf-best n=64"))]
    assert len(rows) == 2, result.stdout
    for row in rows:
        step, kernels, ratio = map(float, row[-3:])
        assert 0 < kernels <= step and ratio >= 1.0, row
    written = json.loads(output.read_text())
    assert len(written["runs"]) == 1 and len(written["runs"][0]) == 2
    for row in written["runs"][0]:
        low, high = written["ratio_range"][row["setting"]]
        assert low == high == row["ratio"] >= 1.0


def test_dpf_best_refuses_a_bad_topology_file_in_one_line(tmp_path):
    """``--topology`` is read before any rank starts: a broken file is exit 2, one line."""
    broken = tmp_path / "graph.toml"
    broken.write_text("nodes = 3\nedges = [[0, 1]]\n")  # node 2 is cut off
    result = run([sys.executable, str(REPO / "benchmarks" / "dpf_best.py"), "--topology",
                  str(broken), "--seeds", "1", "--no-write"])
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert str(broken) in last and "connected" in last, result.stderr
