"""The command line end to end under mpiexec: the contract of DESIGN §6."""

import json
import subprocess

import h5py
import numpy as np
import pytest
from support import REPO, mcdpf_command, run, run_mpi

from mcdpf.io import write_stream_file
from mcdpf.streams import Stream

REPORT_KEYS = {"algorithm", "n_nodes", "steps", "network_mse", "steps_per_second", "nodes"}
NODE_KEYS = {"node", "mse", "final_mse", "bytes_sent", "theta_mean"}
# Bad input must end the job fast; this bound only catches hangs (a run needs ~2 s).
ERROR_TIMEOUT = 60


def test_main_job_hk_exchange_and_report(tmp_path):
    out = tmp_path / "hk"
    result = run_mpi(4, "train", REPO / "launch" / "hk-exchange.toml", "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.h5")) == [f"node-000{k}.h5" for k in range(4)]
    report = run(mcdpf_command("report", out, "--json", "--plot", tmp_path / "mse.png"))
    assert report.returncode == 0, report.stderr
    summary = json.loads(report.stdout)
    assert REPORT_KEYS <= set(summary)
    assert summary["algorithm"] == "dpf" and summary["n_nodes"] == 4
    assert summary["steps"] == 500
    assert len(summary["nodes"]) == 4
    for node in summary["nodes"]:
        assert NODE_KEYS <= set(node)
        assert len(node["theta_mean"]) == 4 * 2 * (2 + 2) + 5 * 2
        assert node["bytes_sent"] > 0
        assert 0 < node["mse"] < 1.0
    assert summary["network_mse"] == pytest.approx(np.mean([n["mse"] for n in summary["nodes"]]))
    assert summary["steps_per_second"] > 0
    assert (tmp_path / "mse.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with h5py.File(out / "node-0002.h5") as handle:
        config = json.loads(handle.attrs["config"])
        assert config["filter"]["particles"] == 80 and config["filter"]["walk_steps"] == 3
        errors = handle["squared_error"][()]
        np.testing.assert_allclose(errors, (handle["target"][()] - handle["prediction"][()]) ** 2)
        mse = summary["nodes"][2]["mse"]
        assert mse == pytest.approx(errors.mean())
        assert summary["nodes"][2]["final_mse"] == pytest.approx(errors[-50:].mean())
    text = run(mcdpf_command("report", out))
    assert "network MSE" in text.stdout


@pytest.mark.parametrize("ranks", [2, 3])
def test_cli_is_deterministic_across_processes(tmp_path, config_file, ranks):
    config = config_file('[topology]\nname = "ring"\n[data]\nsource = "synthetic-lstm"\n'
                         '[run]\nsteps = 40\n[filter]\nparticles = 40\n')
    for name in ("a", "b"):
        result = run_mpi(ranks, "train", config, "--quiet", "--out", tmp_path / name)
        assert result.returncode == 0, result.stderr
    for node in range(ranks):
        with h5py.File(tmp_path / "a" / f"node-000{node}.h5") as a, \
                h5py.File(tmp_path / "b" / f"node-000{node}.h5") as b:
            for key in ("prediction", "squared_error", "theta_mean", "ess", "particles_held"):
                np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=key)


def write_streams(path, lengths, bad=None):
    rng = np.random.default_rng(0)
    streams = []
    for node, steps in enumerate(lengths):
        offsets = np.arange(steps + 1, dtype=np.int64) * 2
        columns = rng.standard_normal((2 * steps, 2))
        targets = rng.standard_normal(steps)
        if bad == node:
            targets[3] = np.nan
        streams.append(Stream(columns, offsets, targets))
    write_stream_file(path, streams)


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mcdpf: error: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def config_file(tmp_path):
    def make(text, name="c.toml"):
        path = tmp_path / name
        path.write_text(text)
        return path
    return make


