"""Covariance forms: how a Gaussian belief ``N(m, P)`` over the parameters stores ``P``.

A form is a strategy object picked by name (``ekf.covariance``, the registry
:data:`mcdpf.registry.COVARIANCES`) and built for one model (:func:`build_covariance`).
It holds no belief itself: the caller holds a *state*, a dict of float64 arrays whose first
axis counts Gaussians (``N = 1`` for ``ekf`` and ``dekf``; a population of Gaussian
particles otherwise), and the form maps states to states:

``initial(count, variance)``
    ``P_0 = variance * I`` for ``count`` Gaussians.
``time_update(state, state_noise)``
    ``P + q I``, as **new** arrays (the input state is left as it was).
``update(state, means, gradients, predictions, target, noise_variance, exponent=1)``
    One scalar measurement ``d = h(theta) + N(0, r)`` linearised at each mean (prediction
    ``h_i``, gradient ``g_i``): returns the new means (the input means are not changed) and
    ``log N(d; h_i, g_i^T P_i g_i + r / exponent)``, and updates ``state`` **in place**:
    call it only on a state the caller owns for this step (one returned by
    :meth:`time_update` or :meth:`copy`), never on one that is still referred to elsewhere.
    ``exponent`` tempers the likelihood, ``N(d; h, r)^exponent``, as a visit of weight
    ``exponent`` does (dpf); the returned density is that of the tempered measurement
    ``N(d; h, r / exponent)``, which differs from the tempered evidence by a factor common
    to every Gaussian with the same ``r`` and ``exponent``.
``updates(state)``
    Several measurement updates of ``state`` in turn (:class:`Updates`, a context
    manager): each as ``update``, but a form may leave part of one pending until the next
    (``full`` and ``decoupled`` do), so ``state`` is the covariance again when the block
    ends.
``predictive_variance(state, gradients)``
    ``g_i^T P_i g_i``.
``perturbation(state, normals)``
    ``L_i z_i`` with ``L_i L_i^T = P_i``, from standard normals ``z`` (N, n_theta).
``dense(state)``
    ``P_i`` as (N, n_theta, n_theta) matrices (tests, small models).
``take(state, rows)`` / ``copy(state)``
    The Gaussians ``rows`` (resampling), a copy.
``shapes(count)`` / ``restore(arrays)``
    The state's array names and shapes (checkpoints store the arrays under these names);
    the state from such arrays, checked.
``nbytes(count)`` / ``wire_bytes(count, dtype)``
    Memory of ``count`` covariances; bytes to send them at a wire dtype.

The forms (``n_theta`` weights, scalar measurements):

``full``
    ``P`` dense, the textbook EKF update (:mod:`mcdpf.kernels.gaussian`): ``O(n_theta^2)``
    memory and work. On the linear-Gaussian model it is the exact Kalman filter.
``diagonal``
    ``P = diag(v)``; the update keeps the diagonal of the EKF's downdate (each weight its
    own group: the fully decoupled EKF of Puskorius & Feldkamp, IJCNN 1991). ``O(n_theta)``.
``decoupled``
    ``P`` block diagonal, one block per group of :meth:`model.parameter_groups`: for the
    LSTM one per unit (its gates' rows of ``W``, ``R`` and biases, ``4 (p + n + 1)``
    weights) and one for the read-out ``w``; the linear model is a single unit (so
    ``decoupled`` is ``full`` there). Each block takes the EKF update with the one
    innovation variance of all blocks (decoupled EKF, Puskorius & Feldkamp 1991).
    ``O(n_theta (4 (p + n + 1)))``.
``lowrank``
    The precision is diagonal plus rank ``r``, ``P^-1 = diag(upsilon) + W W^T`` (``W``:
    n_theta x r), updated as diagonal LoFi (Chang, Duran-Martin, Shestopaloff, Jones &
    Murphy, "Low-rank extended Kalman filtering for online learning of neural networks
    from streaming data", CoLLAs 2023, their predict and condition steps with
    ``gamma = 1``). Time update (exact):
    ``upsilon' = upsilon / (1 + q upsilon)``, ``W' = D W chol((I + q W^T D W)^-1)`` with
    ``D = diag(1 / (1 + q upsilon))``. Measurement: the mean takes the exact gain of the
    rank ``r + 1`` precision ``diag(upsilon) + W~ W~^T``, ``W~ = [W, g / sqrt(rho)]``
    (Woodbury, ``O(n_theta r^2)``); then ``W~``'s thin SVD keeps the ``r`` leading
    directions as ``W`` and adds the dropped one's diagonal to ``upsilon`` (LoFi's
    diagonal-preserving truncation). ``O(n_theta r^2)`` work and ``n_theta (r + 1)`` memory.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .kernels import (
    add_diagonal,
    block_add_diagonal,
    block_downdate,
    block_pending,
    block_quadratic,
    block_update,
    dense_layout,
    diagonal_update,
    gaussian_update,
)
from .registry import COVARIANCES

DEFAULT_RANK = 10


class CovarianceForm:
    """What every form shares (see the module's guide for the interface).

    Subclasses set ``name``, :meth:`shapes`, :meth:`initial`, :meth:`_add_noise`,
    :meth:`_update`, :meth:`predictive_variance`, :meth:`perturbation` and :meth:`dense`.
    """

    name = ""
    kernel_units: tuple[str, ...] = ()  # warm-up units of mcdpf.kernels it calls
    defers_downdates = False  # updates() leaves each downdate for the next pass

    def __init__(self, size: int):
        self.size = size

    def shapes(self, count: int) -> dict[str, tuple[int, ...]]:
        """Array names and shapes of a state of ``count`` Gaussians."""
        raise NotImplementedError

    def initial(self, count: int, variance: float) -> dict:
        """``P_0 = variance * I`` for ``count`` Gaussians."""
        raise NotImplementedError

    def _add_noise(self, state: dict, state_noise: float) -> dict:
        """``P + q I`` of a state owned by the caller, in place."""
        raise NotImplementedError

    def _update(self, state, means, gradients, predictions, target, noise_variance,
                parallel=False):
        """The measurement update of ``state`` and ``means`` in place; log densities."""
        raise NotImplementedError

    def predictive_variance(self, state: dict, gradients: np.ndarray) -> np.ndarray:
        """``g_i^T P_i g_i`` (N,)."""
        raise NotImplementedError

    def perturbation(self, state: dict, normals: np.ndarray) -> np.ndarray:
        """``L_i z_i`` with ``L_i L_i^T = P_i`` (N, n_theta), from standard normals."""
        raise NotImplementedError

    def dense(self, state: dict) -> np.ndarray:
        """Every ``P_i`` as a dense (N, n_theta, n_theta) matrix."""
        raise NotImplementedError

    def describe(self) -> str:
        """What one covariance is, for messages."""
        return f"{self.size}-weight {self.name} covariance"

    def copy(self, state: dict) -> dict:
        """A state with its own arrays."""
        return {name: array.copy() for name, array in state.items()}

    def take(self, state: dict, rows: np.ndarray) -> dict:
        """The Gaussians ``rows`` (new arrays)."""
        return {name: np.ascontiguousarray(array[rows]) for name, array in state.items()}

    def time_update(self, state: dict, state_noise: float) -> dict:
        """``P + q I`` as new arrays (``state`` is not changed)."""
        return self._add_noise(self.copy(state), state_noise)

    def update(self, state: dict, means: np.ndarray, gradients: np.ndarray,
               predictions: np.ndarray, target: float, noise_variance: np.ndarray,
               exponent: float = 1.0, parallel: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """New means (N, n_theta) and log predictive densities (N,); ``state`` in place.

        ``parallel``: run the kernel on numba's threads (full, decoupled; bit-identical
        results).
        """
        means, noise = self._measurement(means, noise_variance, exponent)
        return means, self._update(state, means, gradients, predictions, target, noise,
                                   parallel)

    @staticmethod
    def _measurement(means, noise_variance, exponent):
        """A float64 copy of ``means`` (N, n_theta) and ``r / exponent`` (N,)."""
        means = np.array(means, dtype=np.float64, ndmin=2)
        noise = np.ascontiguousarray(np.broadcast_to(
            np.asarray(noise_variance, dtype=np.float64) / exponent, means.shape[:1]))
        return means, noise

    def updates(self, state: dict) -> Updates:
        """Several measurement updates of ``state`` in turn (see :class:`Updates`)."""
        return DeferredUpdates(self, state) if self.defers_downdates else Updates(self, state)

    def nbytes(self, count: int = 1) -> int:
        """Memory of ``count`` covariances (float64)."""
        return 8 * sum(int(np.prod(shape)) for shape in self.shapes(count).values())

    def wire_bytes(self, count: int = 1, dtype=np.float64) -> int:
        """Bytes of ``count`` covariances sent at ``dtype``."""
        return self.nbytes(count) // 8 * np.dtype(dtype).itemsize

    def restore(self, arrays: dict) -> dict:
        """The state from saved arrays (checked against :meth:`shapes`)."""
        count = next(iter(arrays[name] for name in self.shapes(1))).shape[0]
        state = {}
        for name, shape in self.shapes(count).items():
            array = np.ascontiguousarray(arrays[name], dtype=np.float64)
            if array.shape != shape:
                raise InputError(f"{self.name} covariance: saved {name!r} has shape "
                                 f"{array.shape}, expected {shape}")
            state[name] = array
        return state


class Updates:
    """Measurement updates of one state in turn, each as :meth:`CovarianceForm.update`.

    A context manager: a form may leave part of an update pending until the next one
    (``full`` and ``decoupled`` join each covariance downdate to the next measurement's
    pass over ``P``: one pass instead of two, with the same arithmetic), so the state is
    the covariance again only when the ``with`` block ends. The means and densities returned
    by :meth:`update` are final at once.
    """

    def __init__(self, form: CovarianceForm, state: dict):
        self.form = form
        self.state = state

    def update(self, means, gradients, predictions, target, noise_variance,
               exponent: float = 1.0, parallel: bool = False):
        """New means and log predictive densities (:meth:`CovarianceForm.update`)."""
        return self.form.update(self.state, means, gradients, predictions, target,
                                noise_variance, exponent, parallel)

    def finish(self) -> None:
        """Apply whatever is pending: ``state`` is the covariance again."""

    def __enter__(self) -> Updates:
        return self

    def __exit__(self, *exc) -> None:
        self.finish()


class DeferredUpdates(Updates):
    """:class:`Updates` with each covariance downdate left pending (``full``, ``decoupled``).

    The next measurement's pass over ``P`` applies it before reading each row
    (:func:`mcdpf.kernels.block_update`): the same arithmetic in the same order as
    immediate updates, so bit-identical results, with one pass over ``P`` fewer each. A
    form with ``defers_downdates`` provides ``_update(..., parallel, pending)`` and
    ``_downdate(state, pending)``.
    """

    def __init__(self, form, state):
        super().__init__(form, state)
        self.pending = block_pending(next(iter(state.values())).shape[0], form.size)

    def update(self, means, gradients, predictions, target, noise_variance,
               exponent: float = 1.0, parallel: bool = False):
        """New means and log predictive densities; this downdate left pending."""
        means, noise = self.form._measurement(means, noise_variance, exponent)
        return means, self.form._update(self.state, means, gradients, predictions, target,
                                        noise, parallel, self.pending)

    def finish(self):
        """Apply the last pending downdate."""
        self.form._downdate(self.state, self.pending)


def register(name: str, summary: str, *, rank: bool = False):
    """Register a form under ``name`` (``rank``: it reads ``.rank``)."""
    return COVARIANCES.register(name, summary=summary, rank=rank)


@register("full", "dense n_theta x n_theta covariance, the textbook EKF (default)")
class FullCovariance(CovarianceForm):
    """Dense ``P`` (the arrays of :mod:`mcdpf.kernels.gaussian`)."""

    name = "full"
    kernel_units = ("gaussian",)
    defers_downdates = True

    def shapes(self, count):
        """``covariance`` (N, n_theta, n_theta)."""
        return {"covariance": (count, self.size, self.size)}

    def describe(self):
        """``n x n covariance``."""
        return f"{self.size} x {self.size} covariance"

    def initial(self, count, variance):
        """``variance * I``."""
        return {"covariance": variance * np.broadcast_to(np.eye(self.size),
                                                         self.shapes(count)["covariance"])}

    def _add_noise(self, state, state_noise):
        add_diagonal(state["covariance"], state_noise)
        return state

    def _update(self, state, means, gradients, predictions, target, noise_variance,
                parallel=False, pending=None):
        return gaussian_update(means, state["covariance"], np.atleast_2d(gradients),
                               np.atleast_1d(np.asarray(predictions, dtype=np.float64)),
                               target, noise_variance, parallel, pending)

    def _downdate(self, state, pending):
        covariance = state["covariance"]
        block_downdate(covariance.reshape(covariance.shape[0], self.size ** 2),
                       dense_layout(self.size), pending)

    def predictive_variance(self, state, gradients):
        """``g^T P g``."""
        gradients = np.atleast_2d(gradients)
        return np.einsum("ia,iab,ib->i", gradients, state["covariance"], gradients)

    def perturbation(self, state, normals):
        """Cholesky factor times ``z``."""
        return np.einsum("iab,ib->ia", np.linalg.cholesky(state["covariance"]), normals)

    def dense(self, state):
        """``P`` itself (a copy)."""
        return state["covariance"].copy()


@register("diagonal", "diagonal covariance, one variance per weight: O(n_theta)")
class DiagonalCovariance(CovarianceForm):
    """``P = diag(v)``."""

    name = "diagonal"
    kernel_units = ("diagonal",)

    def shapes(self, count):
        """``variances`` (N, n_theta)."""
        return {"variances": (count, self.size)}

    def initial(self, count, variance):
        """``v = variance``."""
        return {"variances": np.full(self.shapes(count)["variances"], float(variance))}

    def _add_noise(self, state, state_noise):
        state["variances"] += state_noise
        return state

    def _update(self, state, means, gradients, predictions, target, noise_variance,
                parallel=False):
        return diagonal_update(means, state["variances"], np.atleast_2d(gradients),
                               np.atleast_1d(predictions), target, noise_variance)

    def predictive_variance(self, state, gradients):
        """``sum_a g_a^2 v_a``."""
        gradients = np.atleast_2d(gradients)
        return np.einsum("ia,ia,ia->i", gradients, gradients, state["variances"])

    def perturbation(self, state, normals):
        """``sqrt(v) z``."""
        return np.sqrt(state["variances"]) * normals

    def dense(self, state):
        """``diag(v)``."""
        count = state["variances"].shape[0]
        out = np.zeros((count, self.size, self.size))
        out[:, np.arange(self.size), np.arange(self.size)] = state["variances"]
        return out


@register("decoupled", "block-diagonal covariance, one block per LSTM unit and one for the "
          "read-out (decoupled EKF): O(n_theta x block)")
class DecoupledCovariance(CovarianceForm):
    """Block-diagonal ``P`` over groups of weights.

    Parameters
    ----------
    groups
        Index arrays partitioning ``0..n_theta-1`` (:meth:`model.parameter_groups`).
    """

    name = "decoupled"
    kernel_units = ("decoupled",)
    defers_downdates = True

    def __init__(self, groups):
        groups = [np.asarray(group, dtype=np.int64) for group in groups]
        index = np.concatenate(groups)
        super().__init__(index.size)
        if not np.array_equal(np.sort(index), np.arange(self.size)):
            raise ValueError("decoupled covariance: the groups must partition the weights")
        sizes = np.array([group.size for group in groups], dtype=np.int64)
        self.index = index
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes ** 2)]).astype(np.int64)
        self.groups = groups
        self.layout = (self.starts, self.index, self.offsets)

    def shapes(self, count):
        """``blocks`` (N, sum of block sizes squared), every block row-major."""
        return {"blocks": (count, int(self.starts[-1]))}

    def describe(self):
        """Blocks and the largest."""
        largest = max(group.size for group in self.groups)
        return (f"{len(self.groups)}-block decoupled covariance (largest {largest} x "
                f"{largest})")

    def initial(self, count, variance):
        """``variance * I`` in every block."""
        state = {"blocks": np.zeros(self.shapes(count)["blocks"])}
        return self._add_noise(state, variance)

    def _add_noise(self, state, state_noise):
        block_add_diagonal(state["blocks"], self.layout, state_noise)
        return state

    def _update(self, state, means, gradients, predictions, target, noise_variance,
                parallel=False, pending=None):
        return block_update(means, state["blocks"], self.layout, np.atleast_2d(gradients),
                            np.atleast_1d(predictions), target, noise_variance, pending,
                            parallel)

    def _downdate(self, state, pending):
        block_downdate(state["blocks"], self.layout, pending)

    def predictive_variance(self, state, gradients):
        """``sum_k g_k^T P_k g_k``."""
        return block_quadratic(state["blocks"], self.layout, np.atleast_2d(gradients))

    def _block(self, blocks, k):
        size = self.groups[k].size
        return blocks[:, self.starts[k]:self.starts[k + 1]].reshape(-1, size, size)

    def perturbation(self, state, normals):
        """Each block's Cholesky factor times its part of ``z``."""
        out = np.empty_like(normals, dtype=np.float64)
        for k, group in enumerate(self.groups):
            factor = np.linalg.cholesky(self._block(state["blocks"], k))
            out[:, group] = np.einsum("iab,ib->ia", factor, normals[:, group])
        return out

    def dense(self, state):
        """The blocks placed in a dense matrix."""
        out = np.zeros((state["blocks"].shape[0], self.size, self.size))
        for k, group in enumerate(self.groups):
            out[:, group[:, None], group[None, :]] = self._block(state["blocks"], k)
        return out


