"""The Python API from the outside: documented examples, launch examples, CLI = API bit for bit."""

import json
import re
import sys

import h5py
import numpy as np
import pytest
from support import MPIEXEC, REPO, run, run_mpi

import mcdpf
from mcdpf.io import write_stream_file
from mcdpf.registry import ALGORITHMS


def python_mpi(ranks, *args, timeout=300):
    return run([MPIEXEC, "-n", str(ranks), sys.executable, "-m", "mpi4py", *map(str, args)],
               timeout=timeout)


def python_blocks(document: str) -> str:
    """The Python code blocks of a README or docs page, as one script."""
    text = (REPO / document).read_text()
    return "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))


@pytest.mark.parametrize("document", ["README.md", "docs/api.md"])
@pytest.mark.parametrize("ranks", [2, 4])
def test_documented_python_runs(tmp_path, document, ranks):
    script = tmp_path / "documented.py"
    script.write_text(python_blocks(document))
    result = python_mpi(ranks, script)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for node in range(ranks):
        assert f"node {node}: MSE" in result.stdout


def test_custom_data_example(tmp_path):
    plot = tmp_path / "custom.png"
    result = python_mpi(2, REPO / "launch" / "custom_data.py", "--steps", "80", "--plot",
                        plot, "--out", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "node 1: MSE" in result.stdout
    assert (tmp_path / "run" / "node-0001.h5").is_file()


def test_live_stream_example_from_a_generator_and_standard_input():
    result = python_mpi(2, REPO / "launch" / "live_stream.py", "--steps", "12")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" prediction ") == 2 * 12  # lines of two ranks may interleave
    assert "node 0: 12 steps" in result.stdout and "node 1: 12 steps" in result.stdout
    piped = run([MPIEXEC, "-n", "2", sys.executable, "-m", "mpi4py",
                 str(REPO / "launch" / "live_stream.py"), "--stdin"],
                input_text="0.1 0.2 | 0.3\n0.3 | 0.1\n- | -\n0.5 | 0.2\n")
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert "node 1: 4 steps" in piped.stdout
    assert re.search(r"node 0 step 2: prediction \+nan label -", piped.stdout)


NODE_SCRIPT = """
import sys
import numpy as np
from mpi4py import MPI
import mcdpf
from mcdpf.io import read_stream_file

comm = MPI.COMM_WORLD
config = mcdpf.load_config(sys.argv[1])
stream = read_stream_file(config.data.path, comm.rank, comm.size)
predictions = []
with mcdpf.Node(config, comm, input_dim=stream.input_dim) as node:
    for t in range(stream.steps):
        predictions.append(node.predict(stream.sequence(t)))
        node.learn(stream.targets[t])
    np.save(sys.argv[2] + f"/predictions-{comm.rank}.npy", np.array(predictions))
    np.save(sys.argv[2] + f"/estimate-{comm.rank}.npy", node.estimate)
"""


@pytest.mark.parametrize("algorithm", ALGORITHMS.names())
def test_cli_on_a_stream_file_equals_a_node_fed_step_by_step(tmp_path, algorithm):
    rng = np.random.default_rng(8)
    streams = []
    for _ in range(3):
        lengths = rng.integers(1, 5, size=20)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        streams.append(mcdpf.Stream.from_arrays(rng.standard_normal((offsets[-1], 2)),
                                                offsets, rng.standard_normal(20)))
    write_stream_file(tmp_path / "s.h5", streams)
    config = tmp_path / "c.toml"
    config.write_text(f'[run]\nalgorithm = "{algorithm}"\nseed = 2\nprogress_seconds = 0\n'
                      '[topology]\nname = "ring"\n[data]\nsource = "file"\n'
                      f'path = "{tmp_path / "s.h5"}"\n[filter]\nparticles = 25\n')
    cli = run_mpi(3, "train", config, "--out", tmp_path / "cli", "--quiet")
    assert cli.returncode == 0, cli.stderr
    script = tmp_path / "node.py"
    script.write_text(NODE_SCRIPT)
    fed = python_mpi(3, script, config, tmp_path)
    assert fed.returncode == 0, fed.stderr[-3000:]
    for node in range(3):
        with h5py.File(tmp_path / "cli" / f"node-{node:04d}.h5") as handle:
            np.testing.assert_array_equal(
                np.load(tmp_path / f"predictions-{node}.npy"), handle["prediction"][()])
            np.testing.assert_array_equal(
                np.load(tmp_path / f"estimate-{node}.npy"), handle["theta_mean"][()])


def test_topologies_from_edges_names_and_networkx():
    networkx = pytest.importorskip("networkx")
    from_graph = mcdpf.topology_from_networkx(networkx.cycle_graph(5))
    from_edges = mcdpf.topology_from_edges([[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]])
    by_name = mcdpf.topology_from_name("ring", 5)
    for topology in (from_graph, from_edges):
        assert topology.edges == by_name.edges
        np.testing.assert_array_equal(topology.transition, by_name.transition)
    config = mcdpf.load_config({"topology": from_graph})
    assert config.topology.edges == [list(e) for e in by_name.edges]
    with pytest.raises(mcdpf.InputError, match="nodes must be 0 .. 2"):
        mcdpf.topology_from_networkx(networkx.relabel_nodes(networkx.path_graph(3),
                                                            {0: "a", 1: "b", 2: "c"}))
    with pytest.raises(mcdpf.InputError, match="not connected"):
        mcdpf.topology_from_edges([[0, 1], [2, 3]])


