"""Signals: every rank stops at one agreed step, saves, and the run resumes bit-exactly.

Each case starts ``mpiexec -n K mcdpf train`` in a session of its own, waits (by reading
files and output, never by sleeping) until training has reached a step drawn from a
seeded generator, sends the signal to the launcher, its process group, or one rank, and
checks the exit code, the time to exit (generously: it catches hangs, it times nothing),
the one-line resume message, the checkpoint and outputs of the stop step, and that
``--resume`` then gives outputs bit-identical to an uninterrupted run.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from support import MPIEXEC, REPO, assert_same_outputs, mcdpf_command, run, run_mpi

EXIT_WITHIN = 60.0  # seconds from the signal to the job's end: catches hangs only
WAIT_LIMIT = 900.0  # for training to reach the chosen step (compilation on a busy machine)
CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129, signal.SIGUSR1: 138}


def write_config(tmp_path, algorithm, steps, checkpoint_every=7):
    path = tmp_path / f"{algorithm}.toml"
    every = f"checkpoint_every = {checkpoint_every}\n" if checkpoint_every else ""
    path.write_text(f'[topology]\nname = "ring"\n[run]\nalgorithm = "{algorithm}"\n'
                    f'steps = {steps}\nrecord_estimates = true\nprogress_seconds = 0.1\n'
                    f'{every}[data]\nsource = "synthetic-lstm"\n[filter]\nparticles = 20\n'
                    'walk_steps = 2\n')
    return path


def _default_dispositions():
    """As a job started from a terminal: a runner under ``nohup`` (or a background shell)
    hands its ignored SIGHUP (SIGINT) down to mpiexec, which never installs its own."""
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)


class Job:
    """``mpiexec -n ranks mcdpf train ...`` in its own session, its stderr collected."""

    started: list = []  # every job, so that a failed test leaves none running

    def __init__(self, ranks, *args):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [MPIEXEC, "-n", str(ranks), *mcdpf_command(*args)], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, preexec_fn=_default_dispositions)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        Job.started.append(self)

    def _read(self):
        for line in self.process.stdout:
            self.lines.extend(line.replace("\r", "\n").splitlines())

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_until(self, condition, what):
        limit = time.monotonic() + WAIT_LIMIT
        while not condition():
            assert self.process.poll() is None, f"job ended before {what}:\n{self.output}"
            assert time.monotonic() < limit, f"no {what} within {WAIT_LIMIT} s"
            time.sleep(0.05)  # polling a file, not a synchronisation

    def finish(self, timeout) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the job did not end within {timeout} s:\n{self.output}")
        self._reader.join(10)
        return code

    def kill(self):
        """SIGKILL the launcher and every process it started (the ranks have sessions of
        their own)."""
        if self.process.poll() is None:
            for pid in [self.process.pid, *descendants(self.process.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.wait()


def descendants(pid):
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


@pytest.fixture(autouse=True)
def no_job_left():
    yield
    while Job.started:
        Job.started.pop().kill()


def reached(run_dir, node, step):
    """Whether ``node`` has a checkpoint of ``step`` or later (it is in the loop)."""
    return any(int(path.stem.rsplit("-", 1)[1]) >= step
               for path in (run_dir / "checkpoints").glob(f"node-{node:04d}-step-*.h5"))


def rank_pids(run_dir):
    return [entry["pid"] for entry in json.loads((run_dir / "processes.json").read_text())]


def alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = open(f"/proc/{pid}/stat").read() if os.path.exists(f"/proc/{pid}/stat") else ""
    return bool(stat) and stat.split(") ")[1][0] != "Z"


def send(job, route, number, run_dir, rank):
    if route == "launcher":
        os.kill(job.process.pid, number)
    elif route == "group":
        os.killpg(job.process.pid, number)
    else:
        os.kill(rank_pids(run_dir)[rank], number)


def stop_and_check(tmp_path, algorithm, ranks, route, number, seed, steps=150,
                   checkpoint_every=7):
    """Run, signal at a seeded step, check the stop; return (run dir, seconds to exit)."""
    rng = np.random.default_rng(seed)
    config = write_config(tmp_path, algorithm, steps, checkpoint_every)
    run_dir = tmp_path / "run"
    job = Job(ranks, "train", config, "--out", run_dir)
    target = int(rng.integers(ranks))
    at = int(rng.integers(1, 5)) * 7
    if checkpoint_every:
        job.wait_until(lambda: all(reached(run_dir, node, at) for node in range(ranks)),
                       f"checkpoint {at} on every node")
    else:  # rank 0's progress: ranks in step are all in the loop
        job.wait_until(lambda: any(line.startswith("mcdpf: step ") and
                                   int(line.split()[2].split("/")[0]) > at
                                   for line in job.lines), f"step {at}")
    sent = time.monotonic()
    send(job, route, number, run_dir, target)
    code = job.finish(EXIT_WITHIN * 3)
    seconds = time.monotonic() - sent
    output = job.output
    assert code == CODES[number], output
    assert seconds < EXIT_WITHIN, output
    assert "Traceback" not in output and "Error" not in output, output
    said = [line for line in output.splitlines() if "resume with:" in line]
    assert len(said) == 1, output
    assert f"stopped by {signal.Signals(number).name} at step " in said[0]
    stop = int(said[0].split(" at step ")[1].split(":")[0])
    assert f"--resume {run_dir}" in said[0] and f"mpiexec -n {ranks} mcdpf train" in said[0]
    for node in range(ranks):
        with h5py.File(run_dir / f"node-{node:04d}.h5") as file:
            assert file.attrs["valid_until"] == stop
            assert np.isfinite(file["prediction"][:stop]).all()
        assert (run_dir / "checkpoints" / f"node-{node:04d}-step-{stop:08d}.h5").is_file()
    assert all(not alive(pid) for pid in rank_pids(run_dir))
    return config, run_dir, seconds


CASES = [  # algorithm, ranks, route, signal (HUP to the launcher: see test_hup_...)
    ("dpf", 2, "launcher", signal.SIGINT),
    ("dpf", 4, "rank", signal.SIGTERM),
    ("dpf", 3, "group", signal.SIGUSR1),
    ("rpf", 3, "launcher", signal.SIGTERM),
    ("rpf", 4, "rank", signal.SIGHUP),
    ("dekf", 2, "group", signal.SIGINT),
    ("dekf", 3, "rank", signal.SIGUSR1),
    ("pf", 4, "launcher", signal.SIGUSR1),
    ("pf", 3, "rank", signal.SIGINT),
    ("pf", 2, "group", signal.SIGTERM),
]


@pytest.mark.parametrize("algorithm, ranks, route, number", CASES)
def test_signal_stops_every_rank_and_resume_is_bit_identical(tmp_path, algorithm, ranks,
                                                             route, number):
    seed = CASES.index((algorithm, ranks, route, number))
    config, run_dir, seconds = stop_and_check(tmp_path, algorithm, ranks, route, number, seed)
    print(f"{algorithm} K={ranks} {signal.Signals(number).name} -> {route}: "
          f"exited {seconds:.2f} s after the signal")
    reference = run_mpi(ranks, "train", config, "--out", tmp_path / "ref", "--quiet")
    assert reference.returncode == 0, reference.stderr
    resumed = run_mpi(ranks, "train", "--resume", run_dir, "--quiet")  # the run alone
    assert resumed.returncode == 0, resumed.stderr
    assert_same_outputs(tmp_path / "ref", run_dir, ranks)


def test_a_stop_writes_a_checkpoint_without_checkpoint_every(tmp_path):
    # 2000 steps: rank 0 reports progress every 0.1 s, and an idle machine runs 150 steps
    # in that time; the run must still be going when the signal arrives
    config, run_dir, _ = stop_and_check(tmp_path, "dpf", 3, "launcher", signal.SIGINT,
                                        seed=11, steps=2000, checkpoint_every=0)
    assert len(list((run_dir / "checkpoints").glob("node-*.h5"))) == 3
    reference = run_mpi(3, "train", config, "--out", tmp_path / "ref", "--quiet")
    resumed = run_mpi(3, "train", "--resume", run_dir, "--quiet")
    assert reference.returncode == 0 and resumed.returncode == 0, resumed.stderr
    assert_same_outputs(tmp_path / "ref", run_dir, 3)


def test_second_sigint_aborts_at_once(tmp_path):
    """Rank 1 frozen (a hung neighbour): the first SIGINT to rank 0 cannot complete a
    stop; the second aborts the job."""
    config = write_config(tmp_path, "dpf", steps=100000)
    run_dir = tmp_path / "run"
    job = Job(2, "train", config, "--out", run_dir)
    job.wait_until(lambda: reached(run_dir, 0, 7) and reached(run_dir, 1, 7), "step 7")
    pids = rank_pids(run_dir)
    os.kill(pids[1], signal.SIGSTOP)
    try:
        os.kill(pids[0], signal.SIGINT)
        job.wait_until(lambda: "SIGINT: stopping every rank" in job.output, "the first SIGINT")
        sent = time.monotonic()
        os.kill(pids[0], signal.SIGINT)
        code = job.finish(EXIT_WITHIN * 3)
    finally:
        if alive(pids[1]):
            os.kill(pids[1], signal.SIGCONT)
    assert time.monotonic() - sent < EXIT_WITHIN
    assert code != 0
    assert "second SIGINT: aborting" in job.output
    assert "Traceback" not in job.output


def test_hup_to_the_launcher_leaves_no_rank_running(tmp_path):
    """MPICH's mpiexec does not catch SIGHUP: it dies, and its proxy kills the ranks at
    once (no checkpoint is possible); what must hold is that no rank is left running."""
    config = write_config(tmp_path, "dpf", steps=100000)
    run_dir = tmp_path / "run"
    job = Job(2, "train", config, "--out", run_dir)
    job.wait_until(lambda: reached(run_dir, 0, 7) and reached(run_dir, 1, 7), "step 7")
    pids = rank_pids(run_dir)
    os.kill(job.process.pid, signal.SIGHUP)
    job.finish(EXIT_WITHIN)
    limit = time.monotonic() + EXIT_WITHIN
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < limit, "a rank outlived the launcher"
        time.sleep(0.05)


def test_compare_stops_on_sigint(tmp_path):
    config = write_config(tmp_path, "dpf", steps=100000)
    out = tmp_path / "cmp"
    job = Job(2, "compare", config, "--algorithms", "dpf,pf", "--out", out)
    run_dir = out / "dpf" / "seed-0"
    job.wait_until(lambda: reached(run_dir, 0, 7) and reached(run_dir, 1, 7), "step 7")
    sent = time.monotonic()
    os.kill(job.process.pid, signal.SIGINT)
    code = job.finish(EXIT_WITHIN * 3)
    assert time.monotonic() - sent < EXIT_WITHIN
    assert code == 130, job.output
    assert "Traceback" not in job.output
    assert "stopped by SIGINT at step" in job.output
    assert not (out / "pf").exists()


def test_a_raising_rank_in_a_plain_script_ends_the_job(tmp_path):
    """``import mcdpf`` under mpiexec installs an abort-on-uncaught-exception hook."""
    script = tmp_path / "script.py"
    script.write_text("import mcdpf\nfrom mpi4py import MPI\n"
                      "comm = MPI.COMM_WORLD\n"
                      "if comm.Get_rank() == 1:\n    raise ValueError('boom on rank 1')\n"
                      "comm.Barrier()\n")
    started = time.monotonic()
    result = run([MPIEXEC, "-n", "2", sys.executable, str(script)], timeout=EXIT_WITHIN * 3)
    assert time.monotonic() - started < EXIT_WITHIN
    assert result.returncode != 0
    assert result.stderr.count("ValueError: boom on rank 1") == 1


def test_slurm_script_stops_on_usr1_requeues_and_resumes(tmp_path, script_numba_cache):
    """launch/slurm.sbatch under stand-in srun and scontrol: USR1 to the batch shell (what
    `--signal=B:USR1@120` sends) stops every rank at an agreed step with a checkpoint,
    the script requeues the job, and the requeued job resumes and finishes it."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text(f'#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; '
                                   f'done\nexec "{MPIEXEC}" -n "$SLURM_NTASKS" "$@"\n')
    (fake_bin / "scontrol").write_text(f'#!/usr/bin/env bash\necho "$@" >> {tmp_path}/requeued\n')
    for tool in fake_bin.iterdir():
        tool.chmod(0o755)
    config = write_config(tmp_path, "dpf", steps=150, checkpoint_every=5)
    env = {**os.environ, "PATH": os.pathsep.join([str(fake_bin), str(Path(sys.executable).parent),
                                                  os.environ.get("PATH", "")]),
           "SLURM_NTASKS": "2", "SLURM_JOB_ID": "77", "SLURM_SUBMIT_DIR": str(tmp_path),
           "MCDPF_ENV": str(Path(sys.executable).parent.parent), "PYTHONUNBUFFERED": "1"}
    env["NUMBA_CACHE_DIR"] = script_numba_cache
    script = [str(REPO / "launch" / "slurm.sbatch"), str(config)]
    batch = subprocess.Popen(["bash", *script], env=env, cwd=tmp_path, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run_dir = tmp_path / "runs" / "dpf-77"
    limit = time.monotonic() + 2 * WAIT_LIMIT  # the script's own cache: it may compile first
    while not (reached(run_dir, 0, 5) and reached(run_dir, 1, 5)):
        assert batch.poll() is None and time.monotonic() < limit, batch.stdout.read()
        time.sleep(0.05)  # polling files, not a synchronisation
    os.kill(batch.pid, signal.SIGUSR1)
    output, _ = batch.communicate(timeout=EXIT_WITHIN * 3)
    assert batch.returncode == 0, output
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "77"]
    assert "stopped by SIGUSR1 at step" in output and "Traceback" not in output
    with h5py.File(run_dir / "node-0000.h5") as file:
        stop = int(file.attrs["valid_until"])
    assert 5 <= stop < 150
    env["SLURM_RESTART_COUNT"] = "1"
    again = subprocess.run(["bash", *script], env=env, cwd=tmp_path, text=True,
                           capture_output=True, timeout=2 * WAIT_LIMIT)
    assert again.returncode == 0, again.stderr
    assert "network MSE" in again.stdout
    reference = run_mpi(2, "train", config, "--out", tmp_path / "ref", "--quiet")
    assert reference.returncode == 0, reference.stderr
    assert_same_outputs(tmp_path / "ref", run_dir, 2)


