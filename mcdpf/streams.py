"""Data streams: each node's sequence of (variable-length input, label) pairs.

A :class:`Stream` stores all sequences' columns concatenated, ``columns`` (C, p), with
``offsets`` (T + 1,) so that sequence ``t`` is ``columns[offsets[t]:offsets[t + 1]]``,
and the labels ``targets`` (T,). No padding: a sequence costs its own length. Streams come
from the data sources of :mod:`mcdpf.sources`, from HDF5 stream files (:mod:`mcdpf.io`),
or from the caller's arrays (:meth:`Stream.from_sequences`, :meth:`Stream.from_arrays`).

A stream carries the :class:`Scaling` that its source applied (``none`` for data used
as given), so that results can be returned in the data's original units.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class Scaling:
    """The affine map from a stream's values back to the data's units, per column.

    ``original = offset + scale * scaled``, for every input column (``input_offset``,
    ``input_scale``, shape (p,)) and for the target (``target_offset``,
    ``target_scale``). ``method`` names how the source scaled (``minmax``: to [-1, 1] by
    the minimum and maximum; ``zscore``: to zero mean and unit variance), or is ``none``:
    the values are in the data's own units (offsets 0, scales 1).
    """

    method: str = "none"
    input_offset: tuple[float, ...] = ()
    input_scale: tuple[float, ...] = ()
    target_offset: float = 0.0
    target_scale: float = 1.0

    @property
    def scaled(self) -> bool:
        """Whether the values differ from the data's units."""
        return self.method != "none"

    def target_to_original(self, values: np.ndarray) -> np.ndarray:
        """Targets or predictions (any shape) in the data's units (float64)."""
        return self.target_offset + self.target_scale * np.asarray(values, dtype=np.float64)

    def inputs_to_original(self, columns: np.ndarray) -> np.ndarray:
        """Input columns (C, p) in the data's units (float64)."""
        columns = np.asarray(columns, dtype=np.float64)
        if not self.scaled:
            return columns
        return np.asarray(self.input_offset) + np.asarray(self.input_scale) * columns

    def to_json(self) -> str:
        """``"none"``, or an object ``{"method", "X": {"offset", "scale"}, "target": {...}}``."""
        if not self.scaled:
            return json.dumps("none")
        return json.dumps({"method": self.method,
                           "X": {"offset": list(self.input_offset),
                                 "scale": list(self.input_scale)},
                           "target": {"offset": self.target_offset,
                                      "scale": self.target_scale}})

    @classmethod
    def from_json(cls, text: str) -> Scaling:
        """The scaling that :meth:`to_json` wrote."""
        value = json.loads(text)
        if value == "none":
            return cls()
        return cls(method=value["method"], input_offset=tuple(value["X"]["offset"]),
                   input_scale=tuple(value["X"]["scale"]),
                   target_offset=float(value["target"]["offset"]),
                   target_scale=float(value["target"]["scale"]))


NO_SCALING = Scaling()


@dataclass(frozen=True)
class Stream:
    """Variable-length sequences with scalar labels, stored without padding.

    ``scaling`` maps the values back to the data's units (:class:`Scaling`).
    """

    columns: np.ndarray
    offsets: np.ndarray
    targets: np.ndarray
    scaling: Scaling = field(default=NO_SCALING)

    @classmethod
    def from_sequences(cls, sequences, targets, source: str = "Stream.from_sequences") -> Stream:
        """A validated stream from a list of ``(m_t, p)`` arrays and ``T`` labels.

        One-dimensional sequences are taken as ``p = 1``. Values are converted to float64.
        """
        pieces = []
        for t, sequence in enumerate(sequences):
            array = np.asarray(sequence)
            if array.ndim == 1:
                array = array[:, None]
            if array.ndim != 2:
                raise InputError(f"{source}: sequence {t} has shape {array.shape}, expected "
                                 "(m_t, p)")
            pieces.append(array)
        if not pieces:
            raise InputError(f"{source}: no sequences (T = 0)")
        widths = {piece.shape[1] for piece in pieces}
        if len(widths) != 1:
            raise InputError(f"{source}: sequences have different input dimensions "
                             f"{sorted(widths)}")
        lengths = [piece.shape[0] for piece in pieces]
        offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return check_stream(np.concatenate(pieces), offsets, targets, source)

    @classmethod
    def from_arrays(cls, columns, offsets, targets, source: str = "Stream.from_arrays") -> Stream:
        """A validated stream from concatenated columns, ``offsets`` (T + 1,) and labels."""
        return check_stream(columns, offsets, targets, source)

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
        return replace(self, columns=np.ascontiguousarray(columns), offsets=offsets,
                       targets=self.targets[indices].copy())

    def astype(self, dtype) -> Stream:
        """The same stream with columns in ``dtype`` (labels stay float64)."""
        return replace(self, columns=np.ascontiguousarray(self.columns, dtype=dtype))

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
    if targets.ndim == 0 or columns.ndim == 0:
        raise InputError(f"{source}: X and d must be arrays")
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
    return replace(stream, columns=columns, targets=targets), bad