def test_load_config_from_a_dictionary_with_overrides(tmp_path):
    config = mcdpf.load_config({"topology": {"name": "ring"}, "filter": {"particles": 7}},
                               overrides={"filter.walk_steps": 5, "run.algorithm": "rpf"
                                          if "rpf" in ALGORITHMS else "pf"})
    assert config.filter.particles == 7 and config.filter.walk_steps == 5
    with pytest.raises(mcdpf.InputError, match="unknown key 'particle' in \\[filter\\].*"
                                               "did you mean 'particles'"):
        mcdpf.load_config({"topology": {"name": "ring"}, "filter": {"particle": 7}})
    with pytest.raises(mcdpf.InputError,
                       match=r"override filter.particles: \[filter\] particles = 0: must be >= 1"):
        mcdpf.load_config({"topology": {"name": "ring"}}, overrides={"filter.particles": 0})
    with pytest.raises(mcdpf.InputError, match="Stream.from_sequences: sequences have "
                                               "different input dimensions"):
        mcdpf.Stream.from_sequences([np.zeros((2, 2)), np.zeros((1, 3))], [0.0, 1.0])


PROGRESS_SCRIPT = """
import sys
from mpi4py import MPI
import mcdpf

config = mcdpf.load_config({"topology": {"name": "ring", "nodes": MPI.COMM_WORLD.size,
                                         "walk": "lazy"},
                            "data": {"source": "synthetic-lstm"},
                            "run": {"steps": 20, "progress_seconds": float(sys.argv[1])},
                            "filter": {"particles": 20}})
mcdpf.train(config, MPI.COMM_WORLD)
"""


def test_train_prints_the_cli_progress_line_on_the_first_rank(tmp_path):
    script = tmp_path / "progress.py"
    script.write_text(PROGRESS_SCRIPT)
    shown = python_mpi(2, script, "0.001")
    assert shown.returncode == 0, shown.stderr[-3000:]
    lines = [line for line in re.split(r"[\r\n]", shown.stderr) if line.strip()]
    assert lines and all(re.fullmatch(r"mcdpf: step \d+/20  node-0 running MSE \S+  "
                                      r"[\d.]+ steps/s", line) for line in lines), lines
    assert lines[-1].startswith("mcdpf: step 20/20 ")
    silent = python_mpi(2, script, "0")
    assert silent.returncode == 0 and silent.stderr.strip() == ""


def test_user_guide_read_run_example(tmp_path):
    """docs/user-guide.md's ``read_run`` block, on the run its example describes (shorter)."""
    config = tmp_path / "co2.toml"
    config.write_text(f'[topology]\nname = "ring"\n[run]\nsteps = 60\n[data]\nsource = "csv"\n'
                      f'path = "{REPO / "mcdpf/datasets/series/co2.csv"}"\n'
                      'columns = ["co2"]\nwindow = 4\n')
    trained = run_mpi(2, "train", config, "--out", tmp_path / "runs" / "co2", "--quiet")
    assert trained.returncode == 0, trained.stderr
    script = tmp_path / "guide.py"
    script.write_text(python_blocks("docs/user-guide.md")
                      + "\nassert run.units == 'scaled', run.units"
                      + "\nassert abs(run.targets[0, 0] - 358.7) < 0.05, run.targets[0, :3]\n")
    result = run([sys.executable, str(script)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_developing_guide_plugin_block_runs_through_train(tmp_path):
    """docs/developing.md's plugin block, in a fresh interpreter, then trained by name."""
    script = tmp_path / "plugin.py"
    script.write_text(python_blocks("docs/developing.md") + (
        "\nfrom mpi4py import MPI\nimport mcdpf\n"
        "config = mcdpf.load_config({'run': {'algorithm': 'my-sgd', 'steps': 5},"
        " 'topology': {'name': 'ring'}, 'data': {'source': 'synthetic-lstm'}})\n"
        "result = mcdpf.train(config, MPI.COMM_SELF)\n"
        "print('my-sgd MSE', result.report()['mse'])\n"))
    result = run([sys.executable, str(script)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "my-sgd MSE" in result.stdout


BLAS_SCRIPT = """
import json, sys
import numpy as np
from mpi4py import MPI
from threadpoolctl import threadpool_info
import mcdpf
import mcdpf.driver as driver

def blas_threads():
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

seen, run_node = {}, driver.run_node
def watched(*args, **kwargs):
    seen["during"] = blas_threads()
    return run_node(*args, **kwargs)
driver.run_node = watched
seen["before"] = blas_threads()
config = mcdpf.load_config({"run": {"algorithm": "dpf", "steps": 5},
                            "topology": {"name": "ring"}, "data": {"source": "synthetic-lstm"},
                            "filter": {"particles": 4, "kernel": "gaussian",
                                       "covariance": "lowrank", "rank": 2}})
mcdpf.train(config, MPI.COMM_SELF)
seen["after"] = blas_threads()
print(json.dumps(seen))
"""


def test_a_run_uses_one_blas_thread_and_restores_the_pool(tmp_path):
    """Ranks, not BLAS pools, share the cores (mcdpf.blas); the importer's setting returns."""
    script = tmp_path / "blas.py"
    script.write_text(BLAS_SCRIPT)
    env = {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    result = run([sys.executable, str(script)], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["before"] and all(count == 2 for count in seen["before"]), seen
    assert seen["during"] == [1] * len(seen["before"]), seen
    assert seen["after"] == seen["before"], seen
