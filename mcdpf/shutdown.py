"""Stopping on a signal: every rank stops at one agreed step, saves, and says how to resume.

``mcdpf train`` and ``mcdpf compare`` install a :class:`SignalWatch` for SIGINT, SIGTERM,
SIGHUP and SIGUSR1 (Slurm's ``--signal=USR1@T`` pre-emption warning). Its handlers only
record the signal: a Python handler runs between bytecodes, so a rank blocked in an MPI
call would run it only when the call returns, and no handler may start communication.
A watcher thread reads the signal numbers from :func:`signal.set_wakeup_fd` at once, even
while the main thread waits in MPI, and acts only in two cases: a signal before the
training loop (nothing to save yet) and a second SIGINT abort the job (``MPI_Abort``).

During the loop the :class:`Stopper` of the run turns the signal into one stop step:

- **Communicating algorithms** (dpf, rpf, dekf, dsgd) keep graph neighbours within one
  step of each other, so ranks at graph distance d are within d steps. A rank that
  received a signal and knows no stop yet proposes to stop before step
  ``t + 2 * diameter + STOP_MARGIN`` (``t``: the steps it has done) and sends the
  proposal to its neighbours (:class:`~mcdpf.comm.StopChannel`: ``Isend``, and one
  ``Iprobe`` per step boundary, so nothing is exchanged while no stop is under way).
  Every rank forwards any proposal smaller than the one it knows; every rank stops at
  the smallest. A proposal reaches a rank at distance d within about d steps of the
  proposer's time, well before the step it names (the other d steps and the margin
  absorb message latency). Should a rank still miss it, the ranks stopping say goodbye to
  their neighbours (:meth:`mcdpf.node.Node.close`), so a neighbour that steps on gets a
  :class:`~mcdpf.errors.LockstepError` and the job aborts instead of hanging.
- **Algorithms without communication** (pf, cpf, sgd, ekf, adam) drift apart freely.
  A rank that learns of a stop forwards it and enters one shutdown ``Allreduce`` of the
  step it reached (a rank that finished contributes the run's length); every rank then
  stops at the largest, the ranks behind running forward to it.

Then every rank writes a checkpoint of the stop step (even without
``run.checkpoint_every``) and its output file with ``valid_until`` = that step, and the
command exits ``128 + signal`` (130 INT, 143 TERM, 129 HUP, 138 USR1); rank 0 prints one
line with the resume command. Two shutdown collectives end every run that has a
:class:`Stopper`: the agreement and, after a stop, the draining of the stop channel.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass

from . import comm as comm_layer
from .errors import LockstepError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
STOP_MARGIN = 2  # steps of slack beyond twice the diameter, for message latency
NO_SIGNAL = 0


def exit_code(number: int) -> int:
    """The exit code of a run stopped by signal ``number``: ``128 + number``."""
    return 128 + number


def signal_name(number: int) -> str:
    """``SIGINT`` for 2, and so on."""
    return signal.Signals(number).name


@dataclass(frozen=True)
class Stop:
    """The agreed end of a stopped run: the signal and the step every rank stopped at."""

    signal: int
    step: int
    steps: int

    @property
    def finished(self) -> bool:
        """Whether the run reached its end anyway (nothing to resume)."""
        return self.step >= self.steps


class SignalWatch:
    """Records the first stop signal of this process; aborts on a second SIGINT.

    Parameters
    ----------
    comm
        The job's communicator, for ``Abort``.
    """

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.Get_rank()  # read here: the watcher thread calls MPI only to abort
        self.signal: int | None = None
        self.training = False  # a training loop began: a signal stops it at a step
        self._previous: dict = {}
        self._read_end, self._write_end = os.pipe()
        os.set_blocking(self._write_end, False)
        self._thread = threading.Thread(target=self._watch, daemon=True, name="mcdpf-signals")

    def __enter__(self) -> SignalWatch:
        for number in STOP_SIGNALS:
            self._previous[number] = signal.signal(number, _record_only)
        self._previous_fd = signal.set_wakeup_fd(self._write_end, warn_on_full_buffer=False)
        self._thread.start()
        return self

    def __exit__(self, *exception) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _watch(self) -> None:
        while True:
            for number in os.read(self._read_end, 64):
                if number in STOP_SIGNALS:
                    self._received(number)

    def _received(self, number: int) -> None:
        rank = self.rank
        if self.signal is None:
            self.signal = number
            if not self.training:
                _say(f"rank {rank}: {signal_name(number)} before training started: "
                     "nothing to save yet; ending the job")
                comm_layer.abort(self.comm, exit_code(number))
            elif rank == 0:
                _say(f"{signal_name(number)}: stopping every rank at an agreed step "
                     "(SIGINT again aborts without saving)")
        elif number == signal.SIGINT:
            _say(f"rank {rank}: second SIGINT: aborting the job without saving")
            comm_layer.abort(self.comm, exit_code(number))


def _record_only(number, frame) -> None:
    """The Python-level handler: the wakeup fd already told the watcher thread."""


class Stopper:
    """Agrees with the other ranks on the step at which a run stops (module docstring).

    Creating it is a set-up collective (the stop channel); every rank of ``comm`` calls
    :meth:`should_stop` at each step boundary and :meth:`finish` once after the loop.

    Parameters
    ----------
    watch
        The process's :class:`SignalWatch`.
    comm
        The run's communicator.
    node
        The :class:`~mcdpf.node.Node` (its graph gives the neighbours to tell).
    communicating
        Whether the algorithm exchanges with neighbours every step.
    steps
        The run's length.
    """

    enabled = True

    def __init__(self, watch: SignalWatch, comm, node, communicating: bool, steps: int):
        self.watch = watch
        self.node = node
        self.communicating = communicating
        self.steps = steps
        self.lead = 2 * node.topology.diameter + STOP_MARGIN
        self.channel = comm_layer.StopChannel(comm)
        self.proposal: tuple[int, int] | None = None  # (step, signal) known here
        self.agreed: Stop | None = None  # without communication: after the Allreduce
        watch.training = True

    def should_stop(self, step: int) -> bool:
        """Whether this rank stops before ``step`` (having done ``step`` steps)."""
        if self.agreed is not None:
            return step >= self.agreed.step
        arrived = self.channel.poll()
        local = self.watch.signal
        if not arrived and (local is None or self.proposal is not None):
            return self.proposal is not None and step >= self.proposal[0]
        if not self.communicating:
            number = max([number for _, number in arrived] + [local or NO_SIGNAL])
            self.channel.send(self._neighbour_ranks(), step, number)
            self._agree(step, number)
            return step >= self.agreed.step
        offers = arrived if self.proposal is None else [*arrived, self.proposal]
        if not offers:
            offers = [(step + self.lead, local)]
        best = min(offers)
        if best != self.proposal:
            self.proposal = best
            self.channel.send(self._neighbour_ranks(), *best)
        return step >= best[0]

    def _agree(self, step: int, number: int) -> None:
        _, latest, agreed_signal = self.channel.agree(step, number)
        self.agreed = Stop(agreed_signal, latest, self.steps)

    def _neighbour_ranks(self) -> list[int]:
        network = self.node.network
        if not network.active:
            return []
        membership = network.membership
        return [neighbour if membership is None else membership.rank_of(neighbour)
                for neighbour in network.topology.neighbours(network.node)
                if membership is None or neighbour in membership]

    def finish(self, step: int) -> Stop | None:
        """Shutdown collectives after the loop ended before ``step``; close the node.

        Returns the :class:`Stop` (``None``: no rank received a signal).
        """
        stopped_early = step < self.steps
        if self.communicating:
            # The node says goodbye where it stopped (a neighbour still stepping raises
            # instead of waiting), then joins the graph rebuilds still to come, which the
            # nodes that had left run in their idle steps up to the end.
            try:
                self.node.close(handshake=stopped_early)
            except LockstepError as error:  # the agreement failed: abort, never hang
                raise RuntimeError(f"stop before step {step}: {error}") from None
            for event in sorted(self.node.network.events):
                if step <= event < self.steps:
                    self.node.network.advance(event)
                    self.node.network.close()
            first, _, number = self.channel.agree(step, (self.proposal or (0, NO_SIGNAL))[1])
            self.agreed = Stop(number, first, self.steps)
        else:
            self.node.close(handshake=False)
            if self.agreed is None:
                self._agree(step, NO_SIGNAL)
        self.channel.close(drain=self.agreed.signal != NO_SIGNAL)
        return self.agreed if self.agreed.signal != NO_SIGNAL else None


class NoStopper:
    """The stopper of a run without signal handling (:func:`mcdpf.train`): never stops."""

    enabled = False

    def __init__(self, node):
        self.node = node

    @staticmethod
    def should_stop(step: int) -> bool:
        """Never."""
        return False

    def finish(self, step: int) -> None:
        """Close the node (every rank ran every step)."""
        self.node.close(handshake=False)


def stopper(watch: SignalWatch | None, comm, node, communicating: bool, steps: int):
    """The run's :class:`Stopper`, or a :class:`NoStopper` without a ``watch``."""
    if watch is None:
        return NoStopper(node)
    return Stopper(watch, comm, node, communicating, steps)


def _say(message: str) -> None:
    print(f"mcdpf: {message}", file=sys.stderr, flush=True)
