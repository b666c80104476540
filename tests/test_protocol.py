"""The typed learner protocol, its ownership rule, and the registry's plugins.

- every registered algorithm's learner is a :class:`mcdpf.learner.Learner`;
- ownership (:mod:`mcdpf.learner`): ``predict`` and ``learn`` leave the ``state`` and
  ``pending`` they are given valid — learning twice from the same values gives the same
  bits and writes none of their arrays — for every registered algorithm and every
  particle variant (proposal, kernel, dpf's overlap), on a one-node network
  (``COMM_SELF``), where the communicating algorithms exchange with no neighbour;
- a plugin registered in a fresh interpreter before anything else is imported sees every
  built-in, and a plugin registered directly runs through :class:`mcdpf.Node`.
"""

import dataclasses
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from mpi4py import MPI

from mcdpf.config import load_config
from mcdpf.learner import AlgorithmTraits, Learner
from mcdpf.node import Node
from mcdpf.registry import ALGORITHMS

VARIANTS = [(name, ()) for name in sorted(ALGORITHMS)] + [
    ("pf", ("filter.proposal=linearized",)),
    ("pf", ("filter.kernel=gaussian",)),
    ("cpf", ("filter.kernel=gaussian",)),
    ("rpf", ("filter.kernel=gaussian", "filter.particles=4")),
    ("rpf", ("filter.proposal=linearized",)),
    ("dpf", ("filter.proposal=linearized",)),
    ("dpf", ("filter.overlap=false",)),
]
WARM_STEPS = 6
SKIPPED_FIELDS = {"in_flight"}  # an exchange in flight: finished by the first learn


def node_for(algorithm: str, extra=()) -> Node:
    overrides = [f"run.algorithm={algorithm}", "model.n=2", "filter.particles=16",
                 "filter.ess_threshold=0.9", *extra]
    config = load_config({"topology": {"name": "ring"}}, overrides)
    return Node(config, MPI.COMM_SELF, input_dim=2)


def arrays_of(value, path="") -> dict:
    """Every array and scalar reachable from ``value`` (dataclasses, tuples, dicts), copied."""
    if isinstance(value, np.ndarray):
        return {path: value.copy()}
    if dataclasses.is_dataclass(value):
        found = {}
        for item in dataclasses.fields(value):
            if item.name not in SKIPPED_FIELDS:
                found |= arrays_of(getattr(value, item.name), f"{path}.{item.name}")
        return found
    if isinstance(value, (tuple, list)):
        found = {}
        for index, item in enumerate(value):
            found |= arrays_of(item, f"{path}[{index}]")
        return found
    if isinstance(value, dict):
        found = {}
        for key, item in value.items():
            found |= arrays_of(item, f"{path}[{key!r}]")
        return found
    return {path: value}


def assert_same(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key, value in first.items():
        np.testing.assert_array_equal(second[key], value, err_msg=key)


def step_data(rng):
    return rng.standard_normal((3, 2)), float(rng.standard_normal())


@pytest.mark.parametrize("algorithm, extra", VARIANTS,
                         ids=["-".join([name, *extra]) for name, extra in VARIANTS])
def test_learn_leaves_the_state_and_pending_it_was_given_valid(algorithm, extra):
    node = node_for(algorithm, extra)
    assert isinstance(node.learner, Learner)
    rng = np.random.default_rng(4)
    for _ in range(WARM_STEPS):  # a state that has moved: carried states, resampling
        columns, target = step_data(rng)
        node.predict(columns)
        node.learn(target)
    learner, state, step = node.learner, node.state, node.step
    columns, target = step_data(rng)
    columns = np.ascontiguousarray(columns, dtype=node.model.dtype)
    given = arrays_of(state)
    prediction, pending = learner.predict(state, step, columns)
    assert_same(given, arrays_of(state))
    again, _ = learner.predict(state, step, columns)
    np.testing.assert_array_equal(again, prediction)
    inputs = arrays_of((state, pending))
    first, first_info = learner.learn(state, pending, target)
    assert_same(inputs, arrays_of((state, pending)))
    second, second_info = learner.learn(state, pending, target)
    assert_same(inputs, arrays_of((state, pending)))
    np.testing.assert_equal(tuple(second_info), tuple(first_info))
    assert_same(arrays_of(learner.state_arrays(first)),
                arrays_of(learner.state_arrays(second)))
    np.testing.assert_array_equal(second.estimate, first.estimate)
    assert first.estimate.dtype == np.float64


def test_directly_registered_traits_take_the_defaults():
    traits = AlgorithmTraits(summary="a plugin")
    assert not traits.communicating and traits.steady_arrays and not traits.needs_all_streams
    assert traits.check(None, None, None) is None and traits.warnings(None, None) == []
    assert traits["communicating"] is traits.communicating
    with pytest.raises(KeyError):
        traits["colour"]


PLUGIN = textwrap.dedent("""
    import sys

    import numpy as np
    from mpi4py import MPI

    from mcdpf.registry import ALGORITHMS

    assert "mcdpf.algorithms" not in sys.modules

    @ALGORITHMS.register("echo-sgd", summary="a plugin: online SGD registered directly")
    def build(context):
        from mcdpf.baselines import OnlineSGD

        return OnlineSGD(model=context.model, seed=context.seed, node=context.node,
                         learning_rate=0.01)

    print(",".join(ALGORITHMS.names()))
    from mcdpf.config import load_config
    from mcdpf.node import Node

    config = load_config({"topology": {"name": "ring"}},
                         {"run.algorithm": "echo-sgd", "model.n": 2})
    node = Node(config, MPI.COMM_SELF, input_dim=2)
    rng = np.random.default_rng(0)
    for _ in range(3):
        prediction = node.predict(rng.standard_normal((2, 2)))
        node.learn(1.0)
    print(np.isfinite(prediction), node.step)
""")


def test_a_plugin_registered_first_sees_every_built_in_and_runs_through_node():
    done = subprocess.run([sys.executable, "-c", PLUGIN], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    names, ran = done.stdout.strip().splitlines()
    assert names.split(",") == [*ALGORITHMS.names(), "echo-sgd"]
    assert ran == "True 3"
