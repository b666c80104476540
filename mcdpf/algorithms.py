"""The learning algorithms, registered by name (``run.algorithm``) with their traits.

Each entry of :data:`mcdpf.registry.ALGORITHMS` is a builder
``build(context) -> learner`` (the :class:`~mcdpf.learner.Learner` protocol) with its
:class:`~mcdpf.learner.AlgorithmTraits` (communicating, set-up check and warnings, what
it shares, its label and line in figures, ...). A builder reads what it needs from the
:class:`LearnerContext` and calls the learner's constructor by keyword. A plugin
registers the same way, through :func:`register` or ``ALGORITHMS.register`` directly
(traits it leaves out take their defaults). The ``covariances`` trait lists the
``ekf.covariance`` forms an algorithm uses (:data:`mcdpf.registry.COVARIANCES`); any
other form is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .baselines import (
    DiffusionAdam,
    DiffusionEKF,
    DiffusionSGD,
    ExtendedKalmanFilter,
    OnlineAdam,
    OnlineSGD,
    check_covariance_memory,
)
from .covariance import build_covariance
from .dpf import DistributedParticleFilter
from .errors import InputError
from .filters import ParticleFilter, StreamPlan
from .kernels import forward_unit
from .learner import AlgorithmTraits
from .registry import ALGORITHMS, COVARIANCES, KERNELS
from .subspace import check_subspace

CENTRAL_KEY = 0
LARGE_RELAY = 16  # nodes beyond which rpf's default (hops = diameter) gets a warning


@dataclass
class LearnerContext:
    """Everything a builder may need at one node.

    ``measurements`` is the oracle's access to every node's data (``cpf``):
    ``measurements(step, columns, target)`` returns each node's ``(columns, target)`` or
    ``None``.
    """

    config: object
    model: object
    topology: object
    node: int
    neighbourhood: object
    measurements: object = None

    @property
    def seed(self) -> int:
        """The run's seed."""
        return self.config.run.seed

    @property
    def parallel(self) -> bool:
        """Whether the kernels run on numba's threads (``run.threads > 1``)."""
        return self.config.run.threads > 1

    def initial_variance(self) -> float:
        """EKF ``P0`` scale."""
        value = self.config.ekf.initial_variance
        return value if value is not None else self.config.model.init_std ** 2

    def covariance(self):
        """The EKF's covariance form (``ekf.covariance``, ``ekf.rank``)."""
        return ekf_covariance(self.config, self.model)


def ekf_covariance(config, model):
    """The form ``ekf.covariance`` (with ``ekf.rank``) for ``model``."""
    return build_covariance(config.ekf.covariance, model, config.ekf.rank)


def _ekf_check(config, model, topology) -> None:
    check_covariance_memory(model, config.ekf, form=ekf_covariance(config, model))


def _kernel_check(config, model, copies: int) -> None:
    """The kernel's rules; Gaussian particles' ``copies`` covariances fit the memory."""
    check_subspace(config, model)
    kernel = KERNELS[config.filter.kernel].of(config.filter, model)
    kernel.check(config)
    if config.filter.kernel == "gaussian":
        check_covariance_memory(model, config.ekf, copies=copies, form=kernel.form)


def _particle_check(config, model, topology) -> None:
    _kernel_check(config, model, config.filter.particles)


def _cpf_check(config, model, topology) -> None:
    _kernel_check(config, model, central_particles(config.filter, topology.nodes))


def _dpf_check(config, model, topology) -> None:
    if config.filter.weight_tempering != 1.0:
        raise InputError(f"{config.source}: [filter] weight_tempering is for pf, rpf and cpf; "
                         "dpf tempers its visits with visit_tempering")
    _kernel_check(config, model, walk_held_bound(config.filter, topology))


def walk_held_bound(settings, topology) -> int:
    """Most particles a dpf node can hold after a walk: ``N`` times its ``s``-hop ball.

    A particle ends its walk within ``s`` hops of where it started, so when every node
    starts the walk with ``N`` (it resampled after the previous walk: Algorithm 1, the
    default ``ess_threshold = 1``) node ``k`` holds at most ``N |{j: dist(k, j) <= s}|``;
    the largest ball over the nodes bounds every node. With ``ess_threshold < 1`` a
    node's count drifts and this is a typical, not a hard, bound.
    """
    steps = topology.walk_steps(settings.walk_steps)
    reach = max(int(np.count_nonzero((distance >= 0) & (distance <= steps)))
                for distance in (topology.distances(node) for node in topology.active))
    return settings.particles * reach


def central_particles(settings, nodes: int) -> int:
    """The oracle's particle count: ``filter.central_particles``, else ``N K``."""
    return settings.central_particles or settings.particles * nodes


