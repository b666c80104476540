"""The particle filters' variants as registered strategies: proposal and particle kernel.

A :class:`~mcdpf.filters.ParticleFilter` (pf, cpf, rpf, dpf) builds one strategy of each
registry from ``[filter]`` and calls it; it never branches on the choice itself.

:data:`PROPOSALS` (``filter.proposal``): how ``theta_t`` is drawn.

``prior``
    ``theta_t = theta_{t-1} + N(0, q I)`` before the label (the papers'); the own stream
    is evaluated at ``theta_t`` in ``predict`` and that evaluation is reused.
``linearized``
    the optimal proposal of the model linearised at ``theta_{t-1}``, drawn with the
    labels (:mod:`mcdpf.proposals`); its log correction joins the weight.

:data:`KERNELS` (``filter.kernel``): what a particle is.

``point``
    a parameter vector (the papers'); moved by the proposal, weighted by the likelihood.
``gaussian``
    ``N(m_i, P_i)``, updated by the extended Kalman filter with every measured stream
    and weighted by its predictive density. ``P_i`` is held in the covariance form
    ``filter.covariance`` (:mod:`mcdpf.covariance`: full, diagonal, decoupled, lowrank
    with ``filter.rank``), whose state holds the N covariances at once.

A kernel is built by ``KERNELS[name].of(settings, model)``. In ``dpf`` (:mod:`mcdpf.dpf`)
it also decides what a walk does: :meth:`walk_start` (the walkers before the first move),
:meth:`visit` (a visit's log-weight increment at the node reached) and :meth:`fallback`
(a node left without particles). Point particles are scored by the visited node's
likelihood raised to the visit's exponent; Gaussian particles migrate with their
covariance and take, at every visit, the EKF update with the visited node's measurement
tempered by the visit's exponent, weighted by its tempered predictive density.

A strategy is a small object; its methods take the filter (``pf``) for the model, the
plan, the keys and the settings. It writes no array of the state or the pending value it
is given (the ownership rule of :mod:`mcdpf.learner`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .covariance import build_covariance, tempered_evidence_log_factor
from .dpf import Walkers
from .errors import InputError
from .filters import Evaluation
from .models import gaussian_log_likelihood
from .particles import propagate, standard_normals
from .proposals import linearized_step
from .registry import KERNELS, PROPOSALS


@dataclass(frozen=True)
class Draw:
    """``theta_t`` of every particle as a proposal drew it.

    ``noise`` is the carried states' transition noise at ``theta_t``; ``own`` the own
    stream's ``(predictions, next carried state)`` at ``theta_t`` when already evaluated
    (else ``None``); ``correction`` the log weight correction (``None``: none).
    """

    theta: np.ndarray
    noise: np.ndarray
    own: tuple | None = None
    correction: np.ndarray | None = None


@PROPOSALS.register("prior")
class PriorProposal:
    """The transition: ``theta_t`` drawn in ``predict``, the likelihood as the weight."""

    def predict(self, pf, particles, step: int, columns):
        """Propagate, start what waits on ``theta_t`` (:meth:`started`), evaluate own data."""
        theta = propagate(particles, step, pf.keys, pf.noise_std, pf.parallel)
        noise = pf.transition_noise(particles, step)
        in_flight = pf.started(particles, theta, step)
        predictions, next_carry = pf.evaluate_stream(theta, particles.carry, noise,
                                                     pf.plan.own, columns)
        return Evaluation(step=step, columns=columns, theta=theta, predictions=predictions,
                          next_carry=next_carry, noise=noise, in_flight=in_flight)

    def draw(self, pf, state, pending, measured) -> Draw:
        """The ``theta_t`` of ``predict``, with its own-stream evaluation."""
        return Draw(theta=pending.theta, noise=pending.noise,
                    own=(pending.predictions, pending.next_carry))


@PROPOSALS.register("linearized")
class LinearizedProposal:
    """The optimal proposal of the model linearised at ``theta_{t-1}``."""

    def predict(self, pf, particles, step: int, columns):
        """The own stream's prediction and gradient at ``theta_{t-1}``."""
        return pf.linearize(particles, step, columns)

    def draw(self, pf, state, pending, measured) -> Draw:
        """``theta_t`` from the linearized optimal proposal, and its log correction."""
        particles = state.particles
        theta = pending.theta
        settings = pf.settings
        observed = [index for index, item in enumerate(measured) if item is not None]
        ids = particles.ids
        xi = standard_normals(ids, theta.shape[1], pending.step, pf.keys.theta,
                              theta.dtype, pf.parallel)
        if not observed:
            moved = (theta + pf.noise_std * xi).astype(theta.dtype, copy=False)
            correction = np.zeros(particles.size)
        else:
            gradients, predictions, targets = [], [], []
            for index in observed:
                columns, label = measured[index]
                if index == pf.plan.own and pending.gradient is not None:
                    prediction, gradient = pending.predictions, pending.gradient
                else:
                    prediction, gradient, _ = pf.model.population_gradient(
                        theta, pf.stream_carry(particles.carry, index), columns, pf.parallel)
                gradients.append(np.asarray(gradient, dtype=np.float64))
                predictions.append(prediction)
                targets.append(label)
            weights = np.asarray(pf.model.output_weights(theta), dtype=np.float64)
            spread = settings.state_noise * np.einsum("np,np->n", weights, weights)
            variance = np.stack([(settings.obs_noise + spread) / pf.plan.exponent(index)
                                 for index in observed], axis=1)
            perturbations = standard_normals(ids, len(observed), pending.step,
                                             pf.keys.observation, np.float64, pf.parallel)
            moved, correction = linearized_step(
                theta, np.stack(gradients, axis=1), np.stack(predictions, axis=1),
                np.array(targets), variance, settings.state_noise, xi, perturbations)
        return Draw(theta=moved, noise=pf.transition_noise(particles, pending.step),
                    correction=correction)


