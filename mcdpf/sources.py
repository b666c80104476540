"""Data sources (``data.source``), registered by name, and their split over the nodes.

``hk-exchange``
    Hong Kong dollar per US dollar daily rates, 1 Apr 2005 - 30 Mar 2007 (502 days,
    shipped in ``mcdpf/datasets``). Sequence ``t`` holds the previous ``window`` days as
    columns ``(HKD/USD, EUR/USD)`` (p = 2); the label is the next day's HKD/USD. Each
    series is scaled affinely by whole-file statistics (``data.scaling``: to [-1, 1] by
    its minimum and maximum, or to zero mean and unit variance) - a look-ahead of two
    numbers per series, documented in docs/user-guide.md.
``seattle-weather``
    Daily Seattle weather, 2012-2015 (1461 days, shipped in ``mcdpf/datasets``): a real
    multivariate series. Sequence ``t`` holds the previous ``window`` days as columns
    ``(temp_max, temp_min, precipitation, wind)`` (p = 4); the label is the next day's
    ``temp_max``. Scaled like ``hk-exchange`` (``data.scaling``).
``sentences``
    The UCI sentence corpus (see :mod:`mcdpf.sentences`).
``synthetic-lstm``
    A teacher LSTM with known weights (``theta ~ N(0, 1)``, seeded by ``data.seed``)
    labels independent sequences of N(0, 1) columns; label noise ``noise_std``.
``linear-gaussian``
    ``d = theta_t^T x_bar + noise``, ``theta`` a Gaussian random walk (``drift_std`` per
    time step, ``theta_0 ~ N(0, I)``), all nodes sharing ``theta_t`` at step ``t``.
``csv``
    Any table of numbers (``data.path``) in the ``hk-exchange`` form: sequence ``t`` holds
    the previous ``window`` rows of ``data.columns`` (default: every numeric column), the
    label is the next row's first column, each column scaled as ``data.scaling`` says.
    Empty or non-numeric cells are missing values (NaN), handled by ``data.nonfinite``.
``file``
    An HDF5 stream file with one group per node (:mod:`mcdpf.io`).

Every source but ``file`` defines one global sequence (its registered function returns
it) that ``partition`` splits over ``K`` nodes: ``replicate`` (every node the whole
sequence), ``interleave`` (node ``k`` takes samples ``k, k + K, ...``: at each step the
nodes hold ``K`` consecutive samples) or ``shard`` (node ``k`` takes the ``k``-th
contiguous block). Generated data is drawn step-major, ``K`` samples per time step, so
under ``interleave`` all nodes share the latent state of step ``t``.
"""

from __future__ import annotations

import csv
from importlib import resources

import numpy as np

from .errors import InputError
from .registry import SOURCES
from .streams import Scaling, Stream

DEFAULT_GENERATED_STEPS = 1000


def scale_series(values: np.ndarray, scaling: str) -> tuple[np.ndarray, Scaling]:
    """Each column to [-1, 1] (``minmax``) or to zero mean and unit variance (``zscore``).

    Returns the scaled values and the map back, ``original = offset + scale * scaled``
    (column 0 is the target of :func:`window_stream`; every column is an input).
    """
    if scaling == "zscore":
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        scaled, offset, scale = (values - mean) / std, mean, std
    else:
        low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        scaled = 2.0 * (values - low) / (high - low) - 1.0
        offset, scale = (high + low) / 2.0, (high - low) / 2.0
    return scaled, Scaling(method=scaling, input_offset=tuple(offset.tolist()),
                           input_scale=tuple(scale.tolist()), target_offset=float(offset[0]),
                           target_scale=float(scale[0]))


