"""Run configuration: TOML sections, typed and range-checked keys, ``--set`` overrides.

A configuration file has the sections ``[run]``, ``[topology]``, ``[data]``, ``[model]``,
``[filter]``, ``[sgd]``, ``[adam]``, ``[ekf]``, ``[relay]`` and ``[faults]``. Every key is
declared once below with its type, default, allowed range and a one-line description;
the configuration reference in docs/user-guide.md is generated from the same declarations
(:func:`reference_table`).

Relative paths inside a configuration file are resolved against the file's directory;
paths given with ``--set`` are resolved against the working directory. Unknown sections
and keys are errors with a did-you-mean suggestion. Every problem raises
:class:`~mcdpf.errors.InputError` with a one-line message naming the file and key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .registry import (
    ALGORITHMS,
    COVARIANCES,
    KERNELS,
    PROPOSALS,
    RESAMPLING,
    SOURCES,
    TOPOLOGIES,
    WALKS,
)
from .topology.walks import AUTO_WALK_STEPS

PARTITIONS = ("replicate", "interleave", "shard")
MIGRATIONS = ("free", "balanced")
DTYPES = ("float64", "float32")
NONFINITE_POLICIES = ("error", "skip")


def _key(default: Any, doc: str, kind: str, **limits: Any):
    """Declare a configuration key: its default, description, kind and limits.

    ``kind`` is one of ``int``, ``steps`` (an int or ``"auto"``), ``float``, ``bool``,
    ``str``, ``path``, ``pairs`` (a list of ``[int, int]``) or ``matrix`` (a list of lists
    of numbers). ``limits`` may hold ``choices`` (a tuple, or a
    :class:`~mcdpf.registry.Registry` read when checking), ``minimum``, ``maximum``,
    ``below`` (strictly less than), ``positive`` (strictly greater than zero) and
    ``optional`` (the key
    may be absent; its default is then ``None``).
    """
    return field(default=default, metadata={"doc": doc, "kind": kind, **limits})


@dataclass(frozen=True)
class RunConfig:
    """``[run]``: what to run and where the outputs go."""

    algorithm: str = _key("dpf", "learning algorithm", "str", choices=ALGORITHMS)
    seed: int = _key(0, "seed of every random stream (particles, walks, resampling)", "int",
                     minimum=0)
    steps: int | None = _key(None, "time steps to run; default: the whole stream (1000 for "
                             "generated data)", "int", minimum=1, optional=True)
    out: str | None = _key(None, "run directory; default runs/<config name>; `--out` wins",
                           "path", optional=True)
    checkpoint_every: int = _key(0, "write a checkpoint every this many steps (0: never)",
                                 "int", minimum=0)
    checkpoint_async: bool = _key(False, "write checkpoints from a thread: the loop only "
                                  "copies the state (after a crash the newest checkpoint "
                                  "may be one interval older)", "bool")
    record_estimates: bool = _key(False, "also store the parameter estimate of every step "
                                  "(T x n_params)", "bool")
    progress_seconds: float = _key(2.0, "seconds between progress lines on rank 0 "
                                   "(0: none)", "float", minimum=0.0)
    threads: int = _key(1, "numba threads per rank for the particle kernels (results are "
                        "identical for any value; numpy's BLAS stays on one thread, "
                        "mcdpf.blas)", "int", minimum=1)
    max_memory_gb: float | None = _key(None, "refuse a run whose particles, covariances and "
                                       "records need more memory (GB) on one rank; default: "
                                       "the machine's memory / the ranks on it", "float",
                                       positive=True, optional=True)


@dataclass(frozen=True)
class TopologyConfig:
    """``[topology]``: the network graph and its random walk."""

    file: str | None = _key(None, "topology file (TOML: nodes, edges, optional transition)",
                            "path", optional=True)
    name: str | None = _key(None, "built-in topology instead of a file", "str",
                            choices=TOPOLOGIES, optional=True)
    edges: list | None = _key(None, "inline undirected edges [[i, j], ...] instead of a file "
                              "or name", "pairs", optional=True)
    transition: list | None = _key(None, "inline transition matrix (K x K) that goes with "
                                   "edges", "matrix", optional=True)
    nodes: int | None = _key(None, "node count of a built-in topology (or of inline edges); "
                             "default: the MPI world size (edges: 1 + the largest index)",
                             "int", minimum=1, optional=True)
    walk: str | None = _key(None, "random walk; default: matrix when the file has a "
                            "transition, else simple", "str", choices=WALKS, optional=True)
    seed: int = _key(0, "seed of the `random` topology", "int", minimum=0)
    edge_probability: float | None = _key(None, "extra-edge probability of the `random` "
                                          "topology; default min(1, 2 ln K / K)", "float",
                                          minimum=0.0, maximum=1.0, optional=True)
    rows: int | None = _key(None, "rows of the `torus`; default: the most square "
                            "factorisation", "int", minimum=1, optional=True)


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: where each node's stream of (sequence, label) pairs comes from."""

    source: str = _key("hk-exchange", "data source", "str", choices=SOURCES)
    path: str | None = _key(None, "HDF5 stream file (source = file) or CSV table (source = "
                            "csv)", "path", optional=True)
    columns: list | None = _key(None, "csv: columns to read, the label's series first; "
                                "default: every numeric column", "names", optional=True)
    partition: str | None = _key(None, "how one global stream is split over the nodes; "
                                 "default interleave (ignored, with a warning, for "
                                 "source = file)", "str", choices=PARTITIONS, optional=True)
    seed: int = _key(0, "seed of generated data (independent of run.seed)", "int", minimum=0)
    input_dim: int = _key(2, "p, input dimension of generated data; word-vector dimension "
                          "of sentences", "int", minimum=1)
    min_length: int = _key(2, "shortest generated sequence", "int", minimum=1)
    max_length: int = _key(8, "longest generated sequence", "int", minimum=1)
    noise_std: float = _key(0.1, "label noise std of generated data", "float", minimum=0.0)
    drift_std: float = _key(0.02, "per-step std of the linear-gaussian parameter random walk",
                            "float", minimum=0.0)
    teacher_hidden: int = _key(2, "output size n of the synthetic-lstm teacher", "int",
                               minimum=1)
    window: int = _key(2, "hk-exchange, seattle-weather, csv: previous rows in each input "
                       "sequence", "int", minimum=1)
    scaling: str = _key("minmax", "hk-exchange, seattle-weather, csv: minmax (each series to "
                        "[-1, 1]) or zscore (zero mean, unit variance), by whole-series "
                        "statistics", "str",
                        choices=("minmax", "zscore"))
    nonfinite: str = _key("error", "non-finite values in a stream: error, or skip the step",
                          "str", choices=NONFINITE_POLICIES)


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: the regressor every node learns."""

    kind: str = _key("lstm", "lstm (paper) or linear (exact-Kalman check)", "str",
                     choices=("lstm", "linear"))
    n: int = _key(2, "LSTM output (hidden) size", "int", minimum=1)
    carry_state: bool = _key(True, "start each sequence from the previous step's mean "
                             "state (time series) instead of zeros", "bool")
    init_std: float = _key(0.5, "std of the Gaussian prior of every parameter", "float",
                           positive=True)
    dtype: str = _key("float64", "floating type of parameters and kernels", "str",
                      choices=DTYPES)


@dataclass(frozen=True)
class FilterConfig:
    """``[filter]``: particle filter settings (pf, dpf, cpf; q and r also for ekf, dekf)."""

    particles: int = _key(100, "N, particles per node", "int", minimum=1)
    state_noise: float = _key(0.0004, "q, variance of the random-walk noise on every "
                              "state component", "float", minimum=0.0)
    obs_noise: float = _key(0.01, "r, variance of the Gaussian label noise", "float",
                            positive=True)
    walk_steps: int | str = _key(3, "s, random-walk steps per time step (dpf), or \"auto\": "
                                 "the shortest walk whose per-node visit exponents are within "
                                 "1 (rms) of the centralized 1 (docs/algorithms.md)",
                                 "steps", minimum=1)
    resampling: str = _key("systematic", "resampling scheme", "str", choices=RESAMPLING)
    ess_threshold: float = _key(1.0, "resample when ESS < threshold * N (pf, cpf); 1.0: "
                                "every step", "float", minimum=0.0, maximum=1.0)
    migration: str = _key("free", "free random walk, or balanced (A-proportional fixed "
                          "counts)", "str", choices=MIGRATIONS)
    overlap: bool = _key(True, "dpf: the first walk exchange overlaps the node's own "
                         "prediction (results identical either way)", "bool")
    central_particles: int | None = _key(None, "cpf particles; default N * K", "int",
                                         minimum=1, optional=True)
    kernel: str = _key("point", "particles: point (a parameter vector each, the papers') or "
                       "gaussian (a Gaussian N(m, P) each, updated by the EKF: a Gaussian-sum "
                       "particle filter; in dpf they migrate with their covariance)", "str",
                       choices=KERNELS)
    covariance: str = _key("full", "form of each Gaussian particle's covariance (kernel = "
                           "\"gaussian\"): full (dense, O(n_theta^2)), diagonal, decoupled "
                           "(one block per LSTM unit) or lowrank (diagonal plus rank-r "
                           "precision, LoFi)", "str", choices=COVARIANCES)
    rank: int | None = _key(None, "r of covariance = \"lowrank\" (1 <= r < n_theta); "
                            "default min(10, n_theta - 1)", "int", minimum=1, optional=True)
    proposal: str = _key("prior", "importance proposal: prior (the transition, as the "
                         "papers) or linearized (optimal proposal of the model linearised at "
                         "each particle, exact weights)", "str", choices=PROPOSALS)
    visit_centering: bool = _key(False, "dpf: weight each visit by the likelihood relative to "
                                 "the mean over the particles at that node (a control "
                                 "variate for the walk's randomness)", "bool")
    visit_tempering: float = _key(1.0, "dpf: beta, every visit's exponent is beta / (s pi_j) "
                                  "(1: the papers'; below 1 flattens the walk's weights, "
                                  "docs/algorithms.md)", "float", positive=True, maximum=1.0)
    weight_tempering: float = _key(1.0, "pf, rpf, cpf: eta, every particle's likelihood "
                                   "enters its weight to the power eta, its move (a Gaussian "
                                   "particle's EKF update) untempered (1: Bayes; 0: equal "
                                   "weights, an ensemble of Gaussian particles; "
                                   "docs/algorithms.md)", "float", minimum=0.0, maximum=1.0)
    wire_dtype: str | None = _key(None, "dpf: float type of migrating particles on the wire; "
                                  "default: the model dtype (float32 halves a float64 "
                                  "run's bytes)", "str", choices=DTYPES, optional=True)
    subspace: int = _key(0, "d: particles live in a d-dimensional affine subspace of the "
                         "weights, theta = anchor + P z, P and the anchor from the seed "
                         "(pf, cpf, rpf, dpf; point particles, prior proposal); 0: off",
                         "int", minimum=0)


@dataclass(frozen=True)
class SGDConfig:
    """``[sgd]``: online gradient descent (sgd, dsgd)."""

    learning_rate: float = _key(0.1, "step size mu", "float", positive=True)


@dataclass(frozen=True)
class AdamConfig:
    """``[adam]``: online Adam (adam, dadam); the defaults are Kingma & Ba's but the step."""

    learning_rate: float = _key(0.03, "step size alpha (chosen by a seeded study over "
                                "seeds and data sets: docs/algorithms.md)", "float",
                                positive=True)
    beta1: float = _key(0.9, "decay of the first-moment (gradient mean) estimate", "float",
                        minimum=0.0, below=1.0)
    beta2: float = _key(0.999, "decay of the second-moment (squared gradient) estimate",
                        "float", minimum=0.0, below=1.0)
    eps: float = _key(1e-8, "added to the root of the second moment (numerical safety)",
                      "float", positive=True)


