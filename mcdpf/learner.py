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
from typing import NamedTuple


class StepInfo(NamedTuple):
    """Diagnostics of one time step at one node (defaults: an algorithm without particles)."""

    ess: float = math.nan
    resampled: bool = False
    held: int = 0
    received: int = 0
    sent: int = 0
    bytes_sent: int = 0
    degenerate: int = 0
    empty_walk: bool = False