@pytest.mark.parametrize("ranks", [1, 4])
def test_bad_inputs_exit_2_with_one_line_on_every_rank(tmp_path, config_file, ranks):
    good = '[topology]\nname = "ring"\n[run]\nsteps = 5\n'
    cases = [
        (["train", tmp_path / "missing.toml"], ["missing.toml", "not found"]),
        (["train", config_file("[run\n", "broken.toml")], ["broken.toml", "invalid TOML"]),
        (["train", config_file(good + "[filter]\nparticle = 4\n", "typo.toml")],
         ["typo.toml", "'particle'", "did you mean 'particles'"]),
        (["train", config_file(good), "--set", "filter.walk_steps=-1"], ["walk_steps"]),
        (["train", config_file('[topology]\nfile = "nope.toml"\n', "t.toml")],
         ["nope.toml", "topology file not found"]),
        (["train", config_file(good), "--bogus"], ["unrecognized arguments: --bogus"]),
        (["train", config_file('[topology]\nname = "ring"\nnodes = 5\n', "n.toml")],
         ["5 nodes", f"{ranks} MPI ranks"]),
        (["train", config_file(good + '[data]\nsource = "file"\npath = "none.h5"\n', "d.toml")],
         ["none.h5", "not found"]),
    ]
    for args, needles in cases:
        result = run_mpi(ranks, *args, "--out", tmp_path / "out", timeout=ERROR_TIMEOUT)
        assert_one_line_error(result, *needles)


def test_bad_stream_on_one_node_stops_every_rank(tmp_path, config_file):
    """Only rank 2 can see its bad group; every rank must still exit 2, without hanging."""
    path = tmp_path / "s.h5"
    write_streams(path, [10, 10, 10, 10])
    with h5py.File(path, "a") as handle:
        del handle["node2/offsets"]
        handle["node2/offsets"] = np.array([0, 2, 1] + list(range(6, 22, 2)), dtype=np.int64)
    config = config_file(f'[topology]\nname = "ring"\n[data]\nsource = "file"\npath = "{path}"\n')
    result = run_mpi(4, "train", config, "--out", tmp_path / "o", timeout=ERROR_TIMEOUT)
    assert_one_line_error(result, "node2", "sequence 1")

    write_streams(path, [10, 10, 10, 10], bad=1)
    result = run_mpi(4, "train", config, "--out", tmp_path / "o", timeout=ERROR_TIMEOUT)
    assert_one_line_error(result, "node1", "step 3 has a non-finite", "nonfinite")

    write_streams(path, [10, 12, 10, 10])
    result = run_mpi(4, "train", config, "--out", tmp_path / "o", timeout=ERROR_TIMEOUT)
    assert_one_line_error(result, "different lengths", "run.steps")
    result = run_mpi(4, "train", config, "--out", tmp_path / "o", "--set", "run.steps=10",
                     "--quiet", timeout=ERROR_TIMEOUT)
    assert result.returncode == 0, result.stderr


def test_existing_run_needs_force(tmp_path, config_file):
    config = config_file('[topology]\nname = "ring"\n[run]\nsteps = 5\n[data]\n'
                         'source = "synthetic-lstm"\n')
    out = tmp_path / "run"
    assert run_mpi(2, "train", config, "--out", out, "--quiet").returncode == 0
    assert_one_line_error(run_mpi(2, "train", config, "--out", out), "already holds a run",
                          "--force")
    assert run_mpi(2, "train", config, "--out", out, "--force", "--quiet").returncode == 0


