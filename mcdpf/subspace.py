"""Where particles live: the whole weight space, or a d-dimensional affine subspace.

``filter.subspace = d`` (0: off) puts the particles of pf, cpf, rpf and dpf in the
affine subspace ``theta = anchor + P z`` of the weights (the intrinsic-dimension
construction of Li et al. 2018; Duran-Martin, Kara & Murphy 2022): a particle is ``z``
(``d`` values) and its carried state, so a migrating dpf particle carries ``O(d)``
numbers whatever the model's size.

``P`` (``n_theta x d``, orthonormal columns) and the ``anchor`` (``n_theta``) are pure
functions of the run's seed: standard normals of the counter-based generator under the
purpose ``Keys.subspace`` (``P``'s Gaussian draws at step 0, row ``i`` keyed by id ``i``;
the anchor at step 1, id 0), then ``P`` orthonormalised by a QR factorisation with the
signs of ``R``'s diagonal made positive. Every node builds the same subspace without
sending it. The anchor is fixed: the common prior draw, scaled to
``init_std * sqrt(1 - d / n_theta)``, the share of the prior the subspace does not
carry, so each weight's prior variance is ``init_std^2`` on average over the
construction for every ``d``, and ``d = n_theta`` (anchor 0, ``P`` a rotation) is the
full-space filter in distribution.

A particle's prior is ``z ~ N(0, init_std^2 I_d)`` and its transition
``z_t = z_{t-1} + N(0, q I_d)``: in the weights, ``theta ~ N(anchor, init_std^2 P P^T)``
and noise ``q P P^T`` (the projection of ``q I`` onto the subspace). The filters see the
subspace through :class:`SubspaceModel`, a model whose parameters are ``z``: each
evaluation materialises ``theta`` by one matrix product (float64, ``O(N d n_theta)``
per population evaluation) and calls the wrapped model's kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .models import NormalInitialisation
from .particles import Keys, standard_normals

BASIS_STEP, ANCHOR_STEP = 0, 1


def subspace_basis(seed: int, n_params: int, dimension: int,
                   init_std: float) -> tuple[np.ndarray, np.ndarray]:
    """``(P (n_params, d) orthonormal columns, anchor (n_params,))`` of ``seed``, float64."""
    key = Keys.of(seed).subspace
    draws = standard_normals(np.arange(dimension, dtype=np.int64), n_params, BASIS_STEP, key,
                             np.float64)
    basis, triangle = np.linalg.qr(draws.T)
    basis *= np.where(np.diag(triangle) < 0, -1.0, 1.0)
    scale = init_std * np.sqrt(1.0 - dimension / n_params)
    anchor = scale * standard_normals(np.zeros(1, dtype=np.int64), n_params, ANCHOR_STEP,
                                      key, np.float64)[0]
    return np.ascontiguousarray(basis), anchor


@dataclass(frozen=True, eq=False)
class SubspaceModel(NormalInitialisation):
    """A model whose parameters are subspace coordinates ``z``: ``theta = anchor + P z``.

    ``base`` is the wrapped model; ``basis`` ``P`` (n_theta, d) and ``anchor`` float64.
    """

    base: object
    basis: np.ndarray
    anchor: np.ndarray

    @property
    def n_params(self) -> int:
        """``d``, the particles' parameter count."""
        return self.basis.shape[1]

    @property
    def n_carry(self) -> int:
        """The wrapped model's carried-state length."""
        return self.base.n_carry

    @property
    def dtype(self) -> np.dtype:
        """The wrapped model's dtype (``z`` is stored in it)."""
        return self.base.dtype

    @property
    def init_std(self) -> float:
        """Prior std of every coordinate of ``z``."""
        return self.base.init_std

    def theta(self, z: np.ndarray) -> np.ndarray:
        """``anchor + z P^T`` of every row of ``z`` (float64), a float64 array."""
        return self.anchor + np.asarray(z, dtype=np.float64) @ self.basis.T

    def weights(self, z: np.ndarray) -> np.ndarray:
        """``theta`` of every particle in the model dtype, C-contiguous (for the kernels)."""
        return np.ascontiguousarray(self.theta(z), dtype=self.base.dtype)

    def evaluate(self, z, carry, state_noise, columns, parallel: bool = False):
        """The wrapped model's ``evaluate`` at ``theta(z)``."""
        return self.base.evaluate(self.weights(z), carry, state_noise, columns, parallel)

    def score(self, z, carry, state_noise, columns, target: float, obs_noise: float,
              parallel: bool = False):
        """The wrapped model's ``score`` at ``theta(z)``."""
        return self.base.score(self.weights(z), carry, state_noise, columns, target,
                               obs_noise, parallel)


@dataclass(frozen=True)
class FullSpace:
    """Particles are the weights themselves (``filter.subspace = 0``)."""

    model: object

    def estimate(self, mean: np.ndarray) -> np.ndarray:
        """The weights' estimate of the particles' weighted mean: itself."""
        return mean


@dataclass(frozen=True)
class Subspace:
    """Particles are ``z`` of :class:`SubspaceModel` ``model``."""

    model: SubspaceModel

    def estimate(self, mean: np.ndarray) -> np.ndarray:
        """``anchor + P z_bar``: the weights at the particles' weighted mean (float64)."""
        return self.model.theta(mean[None, :])[0]


def parameter_space(model, settings, seed: int):
    """:class:`FullSpace` or, with ``settings.subspace = d > 0``, :class:`Subspace`."""
    dimension = settings.subspace
    if not dimension:
        return FullSpace(model)
    basis, anchor = subspace_basis(seed, model.n_params, dimension, model.init_std)
    return Subspace(SubspaceModel(base=model, basis=basis, anchor=anchor))


def check_subspace(config, model) -> None:
    """Refuse a subspace larger than the weights, or with a variant it cannot take."""
    dimension = config.filter.subspace
    if not dimension:
        return
    source = config.source
    if dimension > model.n_params:
        raise InputError(f"{source}: [filter] subspace = {dimension} exceeds the model's "
                         f"{model.n_params} weights")
    if config.filter.kernel != "point" or config.filter.proposal != "prior":
        raise InputError(f"{source}: [filter] subspace = {dimension} takes point particles "
                         "and the prior proposal (kernel = \"point\", proposal = \"prior\")")