def _dpf_warnings(config, topology) -> list[str]:
    warnings = topology.warnings()  # the particles walk
    if config.filter.migration == "balanced" and not np.allclose(
            topology.transition.sum(axis=0), 1.0):
        warnings.append("filter.migration = \"balanced\" on a walk that is not doubly "
                        "stochastic: node particle counts drift from N before resampling")
    return warnings


def walk_steps_used(config, topology) -> int:
    """The walk length ``s`` a run of ``config`` uses on ``topology`` (0: no walk).

    dpf walks ``s`` steps; rpf with ``relay.weights = "walk"`` weights by an ``s``-step
    walk's expected visits. ``filter.walk_steps = "auto"`` resolves on the topology.
    """
    walks = config.run.algorithm == "dpf" or (config.run.algorithm == "rpf"
                                              and config.relay.weights == "walk")
    return topology.walk_steps(config.filter.walk_steps) if walks else 0


def _lstm_units(model, *units: str) -> list[str]:
    """``units`` and the initial draws' unit; the linear model evaluates in numpy."""
    return ["normal_rows", *(units if model.kind == "lstm" else ())]


def _gradient_kernels(config, model) -> list[str]:
    """sgd, ekf and their diffusion forms: one prediction gradient per step."""
    return _lstm_units(model, "prediction_gradient")


def _adam_kernels(config, model) -> list[str]:
    return [*_gradient_kernels(config, model), "adam"]


def _ekf_kernels(config, model) -> list[str]:
    return [*_gradient_kernels(config, model),
            *COVARIANCES[config.ekf.covariance].kernel_units]


def _particle_kernels(config, model) -> list[str]:
    """pf, cpf, rpf: the proposal's and the particle kernel's units."""
    settings = config.filter
    gaussian = settings.kernel == "gaussian"
    units = ["weights", "particle_noise", f"resampling:{settings.resampling}",
             *(COVARIANCES[settings.covariance].kernel_units if gaussian else ())]
    if gaussian or settings.proposal == "linearized":
        units.append("population_gradient")
    if not gaussian:
        units += [forward_unit(model.hidden, model.inputs), "lstm_predict"] \
            if model.kind == "lstm" else []
    return [*_lstm_units(model), *units]


def _dpf_kernels(config, model) -> list[str]:
    return [*_particle_kernels(config, model), "walk"]


def register(name: str, summary: str, **traits):
    """Register an algorithm builder under ``name`` with its traits.

    ``summary`` and any other field of :class:`~mcdpf.learner.AlgorithmTraits`, by keyword.
    """
    return ALGORITHMS.register(name, summary=summary, **traits)


@register("pf", "particle filter at each node, no communication", check=_particle_check,
          kernels=_particle_kernels,
          label="PF, no communication", color="tab:orange")
def build_pf(context: LearnerContext):
    """Local particle filter."""
    settings = context.config.filter
    return ParticleFilter(model=context.model, settings=settings, seed=context.seed,
                          key=context.node, count=settings.particles,
                          plan=StreamPlan((context.node,)), parallel=context.parallel,
                          initial_variance=context.initial_variance())


@register("dpf", "Markov chain distributed particle filter (MCDPF)", communicating=True,
          check=_dpf_check, warnings=_dpf_warnings, steady_arrays=False, kernels=_dpf_kernels,
          shares="particles (parameters, carried state, walk weight; Gaussian particles "
          "also their covariance)",
          label="DPF (MCDPF)", color="tab:red")
def build_dpf(context: LearnerContext):
    """Markov chain distributed particle filter."""
    return DistributedParticleFilter(model=context.model, settings=context.config.filter,
                                     seed=context.seed, node=context.node,
                                     topology=context.topology,
                                     neighbourhood=context.neighbourhood,
                                     parallel=context.parallel)


@register("cpf", "centralized particle filter over every node's data (oracle)",
          needs_all_streams=True, check=_cpf_check, kernels=_particle_kernels,
          shares="every node's data with a central node (the oracle)",
          label="centralized PF (oracle)", color="black", linestyle="--")
def build_cpf(context: LearnerContext):
    """Centralized particle filter (oracle): the same random streams on every rank."""
    settings = context.config.filter
    nodes = context.topology.nodes
    plan = StreamPlan(tuple(range(nodes)), own=context.node,
                      measurements=context.measurements)
    return ParticleFilter(model=context.model, settings=settings, seed=context.seed,
                          key=CENTRAL_KEY, count=central_particles(settings, nodes),
                          plan=plan, parallel=context.parallel,
                          initial_variance=context.initial_variance())


