"""The learner protocol: explicit steps, state passed in and returned.

Every algorithm (``run.algorithm``, :data:`mcdpf.registry.ALGORITHMS`) builds a learner
for one node. A learner holds only its plan (model, settings, the node's place in the
graph, its neighbourhood exchange); everything that changes from step to step lives in a
state value that the caller holds (:class:`mcdpf.node.Node` is that caller):

``initial_state() -> state``
    The state before step 0.
``predict(state, step, columns) -> (prediction, pending)``
    The online protocol's first half: propagate, evaluate this node's sequence
    ``columns`` ((m, p) in the model dtype, or ``None`` for a step without data) and
    return the prediction of its label before the label is known, plus the pending
    half-step (an explicit value; ``state`` is not changed).
``learn(state, pending, target) -> (state, StepInfo)``
    The second half, with the label (``None`` without data): reweight, exchange,
    resample, estimate. Returns the new state.
``state_arrays(state) -> dict`` / ``restore(arrays) -> state``
    The state as plain arrays and scalars for a checkpoint, and back.

``state.estimate`` is the node's float64 parameter estimate after the step. Learners are
rebuilt, not mutated, when the graph changes (a node leaves).
"""

from __future__ import annotations

import math
from typing import Annotated, NamedTuple, get_type_hints


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
