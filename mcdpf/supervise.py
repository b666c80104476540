"""``mcdpf supervise``: run a training job, and resume it by itself when it fails.

``mcdpf supervise CONFIG -n K [--out DIR] [--set ...] [--retries R]`` is not run under
``mpiexec``: it launches ``mpiexec -n K python -P -m mcdpf.guard RUN_DIR/ranks python -P -m
mcdpf train CONFIG ... --markers RUN_DIR/ranks`` as a child process and watches it (the
ranks run this Python and this ``mcdpf``, whatever the working directory). When the job
fails it finds the ranks whose nodes are lost, and launches the next job, as the resume
plan of the run directory says (:func:`~mcdpf.elastic.plan_resume`, the plan the job
itself follows):

- nodes were lost (a rank was killed, or failed with an error): ``--resume RUN_DIR
  --without NODES`` on the survivors (:mod:`mcdpf.elastic`);
- nothing was lost (the ranks were stopped by a signal: preemption, a time limit, a stop
  of the whole job; or every rank vanished at once): ``--resume RUN_DIR`` on the same
  nodes;
- no checkpoint exists yet: the run starts again from step 0 on every node.

Every restart is appended to ``RUN_DIR/restarts.json`` (attempt, exit code, nodes lost,
action, resumed step, ranks, time). After ``R`` restarts the next failure ends the
supervisor with one line and exit code 1; a job that refuses its input (exit 2) is not
retried, nor one that could not write its files (exit 74, a full disk, a read-only or
vanished directory: the supervisor repeats the job's line and exits 74; restarting would
fail the same way). SIGTERM, SIGINT, SIGHUP or SIGUSR1 to the supervisor stop the job as
the same signal would stop ``mcdpf train`` (it is passed on; SIGHUP as SIGTERM, since
``mpiexec`` dies of SIGHUP): every rank saves the step it stopped at, and the supervisor
exits ``128 + signal`` without a restart; the run directory can be resumed later.
When it stops or gives up, the supervisor prints the command that resumes the run
(``mcdpf supervise -n K --resume RUN_DIR``: the run directory keeps its configuration), if
there is a checkpoint to resume from.

**Who died** (:mod:`mcdpf.markers`, :mod:`mcdpf.guard`): every rank runs under a guard
process that records how the rank ended. A rank killed by a signal (``kill -9``, the
out-of-memory killer) is recorded as ``died`` by its guard, which stays alive, so the
launcher keeps the job up and the other ranks wait in their exchanges; the supervisor
reads the marker within a poll interval and stops the job (SIGTERM to the launcher,
which passes it on). A rank that fails with an exception records ``error`` before it
aborts the job. Nothing depends on timing. When a guard dies too (a lost machine), no
marker tells; the supervisor then takes the host that MPICH's launcher names
(``PID ... RUNNING AT host``) and the ranks ``processes.json`` places there.
"""

from __future__ import annotations

import collections
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from . import markers
from .errors import EXIT_INPUT_ERROR, EXIT_STORAGE_ERROR, InputError, StorageError, print_error
from .rundir import NoCheckpoint, RunDirectory

POLL_SECONDS = 0.2
STOP_SECONDS = 30.0  # a stopped job gets this long to end before it is killed
EXIT_GAVE_UP = 1
OUTPUT_LINES_KEPT = 200
HYDRA_FAILED_HOST = re.compile(r"PID \d+ RUNNING AT (\S+)")


def default_launcher() -> str:
    """The ``mpiexec`` beside this Python (the mpich wheel's), else the one on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else (shutil.which("mpiexec") or "mpiexec")


class Job:
    """One launched job: its process, its output (passed through and kept), its markers."""

    def __init__(self, command: list[str], markers_directory: Path, ranks: int,
                 env: dict | None = None):
        self.markers_directory = markers_directory
        self.ranks = ranks
        markers.clear(markers_directory)
        self.tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES_KEPT)
        try:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True, bufsize=1,
                                            start_new_session=True, env=env)
        except OSError as error:
            raise InputError(f"supervise: cannot start {command[0]} ({error})") from None
        self.readers = [threading.Thread(target=self._pass_on, args=(pipe, sink), daemon=True)
                        for pipe, sink in ((self.process.stdout, sys.stdout),
                                           (self.process.stderr, sys.stderr))]
        for reader in self.readers:
            reader.start()

    def _pass_on(self, pipe, sink) -> None:
        for line in pipe:
            sink.write(line)
            sink.flush()
            self.tail.append(line)

    def watch(self, stopping) -> bool:
        """Wait until the job ends, a rank dies or ``stopping()``; whether a rank died."""
        while self.process.poll() is None and not stopping():
            if markers.DEAD in self.states():
                return True
            time.sleep(POLL_SECONDS)
        return False

    def stop(self, number: int = signal.SIGTERM) -> None:
        """End the job: ``number`` to the launcher, SIGKILL if it lingers.

        The launcher passes the signal on to the ranks; SIGHUP, of which ``mpiexec``
        dies, goes as SIGTERM.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM if number == signal.SIGHUP else number)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)

    def finish(self) -> int:
        """Wait for the launcher and its output; its exit code."""
        code = self.process.wait()
        for reader in self.readers:
            reader.join()
        return code

    def states(self) -> list[str]:
        """Every rank's :func:`~mcdpf.markers.rank_state`."""
        return markers.rank_states(self.markers_directory, self.ranks)

    def cause(self) -> str:
        """The job's last ``mcdpf: error:`` line (what stopped it), without the prefix."""
        errors = [line.strip().removeprefix("mcdpf: error: ") for line in self.tail
                  if line.startswith("mcdpf: error: ")]
        return errors[-1] if errors else "no error line in its output"

    def failed_hosts(self) -> set[str]:
        """Hosts the launcher's output names as running a failed process."""
        return set(HYDRA_FAILED_HOST.findall("".join(self.tail)))


