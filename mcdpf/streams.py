"""Data streams: each node's sequence of (variable-length input, label) pairs.

A :class:`Stream` stores all sequences' columns concatenated, ``columns`` (C, p), with
``offsets`` (T + 1,) so that sequence ``t`` is ``columns[offsets[t]:offsets[t + 1]]``,
and the labels ``targets`` (T,). No padding: a sequence costs its own length.

Sources (``[data] source``):

``hk-exchange``
    Hong Kong dollar per US dollar daily rates, 1 Apr 2005 - 30 Mar 2007 (502 days,
    shipped in ``mcdpf/datasets``). Sequence ``t`` holds the previous ``window`` days as
    columns ``(HKD/USD, EUR/USD)`` (p = 2); the label is the next day's HKD/USD. Each
    series is scaled affinely by whole-file statistics (``data.scaling``: to [-1, 1] by
    its minimum and maximum, or to zero mean and unit variance) - a look-ahead of two
    numbers per series, documented in the README.
``synthetic-lstm``
    A teacher LSTM with known weights (``theta ~ N(0, 1)``, seeded by ``data.seed``)
    labels independent sequences of N(0, 1) columns; label noise ``noise_std``.
``linear-gaussian``
    ``d = theta_t^T x_bar + noise``, ``theta`` a Gaussian random walk (``drift_std`` per
    time step, ``theta_0 ~ N(0, I)``), all nodes sharing ``theta_t`` at step ``t``.
``sentences``
    The UCI sentence corpus (see :mod:`mcdpf.sentences`).
``file``
    An HDF5 stream file with one group per node (:mod:`mcdpf.io`).

The first four define one global sequence that ``partition`` splits over ``K`` nodes:
``replicate`` (every node the whole sequence), ``interleave`` (node ``k`` takes samples
``k, k + K, ...``: at each step the nodes hold ``K`` consecutive samples) or ``shard``
(node ``k`` takes the ``k``-th contiguous block). Generated data is drawn step-major, ``K``
samples per time step, so under ``interleave`` all nodes share the latent state of step
``t``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

import numpy as np

from .errors import InputError

DEFAULT_GENERATED_STEPS = 1000


@dataclass(frozen=True)
class Stream:
    """Variable-length sequences with scalar labels, stored without padding."""

    columns: np.ndarray
    offsets: np.ndarray
    targets: np.ndarray

    @property
    def steps(self) -> int:
        """Number of sequences ``T``."""
        return self.targets.shape[0]

    @property
    def input_dim(self) -> int:
        """``p``."""
        return self.columns.shape[1]

    def sequence(self, t: int) -> np.ndarray:
        """Columns ``x(1..m_t)`` of sequence ``t``, shape (m_t, p)."""
        return self.columns[self.offsets[t]:self.offsets[t + 1]]

    def take(self, indices: np.ndarray) -> Stream:
        """The sub-stream of the given sequence indices, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        lengths = self.offsets[indices + 1] - self.offsets[indices]
        offsets = np.zeros(indices.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if indices.size:
            pieces = [self.columns[self.offsets[i]:self.offsets[i + 1]] for i in indices]
            columns = np.concatenate(pieces)
        else:
            columns = self.columns[:0]
        return Stream(columns=np.ascontiguousarray(columns), offsets=offsets,
                      targets=self.targets[indices].copy())

    def astype(self, dtype) -> Stream:
        """The same stream with columns in ``dtype`` (labels stay float64)."""
        return Stream(columns=np.ascontiguousarray(self.columns, dtype=dtype),
                      offsets=self.offsets, targets=self.targets)

    def nonfinite_steps(self) -> np.ndarray:
        """Boolean mask of steps whose label or any input is NaN or infinite."""
        bad_columns = ~np.all(np.isfinite(self.columns), axis=1)
        counts = np.zeros(self.steps, dtype=np.int64)
        if bad_columns.any():
            owner = np.searchsorted(self.offsets, np.flatnonzero(bad_columns), side="right")
            np.add.at(counts, owner - 1, 1)
        return (counts > 0) | ~np.isfinite(self.targets)


def check_stream(columns, offsets, targets, source: str) -> Stream:
    """Validate raw arrays (shapes, dtypes, offsets); return a float64 :class:`Stream`."""
    columns = np.asarray(columns)
    offsets = np.asarray(offsets)
    targets = np.asarray(targets)
    if columns.ndim == 1:  # scalar inputs: p = 1
        columns = columns[:, None]
    if targets.ndim != 1:
        raise InputError(f"{source}: d has shape {targets.shape}, expected (T,)")
    if columns.ndim != 2 or columns.shape[1] < 1:
        raise InputError(f"{source}: X has shape {columns.shape}, expected (total_columns, p)")
    if offsets.ndim != 1 or offsets.shape[0] != targets.shape[0] + 1:
        raise InputError(f"{source}: offsets has shape {offsets.shape}, expected "
                         f"({targets.shape[0] + 1},) = (T + 1,)")
    for name, array in (("X", columns), ("d", targets)):
        if not (np.issubdtype(array.dtype, np.floating)
                or np.issubdtype(array.dtype, np.integer)):
            raise InputError(f"{source}: {name} has dtype {array.dtype}, expected a real "
                             "number type")
    if not np.issubdtype(offsets.dtype, np.integer):
        raise InputError(f"{source}: offsets has dtype {offsets.dtype}, expected int64")
    if targets.shape[0] == 0:
        raise InputError(f"{source}: the stream is empty (T = 0)")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != columns.shape[0]:
        raise InputError(f"{source}: offsets must start at 0 and end at the number of X rows "
                         f"({columns.shape[0]}); got {offsets[0]} .. {offsets[-1]}")
    lengths = np.diff(offsets)
    if np.any(lengths < 1):
        t = int(np.flatnonzero(lengths < 1)[0])
        raise InputError(f"{source}: sequence {t} has {lengths[t]} columns (offsets must "
                         "increase strictly: every sequence needs at least one column)")
    return Stream(columns=np.ascontiguousarray(columns, dtype=np.float64), offsets=offsets,
                  targets=np.ascontiguousarray(targets, dtype=np.float64))


def handle_nonfinite(stream: Stream, policy: str, source: str) -> tuple[Stream, np.ndarray]:
    """Apply the non-finite policy: ``error`` raises; ``skip`` returns a mask of steps.

    Skipped steps keep their place (so every node runs the same T) with inputs and label
    zeroed; the learner neither predicts nor learns from them.
    """
    bad = stream.nonfinite_steps()
    if not bad.any():
        return stream, bad
    if policy == "error":
        t = int(np.flatnonzero(bad)[0])
        raise InputError(f"{source}: step {t} has a non-finite input or label ({int(bad.sum())} "
                         "such steps; set data.nonfinite = \"skip\" to skip them)")
    columns = stream.columns.copy()
    targets = stream.targets.copy()
    for t in np.flatnonzero(bad):
        columns[stream.offsets[t]:stream.offsets[t + 1]] = 0.0
        targets[t] = 0.0
    return Stream(columns=columns, offsets=stream.offsets, targets=targets), bad


# ------------------------------------------------------------------------- sources
def scale_series(values: np.ndarray, scaling: str) -> np.ndarray:
    """Each column to [-1, 1] (``minmax``) or to zero mean and unit variance (``zscore``)."""
    if scaling == "zscore":
        return (values - values.mean(axis=0)) / values.std(axis=0)
    low, high = values.min(axis=0), values.max(axis=0)
    return 2.0 * (values - low) / (high - low) - 1.0


def hk_exchange_table() -> tuple[list[str], np.ndarray]:
    """Dates and the (502, 2) array of HKD/USD and EUR/USD rates shipped with mcdpf."""
    text = resources.files("mcdpf.datasets").joinpath("hk_exchange.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    rates = np.array([[float(r["EXHKUS"]), float(r["EXEUROUS"])] for r in rows])
    return [r["DATE"] for r in rows], rates


def hk_exchange_stream(window: int, scaling: str = "minmax") -> Stream:
    """Global HK exchange-rate stream: previous ``window`` days -> next day's HKD/USD."""
    _, rates = hk_exchange_table()
    scaled = scale_series(rates, scaling)
    days = scaled.shape[0]
    if window >= days:
        raise InputError(f"data.window = {window}: the series has only {days} days")
    count = days - window
    columns = np.concatenate([scaled[t:t + window] for t in range(count)])
    offsets = np.arange(count + 1, dtype=np.int64) * window
    return Stream(columns=np.ascontiguousarray(columns), offsets=offsets,
                  targets=scaled[window:, 0].copy())


def _random_lengths(rng, count, data) -> np.ndarray:
    return rng.integers(data.min_length, data.max_length + 1, size=count)


def _random_sequences(rng, count, data):
    lengths = _random_lengths(rng, count, data)
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    columns = rng.standard_normal((int(offsets[-1]), data.input_dim))
    return columns, offsets


def synthetic_lstm_teacher(data) -> np.ndarray:
    """The teacher's parameters (float64, 4n(n+p)+5n) for a ``[data]`` section."""
    from .kernels import lstm_parameter_count

    rng = np.random.default_rng(np.random.SeedSequence([data.seed, 0x7EAC]))
    return rng.standard_normal(lstm_parameter_count(data.teacher_hidden, data.input_dim))


def synthetic_lstm_stream(data, count: int) -> Stream:
    """``count`` independent sequences labelled by the teacher LSTM plus noise."""
    from .kernels import lstm_mean_states

    teacher = synthetic_lstm_teacher(data)
    rng = np.random.default_rng(np.random.SeedSequence([data.seed, 0xDA7A]))
    columns, offsets = _random_sequences(rng, count, data)
    n = data.teacher_hidden
    targets = np.empty(count)
    theta = teacher[None, :]
    start = np.zeros((1, 2 * n))
    for t in range(count):
        state = lstm_mean_states(theta, np.ascontiguousarray(columns[offsets[t]:offsets[t + 1]]),
                                 start, n)
        targets[t] = teacher[-n:] @ state[0, n:]
    targets += data.noise_std * rng.standard_normal(count)
    return Stream(columns=columns, offsets=offsets, targets=targets)


def linear_gaussian_stream(data, steps: int, per_step: int) -> tuple[Stream, np.ndarray]:
    """Step-major linear-Gaussian samples and the true ``theta`` of each step (steps, p)."""
    rng = np.random.default_rng(np.random.SeedSequence([data.seed, 0x11AE]))
    p = data.input_dim
    theta = np.cumsum(np.vstack([rng.standard_normal((1, p)),
                                 data.drift_std * rng.standard_normal((steps - 1, p))]), axis=0)
    count = steps * per_step
    columns, offsets = _random_sequences(rng, count, data)
    means = np.add.reduceat(columns, offsets[:-1], axis=0) / np.diff(offsets)[:, None]
    targets = np.einsum("ij,ij->i", means, np.repeat(theta, per_step, axis=0))
    targets += data.noise_std * rng.standard_normal(count)
    return Stream(columns=columns, offsets=offsets, targets=targets), theta


def partition_indices(total: int, nodes: int, node: int, scheme: str) -> np.ndarray:
    """Indices of the global samples that ``node`` receives, in time order."""
    if scheme == "replicate":
        return np.arange(total)
    per_node = total // nodes
    if scheme == "interleave":
        return np.arange(per_node) * nodes + node
    return node * per_node + np.arange(per_node)


def generated_length(steps: int, nodes: int, scheme: str) -> int:
    """Global samples to generate so every node gets ``steps`` under ``scheme``."""
    return steps if scheme == "replicate" else steps * nodes


def global_stream(data, steps: int | None, nodes: int) -> Stream:
    """The global stream of a non-file source, long enough for ``steps`` per node."""
    scheme = data.partition or "interleave"
    if data.source == "hk-exchange":
        return hk_exchange_stream(data.window, data.scaling)
    if data.source == "sentences":
        from .sentences import sentence_stream

        return sentence_stream(data.input_dim)
    steps = steps or DEFAULT_GENERATED_STEPS
    if data.source == "synthetic-lstm":
        return synthetic_lstm_stream(data, generated_length(steps, nodes, scheme))
    per_step = 1 if scheme == "replicate" else nodes
    return linear_gaussian_stream(data, generated_length(steps, nodes, scheme) // per_step,
                                  per_step)[0]


def node_stream(data, steps: int | None, nodes: int, node: int) -> Stream:
    """Node ``node``'s stream of a non-file source, truncated to ``steps`` if given."""
    scheme = data.partition or "interleave"
    whole = global_stream(data, steps, nodes)
    indices = partition_indices(whole.steps, nodes, node, scheme)
    if steps is not None:
        if steps > indices.size:
            raise InputError(f"run.steps = {steps}: data.source = \"{data.source}\" gives each "
                             f"of {nodes} nodes only {indices.size} steps under partition "
                             f"\"{scheme}\"")
        indices = indices[:steps]
    if indices.size == 0:
        raise InputError(f"data.source = \"{data.source}\" has {whole.steps} samples, fewer "
                         f"than the {nodes} nodes of partition \"{scheme}\"")
    return whole.take(indices)