@dataclass(frozen=True)
class Moved:
    """A population after a kernel's update, before reweighting and resampling."""

    theta: np.ndarray
    log_likelihood: np.ndarray
    next_carry: np.ndarray
    covariance: dict | None = None


@KERNELS.register("point")
class PointKernel:
    """Point particles: moved by the proposal, weighted by the plan's likelihoods."""

    @classmethod
    def of(cls, settings, model):
        """The kernel (point particles have no settings)."""
        return cls()

    def restore(self, arrays: dict):
        """No covariance."""
        return None

    def check(self, config) -> None:
        """Every proposal goes with point particles; they learn by their weights alone."""
        settings = config.filter
        if settings.weight_tempering == 0.0:
            raise InputError(f"{config.source}: [filter] weight_tempering = 0 leaves point "
                             "particles' weights equal, so they never learn; it is for "
                             "kernel = \"gaussian\"")
        if settings.weight_tempering != 1.0 and settings.proposal != "prior":
            raise InputError(f"{config.source}: [filter] weight_tempering goes with proposal "
                             f"= \"prior\" (proposal = \"{settings.proposal}\" proposes from "
                             "the untempered posterior, so its weights cannot be tempered)")

    def initial(self, pf, theta: np.ndarray):
        """``(theta, None)``: the prior draws as they are, no covariance."""
        return theta, None

    def predict(self, pf, particles, step: int, columns):
        """The proposal's first half."""
        return pf.proposal.predict(pf, particles, step, columns)

    def update(self, pf, state, pending, measured) -> Moved:
        """Draw ``theta_t``; weight by every stream's likelihood (and the correction)."""
        draw = pf.proposal.draw(pf, state, pending, measured)
        log_likelihood, next_carry = pf.log_likelihood(draw.theta, state.particles.carry,
                                                       draw.noise, measured, own=draw.own)
        if draw.correction is not None:
            log_likelihood += draw.correction
        return Moved(theta=draw.theta, log_likelihood=log_likelihood, next_carry=next_carry)

    # ------------------------------------------------------------------ dpf's walk
    def walk_start(self, pf, state, pending, target) -> Walkers:
        """The walkers at ``theta_t`` (the proposal's), scored on this node's own data."""
        particles = state.particles
        log_weight = particles.log_weights + np.log(particles.size)
        measured, _ = pf.gather(pending, target)
        draw = pf.proposal.draw(pf, state, pending, measured)
        if draw.own is None:
            predictions, next_carry = pf.evaluate_stream(draw.theta, particles.carry,
                                                         draw.noise, 0, pending.columns)
        else:
            predictions, next_carry = draw.own
        if draw.correction is not None:
            log_weight = log_weight + draw.correction
        if target is None or predictions is None:
            own = np.zeros(particles.size)
        else:
            own = gaussian_log_likelihood(target, predictions, pf.settings.obs_noise)
        return Walkers(ids=particles.ids, log_weight=log_weight, theta=draw.theta,
                       carry=particles.carry, log_likelihood=own, next_carry=next_carry)

    def visit(self, pf, walkers: Walkers, kept: int, step: int, columns, target):
        """Score the arrivals (rows ``kept:``); stayers keep this node's likelihood.

        Returns ``(log-likelihoods, exponent)``: the increment is their product.
        """
        walkers.log_likelihood[kept:], walkers.next_carry[kept:] = pf.score(
            walkers.theta[kept:], walkers.carry[kept:], walkers.ids[kept:], step, columns,
            target)
        return walkers.log_likelihood, pf.visit_exponent

    def fallback(self, pf, start: Walkers, pending, target) -> Walkers:
        """This node's own particles at ``theta_t``, weighted by its own likelihood."""
        return Walkers(ids=start.ids, log_weight=start.log_weight + start.log_likelihood,
                       theta=start.theta, carry=start.carry,
                       log_likelihood=start.log_likelihood, next_carry=start.next_carry)



