"""Elastic recovery: a supervised run survives real kills on the surviving nodes, bit-exactly.

The reference of every check is an uninterrupted run with ``faults.drop`` at the steps the
resumes recorded (``resumes.json``): the survivors' outputs must equal it bit for bit. The
reference keeps the ``faults.kill`` entries too: a node that has left is never killed.
"""

import json
import os
import shlex
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
from support import HANG_TIMEOUT, mcdpf_command, run, run_mpi

from mcdpf.cli import build_parser
from mcdpf.markers import DEAD, ERROR, FINISHED, RUNNING, TERMINATED
from mcdpf.resume import newest_saved
from mcdpf.rundir import RunDirectory
from mcdpf.supervise import Supervisor, lost_ranks

COMPARED = ("prediction", "squared_error", "theta_mean", "ess", "particles_held",
            "particles_received", "bytes_sent", "theta_estimates", "skipped")
REFUSAL_TIMEOUT = 60  # a refusal comes within seconds; this only bounds hangs


def write_config(tmp_path, algorithm, steps=40, extra=""):
    path = tmp_path / f"{algorithm}.toml"
    path.write_text(f'[topology]\nname = "ring"\n[run]\nalgorithm = "{algorithm}"\n'
                    f'steps = {steps}\ncheckpoint_every = 5\nrecord_estimates = true\n'
                    'progress_seconds = 0\n[data]\nsource = "synthetic-lstm"\n[filter]\n'
                    'particles = 30\nwalk_steps = 2\n' + extra)
    return path


def supervise(config, ranks, run_dir, *options):
    return run(mcdpf_command("supervise", config, "-n", ranks, "--out", run_dir, "--quiet",
                             "--retries", 2, *options))


def history(run_dir, name):
    return json.loads((run_dir / name).read_text())


def assert_survivors_equal(run_dir, reference, ranks, lost):
    for node in sorted(set(range(ranks)) - set(lost)):
        with h5py.File(run_dir / f"node-{node:04d}.h5") as a, \
                h5py.File(reference / f"node-{node:04d}.h5") as b:
            for key in COMPARED:
                np.testing.assert_array_equal(a[key][()], b[key][()], err_msg=f"{node} {key}")


def assert_lost_node_file(run_dir, node, left_at):
    """The lost node's file: written from its checkpoint, valid up to it, left at S."""
    with h5py.File(run_dir / f"node-{node:04d}.h5") as handle:
        valid = int(handle.attrs["valid_until"])
        assert int(handle.attrs["dropped_at"]) == left_at and 0 < valid <= left_at
        assert np.all(np.isfinite(handle["squared_error"][:valid]))
        assert np.all(np.isnan(handle["squared_error"][valid:]))
        assert np.all(handle["skipped"][left_at:] == 1)


def random_kill(seed, ranks, first=6, last=35):
    rng = np.random.default_rng(seed)
    return int(rng.integers(ranks)), int(rng.integers(first, last))


@pytest.mark.parametrize("algorithm, ranks, seed", [("dpf", 4, 11), ("rpf", 3, 12),
                                                    ("dekf", 4, 13)])
def test_supervised_run_survives_a_random_kill(tmp_path, algorithm, ranks, seed):
    """kill -9 of a random rank at a random step: resumed on the others without it."""
    node, step = random_kill(seed, ranks)
    config = write_config(tmp_path, algorithm)
    kill = f"faults.kill=[[{node}, {step}]]"
    result = supervise(config, ranks, tmp_path / "run", "--set", kill)
    assert result.returncode == 0, result.stderr
    (resume,) = history(tmp_path / "run", "resumes.json")
    assert resume["without"] == [node] and resume["ranks"] == ranks - 1
    assert resume["step"] <= step and "attempt 1 failed" in resume["cause"] and resume["time"]
    (restart,) = history(tmp_path / "run", "restarts.json")
    assert restart["lost"] == [node] and restart["resume_step"] == resume["step"]
    assert restart["attempt"] == 1 and restart["exit_code"] != 0
    reference = run_mpi(ranks, "train", config, "--out", tmp_path / "ref", "--quiet",
                        "--set", kill, "--set", f"faults.drop=[[{node}, {resume['step']}]]")
    assert reference.returncode == 0, reference.stderr
    assert_survivors_equal(tmp_path / "run", tmp_path / "ref", ranks, [node])
    assert_lost_node_file(tmp_path / "run", node, resume["step"])
    report = run(mcdpf_command("report", tmp_path / "run"))
    assert f"left at step {resume['step']}" in report.stdout
    assert f"resumed at step {resume['step']} without node {node} on {ranks - 1} ranks" \
        in report.stdout
    summary = json.loads(run(mcdpf_command("report", tmp_path / "run", "--json")).stdout)
    assert summary["nodes"][node]["dropped_at"] == resume["step"]
    assert summary["resumes"] == [resume]


