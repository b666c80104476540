"""Reliability: kill and resume bit-exactly, torn checkpoints, the abort path, node loss."""

import json
import time

import h5py
import numpy as np
import pytest
from support import assert_same_outputs, mcdpf_command, run, run_mpi

JOB_END_TIMEOUT = 60  # a failed rank must end the job within seconds; this only bounds hangs


def write_config(tmp_path, algorithm, steps=40, extra=""):
    path = tmp_path / f"{algorithm}.toml"
    path.write_text(f'[topology]\nname = "ring"\n[run]\nalgorithm = "{algorithm}"\n'
                    f'steps = {steps}\ncheckpoint_every = 5\nrecord_estimates = true\n'
                    '[data]\nsource = "synthetic-lstm"\n[filter]\nparticles = 30\n'
                    'walk_steps = 2\n' + extra)
    return path


@pytest.mark.parametrize("ranks, algorithm, killed, kill_step", [
    (2, "dpf", 1, 7),     # between checkpoints
    (3, "dpf", 0, 10),    # right after a checkpoint: some ranks may have the next one
    (4, "dpf", 3, 23),
    (3, "dekf", 2, 16),
    (2, "cpf", 0, 12),
    (3, "pf", 1, 31),
    (3, "dadam", 1, 13),  # Adam's moments and update count are checkpointed state
    (2, "adam", 0, 22),
])
def test_kill_and_resume_is_bit_identical(tmp_path, ranks, algorithm, killed, kill_step):
    config = write_config(tmp_path, algorithm)
    reference = run_mpi(ranks, "train", config, "--out", tmp_path / "ref", "--quiet")
    assert reference.returncode == 0, reference.stderr
    run_dir = tmp_path / "run"
    started = time.monotonic()
    crashed = run_mpi(ranks, "train", config, "--out", run_dir, "--quiet", "--set",
                      f"faults.kill=[[{killed}, {kill_step}]]", timeout=JOB_END_TIMEOUT)
    assert crashed.returncode not in (0, 2)
    assert time.monotonic() - started < JOB_END_TIMEOUT
    assert f"rank {killed}: faults.kill" in crashed.stderr
    if algorithm in ("dpf", "dekf", "dsgd", "dadam"):  # ranks in step: none finished
        assert not list(run_dir.glob("node-*.h5"))
    pids = json.loads((run_dir / "processes.json").read_text())
    assert [p["rank"] for p in pids] == list(range(ranks))
    resumed = run_mpi(ranks, "train", config, "--resume", run_dir, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_outputs(tmp_path / "ref", run_dir, ranks)


def test_resume_skips_torn_checkpoints(tmp_path):
    """A truncated newest checkpoint (disk trouble) and a leftover .tmp are not trusted:
    resume falls back to the newest complete step every rank has, still bit-exact."""
    config = write_config(tmp_path, "dpf")
    assert run_mpi(2, "train", config, "--out", tmp_path / "ref", "--quiet").returncode == 0
    run_dir = tmp_path / "run"
    run_mpi(2, "train", config, "--out", run_dir, "--quiet", "--set", "faults.kill=[[1, 17]]")
    checkpoints = run_dir / "checkpoints"
    newest = checkpoints / "node-0000-step-00000015.h5"
    assert newest.is_file()
    newest.write_bytes(newest.read_bytes()[:200])
    (checkpoints / "node-0001-step-00000020.h5.tmp").write_bytes(b"half a file")
    resumed = run_mpi(2, "train", config, "--resume", run_dir, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_outputs(tmp_path / "ref", run_dir, 2)


def test_resume_refuses_other_configuration_or_rank_count(tmp_path):
    config = write_config(tmp_path, "dpf")
    run_dir = tmp_path / "run"
    run_mpi(3, "train", config, "--out", run_dir, "--quiet", "--set", "faults.kill=[[0, 12]]")
    changed = run_mpi(3, "train", config, "--resume", run_dir, "--set", "filter.particles=31",
                      timeout=JOB_END_TIMEOUT)
    assert changed.returncode == 2
    assert "different configuration: filter.particles (30 vs 31)" in changed.stderr
    fewer = run_mpi(2, "train", config, "--resume", run_dir, timeout=JOB_END_TIMEOUT)
    assert fewer.returncode == 2 and "3-node run" in fewer.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = run_mpi(3, "train", config, "--resume", empty, timeout=JOB_END_TIMEOUT)
    assert none.returncode == 2 and "no checkpoint" in none.stderr


def test_an_exception_on_one_rank_aborts_the_job(tmp_path):
    config = write_config(tmp_path, "dpf", steps=2000)
    started = time.monotonic()
    result = run_mpi(4, "train", config, "--out", tmp_path / "o", "--set",
                     "faults.crash=[[2, 5]]", timeout=JOB_END_TIMEOUT)
    assert time.monotonic() - started < JOB_END_TIMEOUT
    assert result.returncode not in (0, 2)
    assert "rank 2: faults.crash" in result.stderr and "aborting" in result.stderr


@pytest.mark.parametrize("algorithm", ["dpf", "dekf", "dsgd", "cpf", "pf", "dadam"])
def test_node_loss(tmp_path, algorithm):
    """Node 2 of a 4-ring leaves at step 15: the others go on over the path 3-0-1."""
    config = write_config(tmp_path, algorithm, steps=30)
    result = run_mpi(4, "train", config, "--out", tmp_path / "o", "--quiet", "--set",
                     "faults.drop=[[2, 15]]")
    assert result.returncode == 0, result.stderr
    summary = json.loads(run(mcdpf_command("report", tmp_path / "o", "--json")).stdout)
    assert [n["dropped_at"] for n in summary["nodes"]] == [-1, -1, 15, -1]
    with h5py.File(tmp_path / "o" / "node-0002.h5") as handle:
        assert np.all(np.isnan(handle["squared_error"][15:]))
        assert np.all(np.isfinite(handle["squared_error"][:15]))
        assert np.all(handle["bytes_sent"][15:] == 0)
    held = []
    for node in (0, 1, 3):
        with h5py.File(tmp_path / "o" / f"node-000{node}.h5") as handle:
            assert np.all(np.isfinite(handle["squared_error"][()]))
            neighbours_traffic = handle["bytes_sent"][15:]
            held.append(handle["particles_held"][15:])
            if algorithm in ("dpf", "dekf", "dsgd", "dadam"):
                assert np.all(neighbours_traffic > 0)
    if algorithm == "dpf":
        assert np.all(np.sum(held, axis=0) == 3 * 30)  # nothing walks to the lost node


def test_a_drop_that_disconnects_the_network_is_refused(tmp_path):
    config = write_config(tmp_path, "dpf")
    result = run_mpi(4, "train", config, "--out", tmp_path / "o", "--set",
                     "faults.drop=[[0, 5], [2, 9]]", timeout=JOB_END_TIMEOUT)
    assert result.returncode == 2
    assert "faults.drop at step 9" in result.stderr and "disconnected" in result.stderr
    late = run_mpi(2, "train", config, "--out", tmp_path / "o", "--set",
                   "faults.drop=[[1, 40]]", timeout=JOB_END_TIMEOUT)
    assert late.returncode == 2 and "not before run end" in late.stderr


def one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mcdpf: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("ranks, algorithm, killed, kill_step", [
    (1, "pf", 0, 13),
    (2, "dpf", 1, 17),
    (4, "dekf", 2, 9),
])
def test_resume_from_the_run_alone(tmp_path, ranks, algorithm, killed, kill_step):
    """A run started with --sets, killed, continues from `--resume RUN_DIR` alone (no
    CONFIG, no --set, from another directory): the run keeps its resolved configuration,
    its injected kill is not repeated, and the outputs equal the uninterrupted run's. A
    configuration given again that disagrees is refused naming every differing key."""
    config = write_config(tmp_path, algorithm)
    sets = ["--set", "filter.particles=24", "--set", "run.seed=5", "--set",
            "ekf.initial_variance=0.02"]
    reference = run_mpi(ranks, "train", config, "--out", tmp_path / "ref", "--quiet", *sets)
    assert reference.returncode == 0, reference.stderr
    run_dir = tmp_path / "run"
    crashed = run_mpi(ranks, "train", config, "--out", run_dir, "--quiet", *sets, "--set",
                      f"faults.kill=[[{killed}, {kill_step}]]", timeout=JOB_END_TIMEOUT)
    assert crashed.returncode not in (0, 2), crashed.stderr
    refused = run_mpi(ranks, "train", "--resume", run_dir, "--set", "filter.particles=30",
                      "--set", "run.seed=6", timeout=JOB_END_TIMEOUT)
    assert refused.returncode == 2
    line = one_error_line(refused)
    assert "filter.particles (24 vs 30)" in line and "run.seed (5 vs 6)" in line
    again = run_mpi(ranks, "train", config, "--resume", run_dir, "--quiet",
                    timeout=JOB_END_TIMEOUT)  # the CONFIG without the --sets
    assert again.returncode == 2
    line = one_error_line(again)
    assert all(key in line for key in ("filter.particles", "run.seed", "ekf.initial_variance"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = run_mpi(ranks, "train", "--resume", run_dir.resolve(), "--quiet",
                      "--set", "run.threads=1", cwd=elsewhere)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_outputs(tmp_path / "ref", run_dir, ranks)
