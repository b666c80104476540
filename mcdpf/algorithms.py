"""Registry of learning algorithms: ``run.algorithm`` picks a builder by name.

A learner follows the online protocol: ``predict(columns) -> float`` before the label,
``update(target) -> StepInfo`` after it, and exposes ``estimate`` (float64 parameter
vector). Columns or target are ``None`` on a skipped step.
"""

from __future__ import annotations

from dataclasses import dataclass

from .filters import DistributedParticleFilter, IdSource, ParticleFilter, random_streams


@dataclass
class LearnerContext:
    """Everything a builder may need at one node."""

    config: object
    model: object
    topology: object
    node: int
    neighbourhood: object


def build_pf(context: LearnerContext):
    """Local particle filter, no communication."""
    streams = random_streams(context.config.run.seed, context.node)
    return ParticleFilter(context.model, context.config.filter, streams,
                          IdSource(context.node))


def build_dpf(context: LearnerContext):
    """Markov chain distributed particle filter."""
    streams = random_streams(context.config.run.seed, context.node)
    return DistributedParticleFilter(context.model, context.config.filter, streams,
                                     IdSource(context.node), context.topology,
                                     context.neighbourhood, context.node)


BUILDERS = {
    "pf": build_pf,
    "dpf": build_dpf,
}

COMMUNICATING = {"dpf", "dekf", "dsgd"}


def build_learner(name: str, context: LearnerContext):
    """The learner ``name`` for this node."""
    return BUILDERS[name](context)