def test_nonfinite_skip_policy(tmp_path, config_file):
    path = tmp_path / "s.h5"
    write_streams(path, [12, 12], bad=1)
    config = config_file(f'[topology]\nname = "ring"\n[data]\nsource = "file"\npath = "{path}"\n'
                         'nonfinite = "skip"\n')
    out = tmp_path / "o"
    result = run_mpi(2, "train", config, "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    with h5py.File(out / "node-0001.h5") as handle:
        assert handle["skipped"][()].tolist() == [0, 0, 0, 1] + [0] * 8
        assert np.isnan(handle["squared_error"][3])
        assert np.all(np.isfinite(np.delete(handle["squared_error"][()], 3)))
        assert np.all(np.isfinite(handle["theta_mean"][()]))
    summary = json.loads(run(mcdpf_command("report", out, "--json")).stdout)
    assert summary["nodes"][1]["skipped_steps"] == 1
    assert np.isfinite(summary["nodes"][1]["mse"])


def test_topology_command(tmp_path):
    result = run(mcdpf_command("topology", REPO / "topologies" / "paper-ring4.toml", "--json"))
    described = json.loads(result.stdout)
    assert described["nodes"] == 4 and described["edges"] == 4 and described["periodic"]
    assert described["slem"] == pytest.approx(1.0)
    text = run(mcdpf_command("topology", "ring", "--nodes", "6", "--walk", "lazy")).stdout
    assert "aperiodic" in text and "SLEM" in text
    written = tmp_path / "star.toml"
    run(mcdpf_command("topology", "star", "--nodes", "5", "--write", written))
    assert json.loads(run(mcdpf_command("topology", written, "--json")).stdout)["edges"] == 4
    bad = run(mcdpf_command("topology", "ring"))
    assert bad.returncode == 2 and bad.stderr.startswith("mcdpf: error:")


def test_report_of_missing_run(tmp_path):
    result = run(mcdpf_command("report", tmp_path / "none"))
    assert result.returncode == 2 and "run directory not found" in result.stderr


def test_compare_runs_every_algorithm_with_seeds(tmp_path, config_file):
    config = config_file('[topology]\nname = "ring"\n[run]\nsteps = 30\n[data]\n'
                         'source = "synthetic-lstm"\n[filter]\nparticles = 30\n')
    out = tmp_path / "cmp"
    algorithms = ["pf", "dpf", "cpf", "sgd", "ekf", "dekf", "dsgd"]
    result = run_mpi(3, "compare", config, "--algorithms", ",".join(algorithms),
                     "--seeds", "1,2", "--out", out)
    assert result.returncode == 0, result.stderr
    comparison = json.loads((out / "comparison.json").read_text())
    assert list(comparison["algorithms"]) == algorithms
    assert comparison["n_nodes"] == 3 and comparison["seeds"] == [1, 2]
    for name, row in comparison["algorithms"].items():
        assert len(row["network_mse"]["values"]) == 2
        assert len(row["running_mse"]) == 2 and len(row["running_mse"][0]) == 30
        communicates = name in ("dpf", "dekf", "dsgd")
        assert (row["bytes_per_step"]["mean"] > 0) == communicates, name
        assert f"| {name} |" in result.stdout
    for name in algorithms:
        assert (out / name / "seed-2" / "node-0002.h5").is_file()
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "comparison.md").read_text().count("|") > 30
    bad = run_mpi(2, "compare", config, "--algorithms", "pf,gd", "--out", out,
                  timeout=ERROR_TIMEOUT)
    assert_one_line_error(bad, "unknown algorithm 'gd'")