@register("lowrank", "diagonal plus rank-r precision (LoFi, Chang et al. 2023): "
          "O(n_theta r^2)", rank=True)
class LowRankCovariance(CovarianceForm):
    """``P^-1 = diag(upsilon) + W W^T`` with ``W`` (n_theta, rank): diagonal LoFi."""

    name = "lowrank"

    def __init__(self, size: int, rank: int):
        super().__init__(size)
        self.rank = rank

    def shapes(self, count):
        """``precision_diagonal`` (N, n_theta), ``precision_factor`` (N, n_theta, rank)."""
        return {"precision_diagonal": (count, self.size),
                "precision_factor": (count, self.size, self.rank)}

    def describe(self):
        """The rank."""
        return f"rank-{self.rank} lowrank covariance of {self.size} weights"

    def initial(self, count, variance):
        """``upsilon = 1 / variance``, ``W = 0``."""
        shapes = self.shapes(count)
        return {"precision_diagonal": np.full(shapes["precision_diagonal"], 1.0 / variance),
                "precision_factor": np.zeros(shapes["precision_factor"])}

    def _add_noise(self, state, state_noise):
        upsilon, factor = state["precision_diagonal"], state["precision_factor"]
        shrink = 1.0 / (1.0 + state_noise * upsilon)
        for i in range(upsilon.shape[0]):
            scaled = shrink[i][:, None] * factor[i]
            inner = np.eye(self.rank) + state_noise * (factor[i].T @ scaled)
            factor[i] = scaled @ np.linalg.cholesky(np.linalg.inv(inner))
        upsilon *= shrink
        return state

    def _covariance_times(self, upsilon, factor, vector):
        """``(diag(upsilon) + W W^T)^-1 vector`` by Woodbury (one Gaussian)."""
        scaled = factor / upsilon[:, None]
        inner = np.eye(factor.shape[1]) + factor.T @ scaled
        return vector / upsilon - scaled @ np.linalg.solve(inner, scaled.T @ vector)

    def _update(self, state, means, gradients, predictions, target, noise_variance,
                parallel=False):
        upsilon, factor = state["precision_diagonal"], state["precision_factor"]
        gradients = np.atleast_2d(gradients)
        predictions = np.atleast_1d(predictions)
        log_density = np.empty(means.shape[0])
        for i in range(means.shape[0]):
            gradient = np.asarray(gradients[i], dtype=np.float64)
            gain = self._covariance_times(upsilon[i], factor[i], gradient)
            s = gradient @ gain + noise_variance[i]
            residual = target - predictions[i]
            means[i] += gain * (residual / s)
            log_density[i] = -0.5 * (residual * residual / s + np.log(2.0 * np.pi * s))
            extended = np.column_stack([factor[i], gradient / np.sqrt(noise_variance[i])])
            vectors, values, _ = np.linalg.svd(extended, full_matrices=False)
            factor[i] = vectors[:, :self.rank] * values[:self.rank]
            upsilon[i] += (vectors[:, self.rank] * values[self.rank]) ** 2
        return log_density

    def predictive_variance(self, state, gradients):
        """``g^T (diag(upsilon) + W W^T)^-1 g``."""
        gradients = np.atleast_2d(gradients)
        return np.array([gradients[i] @ self._covariance_times(
            state["precision_diagonal"][i], state["precision_factor"][i], gradients[i])
            for i in range(gradients.shape[0])])

    def perturbation(self, state, normals):
        """``upsilon^-1/2 (I + U ((1 + S^2)^-1/2 - 1) U^T) z``.

        ``U S``: the thin SVD of ``upsilon^-1/2 W``; the covariance of the result is the
        inverse precision.
        """
        out = np.empty_like(normals, dtype=np.float64)
        for i in range(normals.shape[0]):
            root = np.sqrt(state["precision_diagonal"][i])
            vectors, values, _ = np.linalg.svd(state["precision_factor"][i] / root[:, None],
                                               full_matrices=False)
            shrink = 1.0 / np.sqrt(1.0 + values ** 2) - 1.0
            out[i] = (normals[i] + vectors @ (shrink * (vectors.T @ normals[i]))) / root
        return out

    def dense(self, state):
        """``(diag(upsilon) + W W^T)^-1``."""
        upsilon, factor = state["precision_diagonal"], state["precision_factor"]
        return np.linalg.inv(np.einsum("ia,ab->iab", upsilon, np.eye(self.size))
                             + factor @ factor.transpose(0, 2, 1))


