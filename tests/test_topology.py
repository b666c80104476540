"""Topologies: builders, files, validation, walks, stationary distribution, SLEM, period."""

import numpy as np
import pytest

from mcdpf.errors import InputError
from mcdpf.topology import (
    PAPER_RING_TRANSITION,
    named_topology,
    read_topology_file,
    resolve_topology_argument,
)

NAMES = ["ring", "complete", "star", "torus", "random"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("nodes", [1, 2, 3, 4, 6, 9, 16])
@pytest.mark.parametrize("walk", ["simple", "lazy", "metropolis"])
def test_builtin_walks_are_valid_markov_chains(name, nodes, walk):
    topology = named_topology(name, nodes, walk=walk, seed=3)
    a = topology.transition
    assert a.shape == (nodes, nodes)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(a >= 0)
    allowed = np.eye(nodes, dtype=bool)
    for i, j in topology.edges:
        allowed[i, j] = allowed[j, i] = True
    assert not np.any((a > 0) & ~allowed)
    pi = topology.stationary_distribution
    np.testing.assert_allclose(pi @ a, pi, atol=1e-12)
    assert pi.sum() == pytest.approx(1.0)
    moduli = np.sort(np.abs(np.linalg.eigvals(a)))[::-1]
    assert topology.slem == pytest.approx(moduli[1] if nodes > 1 else 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_simple_walk_stationary_is_degree_over_twice_edges(name):
    topology = named_topology(name, 9, seed=5)
    np.testing.assert_allclose(topology.stationary_distribution,
                               topology.degrees / (2 * len(topology.edges)), atol=1e-12)


def test_metropolis_is_uniform_and_symmetric():
    topology = named_topology("star", 7, walk="metropolis")
    np.testing.assert_allclose(topology.transition, topology.transition.T)
    np.testing.assert_allclose(topology.stationary_distribution, np.full(7, 1 / 7))


def test_periodicity_and_lazy_fix():
    even_ring = named_topology("ring", 6)
    assert even_ring.period == 2 and even_ring.slem == pytest.approx(1.0)
    assert even_ring.warnings()
    assert named_topology("ring", 5).period == 1
    lazy = named_topology("ring", 6, walk="lazy")
    assert lazy.period == 1 and lazy.slem < 1 and not lazy.warnings()
    assert named_topology("star", 5).period == 2
    assert named_topology("complete", 4).period == 1


def test_paper_ring_matches_file_and_is_periodic(repo):
    built = named_topology("paper-ring", 4)
    from_file = read_topology_file(repo / "topologies" / "paper-ring4.toml")
    np.testing.assert_array_equal(built.transition, PAPER_RING_TRANSITION)
    np.testing.assert_array_equal(from_file.transition, PAPER_RING_TRANSITION)
    assert from_file.walk == "matrix" and from_file.period == 2
    lazy = read_topology_file(repo / "topologies" / "paper-ring4.toml", walk="lazy")
    np.testing.assert_allclose(lazy.transition, 0.5 * (np.eye(4) + PAPER_RING_TRANSITION))
    assert lazy.period == 1


def test_shipped_topology_files_are_valid(repo):
    files = sorted((repo / "topologies").glob("*.toml"))
    assert len(files) >= 6
    for file in files:
        topology = read_topology_file(file)
        assert topology.nodes >= 1
        assert len(topology.edges) >= topology.nodes - 1


def test_paw_is_irregular_with_degree_proportional_pi(repo):
    topology = read_topology_file(repo / "topologies" / "paw4.toml")
    np.testing.assert_allclose(topology.stationary_distribution, np.array([2, 2, 3, 1]) / 8)
    assert not topology.describe()["regular"] and topology.period == 1


def test_random_topology_is_seeded_and_connected():
    first = named_topology("random", 12, seed=7)
    again = named_topology("random", 12, seed=7)
    other = named_topology("random", 12, seed=8)
    assert first.edges == again.edges
    assert first.edges != other.edges
    sparse = named_topology("random", 30, seed=1, edge_probability=0.0)
    assert len(sparse.edges) == 29  # a spanning tree: connected with nothing extra


def test_torus_shape():
    assert set(named_topology("torus", 12).degrees.tolist()) == {4}  # 3 x 4
    # 2 x 3: the two vertical wrap-around edges coincide and are merged
    assert set(named_topology("torus", 6).degrees.tolist()) == {3}
    assert len(named_topology("torus", 6).edges) == 9
    with pytest.raises(InputError, match="rows"):
        named_topology("torus", 10, rows=3)


def write(tmp_path, text):
    path = tmp_path / "topo.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("nodes = 3\nedges = [[0, 1]]", "not connected"),
    ("nodes = 3\nedges = [[0, 1], [1, 3]]", "out of range"),
    ("nodes = 3\nedges = [[0, 1], [1, 1], [1, 2]]", "self-loop"),
    ("nodes = 3\nedges = [[0, 1], [1, 0], [1, 2]]", "duplicate"),
    ("nodes = 0\nedges = []", "positive"),
    ("edges = [[0, 1]]", "missing 'nodes'"),
    ("nodes = 2\nedges = [[0, 1]]\nweights = 3", "unknown key"),
    ("nodes = 2\nedges = [[0, \"a\"]]", "pair of integer"),
    ("nodes = 2\nedges = [[0, 1]]\ntransition = [[0.5, 0.6], [1, 0]]", "row 0 sums"),
    ("nodes = 2\nedges = [[0, 1]]\ntransition = [[1.5, -0.5], [1, 0]]", "negative"),
    ("nodes = 2\nedges = [[0, 1]]\ntransition = [[1, 0]]", "shape 1x2"),
    ("nodes = 3\nedges = [[0, 1], [1, 2]]\n"
     "transition = [[0, 0.5, 0.5], [0.5, 0, 0.5], [0, 1, 0]]", "not an edge"),
    ("nodes = 2\nedges = [[0, 1]]\ntransition = [[1, 0], [0.5, 0.5]]", "irreducible"),
    ("nodes = [", "invalid TOML"),
])
def test_bad_topology_files_are_one_line_errors(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=message) as error:
        read_topology_file(path)
    assert "\n" not in str(error.value)
    assert str(path) in str(error.value)


def test_transition_rows_within_tolerance_are_renormalised(tmp_path):
    third = "0.333333"
    path = write(tmp_path, "nodes = 3\nedges = [[0, 1], [1, 2], [0, 2]]\n"
                 f"transition = [[{third}, {third}, {third}], [0.5, 0.0, 0.5], "
                 "[0.25, 0.25, 0.5]]")
    topology = read_topology_file(path)
    np.testing.assert_allclose(topology.transition.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(topology.transition[0], 1 / 3)


def test_matrix_walk_needs_a_transition(tmp_path):
    path = write(tmp_path, "nodes = 2\nedges = [[0, 1]]")
    with pytest.raises(InputError, match="transition"):
        read_topology_file(path, walk="matrix")


def test_missing_file_and_unknown_name():
    with pytest.raises(InputError, match="not found"):
        read_topology_file("/nonexistent/topo.toml")
    with pytest.raises(InputError, match="neither"):
        resolve_topology_argument("ringg", None, None)
    with pytest.raises(InputError, match="--nodes"):
        resolve_topology_argument("ring", None, None)


def test_round_trip_through_file(tmp_path):
    topology = named_topology("random", 8, seed=2, walk="metropolis")
    path = tmp_path / "r.toml"
    path.write_text(topology.to_toml())
    again = read_topology_file(path)
    assert again.edges == topology.edges
    np.testing.assert_array_equal(again.transition, topology.transition)