def test_mcdpf_alone_prints_usage():
    result = run(mcdpf_command(), timeout=ERROR_TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: mcdpf")
    assert "mcdpf: error: mcdpf" not in result.stderr
    for command in ("train", "compare", "report", "export", "topology"):
        assert command in result.stderr


def test_topology_text_prints_the_diameter(tmp_path):
    text = run(mcdpf_command("topology", "ring", "--nodes", "6")).stdout
    assert "diameter: 3" in text
    result = run(mcdpf_command("topology", "ring", "--nodes", "6", "--write",
                               tmp_path / "missing" / "ring.toml"), timeout=ERROR_TIMEOUT)
    assert_one_line_error(result, f"{tmp_path / 'missing' / 'ring.toml'}: cannot write")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A finished 2-node run (dpf on a 2-node ring), shared by the report tests."""
    tmp = tmp_path_factory.mktemp("small")
    config = tmp / "c.toml"
    config.write_text('[topology]\nname = "ring"\n[run]\nsteps = 20\nprogress_seconds = 0\n'
                      '[data]\nsource = "synthetic-lstm"\n[filter]\nparticles = 20\n')
    out = tmp / "run"
    result = run_mpi(2, "train", config, "--out", out)
    assert result.returncode == 0, result.stderr
    return config, out


def test_report_unwritable_plot_and_broken_pipe_give_one_line(tmp_path, small_run):
    _, out = small_run
    plot = tmp_path / "missing" / "x.png"
    result = run(mcdpf_command("report", out, "--plot", plot), timeout=ERROR_TIMEOUT)
    assert_one_line_error(result, f"{plot}: cannot write")
    # the reader leaves before mcdpf writes (it is still importing): a broken pipe
    process = subprocess.Popen(mcdpf_command("report", out, "--json"), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    _, stderr = process.communicate(timeout=ERROR_TIMEOUT)
    assert process.returncode == 2
    assert stderr.decode().strip().splitlines() == [
        "mcdpf: error: standard output closed before the output was written (broken pipe)"]


def test_force_clears_every_file_of_the_previous_run(tmp_path, small_run):
    config, _ = small_run
    out = tmp_path / "run"
    assert run_mpi(2, "train", config, "--out", out, "--quiet").returncode == 0
    assert run(mcdpf_command("report", out, "--plot", out / "mse.png")).returncode == 0
    (out / "restarts.json").write_text("[]\n")  # mcdpf supervise's, kept
    again = run_mpi(2, "train", config, "--out", out, "--quiet", "--force")
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.iterdir()) == [  # config.json: the new run's own
        "config.json", "node-0000.h5", "node-0001.h5", "processes.json", "restarts.json"]


def test_compare_takes_the_configuration_seed_and_refuses_what_train_refuses(
        tmp_path, config_file):
    config = config_file('[topology]\nname = "ring"\n[run]\nsteps = 10\nseed = 5\n[data]\n'
                         'source = "synthetic-lstm"\n[filter]\nparticles = 10\n')
    out = tmp_path / "cmp"
    result = run_mpi(2, "compare", config, "--algorithms", "pf", "--out", out)
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "comparison.json").read_text())["seeds"] == [5]
    with h5py.File(out / "pf" / "seed-5" / "node-0001.h5") as handle:
        assert json.loads(handle.attrs["config"])["run"]["seed"] == 5
    # dpf's walk may gather N times the 2-node ring's ball (200) full 42 x 42 covariances
    # (2 x 2.8 MB, over 0.004 GB); pf holds its 100 (2 x 1.4 MB, within it).
    gaussian = config_file('[topology]\nname = "ring"\n[run]\nsteps = 10\n[data]\n'
                           'source = "synthetic-lstm"\n[filter]\nkernel = "gaussian"\n'
                           '[ekf]\nmax_memory_gb = 0.004\n', name="gaussian.toml")
    train = run_mpi(2, "train", gaussian, "--set", "run.algorithm=\"dpf\"",
                    "--out", tmp_path / "t", timeout=ERROR_TIMEOUT)
    refused = run_mpi(2, "compare", gaussian, "--algorithms", "pf,dpf", "--out",
                      tmp_path / "g", timeout=ERROR_TIMEOUT)
    assert train.returncode == 2
    assert_one_line_error(refused, "covariances of 200 Gaussian particles need")
    assert refused.stderr == train.stderr
    assert not (tmp_path / "g" / "pf").exists()  # refused before the first run


@pytest.mark.parametrize("algorithm, relay_weights, warned", [
    ("dpf", "uniform", True), ("rpf", "walk", True), ("rpf", "uniform", False),
    ("dekf", "uniform", False), ("pf", "uniform", False), ("dsgd", "uniform", False)])
def test_periodic_walk_warning_only_for_algorithms_that_use_the_walk(algorithm,
                                                                     relay_weights, warned):
    from mcdpf.config import load_config
    from mcdpf.elastic import ResumePlan
    from mcdpf.preparation import prepare_node

    config = load_config({"run": {"algorithm": algorithm}, "relay": {"weights": relay_weights},
                          "topology": {"name": "ring", "nodes": 4},
                          "data": {"source": "synthetic-lstm"}})
    warnings = prepare_node(config, ResumePlan.fresh(4), 0, None, False).warnings
    assert any("walk is periodic" in warning for warning in warnings) == warned, warnings
