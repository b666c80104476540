"""``filter.walk_steps = "auto"``: the visit spread of a walk and the rule that uses it."""

import numpy as np
import pytest
from naive import walk_visit_spread

from mcdpf import load_config
from mcdpf.errors import InputError
from mcdpf.topology import named_topology
from mcdpf.topology.walks import AUTO_MAX_FACTOR, AUTO_SPREAD, auto_walk_steps, visit_spreads


@pytest.mark.parametrize("name, nodes, walk", [
    ("ring", 4, "simple"), ("ring", 5, "lazy"), ("star", 4, "simple"),
    ("complete", 4, "metropolis"), ("random", 5, "simple")])
def test_visit_spreads_match_path_enumeration(name, nodes, walk):
    topology = named_topology(name, nodes, walk=walk, seed=2)
    pi = topology.stationary_distribution
    spreads = visit_spreads(topology.transition, pi, 5)
    expected = [walk_visit_spread(topology.transition, pi, s) for s in range(1, 6)]
    np.testing.assert_allclose(spreads, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, nodes, walk, expected", [
    ("ring", 4, "simple", 2), ("ring", 16, "lazy", 4 * 16), ("torus", 16, "simple", 19),
    ("torus", 16, "lazy", 52), ("complete", 16, "simple", 14), ("torus", 64, "simple", 129)])
def test_auto_walk_steps_on_known_graphs(name, nodes, walk, expected):
    """Deterministic values of the rule (regression) and its definition, on every graph."""
    topology = named_topology(name, nodes, walk=walk)
    pi = topology.stationary_distribution
    steps = auto_walk_steps(topology.transition, pi)
    assert steps == topology.auto_walk_steps == topology.walk_steps("auto") == expected
    spreads = visit_spreads(topology.transition, pi, steps)
    if steps < AUTO_MAX_FACTOR * nodes:  # the shortest walk within the spread ...
        assert spreads[-1] <= AUTO_SPREAD < spreads[:-1].min()
    else:  # ... or the cap, for a walk too slow to get there (the lazy ring)
        assert spreads.min() > AUTO_SPREAD


def test_auto_walk_steps_grows_with_the_network_and_a_single_node_walks_once():
    assert named_topology("ring", 1).auto_walk_steps == 1
    assert named_topology("complete", 2).auto_walk_steps >= 1
    sizes = [named_topology("complete", k).auto_walk_steps for k in (4, 8, 16, 32)]
    assert sizes == sorted(sizes) and sizes[-1] > 2 * sizes[1]


def test_explicit_walk_steps_are_kept_and_reported():
    topology = named_topology("torus", 16)
    assert topology.walk_steps(3) == 3
    assert topology.describe()["auto_walk_steps"] == topology.auto_walk_steps


def test_config_accepts_auto_and_refuses_other_words():
    ring = {"topology": {"name": "ring", "nodes": 4}}
    assert load_config({**ring, "filter": {"walk_steps": "auto"}}).filter.walk_steps == "auto"
    assert load_config(ring, ["filter.walk_steps=7"]).filter.walk_steps == 7
    assert load_config(ring, ["filter.walk_steps=auto"]).filter.walk_steps == "auto"
    for bad, problem in [("fast", "integer or \"auto\""), (0, ">= 1"), (True, "integer"),
                         (2.5, "integer")]:
        with pytest.raises(InputError, match=problem) as error:
            load_config({**ring, "filter": {"walk_steps": bad}})
        assert "walk_steps" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("setting, beta", [(3, 1.0), ("auto", 1.0), ("auto", 0.5)])
def test_dpf_walks_the_resolved_steps_with_the_tempered_exponent(setting, beta):
    from mcdpf.algorithms import LearnerContext, build_learner
    from mcdpf.models import build_model

    config = load_config({"topology": {"name": "torus", "nodes": 16},
                          "filter": {"walk_steps": setting, "visit_tempering": beta}})
    topology = named_topology("torus", 16)
    learner = build_learner("dpf", LearnerContext(config, build_model(config.model, 2),
                                                  topology, 5, None))
    steps = topology.walk_steps(setting)
    assert learner.walk_steps == steps == (3 if setting == 3 else topology.auto_walk_steps)
    assert learner.visit_exponent == beta / (steps * topology.stationary_distribution[5])


def test_visit_tempering_outside_zero_one_is_refused():
    for bad in (0, -0.5, 1.5, "half"):
        with pytest.raises(InputError, match="visit_tempering") as error:
            load_config({"topology": {"name": "ring"}, "filter": {"visit_tempering": bad}})
        assert "\n" not in str(error.value)
