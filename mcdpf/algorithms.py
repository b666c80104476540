"""Registry of learning algorithms: ``run.algorithm`` picks a builder by name.

A learner follows the online protocol: ``predict(columns) -> float`` before the label,
``update(target) -> StepInfo`` after it, and exposes ``estimate`` (float64 parameter
vector). Columns or target are ``None`` on a skipped step.
"""

from __future__ import annotations

from dataclasses import dataclass

from .baselines import (
    DiffusionEKF,
    DiffusionSGD,
    ExtendedKalmanFilter,
    OnlineSGD,
    check_covariance_memory,
)
from .filters import (
    CentralizedParticleFilter,
    DistributedParticleFilter,
    IdSource,
    ParticleFilter,
    random_streams,
)

CENTRAL_KEY = 0


@dataclass
class LearnerContext:
    """Everything a builder may need at one node."""

    config: object
    model: object
    topology: object
    node: int
    neighbourhood: object
    node_streams: list | None = None
    node_skipped: list | None = None

    def streams(self, key: int | None = None):
        """This node's random generators (``key``: another stream family)."""
        return random_streams(self.config.run.seed, self.node if key is None else key)

    def initial_variance(self) -> float:
        """EKF ``P0`` scale."""
        value = self.config.ekf.initial_variance
        return value if value is not None else self.config.model.init_std ** 2


def build_pf(context: LearnerContext):
    """Local particle filter, no communication."""
    return ParticleFilter(context.model, context.config.filter, context.streams(),
                          IdSource(context.node))


def build_dpf(context: LearnerContext):
    """Markov chain distributed particle filter."""
    return DistributedParticleFilter(context.model, context.config.filter, context.streams(),
                                     IdSource(context.node), context.topology,
                                     context.neighbourhood, context.node)


def build_cpf(context: LearnerContext):
    """Centralized particle filter (oracle): the same random streams on every rank."""
    return CentralizedParticleFilter(context.model, context.config.filter,
                                     context.streams(CENTRAL_KEY), IdSource(CENTRAL_KEY),
                                     context.node_streams, context.node_skipped, context.node)


def build_sgd(context: LearnerContext):
    """Online SGD."""
    return OnlineSGD(context.model, context.streams()["init"],
                     context.config.sgd.learning_rate)


def build_ekf(context: LearnerContext):
    """Extended Kalman filter on the parameters."""
    settings = context.config.filter
    return ExtendedKalmanFilter(context.model, context.streams()["init"],
                                settings.state_noise, settings.obs_noise,
                                context.initial_variance())


def build_dekf(context: LearnerContext):
    """Diffusion EKF."""
    settings = context.config.filter
    return DiffusionEKF(context.model, context.streams()["init"], settings.state_noise,
                        settings.obs_noise, context.initial_variance(), context.topology,
                        context.neighbourhood, context.node)


def build_dsgd(context: LearnerContext):
    """Diffusion (adapt-then-combine) SGD."""
    return DiffusionSGD(context.model, context.streams()["init"],
                        context.config.sgd.learning_rate, context.topology,
                        context.neighbourhood, context.node)


BUILDERS = {
    "pf": build_pf,
    "dpf": build_dpf,
    "cpf": build_cpf,
    "sgd": build_sgd,
    "ekf": build_ekf,
    "dekf": build_dekf,
    "dsgd": build_dsgd,
}

COMMUNICATING = {"dpf", "dekf", "dsgd"}
NEEDS_ALL_STREAMS = {"cpf"}


def check_algorithm_inputs(config, model) -> None:
    """Algorithm-specific set-up checks (raise :class:`InputError`)."""
    if config.run.algorithm in ("ekf", "dekf"):
        check_covariance_memory(model, config.ekf)


def build_learner(name: str, context: LearnerContext):
    """The learner ``name`` for this node."""
    return BUILDERS[name](context)
