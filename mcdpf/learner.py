"""The learner protocol: explicit steps, state passed in and returned.

Every algorithm (``run.algorithm``, :data:`mcdpf.registry.ALGORITHMS`) builds a learner
for one node. A learner holds only its plan (model, settings, the node's place in the
graph, its neighbourhood exchange); everything that changes from step to step lives in a
state value that the caller holds (:class:`mcdpf.node.Node` is that caller). The required
parts are :class:`Learner`:

``initial_state() -> state``
    The state before step 0.
``predict(state, step, columns) -> (prediction, pending)``
    The online protocol's first half: propagate, evaluate this node's sequence
    ``columns`` ((m, p) in the model dtype, or ``None`` for a step without data) and
    return the prediction of its label before the label is known, plus the pending
    half-step (an explicit value).
``learn(state, pending, target) -> (state, StepInfo)``
    The second half, with the label (``None`` without data): reweight, exchange,
    resample, estimate. Returns the new state.
``state_arrays(state) -> dict`` / ``restore(arrays) -> state``
    The state as plain arrays and scalars for a checkpoint, and back.

``state.estimate`` is the node's float64 parameter estimate after the step
(:class:`LearnerState`). Learners are rebuilt, not mutated, when the graph changes (a
node leaves); a learner that carries state over to its successor is :class:`Adopting`.

**Ownership.** ``predict`` and ``learn`` leave the ``state`` and ``pending`` they are given
valid: no array they hold is written, no field removed, so a state or a pending half-step
can be replayed, checkpointed or compared after the step (the conformance suite learns
twice from the same values and checks both; ``tests/test_protocol.py``). A learner that
updates a large array (the EKF's ``n_theta^2`` covariance) copies it first: the copy costs
``O(n_theta^2)``, the order of the update itself. Learners with communication replay only
in lockstep (every rank repeats the step): the exchange is part of ``learn``.

The algorithm's registration traits are :class:`AlgorithmTraits`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import (
    Annotated,
    Any,
    NamedTuple,
    Protocol,
    TypeVar,
    get_type_hints,
    runtime_checkable,
)

import numpy as np


class Diagnostic(NamedTuple):
    """How a :class:`StepInfo` field is recorded per step: its dtype and meaning."""

    dtype: str
    doc: str


class StepInfo(NamedTuple):
    """Diagnostics of one time step at one node (defaults: an algorithm without particles).

    Every field is declared here once: it is the per-step output record of the same name
    (:data:`mcdpf.rundir.RECORDS`), with the dtype and meaning of its
    :class:`Diagnostic`; its default is also the record's value before the step.
    """

    ess: Annotated[float, Diagnostic("float64", "effective sample size after the step")] \
        = math.nan
    particles_held: Annotated[int, Diagnostic("int64", "particles held after the walk")] = 0
    particles_received: Annotated[int, Diagnostic("int64",
                                                  "particles received over the walk")] = 0
    particles_sent: Annotated[int, Diagnostic("int64", "particles sent over the walk")] = 0
    bytes_sent: Annotated[int, Diagnostic("int64", "bytes this node sent in the step")] = 0
    resampled: Annotated[bool, Diagnostic("int8", "1 if the particles were resampled")] \
        = False
    degenerate: Annotated[int, Diagnostic(
        "int8", "1 if no weight was finite (reset to uniform)")] = 0
    empty_walk: Annotated[bool, Diagnostic(
        "int8", "1 if no particle was held after the walk")] = False


def diagnostics() -> dict[str, tuple[Diagnostic, object]]:
    """``{field: (Diagnostic, default)}`` of every :class:`StepInfo` field, in order."""
    hints = get_type_hints(StepInfo, include_extras=True)
    return {name: (hints[name].__metadata__[0], StepInfo._field_defaults[name])
            for name in StepInfo._fields}


class LearnerState(Protocol):
    """What every learner state offers its caller: the float64 parameter estimate."""

    @property
    def estimate(self) -> np.ndarray:
        """The node's parameter estimate after the step (float64, ``(n_theta,)``)."""


State = TypeVar("State", bound=LearnerState)
Pending = TypeVar("Pending")