def test_a_second_failure_during_the_resumed_run(tmp_path):
    """Two kills: the second in the job resumed without the first node; the effective
    schedule is cumulative, and a later --without of a node that left is refused."""
    rng = np.random.default_rng(21)
    first = int(rng.integers(4))
    second = (first + 1) % 4  # a neighbour: the ring minus both stays connected
    first_step = int(rng.integers(6, 15))
    second_step = int(rng.integers(first_step + 6, 35))
    config = write_config(tmp_path, "dpf")
    kills = f"faults.kill=[[{first}, {first_step}], [{second}, {second_step}]]"
    result = supervise(config, 4, tmp_path / "run", "--set", kills)
    assert result.returncode == 0, result.stderr
    resumes = history(tmp_path / "run", "resumes.json")
    assert [r["without"] for r in resumes] == [[first], [second]]
    assert [r["ranks"] for r in resumes] == [3, 2]
    assert [r["lost"] for r in history(tmp_path / "run", "restarts.json")] == \
        [[first], [second]]
    drops = f"faults.drop=[[{first}, {resumes[0]['step']}], [{second}, {resumes[1]['step']}]]"
    reference = run_mpi(4, "train", config, "--out", tmp_path / "ref", "--quiet", "--set",
                        kills, "--set", drops)
    assert reference.returncode == 0, reference.stderr
    assert_survivors_equal(tmp_path / "run", tmp_path / "ref", 4, [first, second])
    for node, resume in zip((first, second), resumes, strict=True):
        assert_lost_node_file(tmp_path / "run", node, resume["step"])
    again = run_mpi(1, "train", config, "--resume", tmp_path / "run", "--without", first,
                    timeout=REFUSAL_TIMEOUT)
    assert again.returncode == 2 and f"node {first} already left" in again.stderr


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """A 4-node dpf run killed at step 17 (checkpoints up to step 15)."""
    tmp_path = tmp_path_factory.mktemp("killed")
    config = write_config(tmp_path, "dpf")
    crashed = run_mpi(4, "train", config, "--out", tmp_path / "run", "--quiet", "--set",
                      "faults.kill=[[1, 17]]")
    assert crashed.returncode not in (0, 2)
    return config, tmp_path / "run"


def one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mcdpf: error: "), result.stderr
    return lines[0]


def test_a_loss_that_disconnects_the_network_is_refused(killed_run):
    config, run_dir = killed_run
    result = run_mpi(2, "train", config, "--resume", run_dir, "--without", "0,2",
                     timeout=REFUSAL_TIMEOUT)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "--without 0,2" in line and "disconnected" in line
    assert not (run_dir / "resumes.json").exists()


@pytest.mark.parametrize("ranks, options, message", [
    (3, ["--without", "7"], "node 7 does not exist (nodes 0..3)"),
    (2, ["--without", "1"], "start 3 ranks (mpiexec -n 3), not 2"),
    (3, ["--without", "one"], "expected node numbers like 2 or 0,3"),
    (3, ["--without", "1,1"], "a node is named twice"),
])
def test_without_is_validated(killed_run, ranks, options, message):
    config, run_dir = killed_run
    result = run_mpi(ranks, "train", config, "--resume", run_dir, *options,
                     timeout=REFUSAL_TIMEOUT)
    assert result.returncode == 2
    assert message in one_error_line(result)


def test_without_needs_a_resume_and_a_checkpoint(tmp_path):
    config = write_config(tmp_path, "dpf")
    alone = run_mpi(3, "train", config, "--out", tmp_path / "o", "--without", "1",
                    timeout=REFUSAL_TIMEOUT)
    assert alone.returncode == 2 and "give --resume RUN_DIR" in one_error_line(alone)
    (tmp_path / "empty").mkdir()
    none = run_mpi(3, "train", config, "--resume", tmp_path / "empty", "--without", "1",
                   timeout=REFUSAL_TIMEOUT)
    assert none.returncode == 2 and "no checkpoint" in one_error_line(none)