def tempered_evidence_log_factor(noise_variance: float, exponent: float) -> float:
    """``log c`` with ``N(d; h, r)^e = c N(d; h, r / e)``: ``(1 - e)/2 log(2 pi r) - log(e)/2``.

    So ``log N(d; h, g^T P g + r / e) + log c`` is the log of the tempered evidence
    ``int N(d; h(theta), r)^e N(theta; m, P) dtheta`` of the linearised model (a dpf visit
    of Gaussian particles; zero at ``e = 1``).
    """
    return 0.5 * (1.0 - exponent) * np.log(2.0 * np.pi * noise_variance) - 0.5 * np.log(exponent)


def build_covariance(name: str, model, rank: int | None = None,
                     section: str = "ekf") -> CovarianceForm:
    """The form ``name`` for ``model`` (``rank``: lowrank's; default ``min(10, n_theta - 1)``).

    Raises :class:`~mcdpf.errors.InputError` naming ``{section}.rank`` when the rank does
    not fit the model, or ``{section}.covariance`` for an unknown form.
    """
    if name not in COVARIANCES:
        raise InputError(f"{section}.covariance = {name!r}: must be one of "
                         f"{', '.join(COVARIANCES)}")
    size = model.n_params
    if name == "decoupled":
        return DecoupledCovariance(model.parameter_groups())
    if name != "lowrank":
        return COVARIANCES[name](size)
    if rank is None:
        rank = min(DEFAULT_RANK, size - 1)
    if not 1 <= rank < size:
        raise InputError(f"{section}.rank = {rank}: lowrank needs 1 <= rank < n_theta = "
                         f"{size} (model {model.layout()}); use {section}.covariance = "
                         "\"full\" for the exact covariance")
    return LowRankCovariance(size, rank)