@runtime_checkable
class Learner(Protocol[State, Pending]):
    """The required parts of a learner (see the module's guide)."""

    def initial_state(self) -> State:
        """The state before step 0."""

    def predict(self, state: State, step: int, columns: np.ndarray | None
                ) -> tuple[float, Pending]:
        """The prediction of this step's label (NaN: no data) and the pending half-step."""

    def learn(self, state: State, pending: Pending, target: float | None
              ) -> tuple[State, StepInfo]:
        """The new state after the label (``None``: no label) and the step's diagnostics."""

    def state_arrays(self, state: State) -> dict:
        """``state`` as arrays and scalars (a checkpoint)."""

    def restore(self, arrays: dict) -> State:
        """The state saved by :meth:`state_arrays`."""


@runtime_checkable
class Adopting(Protocol[State]):
    """Optional: a learner rebuilt after a node-loss event that keeps its predecessor's state.

    Without it the rebuilt learner continues from the state as it was.
    """

    def adopt(self, state: State, previous: Learner) -> State:
        """``state`` of ``previous`` (the learner before the event) for this learner."""


@runtime_checkable
class Measurements(Protocol):
    """Every node's measurement of a step, for learners that weight other nodes' streams."""

    def __call__(self, step: int, columns: np.ndarray | None, target: float | None
                 ) -> tuple[list, int]:
        """Each node's ``(columns, target)`` or ``None`` (no data), and the bytes sent."""


@runtime_checkable
class CollectiveMeasurements(Measurements, Protocol):
    """Optional: measurements gathered by a collective, which every rank joins at every step.

    A node that has left the network still :meth:`joins <join>` each step's gather.
    """

    def join(self, step: int) -> None:
        """Take part in step ``step``'s gather without data."""


def no_check(config, model, topology) -> None:
    """The default set-up check: nothing to refuse."""
    return None


def no_warnings(config, topology) -> list[str]:
    """The default set-up warnings: none."""
    return []


@dataclass(frozen=True)
class AlgorithmTraits:
    """What the rest of the package knows about an algorithm besides its builder.

    Attributes
    ----------
    summary
        One line for tables and the command line's help.
    communicating
        Exchanges with graph neighbours every step (the ranks move in lockstep; resume
        continues every rank from one common checkpoint step).
    needs_all_streams
        Reads every node's data (the ``cpf`` oracle).
    check
        ``check(config, model, topology)``: set-up checks that raise
        :class:`~mcdpf.errors.InputError`.
    warnings
        ``warnings(config, topology) -> list[str]``: warnings printed once at set-up.
    steady_arrays
        Its arrays keep their size from step to step, so freed memory of every size is
        kept for reuse (:mod:`mcdpf.allocator`) without fragmenting the heap (dpf's
        populations change size at every walk step: only buffers below 32 MB are kept).
    shares
        What crosses the network, for tables and the docs ("nothing" for a local one).
    covariances
        The ``ekf.covariance`` forms it uses (:data:`mcdpf.registry.COVARIANCES`); any
        other form is refused (an algorithm that keeps no EKF covariance: ``full`` only).
    kernels
        ``kernels(config, model)``: the warm-up units (:data:`mcdpf.kernels.KERNEL_UNITS`)
        it calls, loaded before the loop; ``None``: every unit. A unit it calls but does
        not name compiles at its first call, inside the loop (timed apart).
    label
        Its name in figures and comparison tables (default: the registered name).
    color, linestyle
        Its line in figures (``color`` ``None``: the plotting library's cycle).
    """

    summary: str = ""
    communicating: bool = False
    needs_all_streams: bool = False
    check: Callable = no_check
    warnings: Callable = no_warnings
    steady_arrays: bool = True
    shares: str = "nothing"
    covariances: tuple[str, ...] = ("full",)
    kernels: Callable | None = None
    label: str | None = None
    color: str | None = None
    linestyle: str = "-"

    def __getitem__(self, name: str) -> Any:
        """Mapping-style read (``traits["communicating"]``) of a trait, as other registries'."""
        if name not in {item.name for item in fields(self)}:
            raise KeyError(name)
        return getattr(self, name)

