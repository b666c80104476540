"""``python -m mcdpf.guard MARKERS_DIR COMMAND...``: one rank's process under a guard.

``mcdpf supervise`` launches ``mpiexec -n K python -m mcdpf.guard RUN_DIR/ranks python -m
mcdpf train ...``: the launcher starts the guards, each guard starts its rank's process
as its child (with the launcher's environment and PMI descriptor, so the child is the
MPI process) and records how it ended (:mod:`mcdpf.markers`). SIGTERM, SIGINT, SIGHUP
and SIGUSR1 to the guard are passed on to the rank as they are: ``mcdpf train`` stops at
a step agreed by every rank, saves, and exits ``128 + signal`` (:mod:`mcdpf.shutdown`),
which the guard records as ``terminated``, as a rank ended by such a signal. A rank
that has not ended :data:`GRACE_SECONDS` after such a signal is killed: it is blocked in
an exchange with a neighbour that died, and only the guard keeps the launcher from
ending it.

A rank killed by another signal is recorded as ``died``; its guard then stays alive until
it is stopped itself, so the launcher does not see a failed process and does not kill
the other ranks: they wait in their exchanges, and the supervisor, having read the
marker, stops the job. The guard imports nothing heavy (no numpy, no MPI).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from .markers import DIED, EXITED, STOP_SIGNALS, TERMINATED, Marker, guard_file, launcher_rank

PMI_DESCRIPTORS = ("PMI_FD",)  # inherited sockets of the PMI wire protocol (Hydra, Slurm)
WAIT_SECONDS = 0.5
GRACE_SECONDS = 20.0  # below supervise's STOP_SECONDS, which then kills the launcher


class Guard:
    """Runs ``command`` as the child and records its end in ``directory``."""

    def __init__(self, directory, command: list[str]):
        descriptors = tuple(int(os.environ[name]) for name in PMI_DESCRIPTORS
                            if os.environ.get(name, "").isdigit())
        self.stop_signal = None
        self.child = None
        for number in STOP_SIGNALS:
            signal.signal(number, self._on_signal)
        self.child = subprocess.Popen(command, pass_fds=descriptors)
        self.marker = Marker(guard_file(directory, launcher_rank()), rank=launcher_rank(),
                             pid=os.getpid(), child=self.child.pid)

    def _on_signal(self, number, frame) -> None:
        self.stop_signal = number
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(number)

    def _wait_for_child(self) -> int:
        while self.stop_signal is None:
            try:
                return self.child.wait(WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        try:
            return self.child.wait(GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.child.kill()
            return self.child.wait()

    def run(self) -> int:
        """Wait for the child; its exit code (a signal ``s`` as ``128 + s``)."""
        code = self._wait_for_child()
        if code >= 0 and code - 128 not in STOP_SIGNALS:
            self.marker.set(EXITED, exit_code=code)
            return code
        number = -code if code < 0 else code - 128
        name = signal.Signals(number).name
        if self.stop_signal is not None or number in STOP_SIGNALS:
            self.marker.set(TERMINATED, signal=name)
            return 128 + number
        self.marker.set(DIED, signal=name)
        while self.stop_signal is None:  # keep the launcher from ending the others
            time.sleep(WAIT_SECONDS)
        return 128 + number


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``MARKERS_DIR COMMAND...``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("usage: python -m mcdpf.guard MARKERS_DIR COMMAND...", file=sys.stderr)
        return 2
    return Guard(argv[0], argv[1:]).run()


if __name__ == "__main__":
    raise SystemExit(main())