@dataclass(frozen=True)
class EKFConfig:
    """``[ekf]``: extended Kalman filter on the parameters (ekf, dekf)."""

    initial_variance: float | None = _key(None, "P0 = this * I; default init_std^2", "float",
                                          positive=True, optional=True)
    max_memory_gb: float = _key(4.0, "refuse runs whose covariance needs more memory",
                                "float", positive=True)
    covariance: str = _key("full", "form of the covariance P (ekf, dekf): full (dense, "
                           "O(n_theta^2)), diagonal, decoupled (one block per LSTM unit) or "
                           "lowrank (diagonal plus rank-r precision, LoFi)", "str",
                           choices=COVARIANCES)
    rank: int | None = _key(None, "r of covariance = \"lowrank\" (1 <= r < n_theta); "
                            "default min(10, n_theta - 1)", "int", minimum=1, optional=True)


RELAY_WEIGHTS = ("uniform", "walk")


@dataclass(frozen=True)
class RelayConfig:
    """``[relay]``: the relay particle filter (rpf)."""

    hops: int | None = _key(None, "hops that measurements travel; default: the graph's "
                            "diameter (every node's data at every node)", "int", minimum=1,
                            optional=True)
    weights: str = _key("uniform", "exponent of each relayed likelihood: uniform (1; with "
                        "hops >= diameter the centralized PF) or walk (expected visits of an "
                        "s-step walk / (s pi_j): MCDPF in expectation)", "str",
                        choices=RELAY_WEIGHTS)