def test_a_job_stopped_as_a_whole_resumes_on_every_node(tmp_path):
    """SIGTERM to every rank (a preemption): nothing is lost, the supervisor resumes with
    all K from the newest checkpoint, bit-exactly; the checkpoints come from a writer
    thread (run.checkpoint_async)."""
    config = write_config(tmp_path, "dpf", steps=600)
    options = ["--set", "run.checkpoint_async=true"]
    run_dir = tmp_path / "run"
    supervisor = subprocess.Popen(
        mcdpf_command("supervise", config, "-n", 3, "--out", run_dir, "--quiet", *options),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + HANG_TIMEOUT
    while not all(list(run_dir.glob(f"checkpoints/node-000{node}-step-*.h5"))
                  for node in range(3)):
        assert supervisor.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    for process in json.loads((run_dir / "processes.json").read_text()):
        os.kill(process["pid"], signal.SIGTERM)
    _, stderr = supervisor.communicate(timeout=HANG_TIMEOUT)
    assert supervisor.returncode == 0, stderr
    (restart,) = history(run_dir, "restarts.json")
    assert restart["lost"] == [] and restart["action"] == "resume" and restart["ranks"] == 3
    (resume,) = history(run_dir, "resumes.json")
    assert resume["without"] == [] and resume["step"] == restart["resume_step"]
    reference = run_mpi(3, "train", config, "--out", tmp_path / "ref", "--quiet", *options)
    assert reference.returncode == 0, reference.stderr
    assert_survivors_equal(run_dir, tmp_path / "ref", 3, [])


def test_which_ranks_are_lost():
    """From the markers: errors and deaths lose their nodes; a stop by a signal, or every
    rank vanishing at once, loses none; without markers, the ranks on a failed host."""
    processes = [{"rank": r, "host": "a" if r < 2 else "b", "pid": r} for r in range(4)]
    assert lost_ranks([RUNNING, DEAD, RUNNING, TERMINATED], set(), processes) == [1]
    assert lost_ranks([ERROR, TERMINATED, TERMINATED, TERMINATED], set(), processes) == [0]
    assert lost_ranks([TERMINATED] * 4, set(), processes) == []
    assert lost_ranks([DEAD] * 4, set(), processes) == []
    assert lost_ranks([RUNNING] * 4, {"b"}, processes) == [2, 3]
    assert lost_ranks([RUNNING] * 4, {"a", "b"}, processes) == []
    assert lost_ranks([FINISHED, DEAD, FINISHED, FINISHED], set(), processes) == [1]


def test_config_drops_and_a_lost_node_combine(tmp_path):
    """faults.drop of node 2 at step 12, then node 1 killed at step 26: the run resumes
    without node 1 on nodes 0, 2 and 3, node 2 idling from its departure checkpoint (it
    wrote none after it left); the effective schedule is faults.drop plus the resume."""
    config = write_config(tmp_path, "dpf", extra="[faults]\ndrop = [[2, 12]]\n")
    kill = "faults.kill=[[1, 26]]"
    result = supervise(config, 4, tmp_path / "run", "--set", kill)
    assert result.returncode == 0, result.stderr
    (resume,) = history(tmp_path / "run", "resumes.json")
    assert resume["without"] == [1] and resume["nodes"] == [0, 2, 3]
    reference = run_mpi(4, "train", config, "--out", tmp_path / "ref", "--quiet", "--set",
                        kill, "--set", f"faults.drop=[[2, 12], [1, {resume['step']}]]")
    assert reference.returncode == 0, reference.stderr
    assert_survivors_equal(tmp_path / "run", tmp_path / "ref", 4, [1])
    assert_lost_node_file(tmp_path / "run", 1, resume["step"])


def test_the_oracle_reads_a_lost_nodes_data_until_it_leaves(tmp_path):
    """cpf without communication: each survivor continues from its own newest checkpoint,
    the lost node leaves at the newest any survivor has, and its stream (read from [data]
    by every rank) is the oracle's until then."""
    config = write_config(tmp_path, "cpf")
    crashed = run_mpi(3, "train", config, "--out", tmp_path / "run", "--quiet", "--set",
                      "faults.kill=[[0, 13]]")
    assert crashed.returncode not in (0, 2)
    resumed = run_mpi(2, "train", config, "--resume", tmp_path / "run", "--quiet",
                      "--without", "0", "--cause", "node 0 crashed")
    assert resumed.returncode == 0, resumed.stderr
    (resume,) = history(tmp_path / "run", "resumes.json")
    assert resume["cause"] == "node 0 crashed" and resume["nodes"] == [1, 2]
    reference = run_mpi(3, "train", config, "--out", tmp_path / "ref", "--quiet", "--set",
                        f"faults.drop=[[0, {resume['step']}]]")
    assert reference.returncode == 0, reference.stderr
    assert_survivors_equal(tmp_path / "run", tmp_path / "ref", 3, [0])
    assert_lost_node_file(tmp_path / "run", 0, resume["step"])


def test_supervise_gives_up_after_its_retries(tmp_path):
    config = write_config(tmp_path, "dpf")
    result = run(mcdpf_command("supervise", config, "-n", 3, "--out", tmp_path / "run",
                               "--quiet", "--retries", 0, "--set", "faults.kill=[[1, 8]]"))
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if "supervise" in line]
    assert line.startswith("mcdpf: error: supervise: gave up after 1 failed attempt (")
    assert "node 1 lost" in line
    (restart,) = history(tmp_path / "run", "restarts.json")
    assert restart["action"] == "gave up" and restart["lost"] == [1]


