"""Launch scripts: the local script, the Slurm script under a stand-in srun, every config."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import MPIEXEC, REPO

CONFIG = ('[topology]\nname = "ring"\nnodes = 2\n[run]\nsteps = 12\n[data]\n'
          'source = "synthetic-lstm"\n[filter]\nparticles = 20\n')


def environment(extra_path=None):
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(filter(None, [extra_path, bin_dir, env.get("PATH", "")]))
    return env


def test_local_script_trains_and_reports(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG)
    out = tmp_path / "run"
    result = subprocess.run(["bash", str(REPO / "launch" / "local.sh"), str(config), "--out",
                             str(out), "--quiet"], capture_output=True, text=True,
                            env=environment(), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "-n 2 mcdpf train" in result.stderr  # K taken from topology.nodes
    assert "network MSE" in result.stdout
    assert (out / "node-0001.h5").is_file() and (out / "mse.png").is_file()


def test_slurm_script_under_a_stand_in_srun(tmp_path, script_numba_cache):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    srun = fake_bin / "srun"
    # Drop srun's own options and start the ranks with mpiexec, as srun would.
    srun.write_text(f'#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\n'
                    f'exec "{MPIEXEC}" -n "$SLURM_NTASKS" "$@"\n')
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG)
    env = environment(str(fake_bin))
    env.update(SLURM_NTASKS="2", SLURM_JOB_ID="77", SLURM_SUBMIT_DIR=str(tmp_path),
               MCDPF_ENV=str(Path(sys.executable).parent.parent),
               NUMBA_CACHE_DIR=script_numba_cache)
    result = subprocess.run(["bash", str(REPO / "launch" / "slurm.sbatch"), str(config)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "tiny-77" / "node-0000.h5").is_file()
    assert "network MSE" in result.stdout


@pytest.mark.parametrize("config", sorted((REPO / "launch").glob("*.toml")),
                         ids=lambda path: path.name)
def test_every_launch_configuration_runs_a_few_steps(config, tmp_path):
    """Each launch/*.toml validates and trains under launch/local.sh (K from its topology)."""
    out = tmp_path / "run"
    result = subprocess.run(["bash", str(REPO / "launch" / "local.sh"), str(config), "--out",
                             str(out), "--quiet", "--set", "run.steps=4"],
                            capture_output=True, text=True, env=environment(), cwd=tmp_path,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert "network MSE" in result.stdout
    assert (out / "node-0000.h5").is_file()


def test_dpf_best_runs_under_four_ranks_and_sends_what_its_comment_says(tmp_path):
    """launch/dpf-best.toml (20 steps) under ``mpiexec -n 4 python -m mcdpf train``: dpf
    with migrating Gaussian particles, each move one 704-byte record (the comment's)."""
    import json

    import h5py

    from mcdpf.config import load_config
    from mcdpf.covariance import build_covariance
    from mcdpf.dpf import wire_record_dtype
    from mcdpf.models import build_model

    path = REPO / "launch" / "dpf-best.toml"
    config = load_config(path)
    assert (config.run.algorithm, config.filter.kernel) == ("dpf", "gaussian")
    model = build_model(config.model, 2)  # window = 2: two columns
    form = build_covariance(config.filter.covariance, model, config.filter.rank)
    record = wire_record_dtype(model, config.filter.wire_dtype, form).itemsize
    assert record == 704 and "704 bytes" in path.read_text()
    out = tmp_path / "run"
    result = subprocess.run([MPIEXEC, "-n", "4", sys.executable, "-m", "mcdpf", "train",
                             str(path), "--set", "run.steps=20", "--out", str(out),
                             "--quiet"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    report = subprocess.run([sys.executable, "-m", "mcdpf", "report", str(out), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert json.loads(report.stdout)["algorithm"] == "dpf"
    for node in range(4):
        with h5py.File(out / f"node-{node:04d}.h5") as handle:
            sent, moves = handle["bytes_sent"][()], handle["particles_sent"][()]
        # two walk steps' stamped counts to each of two neighbours (16 bytes each)
        np.testing.assert_array_equal(sent - 2 * 2 * 16, moves * record)