def hk_exchange_table() -> tuple[list[str], np.ndarray]:
    """Dates and the (502, 2) array of HKD/USD and EUR/USD rates shipped with mcdpf."""
    text = resources.files("mcdpf.datasets").joinpath("hk_exchange.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    rates = np.array([[float(r["EXHKUS"]), float(r["EXEUROUS"])] for r in rows])
    return [r["DATE"] for r in rows], rates


def hk_exchange_stream(window: int, scaling: str = "minmax") -> Stream:
    """Global HK exchange-rate stream: previous ``window`` days -> next day's HKD/USD."""
    _, rates = hk_exchange_table()
    return window_stream(*scale_series(rates, scaling), window)


SEATTLE_COLUMNS = ["temp_max", "temp_min", "precipitation", "wind"]


def seattle_weather_stream(window: int, scaling: str = "minmax") -> Stream:
    """Global Seattle weather stream: previous ``window`` days -> next day's ``temp_max``."""
    path = resources.files("mcdpf.datasets").joinpath("seattle_weather.csv")
    _, values = csv_table(path, SEATTLE_COLUMNS)
    return window_stream(*scale_series(values, scaling), window)


def csv_table(path, columns: list[str] | None) -> tuple[list[str], np.ndarray]:
    """Column names and values (rows, columns) of a CSV table; missing cells are NaN."""
    from pathlib import Path

    source = Path(path)
    try:
        rows = list(csv.reader(source.read_text(encoding="utf-8").splitlines()))
    except FileNotFoundError:
        raise InputError(f"{path}: CSV table not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read CSV table: {error}") from None
    if len(rows) < 2:
        raise InputError(f"{path}: a CSV table needs a header row and data rows")
    header, body = [name.strip() for name in rows[0]], rows[1:]

    def number(cell):
        try:
            return float(cell)
        except ValueError:
            return np.nan

    table = np.array([[number(cell) for cell in row] + [np.nan] * (len(header) - len(row))
                      for row in body if any(cell.strip() for cell in row)])
    if columns is None:
        columns = [name for k, name in enumerate(header) if np.isfinite(table[:, k]).any()]
        if not columns:
            raise InputError(f"{path}: no numeric column")
    missing = [name for name in columns if name not in header]
    if missing:
        raise InputError(f"{path}: data.columns: no column {missing[0]!r} (columns are "
                         f"{', '.join(header)})")
    return columns, table[:, [header.index(name) for name in columns]]


def window_stream(series: np.ndarray, scaling: Scaling, window: int) -> Stream:
    """Sequences of the previous ``window`` rows (all columns) -> the next row's column 0.

    ``scaling``: how ``series`` was scaled (:func:`scale_series`).
    """
    days = series.shape[0]
    if window >= days:
        raise InputError(f"data.window = {window}: the series has only {days} days")
    count = days - window
    columns = np.concatenate([series[t:t + window] for t in range(count)])
    offsets = np.arange(count + 1, dtype=np.int64) * window
    return Stream(columns=np.ascontiguousarray(columns), offsets=offsets,
                  targets=series[window:, 0].copy(), scaling=scaling)


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


def partition_scheme(data) -> str:
    """``data.partition``, default ``interleave``."""
    return data.partition or "interleave"


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


@SOURCES.register("hk-exchange")
def _hk_exchange(data, steps, nodes) -> Stream:
    return hk_exchange_stream(data.window, data.scaling)


@SOURCES.register("seattle-weather")
def _seattle_weather(data, steps, nodes) -> Stream:
    return seattle_weather_stream(data.window, data.scaling)


@SOURCES.register("sentences")
def _sentences(data, steps, nodes) -> Stream:
    from .sentences import sentence_stream

    return sentence_stream(data.input_dim)


@SOURCES.register("synthetic-lstm")
def _synthetic_lstm(data, steps, nodes) -> Stream:
    steps = steps or DEFAULT_GENERATED_STEPS
    return synthetic_lstm_stream(data, generated_length(steps, nodes, partition_scheme(data)))


@SOURCES.register("linear-gaussian")
def _linear_gaussian(data, steps, nodes) -> Stream:
    steps = steps or DEFAULT_GENERATED_STEPS
    scheme = partition_scheme(data)
    per_step = 1 if scheme == "replicate" else nodes
    return linear_gaussian_stream(data, generated_length(steps, nodes, scheme) // per_step,
                                  per_step)[0]


@SOURCES.register("csv")
def _csv(data, steps, nodes) -> Stream:
    _, values = csv_table(data.path, data.columns)
    return window_stream(*scale_series(values, data.scaling), data.window)


@SOURCES.register("file", per_node=True)
def _file(data, steps, nodes, node) -> Stream:
    from .io import read_stream_file

    return read_stream_file(data.path, node, nodes)


def global_stream(data, steps: int | None, nodes: int) -> Stream:
    """The global stream of a non-file source, long enough for ``steps`` per node."""
    return SOURCES[data.source](data, steps, nodes)


def node_stream(data, steps: int | None, nodes: int, node: int) -> Stream:
    """Node ``node``'s stream of a source, truncated to ``steps`` if given (not for files)."""
    if SOURCES.entry(data.source).traits.get("per_node"):
        return SOURCES[data.source](data, steps, nodes, node)
    scheme = partition_scheme(data)
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


def source_label(data, node: int) -> str:
    """Where a node's stream comes from, for messages."""
    if data.source == "file":
        return f"{data.path}: node{node}"
    return f"data.source = \"{data.source}\""