def test_an_independent_run_keeps_a_lost_nodes_later_checkpoint(tmp_path):
    """Nodes that do not communicate drift apart: when the lost node saved later than every
    survivor (here no survivor has saved anything: their checkpoints are removed), it
    leaves at its own newest checkpoint, the survivors start from step 0, and they still
    equal the uninterrupted run with that drop."""
    for algorithm in ("cpf", "pf"):
        config = write_config(tmp_path, algorithm, steps=30)
        run_dir = tmp_path / f"run-{algorithm}"
        finished = run_mpi(3, "train", config, "--out", run_dir, "--quiet", "--set",
                           "run.checkpoint_every=15")
        assert finished.returncode == 0, finished.stderr
        for checkpoint in (run_dir / "checkpoints").glob("node-*.h5"):
            node, step = (int(part) for part in checkpoint.stem.split("-")[1::2])
            if node != 0 or step > 15:
                checkpoint.unlink()
        # the rule mcdpf supervise predicts the resume step by
        assert newest_saved(RunDirectory(run_dir), [1, 2]) == -1
        assert newest_saved(RunDirectory(run_dir), [0]) == 15
        resumed = run_mpi(2, "train", config, "--resume", run_dir, "--quiet",
                          "--without", "0", "--cause", "node 0 crashed")
        assert resumed.returncode == 0, resumed.stderr
        (resume,) = history(run_dir, "resumes.json")
        assert resume["step"] == 15, algorithm
        reference = tmp_path / f"ref-{algorithm}"
        dropped = run_mpi(3, "train", config, "--out", reference, "--quiet", "--set",
                          "faults.drop=[[0, 15]]")
        assert dropped.returncode == 0, dropped.stderr
        assert_survivors_equal(run_dir, reference, 3, [0])
        assert_lost_node_file(run_dir, 0, 15)


def test_supervise_resumes_with_the_command_it_prints(tmp_path):
    """The supervisor, started with --sets from a directory that holds another `mcdpf`
    package, starts ranks that run this mcdpf; stopped by SIGTERM, it prints a resume
    command, which run as printed finishes the run equal to an uninterrupted one."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "mcdpf").mkdir(parents=True)
    for name in ("__init__.py", "__main__.py"):
        (elsewhere / "mcdpf" / name).write_text("raise SystemExit('not this mcdpf')\n")
    config = write_config(tmp_path, "dpf", steps=600)
    sets = ["--set", "filter.particles=24", "--set", "run.seed=3"]
    run_dir = tmp_path / "run"
    # python -P: the supervisor itself imports this mcdpf (as the `mcdpf` script does)
    supervisor = subprocess.Popen(
        [mcdpf_command()[0], "-P", *mcdpf_command("supervise", config, "-n", 2, "--out",
                                                   run_dir, "--quiet", *sets)[1:]],
        cwd=elsewhere, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + HANG_TIMEOUT
    while not all(list(run_dir.glob(f"checkpoints/node-000{node}-step-*.h5"))
                  for node in range(2)):
        assert supervisor.poll() is None and time.monotonic() < deadline, \
            supervisor.communicate()[1]
        time.sleep(0.02)
    supervisor.send_signal(signal.SIGTERM)
    _, stderr = supervisor.communicate(timeout=HANG_TIMEOUT)
    assert supervisor.returncode == 128 + signal.SIGTERM, stderr
    # the job's own stop line (every rank saved) comes first; the supervisor's, its command
    (line,) = [line for line in stderr.splitlines()
               if line.startswith("mcdpf: supervise:") and "stopped by SIGTERM" in line]
    command = line.split("resume with: ", 1)[1]
    resumed = run(shlex.split(command), cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    reference = run_mpi(2, "train", config, "--out", tmp_path / "ref", "--quiet", *sets)
    assert reference.returncode == 0, reference.stderr
    assert_survivors_equal(run_dir, tmp_path / "ref", 2, [])


def test_supervise_offers_a_resume_only_when_there_is_one(tmp_path):
    config = write_config(tmp_path, "dpf")
    args = build_parser().parse_args(["supervise", str(config), "-n", "2", "--out",
                                      str(tmp_path / "run")])
    supervisor = Supervisor(args)
    assert supervisor.resume_command() is None
    assert "no checkpoint to resume from" in supervisor.how_to_resume()