@dataclass(frozen=True)
class FaultsConfig:
    """``[faults]``: fault injection for resilience experiments."""

    drop: list = _key(None, "[[node, step], ...]: the node leaves the network at that step "
                      "(its neighbours rebuild the walk on the remaining graph)", "pairs",
                      optional=True)
    crash: list = _key(None, "[[node, step], ...]: the node raises an error at that step "
                       "(tests the abort path)", "pairs", optional=True)
    kill: list = _key(None, "[[node, step], ...]: the node's process kills itself (SIGKILL) "
                      "at that step (tests abort and resume)", "pairs", optional=True)


@dataclass(frozen=True)
class Config:
    """A whole, validated run configuration."""

    run: RunConfig = field(default_factory=RunConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    sgd: SGDConfig = field(default_factory=SGDConfig)
    adam: AdamConfig = field(default_factory=AdamConfig)
    ekf: EKFConfig = field(default_factory=EKFConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    source: str = ""

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Return the resolved configuration as plain nested dictionaries."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def to_json(self) -> str:
        """Return the resolved configuration as canonical JSON (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, section: str, **changes: Any) -> Config:
        """Return a copy with some keys of one section changed (no re-validation)."""
        updated = dataclasses.replace(getattr(self, section), **changes)
        return dataclasses.replace(self, **{section: updated})


SECTIONS: dict[str, type] = {
    f.name: f.default_factory for f in dataclasses.fields(Config) if f.name != "source"
}


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _check_value(section: str, key: str, value: Any, meta: dict, origin: str,
                 base_dir: Path) -> Any:
    """Type- and range-check one value; return it converted (paths resolved)."""
    label = f"{origin}: [{section}] {key} = {_describe(value)}"
    kind = meta["kind"]
    if kind == "steps" and value == AUTO_WALK_STEPS:
        return value
    if kind == "steps":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{label}: must be an integer or \"{AUTO_WALK_STEPS}\"")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{label}: must be an integer")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"{label}: must be a number")
        value = float(value)
        if not math.isfinite(value):
            raise InputError(f"{label}: must be finite")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise InputError(f"{label}: must be true or false")
    elif kind in ("str", "path"):
        if not isinstance(value, str) or not value:
            raise InputError(f"{label}: must be a non-empty string")
        if kind == "path":
            path = Path(value).expanduser()
            value = os.path.normpath(path if path.is_absolute() else base_dir / path)
    elif kind == "pairs":
        ok = isinstance(value, list | tuple) and all(
            isinstance(p, list | tuple) and len(p) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in p)
            for p in value)
        if not ok:
            raise InputError(f"{label}: must be a list of [i, j] pairs of non-negative "
                             "integers")
        return [list(p) for p in value]
    elif kind == "names":
        ok = isinstance(value, list | tuple) and value and all(
            isinstance(v, str) and v for v in value)
        if not ok:
            raise InputError(f"{label}: must be a non-empty list of column names")
        return list(value)
    elif kind == "matrix":
        ok = isinstance(value, list | tuple) and all(
            isinstance(row, list | tuple) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in row)
            for row in value)
        if not ok:
            raise InputError(f"{label}: must be a list of rows of numbers")
        return [[float(v) for v in row] for row in value]
    choices = _choices(meta)
    if choices is not None and value not in choices:
        raise InputError(f"{label}: must be one of {', '.join(choices)}"
                         f"{_suggest(str(value), choices)}")
    if "minimum" in meta and value < meta["minimum"]:
        raise InputError(f"{label}: must be >= {meta['minimum']}")
    if "maximum" in meta and value > meta["maximum"]:
        raise InputError(f"{label}: must be <= {meta['maximum']}")
    if "below" in meta and not value < meta["below"]:
        raise InputError(f"{label}: must be < {meta['below']}")
    if meta.get("positive") and not value > 0:
        raise InputError(f"{label}: must be > 0")
    return value


def _choices(meta: dict) -> tuple[str, ...] | None:
    """A key's allowed values (a registry's names are read when needed)."""
    choices = meta.get("choices")
    return None if choices is None else tuple(choices)


def _section_fields(section: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=VALUE``; VALUE is a TOML value, or else a bare string."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise InputError(f"--set {text}: expected section.key=VALUE")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, key.strip(), value


def _document(path_or_dict) -> tuple[dict, str, Path]:
    """The sections of a TOML file or a mapping, its name for messages, its base directory."""
    if isinstance(path_or_dict, dict):
        document = {}
        for section, table in path_or_dict.items():
            if hasattr(table, "to_config"):  # a Topology object for [topology]
                table = table.to_config()
            document[section] = table
        return document, "<dict>", Path.cwd()
    path = Path(path_or_dict)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read configuration: {error}") from None
    try:
        return tomllib.loads(text), str(path), path.resolve().parent
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{path}: invalid TOML: {error}") from None


def _overrides(overrides) -> list[tuple[str, str, Any, str]]:
    """``(section, key, value, label)`` of ``--set`` strings or a ``{"section.key": value}``."""
    if isinstance(overrides, dict):
        items = []
        for name, value in overrides.items():
            section, dot, key = str(name).partition(".")
            if not dot or not section or not key:
                raise InputError(f"override {name!r}: expected 'section.key'")
            items.append((section, key, value, f"override {name}"))
        return items
    items = []
    for text in overrides:
        section, key, value = parse_override(text)
        items.append((section, key, value, f"--set {section}.{key}"))
    return items


def load_config(path_or_dict=None, overrides=()) -> Config:
    """Read, override and validate a configuration.

    Parameters
    ----------
    path_or_dict
        A TOML file, a mapping ``{section: {key: value}}`` (a
        :class:`~mcdpf.topology.Topology` may stand for the ``topology`` table), or
        ``None`` for the defaults.
    overrides
        ``section.key=VALUE`` strings (as ``--set``), or a mapping
        ``{"section.key": value}``, applied after the file in order.

    Raises
    ------
    InputError
        One line naming the file or key and the problem.
    """
    tables: dict[str, dict[str, tuple[Any, str, Path]]] = {}
    origin = "<defaults>"
    if path_or_dict is not None:
        document, origin, base_dir = _document(path_or_dict)
        for section, table in document.items():
            if section not in SECTIONS:
                raise InputError(f"{origin}: unknown section [{section}]"
                                 f"{_suggest(section, SECTIONS)}; sections are "
                                 f"{', '.join(SECTIONS)}")
            if not isinstance(table, dict):
                raise InputError(f"{origin}: '{section}' must be a [{section}] table")
            for key, value in table.items():
                if value is not None:
                    tables.setdefault(section, {})[key] = (value, origin, base_dir)
    for section, key, value, label in _overrides(overrides):
        if section not in SECTIONS:
            raise InputError(f"{label}: unknown section [{section}]"
                             f"{_suggest(section, SECTIONS)}")
        if value is None:
            tables.get(section, {}).pop(key, None)
        else:
            tables.setdefault(section, {})[key] = (value, label, Path.cwd())

    sections = {}
    for section, cls in SECTIONS.items():
        fields = _section_fields(section)
        values = {}
        for key, (value, where, base_dir) in tables.get(section, {}).items():
            if key not in fields:
                raise InputError(f"{where}: unknown key '{key}' in [{section}]"
                                 f"{_suggest(key, fields)}; keys are {', '.join(fields)}")
            values[key] = _check_value(section, key, value, fields[key].metadata, where,
                                       base_dir)
        sections[section] = cls(**values)
    config = Config(**sections, source=origin)
    _check_consistency(config)
    return config


def config_from_json(resolved: dict, origin: str, overrides=()) -> Config:
    """A configuration from its resolved form (:meth:`Config.to_dict`), validated again.

    ``overrides`` as in :func:`load_config`.
    """
    config = load_config(resolved, overrides)
    return dataclasses.replace(config, source=origin)


def _check_consistency(config: Config) -> None:
    """Checks that involve several keys."""
    src = config.source
    topo = config.topology
    if sum(value is not None for value in (topo.file, topo.name, topo.edges)) != 1:
        raise InputError(f"{src}: [topology] set exactly one of 'file', 'name' or 'edges'")
    if topo.file is not None and topo.nodes is not None:
        raise InputError(f"{src}: [topology] 'nodes' goes with 'name' or 'edges'; a "
                         "topology file states its own node count")
    if topo.transition is not None and topo.edges is None:
        raise InputError(f"{src}: [topology] 'transition' goes with 'edges' (a topology "
                         "file holds its own)")
    data = config.data
    if data.source in ("file", "csv"):
        if data.path is None:
            kind = "an HDF5 stream file" if data.source == "file" else "a CSV table"
            raise InputError(f"{src}: [data] source = \"{data.source}\" needs 'path' "
                             f"({kind})")
    elif data.path is not None:
        raise InputError(f"{src}: [data] 'path' goes with source = \"file\" or \"csv\" "
                         "only")
    if data.columns is not None and data.source != "csv":
        raise InputError(f"{src}: [data] 'columns' goes with source = \"csv\" only")
    ekf = config.ekf
    if ekf.rank is not None and ekf.covariance != "lowrank":
        raise InputError(f"{src}: [ekf] rank goes with covariance = \"lowrank\" only "
                         f"(covariance = \"{ekf.covariance}\")")
    if ekf.covariance not in ALGORITHMS.entry(config.run.algorithm).traits["covariances"]:
        users = [name for name in ALGORITHMS
                 if ekf.covariance in ALGORITHMS.entry(name).traits["covariances"]]
        raise InputError(f"{src}: [ekf] covariance = \"{ekf.covariance}\" is for "
                         f"{', '.join(users)}; run.algorithm = \"{config.run.algorithm}\" "
                         "cannot use it")
    particle = config.filter
    if particle.rank is not None and particle.covariance != "lowrank":
        raise InputError(f"{src}: [filter] rank goes with covariance = \"lowrank\" only "
                         f"(covariance = \"{particle.covariance}\")")
    if particle.covariance != "full" and particle.kernel != "gaussian":
        raise InputError(f"{src}: [filter] covariance = \"{particle.covariance}\" is for "
                         f"Gaussian particles (kernel = \"gaussian\"); kernel = "
                         f"\"{particle.kernel}\" keeps no covariance")
    wire = config.filter.wire_dtype
    if wire is not None and np.dtype(wire).itemsize > np.dtype(config.model.dtype).itemsize:
        raise InputError(f"{src}: [filter] wire_dtype = \"{wire}\" is wider than "
                         f"model.dtype = \"{config.model.dtype}\" (the wire may only narrow)")
    if data.min_length > data.max_length:
        raise InputError(f"{src}: [data] min_length = {data.min_length} exceeds "
                         f"max_length = {data.max_length}")


def reference_table() -> str:
    """Markdown table of every key: section, key, default, description."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            meta = f.metadata
            default = "—" if f.default is None else _describe(f.default)
            doc = meta["doc"]
            choices = _choices(meta)
            if choices:
                doc += " (" + " \\| ".join(choices) + ")"
            rows.append(f"| `{section}.{f.name}` | `{default}` | {doc} |")
    return "\n".join(rows)
