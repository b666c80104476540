"""Fuzzing the inputs: malformed configurations, topologies and stream files.

Whatever the input, the outcome is a valid object or one :class:`InputError` whose
message is a single line; through the command line, exit code 2 and one line on stderr.
Never another exception, a traceback or a hang.
"""

import dataclasses
import string

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcdpf.cli import main
from mcdpf.config import SECTIONS
from mcdpf.errors import InputError
from mcdpf.io import read_stream_file
from mcdpf.topology import read_topology_file

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = [(section, f) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
BASE = '[topology]\nname = "ring"\n[run]\nsteps = 3\n'


def toml_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, float):
        return repr(value) if np.isfinite(value) else ("nan" if value != value else
                                                      ("inf" if value > 0 else "-inf"))
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return repr(value)


def wrong_values(field):
    """Values that the key's declaration rejects."""
    meta = field.metadata
    kind = meta["kind"]
    strategies = [st.lists(st.integers(), max_size=2)] if kind != "pairs" else []
    if kind in ("int", "float"):
        strategies.append(st.text(string.ascii_letters, min_size=1, max_size=5))
        strategies.append(st.booleans())
        if "minimum" in meta:
            strategies.append(st.integers(-10**6, int(np.ceil(meta["minimum"])) - 1))
        if "maximum" in meta:
            strategies.append(st.integers(int(meta["maximum"]) + 1, 10**6))
        if meta.get("positive"):
            strategies.append(st.just(0))
        if kind == "int":
            strategies.append(st.floats(0.5, 10.5).filter(lambda v: v != int(v)))
        else:
            strategies.append(st.sampled_from([float("nan"), float("inf")]))
    elif kind == "steps":  # an int >= minimum, or "auto"
        strategies += [st.integers(-10**6, int(meta["minimum"]) - 1), st.booleans(),
                       st.floats(0.5, 10.5).filter(lambda v: v != int(v)),
                       st.text(string.ascii_lowercase, min_size=1, max_size=5)
                       .filter(lambda v: v != "auto")]
    elif kind == "bool":
        strategies += [st.integers(), st.text(max_size=3)]
    elif kind in ("str", "path"):
        strategies += [st.integers(), st.just("")]
        if meta.get("choices"):
            strategies.append(st.text(string.ascii_lowercase, min_size=1, max_size=8)
                              .filter(lambda v: v not in meta["choices"]))
    else:
        strategies += [st.integers(), st.lists(st.lists(st.integers(-5, -1), min_size=2,
                                                        max_size=2), min_size=1, max_size=2)]
    return st.one_of(strategies)


@st.composite
def broken_configs(draw):
    """A valid base configuration with exactly one defect; returns (text, needle)."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        name = draw(st.text(string.ascii_lowercase + "_", min_size=1, max_size=10)
                    .filter(lambda n: n not in SECTIONS))
        return BASE + f"[{name}]\nx = 1\n", name
    if choice == 1:
        section, _ = draw(st.sampled_from(KEYS))
        key = draw(st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)
                   .filter(lambda k: k not in {f.name for f in
                                                dataclasses.fields(SECTIONS[section])}))
        return BASE + f"[{section}]\n{key} = 1\n", key
    section, field = draw(st.sampled_from(KEYS))
    value = draw(wrong_values(field))
    # One table per section: the defective key joins its section's table.
    if section == "topology":
        keep = "" if field.name in ("name", "file") else 'name = "ring"\n'
        text = f"[run]\nsteps = 3\n[topology]\n{keep}"
    elif section == "run":
        text = '[topology]\nname = "ring"\n[run]\n'
    else:
        text = BASE + f"[{section}]\n"
    return text + f"{field.name} = {toml_literal(value)}\n", field.name


@FUZZ
@given(case=broken_configs())
def test_malformed_configs_exit_2_with_one_line(tmp_path, capsys, case):
    text, needle = case
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    code = main(["train", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, (text, captured.err)
    assert len(lines) == 1 and lines[0].startswith("mcdpf: error: "), captured.err
    assert needle in lines[0] or "invalid TOML" in lines[0], (text, lines[0])
    assert "Traceback" not in captured.err


small_ints = st.integers(-2, 6)
edge = st.lists(st.one_of(small_ints, st.text(max_size=2), st.floats(0, 3)), min_size=0,
                max_size=3)


@st.composite
def topology_documents(draw):
    nodes = draw(st.one_of(st.integers(-1, 6), st.text(max_size=2), st.booleans()))
    lines = [f"nodes = {toml_literal(nodes)}"] if draw(st.integers(0, 9)) > 0 else []
    edges = draw(st.lists(edge, max_size=8))
    if draw(st.integers(0, 9)) > 0:
        lines.append(f"edges = {toml_literal(edges)}")
    if draw(st.booleans()):
        size = draw(st.integers(0, 5))
        entry = st.one_of(st.floats(-0.5, 1.5), st.sampled_from([0.0, 0.5, 1.0, float("nan")]))
        rows = draw(st.lists(st.lists(entry, min_size=size, max_size=size), min_size=0,
                             max_size=5))
        lines.append(f"transition = {toml_literal(rows)}")
    if draw(st.integers(0, 9)) == 0:
        lines.append("extra = 1")
    return "\n".join(lines) + "\n"


@FUZZ
@given(document=topology_documents())
def test_topology_files_are_valid_or_one_line_errors(tmp_path, document):
    path = tmp_path / "topology.toml"
    path.write_text(document)
    try:
        topology = read_topology_file(path)
    except InputError as error:
        assert "\n" not in str(error) and str(path) in str(error)
        return
    np.testing.assert_allclose(topology.transition.sum(axis=1), 1.0, atol=1e-9)


dataset = st.one_of(
    st.integers(0, 6).map(lambda n: np.zeros(n)),
    st.integers(0, 6).map(lambda n: np.arange(n, dtype=np.int64)),
    st.tuples(st.integers(0, 6), st.integers(0, 3)).map(lambda s: np.ones(s)),
    st.just(np.array([b"x", b"y"])),
    st.just(np.array([0, 2, 1, 4], dtype=np.int64)),
    st.just(np.array([np.nan, 1.0])),
)


@FUZZ
@given(groups=st.lists(st.dictionaries(st.sampled_from(["d", "X", "offsets", "junk"]),
                                       dataset, max_size=4), min_size=0, max_size=3),
       nodes=st.integers(1, 3), node=st.integers(0, 2))
def test_stream_files_are_valid_or_one_line_errors(tmp_path, groups, nodes, node):
    path = tmp_path / "stream.h5"
    with h5py.File(path, "w") as handle:
        for index, content in enumerate(groups):
            group = handle.create_group(f"node{index}")
            for name, array in content.items():
                group[name] = array
    node = min(node, nodes - 1)
    try:
        stream = read_stream_file(path, node, nodes)
    except InputError as error:
        assert "\n" not in str(error) and str(path) in str(error)
        return
    assert stream.offsets[-1] == stream.columns.shape[0]
    assert np.all(np.diff(stream.offsets) >= 1)
