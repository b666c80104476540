"""Graphs and tracing for tests that run at any rank count."""

import numpy as np

from mcdpf.topology import check_graph, finish, make_walk, named_topology


def irregular_topology(nodes: int):
    """A connected, aperiodic graph whose degrees are not all equal (K >= 3).

    K = 3: the path 0-1-2 with the lazy walk. K >= 4: a triangle 0-1-2 with a tail
    2-3-...-(K-1), simple walk (aperiodic through the triangle).
    """
    if nodes == 3:
        edges = check_graph(3, [[0, 1], [1, 2]], "path(3)")
        walk, transition = make_walk("lazy", 3, edges, None, "path(3)")
        return finish(3, edges, transition, walk, "path(3)")
    edges = [[0, 1], [0, 2], [1, 2]] + [[k, k + 1] for k in range(2, nodes - 1)]
    edges = check_graph(nodes, edges, f"lollipop({nodes})")
    walk, transition = make_walk("simple", nodes, edges, None, f"lollipop({nodes})")
    return finish(nodes, edges, transition, walk, f"lollipop({nodes})")


def random_topology(nodes: int, seed: int):
    return named_topology("random", nodes, seed=seed, edge_probability=0.3)


class TracingComm:
    """Delegates to a communicator and logs every method called on it.

    ``Create_dist_graph_adjacent`` returns a traced graph communicator logging into the
    same list, so a test sees every call the library makes, and on which communicator.
    """

    def __init__(self, comm, log, name="world"):
        self._comm = comm
        self._log = log
        self._name = name

    @property
    def comm(self):
        return self._comm

    def __getattr__(self, attribute):
        target = getattr(self._comm, attribute)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            result = target(*args, **kwargs)
            self._log.append((self._name, attribute, args))
            if attribute == "Create_dist_graph_adjacent":
                return TracingComm(result, self._log, "graph")
            return result

        return call


def kalman_distance(comm, config, estimates, steps, burn_in, nodes=None, prior_mean=None):
    """Mean over steps >= burn_in and over the ranks of the Mahalanobis distance between
    each node's estimates and the exact Kalman posterior of ``nodes`` (default: all),
    from ``prior_mean`` (default 0).

    In units of the exact posterior's own spread: 1 means one posterior sd off.
    """
    import numpy as np

    from mcdpf.kalman import kalman_filter
    from mcdpf.sources import node_stream

    streams = [node_stream(config.data, steps, comm.size, k) for k in range(comm.size)]
    chosen = streams if nodes is None else [streams[k] for k in nodes]
    prior = config.ekf.initial_variance or config.model.init_std ** 2
    means, covariances = kalman_filter(chosen, config.filter.state_noise,
                                       config.filter.obs_noise, prior, prior_mean=prior_mean)
    gap = (estimates - means)[burn_in:]
    precision = np.linalg.inv(covariances[burn_in:])
    distance = np.sqrt(np.einsum("ti,tij,tj->t", gap, precision, gap)).mean()
    return float(np.mean(comm.allgather(distance)))


def config_file(comm, directory, text: str):
    """``directory/c.toml`` holding ``text``, written by rank 0, seen by every rank."""
    path = directory / "c.toml"
    if comm.rank == 0:
        path.write_text(text)
    comm.Barrier()
    return path


def dpf_on_a_random_graph(comm, directory, overrides):
    """``(learner, model, neighbourhood)``: dpf at this rank on ``random_topology(size, 4)``
    with ``overrides``, the model of 2 inputs."""
    from mcdpf.algorithms import LearnerContext, build_learner
    from mcdpf.comm import Neighbourhood
    from mcdpf.config import load_config
    from mcdpf.models import build_model

    topology = random_topology(comm.size, 4)
    path = config_file(comm, directory, '[topology]\nname = "ring"\n')
    config = load_config(path, overrides)
    model = build_model(config.model, 2)
    neighbourhood = Neighbourhood(comm, topology.neighbours(comm.rank))
    learner = build_learner("dpf", LearnerContext(config, model, topology, comm.rank,
                                                  neighbourhood))
    return learner, model, neighbourhood


def conserving_walks(comm, learner, steps: int = 5):
    """``(state, info)`` after each of ``steps`` dpf steps on random data, each checked:
    the particle ids held after the walk are exactly those before it, over all ranks."""
    rng = np.random.default_rng(comm.rank)
    state = learner.initial_state()
    for step in range(steps):
        before = np.sort(np.concatenate(comm.allgather(state.particles.ids)))
        _, pending = learner.predict(state, step, rng.standard_normal((3, 2)))
        state, info = learner.learn(state, pending, float(rng.standard_normal()))
        after = np.sort(np.concatenate(comm.allgather(state.walk_ids)))
        np.testing.assert_array_equal(after, before)
        yield state, info