def _rpf_warnings(config, topology) -> list[str]:
    from .rpf import walk_reach_beyond

    hops = config.relay.hops or topology.diameter
    walk_steps = topology.walk_steps(config.filter.walk_steps)
    # Particles stay; only relay.weights = "walk" uses the walk (its expected visits).
    warnings = topology.warnings() if config.relay.weights == "walk" else []
    if config.relay.weights == "walk" and any(
            walk_reach_beyond(topology, node, hops, walk_steps) for node in topology.active):
        warnings.append(f"relay.weights = \"walk\" with relay.hops = {hops} < "
                        f"filter.walk_steps = {walk_steps}: the walk's visits "
                        f"beyond {hops} hops are left out")
    if config.relay.hops is None and topology.nodes > LARGE_RELAY:
        warnings.append(f"rpf on {topology.nodes} nodes with relay.hops = the diameter "
                        f"({topology.diameter}): every node evaluates every node's data, so "
                        "its work grows with the network; set relay.hops to bound it")
    return warnings


@register("rpf", "relay particle filter: neighbourhoods' measurements, particles stay",
          communicating=True, warnings=_rpf_warnings, check=_particle_check,
          kernels=_particle_kernels,
          shares="measurements (sequence and label), relayed over relay.hops",
          label="relay PF", color="tab:brown")
def build_rpf(context: LearnerContext):
    """Relay particle filter."""
    from .rpf import RelayParticleFilter

    return RelayParticleFilter(model=context.model, settings=context.config.filter,
                               seed=context.seed, node=context.node,
                               topology=context.topology, neighbourhood=context.neighbourhood,
                               relay_settings=context.config.relay, parallel=context.parallel,
                               initial_variance=context.initial_variance())


@register("sgd", "online gradient descent (BPTT within the sequence)", label="SGD",
          kernels=_gradient_kernels,
          color="tab:blue")
def build_sgd(context: LearnerContext):
    """Online SGD."""
    return OnlineSGD(model=context.model, seed=context.seed, node=context.node,
                     learning_rate=context.config.sgd.learning_rate)


@register("ekf", "extended Kalman filter on the parameters", check=_ekf_check, label="EKF",
          color="tab:green", covariances=tuple(COVARIANCES), kernels=_ekf_kernels)
def build_ekf(context: LearnerContext):
    """Extended Kalman filter on the parameters."""
    settings = context.config.filter
    return ExtendedKalmanFilter(model=context.model, seed=context.seed, node=context.node,
                                state_noise=settings.state_noise,
                                obs_noise=settings.obs_noise,
                                initial_variance=context.initial_variance(),
                                covariance=context.covariance())


@register("dekf", "diffusion EKF: neighbours' measurements and estimates",
          communicating=True, check=_ekf_check, covariances=tuple(COVARIANCES),
          kernels=_ekf_kernels,
          shares="measurements (sequence, label, starting state) and estimates",
          label="diffusion EKF", color="tab:olive")
def build_dekf(context: LearnerContext):
    """Diffusion EKF."""
    settings = context.config.filter
    return DiffusionEKF(model=context.model, seed=context.seed, node=context.node,
                        state_noise=settings.state_noise, obs_noise=settings.obs_noise,
                        initial_variance=context.initial_variance(),
                        topology=context.topology, neighbourhood=context.neighbourhood,
                        covariance=context.covariance())


@register("dsgd", "diffusion (adapt-then-combine) SGD: neighbours' estimates",
          communicating=True, shares="estimates", label="diffusion SGD", color="tab:purple",
          kernels=_gradient_kernels)
def build_dsgd(context: LearnerContext):
    """Diffusion (adapt-then-combine) SGD."""
    return DiffusionSGD(model=context.model, seed=context.seed, node=context.node,
                        learning_rate=context.config.sgd.learning_rate,
                        topology=context.topology, neighbourhood=context.neighbourhood)


@register("adam", "online Adam: sgd's gradient, a step size per parameter",
          label="Adam", color="tab:cyan", kernels=_adam_kernels)
def build_adam(context: LearnerContext):
    """Online Adam."""
    return OnlineAdam(model=context.model, seed=context.seed, node=context.node,
                      settings=context.config.adam)


@register("dadam", "diffusion Adam (adapt, then combine): neighbours' estimates",
          communicating=True, shares="estimates", label="diffusion Adam", color="tab:pink",
          kernels=_adam_kernels)
def build_dadam(context: LearnerContext):
    """Diffusion (adapt-then-combine) Adam; moments stay local."""
    return DiffusionAdam(model=context.model, seed=context.seed, node=context.node,
                         settings=context.config.adam, topology=context.topology,
                         neighbourhood=context.neighbourhood)


def traits(name: str) -> AlgorithmTraits:
    """The traits of algorithm ``name``."""
    return ALGORITHMS.entry(name).traits


def build_learner(name: str, context: LearnerContext):
    """The learner ``name`` for this node."""
    return ALGORITHMS[name](context)
