"""The learning algorithms, registered by name (``run.algorithm``) with their traits.

Each entry of :data:`mcdpf.registry.ALGORITHMS` is a builder
``build(context) -> learner`` (the protocol of :mod:`mcdpf.learner`) with traits:

``communicating``
    exchanges with graph neighbours every step (the ranks move in lockstep; resume
    continues every rank from one common checkpoint step);
``needs_all_streams``
    reads every node's data (the ``cpf`` oracle);
``summary``
    one line for tables and the command line's help;
``check(config, model, topology)``
    set-up checks that raise :class:`~mcdpf.errors.InputError`;
``warnings(config, topology)``
    warnings printed once at set-up;
``steady_arrays``
    its arrays keep their size from step to step, so freed memory of every size is kept
    for reuse (:mod:`mcdpf.allocator`) without fragmenting the heap (dpf's populations
    change size at every walk step: only buffers below 32 MB are kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .baselines import (
    DiffusionEKF,
    DiffusionSGD,
    ExtendedKalmanFilter,
    OnlineSGD,
    check_covariance_memory,
)
from .dpf import DistributedParticleFilter
from .filters import ParticleFilter, StreamPlan
from .registry import ALGORITHMS

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


def _no_check(config, model, topology) -> None:
    return None


def _no_warnings(config, topology) -> list[str]:
    return []


def _ekf_check(config, model, topology) -> None:
    check_covariance_memory(model, config.ekf)


def _particle_check(config, model, topology) -> None:
    if config.filter.kernel == "gaussian":
        check_covariance_memory(model, config.ekf, copies=config.filter.particles)


def _cpf_check(config, model, topology) -> None:
    if config.filter.kernel == "gaussian":
        check_covariance_memory(model, config.ekf, copies=central_particles(config.filter,
                                                                             topology.nodes))


def central_particles(settings, nodes: int) -> int:
    """The oracle's particle count: ``filter.central_particles``, else ``N K``."""
    return settings.central_particles or settings.particles * nodes


def _dpf_warnings(config, topology) -> list[str]:
    if config.filter.migration == "balanced" and not np.allclose(
            topology.transition.sum(axis=0), 1.0):
        return ["filter.migration = \"balanced\" on a walk that is not doubly stochastic: "
                "node particle counts drift from N before resampling"]
    return []


def walk_steps_used(config, topology) -> int:
    """The walk length ``s`` a run of ``config`` uses on ``topology`` (0: no walk).

    dpf walks ``s`` steps; rpf with ``relay.weights = "walk"`` weights by an ``s``-step
    walk's expected visits. ``filter.walk_steps = "auto"`` resolves on the topology.
    """
    walks = config.run.algorithm == "dpf" or (config.run.algorithm == "rpf"
                                              and config.relay.weights == "walk")
    return topology.walk_steps(config.filter.walk_steps) if walks else 0


def register(name: str, summary: str, *, communicating: bool = False,
             needs_all_streams: bool = False, check=_no_check, warnings=_no_warnings,
             steady_arrays: bool = True):
    """Register an algorithm builder under ``name`` with its traits."""
    return ALGORITHMS.register(name, summary=summary, communicating=communicating,
                               needs_all_streams=needs_all_streams, check=check,
                               warnings=warnings, steady_arrays=steady_arrays)


@register("pf", "particle filter at each node, no communication", check=_particle_check)
def build_pf(context: LearnerContext):
    """Local particle filter."""
    settings = context.config.filter
    return ParticleFilter(context.model, settings, context.seed, context.node,
                          settings.particles, StreamPlan((context.node,)), context.parallel,
                          context.initial_variance())


@register("dpf", "Markov chain distributed particle filter (MCDPF)", communicating=True,
          warnings=_dpf_warnings, steady_arrays=False)
def build_dpf(context: LearnerContext):
    """Markov chain distributed particle filter."""
    return DistributedParticleFilter(context.model, context.config.filter, context.seed,
                                     context.node, context.topology, context.neighbourhood,
                                     context.parallel)


@register("cpf", "centralized particle filter over every node's data (oracle)",
          needs_all_streams=True, check=_cpf_check)
def build_cpf(context: LearnerContext):
    """Centralized particle filter (oracle): the same random streams on every rank."""
    settings = context.config.filter
    nodes = context.topology.nodes
    count = central_particles(settings, nodes)
    plan = StreamPlan(tuple(range(nodes)), own=context.node,
                      measurements=context.measurements)
    return ParticleFilter(context.model, settings, context.seed, CENTRAL_KEY, count, plan,
                          context.parallel, context.initial_variance())


def _rpf_warnings(config, topology) -> list[str]:
    from .rpf import walk_reach_beyond

    hops = config.relay.hops or topology.diameter
    walk_steps = topology.walk_steps(config.filter.walk_steps)
    warnings = []
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
          communicating=True, warnings=_rpf_warnings, check=_particle_check)
def build_rpf(context: LearnerContext):
    """Relay particle filter."""
    from .rpf import RelayParticleFilter

    return RelayParticleFilter(context.model, context.config.filter, context.seed,
                               context.node, context.topology, context.neighbourhood,
                               context.config.relay, parallel=context.parallel,
                               initial_variance=context.initial_variance())


@register("sgd", "online gradient descent (BPTT within the sequence)")
def build_sgd(context: LearnerContext):
    """Online SGD."""
    return OnlineSGD(context.model, context.seed, context.node, context.config.sgd.learning_rate)


@register("ekf", "extended Kalman filter on the parameters", check=_ekf_check)
def build_ekf(context: LearnerContext):
    """Extended Kalman filter on the parameters."""
    settings = context.config.filter
    return ExtendedKalmanFilter(context.model, context.seed, context.node, settings.state_noise,
                                settings.obs_noise, context.initial_variance())


@register("dekf", "diffusion EKF: neighbours' measurements and estimates",
          communicating=True, check=_ekf_check)
def build_dekf(context: LearnerContext):
    """Diffusion EKF."""
    settings = context.config.filter
    return DiffusionEKF(context.model, context.seed, context.node, settings.state_noise,
                        settings.obs_noise, context.initial_variance(), context.topology,
                        context.neighbourhood)


@register("dsgd", "diffusion (adapt-then-combine) SGD: neighbours' estimates",
          communicating=True)
def build_dsgd(context: LearnerContext):
    """Diffusion (adapt-then-combine) SGD."""
    return DiffusionSGD(context.model, context.seed, context.node,
                        context.config.sgd.learning_rate, context.topology,
                        context.neighbourhood)


def traits(name: str) -> dict:
    """The traits of algorithm ``name``."""
    return ALGORITHMS.entry(name).traits


def build_learner(name: str, context: LearnerContext):
    """The learner ``name`` for this node."""
    return ALGORITHMS[name](context)