@KERNELS.register("gaussian")
class GaussianKernel:
    """Gaussian particles ``N(m_i, P_i)``, each updated by the EKF with every stream.

    Parameters
    ----------
    form
        The covariance form (:class:`mcdpf.covariance.CovarianceForm`).
    """

    def __init__(self, form):
        self.form = form

    @classmethod
    def of(cls, settings, model):
        """The kernel with the form ``filter.covariance`` (``filter.rank``) for ``model``."""
        return cls(build_covariance(settings.covariance, model, settings.rank,
                                    section="filter"))

    def restore(self, arrays: dict) -> dict:
        """The covariances saved under the form's names (checked)."""
        return self.form.restore({name: arrays[name] for name in self.form.shapes(1)})

    def check(self, config) -> None:
        """Gaussian particles take the prior proposal (the EKF update is their move)."""
        if config.filter.proposal != "prior":
            raise InputError(f"{config.source}: [filter] proposal = "
                             f"\"{config.filter.proposal}\" is for point particles; gaussian "
                             "particles are updated by the EKF")

    def initial(self, pf, theta: np.ndarray):
        """Float64 means at the prior draws and ``P0 = initial_variance * I``."""
        theta = theta.astype(np.float64)
        return theta, self.form.initial(theta.shape[0], pf.initial_variance)

    def predict(self, pf, particles, step: int, columns):
        """The own stream's prediction and gradient at the means."""
        return pf.linearize(particles, step, columns)

    def update(self, pf, state, pending, measured) -> Moved:
        """EKF update of every particle with every measured stream, in turn.

        The own stream first (linearised at the means where the prediction was made),
        then the others in plan order, each linearised at the means the previous updates
        left.
        """
        particles = state.particles
        means = np.array(pending.theta, dtype=np.float64)
        covariance = self.form.time_update(particles.covariance, pf.settings.state_noise)
        total = np.zeros(particles.size)
        own = pf.plan.own
        carries = [pf.stream_carry(particles.carry, index)
                   for index in range(len(pf.plan.nodes))]
        if pending.next_carry is not None:
            carries[own] = pending.next_carry
        with self.form.updates(covariance) as updates:
            for index in [own] + [k for k in range(len(measured)) if k != own]:
                if measured[index] is None:
                    continue
                columns, label = measured[index]
                if index == own:
                    predictions, gradient = pending.predictions, pending.gradient
                else:
                    predictions, gradient, carries[index] = pf.model.population_gradient(
                        pf.in_model_dtype(means), carries[index], columns, pf.parallel)
                means, log_density = updates.update(
                    means, gradient, predictions, label, pf.settings.obs_noise,
                    exponent=pf.plan.exponent(index), parallel=pf.parallel)
                total += log_density
        return Moved(theta=means, log_likelihood=total,
                     next_carry=pf.joined_carry(carries, particles.carry),
                     covariance=covariance)

    # ------------------------------------------------------------------ dpf's walk
    def walk_start(self, pf, state, pending, target) -> Walkers:
        """The means at ``theta_{t-1}`` with ``P + q I`` (new arrays), not yet visited."""
        particles = state.particles
        return Walkers(ids=particles.ids,
                       log_weight=particles.log_weights + np.log(particles.size),
                       theta=np.asarray(pending.theta, dtype=np.float64), carry=particles.carry,
                       log_likelihood=np.zeros(particles.size),
                       next_carry=particles.carry.copy(),
                       covariance=self.form.time_update(particles.covariance,
                                                        pf.settings.state_noise))

    def visit(self, pf, walkers: Walkers, kept: int, step: int, columns, target):
        """The EKF update of every particle here with this node's tempered measurement.

        Linearised at each particle's mean from its step-(t-1) carried state; the
        measurement noise is ``r / e`` (``e``: the visit's exponent); the covariances are
        updated in place (the walkers' own arrays, fresh at every walk step). Returns
        ``(log tempered evidences, 1)``: ``log N(d; h, g^T P g + r / e)`` plus the
        factor that makes it ``log int N(d; h(theta), r)^e N(theta; m, P) dtheta`` of the
        linearised model (common to this node's visits, so visit centring removes it).
        """
        if columns is None or target is None or walkers.size == 0:
            walkers.log_likelihood[:] = 0.0
            walkers.next_carry = walkers.carry.copy()
            return walkers.log_likelihood, 1.0
        exponent = pf.visit_exponent
        predictions, gradient, walkers.next_carry = pf.model.population_gradient(
            pf.in_model_dtype(walkers.theta), walkers.carry, columns, pf.parallel)
        walkers.theta, log_density = self.form.update(
            walkers.covariance, walkers.theta, gradient, predictions, target,
            pf.settings.obs_noise, exponent=exponent, parallel=pf.parallel)
        walkers.log_likelihood = log_density + tempered_evidence_log_factor(
            pf.settings.obs_noise, exponent)
        return walkers.log_likelihood, 1.0

    def fallback(self, pf, start: Walkers, pending, target) -> Walkers:
        """This node's own particles after the EKF update with its own measurement."""
        covariance = self.form.copy(start.covariance)
        if pending.predictions is None or target is None:
            return replace(start, covariance=covariance)
        means, log_density = self.form.update(
            covariance, start.theta, pending.gradient, pending.predictions, target,
            pf.settings.obs_noise, parallel=pf.parallel)
        return Walkers(ids=start.ids, log_weight=start.log_weight + log_density, theta=means,
                       carry=start.carry, log_likelihood=log_density,
                       next_carry=pending.next_carry, covariance=covariance)