def test_supervise_passes_a_signal_on_and_every_rank_saves(tmp_path):
    """SIGUSR1 to `mcdpf supervise`: the job stops as `train` would (every rank saves the
    agreed step, no rank left), the supervisor exits 138 without a restart."""
    config = write_config(tmp_path, "dpf", steps=100000)
    run_dir = tmp_path / "run"
    supervisor = subprocess.Popen(
        mcdpf_command("supervise", config, "-n", 2, "--out", run_dir, "--quiet"), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    limit = time.monotonic() + WAIT_LIMIT
    while not (reached(run_dir, 0, 7) and reached(run_dir, 1, 7)):
        assert supervisor.poll() is None and time.monotonic() < limit
        time.sleep(0.05)  # polling files, not a synchronisation
    pids = rank_pids(run_dir)
    sent = time.monotonic()
    supervisor.send_signal(signal.SIGUSR1)
    _, stderr = supervisor.communicate(timeout=EXIT_WITHIN * 3)
    assert time.monotonic() - sent < EXIT_WITHIN, stderr
    assert supervisor.returncode == 138, stderr
    assert "stopped by SIGUSR1" in stderr and "Traceback" not in stderr
    stops = set()
    for node in range(2):
        with h5py.File(run_dir / f"node-{node:04d}.h5") as file:
            stops.add(int(file.attrs["valid_until"]))
    (stop,) = stops
    assert all((run_dir / "checkpoints" / f"node-{node:04d}-step-{stop:08d}.h5").is_file()
               for node in range(2))
    assert not any(alive(pid) for pid in pids)
    (restart,) = json.loads((run_dir / "restarts.json").read_text())
    assert restart["action"] == "stopped"
