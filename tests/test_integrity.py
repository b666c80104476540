"""Integrity: checkpoint digests, disk faults, the memory budget, compiling once.

Disk faults use a small tmpfs (mounted here when the tests run as root and the kernel
allows it); without one, the full-disk tests fall back to a file-size limit
(``RLIMIT_FSIZE``, with SIGXFSZ ignored) that makes the run's writes fail the same way
(``EFBIG`` instead of ``ENOSPC``).
"""

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from support import MPIEXEC, REPO, mcdpf_command, run, run_mpi
from test_resilience import assert_same_outputs, write_config

from mcdpf.errors import EXIT_STORAGE_ERROR, StorageError
from mcdpf.io import DamagedCheckpoint, read_checkpoint, write_checkpoint

JOB_END_TIMEOUT = 120  # a failed write must end the job within seconds; this bounds hangs


def _flip_bit(path: Path, dataset: str) -> None:
    """Flip one bit in the middle of ``dataset``'s stored bytes."""
    with h5py.File(path, "r") as handle:
        item = handle[dataset]
        offset = item.id.get_offset() + item.id.get_storage_size() // 2
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _learner_dataset(path: Path, part: str) -> str:
    with h5py.File(path, "r") as handle:
        names = [f"learner/{name}" for name in handle["learner"] if part in name]
    assert names, f"no learner dataset named like {part!r} in {path}"
    return names[0]


@pytest.mark.parametrize("what", ["theta", "ids", "records_table", "attribute"])
def test_a_flipped_bit_is_a_damaged_checkpoint(tmp_path, what):
    path = tmp_path / "c.h5"
    rng = np.random.default_rng(3)
    state = {"theta": rng.normal(size=(6, 5)), "ids": np.arange(6, dtype=np.int64),
             "log_weight": rng.normal(size=6), "generator": {"state": 12345}}
    records = {"prediction": rng.normal(size=9), "skipped": np.zeros(9, dtype=np.int8)}
    write_checkpoint(path, state, records, {"step": 4, "config": "{}"})
    loaded, saved, _ = read_checkpoint(path)
    np.testing.assert_array_equal(loaded["theta"], state["theta"])
    np.testing.assert_array_equal(saved["prediction"], records["prediction"])
    if what == "attribute":  # the random generator state lives in an attribute
        with h5py.File(path, "a") as handle:
            handle.attrs["learner_json"] = handle.attrs["learner_json"].replace("5", "6")
    else:
        _flip_bit(path, what if what == "records_table" else f"learner/{what}")
    with pytest.raises(DamagedCheckpoint, match=f"{path}: damaged checkpoint"):
        read_checkpoint(path)