def lost_ranks(states: list[str], failed_hosts: set[str], processes: list[dict]) -> list[int]:
    """The ranks whose nodes are lost, from their markers after the job ended.

    Ranks that failed with an error or died; when every rank vanished at once, none
    (nothing is left to continue without them: a stop of the whole job); when no marker
    tells (the guards were killed too), the ranks on the hosts the launcher names as
    failed, unless that is every rank. Ranks stopped by a signal are not lost.
    """
    failed = [rank for rank, state in enumerate(states) if state == markers.ERROR]
    dead = [rank for rank, state in enumerate(states) if state == markers.DEAD]
    if failed or (dead and len(dead) < len(states)):
        return sorted(failed + dead)
    if dead or markers.TERMINATED in states:
        return []
    on_failed_hosts = [entry["rank"] for entry in processes
                       if entry.get("host") in failed_hosts and entry["rank"] < len(states)]
    return sorted(on_failed_hosts) if len(on_failed_hosts) < len(states) else []


class Supervisor:
    """The restart loop of ``mcdpf supervise`` (``args``: the parsed command line)."""

    def __init__(self, args):
        from .algorithms import traits
        from .preparation import default_out_dir
        from .resume import command_config

        if args.nodes < 1:
            raise InputError(f"supervise -n {args.nodes}: need at least one node")
        if args.retries < 0:
            raise InputError(f"supervise --retries {args.retries}: must be >= 0")
        self.args = args
        config = command_config(args.config, args.set, args.resume)
        self.communicating = traits(config.run.algorithm)["communicating"]
        self.run_dir = RunDirectory(args.resume or args.out or default_out_dir(config))
        self.launcher = args.mpiexec or default_launcher()
        self.members = tuple(range(args.nodes))
        self.restarts = []
        if args.resume:
            plan = self.plan()
            if plan is None or plan.membership.network_size != args.nodes:
                found = "no checkpoint to resume from" if plan is None else \
                    f"{plan.membership.network_size} nodes"
                raise InputError(f"supervise -n {args.nodes}: the run in {self.run_dir.path} "
                                 f"has {found}")
            self.members = plan.membership.members
            self.restarts = self.run_dir.read_json(self.run_dir.restarts_file, [])
        self.signal_received = None

    def plan(self, lost=()):
        """The :class:`~mcdpf.elastic.ResumePlan` of resuming without ``lost`` nodes.

        The job computes the same; ``None``: no checkpoint to resume from.
        """
        from .elastic import plan_resume

        try:
            plan = plan_resume(self.run_dir, None, tuple(lost),
                               communicating=self.communicating)
        except NoCheckpoint:
            return None
        return plan if plan.step >= 0 else None

    # ---------------------------------------------------------------- commands
    def command(self, *, resume: bool, force: bool = False, without=(), cause="") -> list[str]:
        """The ``mpiexec ... mcdpf train`` command of the next job.

        ``python -P`` keeps the working directory off the ranks' module path: they import
        the ``mcdpf`` the supervisor runs (first on their ``PYTHONPATH``: :meth:`environment`).
        """
        args = self.args
        directory = str(self.run_dir.markers_directory)
        command = [self.launcher, "-n", str(len(self.members)), sys.executable, "-P", "-m",
                   "mcdpf.guard", directory, sys.executable, "-P", "-m", "mcdpf", "train"]
        if args.config:
            command.append(args.config)
        for override in args.set:
            command += ["--set", override]
        if args.quiet:
            command.append("--quiet")
        command += ["--markers", directory]
        if not resume:
            return command + ["--out", str(self.run_dir.path)] + (["--force"] if force else [])
        command += ["--resume", str(self.run_dir.path), "--cause", cause]
        if without:
            command += ["--without", ",".join(map(str, without))]
        return command

    @staticmethod
    def environment() -> dict:
        """The jobs' environment: this one, this ``mcdpf``'s directory first on its path."""
        root = str(Path(__file__).resolve().parent.parent)
        paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}

    def resume_command(self) -> str | None:
        """The command that resumes the run as printed, or ``None``: nothing to resume."""
        if self.plan() is None:
            return None
        args = self.args
        program = ["mcdpf"] if shutil.which("mcdpf") else [sys.executable, "-P", "-m", "mcdpf"]
        command = [*program, "supervise", "-n", str(args.nodes), "--resume",
                   str(self.run_dir.path), "--retries", str(args.retries)]
        if args.mpiexec:
            command += ["--mpiexec", args.mpiexec]
        if args.quiet:
            command.append("--quiet")
        return shlex.join(command)

    def how_to_resume(self) -> str:
        """``resume with: COMMAND``, or why there is nothing to resume."""
        command = self.resume_command()
        return f"resume with: {command}" if command else \
            f"{self.run_dir.path} has no checkpoint to resume from"

    # ---------------------------------------------------------------- the loop
    def run(self) -> int:
        """Run jobs until one succeeds, one refuses its input, or retries run out."""
        handlers = {number: signal.signal(number, self._on_signal)
                    for number in markers.STOP_SIGNALS}
        try:
            return self._loop()
        except StorageError as problem:  # restarts.json itself cannot be written
            print_error(f"supervise: {problem}")
            return EXIT_STORAGE_ERROR
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)

    def _on_signal(self, number, frame) -> None:
        self.signal_received = number

    def _loop(self) -> int:
        args = self.args
        command = self.command(resume=bool(args.resume), force=args.force,
                               cause="supervise: resume requested")
        attempt = 1
        while True:
            job = Job(command, self.run_dir.markers_directory, len(self.members),
                      self.environment())
            died = job.watch(lambda: self.signal_received is not None)
            job.stop(self.signal_received or signal.SIGTERM)
            code = job.finish()
            if self.signal_received is not None:
                name = signal.Signals(self.signal_received).name
                self._log(attempt, code, [], "stopped", -1)
                _say(f"stopped by {name}; {self.how_to_resume()}")
                return 128 + self.signal_received
            if code == 0 and not died:
                self._save()
                return 0
            if code == EXIT_INPUT_ERROR and not died:
                print_error(f"supervise: attempt {attempt} was refused (exit code 2); "
                             "not retrying")
                self._save()
                return EXIT_INPUT_ERROR
            if code == EXIT_STORAGE_ERROR and not died:
                print_error(f"supervise: attempt {attempt} stopped: {job.cause()}; not "
                            "retrying: free space or fix the directory, then mcdpf supervise "
                            f"{args.config} -n {args.nodes} --resume {self.run_dir.path}")
                self._log(attempt, code, [], "stopped: storage", -1)
                return EXIT_STORAGE_ERROR
            processes = self.run_dir.read_json(self.run_dir.processes_file, [])
            lost = [self.members[rank] for rank in
                    lost_ranks(job.states(), job.failed_hosts(), processes)]
            if len(lost) == len(self.members):
                lost = []  # nothing would be left to continue on: try every node again
            what = f"node{'s' if len(lost) > 1 else ''} {_listed(lost)} lost" if lost \
                else "no node lost"
            if attempt > args.retries:
                self._log(attempt, code, lost, "gave up", -1)
                print_error(f"supervise: gave up after {attempt} failed attempt"
                             f"{'s' if attempt > 1 else ''} "
                             f"(--retries {args.retries}); the last exited with code {code}, "
                             f"{what}; {self.how_to_resume()}")
                return EXIT_GAVE_UP
            failure = f"attempt {attempt} failed (exit code {code}, {what})"
            plan = self.plan(lost)
            if plan is None and not args.config:
                self._log(attempt, code, lost, "gave up", -1)
                print_error(f"supervise: {failure}; {self.run_dir.path} has no checkpoint to "
                            "resume from, and no CONFIG was given to start again with")
                return EXIT_GAVE_UP
            if plan is None:
                self.members, step = tuple(range(args.nodes)), -1
                action, command = "restart", self.command(resume=False, force=True)
                _say(f"{failure}; no checkpoint yet: starting again from step 0 on "
                     f"{len(self.members)} ranks")
            else:
                self.members, step = plan.membership.members, plan.step
                action = "resume without" if lost else "resume"
                command = self.command(resume=True, without=lost,
                                       cause=f"supervise: {failure}")
                _say(f"{failure}; resuming at step {step}"
                     f"{' without ' + what.removesuffix(' lost') if lost else ''} on "
                     f"{len(self.members)} ranks")
            self._log(attempt, code, lost, action, step)
            attempt += 1

    def _log(self, attempt, code, lost, action, step) -> None:
        self.restarts.append({"attempt": attempt, "exit_code": code, "lost": lost,
                              "action": action, "resume_step": step,
                              "ranks": len(self.members),
                              "time": datetime.now(UTC).isoformat(timespec="seconds")})
        self._save()

    def _save(self) -> None:
        if self.restarts or self.run_dir.restarts_file.exists():
            self.run_dir.write_json(self.run_dir.restarts_file, self.restarts)


def _listed(nodes) -> str:
    return ", ".join(map(str, nodes))


def _say(message: str) -> None:
    print(f"mcdpf: supervise: {message}", file=sys.stderr, flush=True)



def supervise(args) -> int:
    """``mcdpf supervise``: the exit code of the supervised run (see the module)."""
    return Supervisor(args).run()