@pytest.mark.parametrize("ranks, damaged_node, part", [
    (2, 0, "theta"),
    (3, 2, "log_weight"),
    (1, 0, "ids"),
    (4, 1, "theta"),
])
def test_resume_falls_back_past_a_flipped_bit(tmp_path, ranks, damaged_node, part):
    """One bit flipped in the newest checkpoint of one node: resume names the file, skips
    it and continues from the newest good checkpoint every rank has, bit-identically."""
    config = write_config(tmp_path, "pf" if ranks == 1 else "dpf")
    reference = run_mpi(ranks, "train", config, "--out", tmp_path / "ref", "--quiet")
    assert reference.returncode == 0, reference.stderr
    run_dir = tmp_path / "run"
    run_mpi(ranks, "train", config, "--out", run_dir, "--quiet", "--set",
            f"faults.kill=[[{ranks - 1}, 17]]", timeout=JOB_END_TIMEOUT)
    newest = max((run_dir / "checkpoints").glob(f"node-{damaged_node:04d}-step-*.h5"))
    _flip_bit(newest, _learner_dataset(newest, part))
    resumed = run_mpi(ranks, "train", config, "--resume", run_dir, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{newest}: damaged checkpoint" in resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert_same_outputs(tmp_path / "ref", run_dir, ranks)


# ------------------------------------------------------------------ disk faults
def _mount(size: str, options: str = "") -> Path | None:
    """A fresh tmpfs of ``size`` (``None`` where this machine does not allow one)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return None
    point = Path(tempfile.mkdtemp(prefix="mcdpf-disk-"))
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs",
                             str(point)], capture_output=True)
    if result.returncode != 0:
        point.rmdir()
        return None
    return point


def _unmount(point: Path) -> None:
    subprocess.run(["umount", "-l", str(point)], capture_output=True)
    with contextlib.suppress(OSError):
        point.rmdir()


@contextlib.contextmanager
def small_disk(tmp_path, free_bytes: int):
    """``(directory, preexec)``: writes there fail once about ``free_bytes`` are used."""
    point = _mount(f"{max(free_bytes // 1024, 64)}k")
    if point is not None:
        try:
            yield point, None
        finally:
            _unmount(point)
        return

    def limit_file_size():  # SIG_IGN survives exec: a too-large write fails with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (free_bytes, free_bytes))

    directory = tmp_path / "small-disk"
    directory.mkdir()
    yield directory, limit_file_size


def _run_limited(command, preexec):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=JOB_END_TIMEOUT,
                          cwd=REPO, env=env, preexec_fn=preexec)


def _checkpoint_bytes(run_dir: Path, step: int) -> int:
    return sum(path.stat().st_size for path in
               (run_dir / "checkpoints").glob(f"node-*-step-{step:08d}.h5"))


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_full_disk_stops_the_job_with_one_line(tmp_path, ranks):
    """The disk fills mid-run: one line naming the file, exit 74 on every rank within
    seconds, no traceback, nothing under a temporary name, the earlier checkpoints intact
    (a resume elsewhere finishes the run bit-identically)."""
    config = write_config(tmp_path, "dpf" if ranks > 1 else "pf", steps=60)
    reference = run_mpi(ranks, "train", config, "--out", tmp_path / "ref", "--quiet")
    assert reference.returncode == 0, reference.stderr
    room = int(2.5 * _checkpoint_bytes(tmp_path / "ref", 55)) + 16384
    with small_disk(tmp_path, room) as (disk, preexec):
        run_dir = disk / "run"
        started = time.monotonic()
        failed = _run_limited([MPIEXEC, "-n", str(ranks), *mcdpf_command(
            "train", config, "--out", run_dir, "--quiet")], preexec)
        assert time.monotonic() - started < JOB_END_TIMEOUT
        assert failed.returncode == EXIT_STORAGE_ERROR, failed.stderr
        errors = [line for line in failed.stderr.splitlines()
                  if line.startswith("mcdpf: error:")]
        assert len(errors) == 1 and "cannot write" in errors[0] and str(run_dir) in errors[0]
        assert "Traceback" not in failed.stderr and "Slist" not in failed.stderr
        assert not list(run_dir.rglob("*.tmp"))
        kept = sorted((run_dir / "checkpoints").glob("node-*.h5"))
        assert kept, "the checkpoints written before the disk filled are kept"
        for path in kept:
            read_checkpoint(path)  # complete, digest verified
        shutil.copytree(run_dir, tmp_path / "moved")
    resumed = run_mpi(ranks, "train", config, "--resume", tmp_path / "moved", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_outputs(tmp_path / "ref", tmp_path / "moved", ranks)


def test_supervise_reports_a_full_disk_instead_of_restarting(tmp_path):
    config = write_config(tmp_path, "dpf", steps=60)
    reference = run_mpi(2, "train", config, "--out", tmp_path / "ref", "--quiet")
    assert reference.returncode == 0, reference.stderr
    room = int(2.5 * _checkpoint_bytes(tmp_path / "ref", 55)) + 16384
    with small_disk(tmp_path, room) as (disk, preexec):
        result = _run_limited(mcdpf_command("supervise", config, "-n", "2", "--out",
                                            disk / "run", "--quiet"), preexec)
    assert result.returncode == EXIT_STORAGE_ERROR, result.stderr
    assert "supervise: attempt 1 stopped:" in result.stderr
    assert "cannot write" in result.stderr and "resuming" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("ranks", [1, 4])
def test_read_only_output_directory_is_refused(tmp_path, ranks):
    config = write_config(tmp_path, "dpf")
    point = _mount("1m", ",ro")
    if point is None:  # without a read-only mount: a directory without write permission
        if os.geteuid() == 0:
            pytest.skip("root without mount: no directory is read-only")
        point = tmp_path / "locked"
        point.mkdir()
        point.chmod(0o555)
    try:
        result = run_mpi(ranks, "train", config, "--out", point / "run", "--quiet",
                         timeout=JOB_END_TIMEOUT)
    finally:
        if point.is_mount():
            _unmount(point)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("mcdpf: error:")]
    assert len(lines) == 1 and f"{point / 'run'}: cannot write" in lines[0]
    assert "Traceback" not in result.stderr


def test_storage_errors_leave_no_temporary_file(tmp_path):
    """A vanished directory: the write names the path, nothing is left behind."""
    gone = tmp_path / "gone"
    with pytest.raises(StorageError, match="gone/checkpoints/c.h5: cannot write"):
        write_checkpoint(gone / "checkpoints" / "c.h5", {"theta": np.zeros(3)}, None,
                         {"step": 1}, parents=False)
    assert not gone.exists()


# ------------------------------------------------------------------ memory
@pytest.mark.parametrize("ranks, overrides", [
    (1, ["filter.particles=1000000000"]),
    (2, ["filter.particles=1000000000"]),
    (3, ["run.max_memory_gb=0.00001"]),
    (2, ["run.algorithm=\"ekf\"", "model.n=16", "run.record_estimates=true",
         "run.steps=40", "run.max_memory_gb=0.00002"]),
])
def test_a_run_that_cannot_fit_is_refused_at_set_up(tmp_path, ranks, overrides):
    config = write_config(tmp_path, "dpf")
    sets = [item for override in overrides for item in ("--set", override)]
    started = time.monotonic()
    result = run_mpi(ranks, "train", config, "--out", tmp_path / "o", *sets,
                     timeout=JOB_END_TIMEOUT)
    assert time.monotonic() - started < JOB_END_TIMEOUT
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("mcdpf: error:")]
    assert len(lines) == 1 and "run.max_memory_gb" in lines[0] and "GB" in lines[0]
    assert not (tmp_path / "o").exists()


def test_memory_estimate_grows_with_what_the_run_holds():
    from mcdpf.config import load_config
    from mcdpf.memory import needed_bytes
    from mcdpf.models import build_model

    def parts(**overrides):
        config = load_config({"topology": {"name": "ring"}, "data": {"source": "synthetic-lstm"}},
                             [f"{key}={value}" for key, value in overrides.items()])
        return needed_bytes(config, build_model(config.model, 2), 100, 4)

    small, large = parts(**{"filter.particles": 10}), parts(**{"filter.particles": 1000})
    assert large["particles"] == 100 * small["particles"] > 0
    assert parts(**{"run.record_estimates": "true"})["records"] > small["records"]
    gaussian = parts(**{"filter.kernel": '"gaussian"', "run.algorithm": '"pf"'})
    assert gaussian["covariances"] > 0 == small["covariances"]



def test_memory_estimate_counts_the_gaussian_particles_a_dpf_walk_brings_in():
    from mcdpf.algorithms import walk_held_bound
    from mcdpf.config import load_config
    from mcdpf.memory import gaussian_held, needed_bytes
    from mcdpf.models import build_model
    from mcdpf.topology import build_topology

    def held(algorithm):
        config = load_config({"topology": {"name": "ring", "nodes": 8},
                              "data": {"source": "synthetic-lstm"}},
                             [f"run.algorithm={algorithm}", "filter.kernel=gaussian",
                              "filter.particles=3", "filter.walk_steps=2"])
        return config, gaussian_held(config, build_topology(config.topology, 8))

    config, dpf = held("dpf")
    # a 2-hop ball on an 8-ring holds 5 nodes: up to 5 N particles after the walk, the
    # bound the algorithm's own covariance check uses
    assert dpf == 5 * 3 == walk_held_bound(config.filter, build_topology(config.topology, 8))
    assert held("pf")[1] == 3
    model = build_model(config.model, 2)
    own = needed_bytes(config, model, 100, 8)["covariances"]
    assert needed_bytes(config, model, 100, 8, held=dpf)["covariances"] == 5 * own > 0

# ------------------------------------------------------------------ compiling once
def test_compile_time_is_reported_apart(tmp_path):
    config = write_config(tmp_path, "dpf", steps=20)
    result = run_mpi(2, "train", config, "--out", tmp_path / "o", "--quiet")
    assert result.returncode == 0, result.stderr
    for node in range(2):
        with h5py.File(tmp_path / "o" / f"node-{node:04d}.h5") as handle:
            assert handle.attrs["compile_seconds"] >= 0
            assert handle.attrs["loop_seconds"] > 0
    report = run(mcdpf_command("report", tmp_path / "o", "--json"))
    assert report.returncode == 0, report.stderr
    import json

    summary = json.loads(report.stdout)
    assert summary["compile_seconds"] >= 0 and "steps_per_second" in summary
    assert all("compile_seconds" in node for node in summary["nodes"])


def test_warmup_compiles_once_into_an_empty_cache(tmp_path):
    """A cold cache: ``mcdpf warmup`` says it compiles; then a 2-rank run loads the cache
    and says nothing about compiling (bounded by a timeout, not timed)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    config = write_config(tmp_path, "dpf", steps=10)
    first = subprocess.run(mcdpf_command("warmup", config), capture_output=True, text=True,
                           timeout=1800, cwd=REPO, env=env)
    assert first.returncode == 0, first.stderr
    assert "compiling kernels, first run on this machine" in first.stderr
    assert "kernels ready" in first.stderr
    second = subprocess.run([MPIEXEC, "-n", "2", *mcdpf_command(
        "train", config, "--out", tmp_path / "o")], capture_output=True, text=True,
        timeout=900, cwd=REPO, env=env)
    assert second.returncode == 0, second.stderr
    assert "compiling kernels" not in second.stderr
