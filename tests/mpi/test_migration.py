"""Migration over the graph: no particle lost or duplicated, payloads intact, neighbours only."""

import numpy as np
import pytest
from helpers import TracingComm, conserving_walks, dpf_on_a_random_graph, random_topology
from mpi4py import MPI

from mcdpf.comm import Neighbourhood
from mcdpf.config import load_config
from mcdpf.driver import train
from mcdpf.particles import ID_SERIAL_BITS

pytestmark = pytest.mark.mpi

RECORD = np.dtype([("id", "<i8"), ("log_weight", "<f8"), ("theta", "<f4", (5,))])


def payload(ids):
    """A payload that is a deterministic function of the id, to check integrity."""
    return np.sin(ids[:, None] * np.arange(1, 6)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exchange_conserves_particles_on_random_topologies(seed):
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    topology = random_topology(size, seed)
    neighbourhood = Neighbourhood(comm, topology.neighbours(rank))
    rng = np.random.default_rng([seed, rank])
    count = int(rng.integers(0, 40))
    records = np.zeros(count, dtype=RECORD)
    records["id"] = (np.int64(rank) << ID_SERIAL_BITS) + np.arange(count)
    records["log_weight"] = rng.standard_normal(count)
    records["theta"] = payload(records["id"])
    start_ids = np.sort(np.concatenate(comm.allgather(records["id"])))
    assert np.unique(start_ids).size == start_ids.size
    for _ in range(6):
        destination = rng.integers(0, neighbourhood.degree + 1, size=records.size)
        order = np.argsort(destination, kind="stable")
        stay = records[destination == 0]
        moving = records[order[np.count_nonzero(destination == 0):]]
        counts = np.bincount(destination, minlength=neighbourhood.degree + 1)[1:]
        received, sent_bytes = neighbourhood.exchange(moving, counts)
        if neighbourhood.degree:
            assert sent_bytes == 4 * neighbourhood.degree + moving.size * RECORD.itemsize
        np.testing.assert_array_equal(received["theta"], payload(received["id"]))
        records = np.concatenate([stay, received])
        now = np.sort(np.concatenate(comm.allgather(records["id"])))
        np.testing.assert_array_equal(now, start_ids)
    neighbourhood.free()


def test_dpf_walk_keeps_every_particle(mpi_tmp_path):
    """Inside the real filter: the ids held after each walk are exactly those before it."""
    comm = MPI.COMM_WORLD
    learner, _, neighbourhood = dpf_on_a_random_graph(
        comm, mpi_tmp_path, ["filter.particles=25", "filter.walk_steps=4"])
    for state, info in conserving_walks(comm, learner):
        assert sum(comm.allgather(info.particles_held)) == 25 * comm.size
        assert state.particles.size == 25
        assert np.unique(state.particles.ids).size == 25
    neighbourhood.free()


def test_gaussian_walk_keeps_every_particle_and_its_covariance(mpi_tmp_path):
    """Migrating Gaussian particles (lowrank, float32 wire): no particle lost or
    duplicated, and every node resamples its held means and covariances back to N."""
    comm = MPI.COMM_WORLD
    learner, model, neighbourhood = dpf_on_a_random_graph(
        comm, mpi_tmp_path, ["filter.particles=7", "filter.walk_steps=3",
                             "filter.kernel=gaussian", "filter.covariance=lowrank",
                             "filter.rank=2", "filter.wire_dtype=float32"])
    for state, info in conserving_walks(comm, learner):
        assert sum(comm.allgather(info.particles_held)) == 7 * comm.size
        covariance = state.particles.covariance
        assert covariance["precision_diagonal"].shape == (7, model.n_params)
        assert covariance["precision_factor"].shape == (7, model.n_params, 2)
        assert np.all(covariance["precision_diagonal"] > 0)
    neighbourhood.free()


@pytest.mark.parametrize("kernel", ["point", "gaussian"])
def test_traffic_goes_to_graph_neighbours_only(mpi_tmp_path, kernel):
    """Trace every communicator call of a dpf run (point or migrating Gaussian particles).

    The graph communicator's destinations are exactly the topology's neighbours; every
    per-step call is a neighbourhood collective on it; the calls on the world
    communicator (set-up and shutdown) do not grow with the number of steps.
    """
    comm = MPI.COMM_WORLD
    path = mpi_tmp_path / "c.toml"
    if comm.rank == 0:
        path.write_text('[topology]\nname = "random"\nseed = 3\nedge_probability = 0.3\n'
                        '[data]\nsource = "synthetic-lstm"\n')
    comm.Barrier()
    logs = {}
    for steps in (3, 9):
        log = []
        config = load_config(path, [f"run.steps={steps}", "filter.particles=16",
                                    "filter.walk_steps=2", "run.progress_seconds=0",
                                    f"filter.kernel={kernel}"])
        train(TracingComm(comm, log), config, mpi_tmp_path / f"run{steps}", force=True)
        logs[steps] = log
    topology = random_topology(comm.size, 3)
    for steps, log in logs.items():
        world = [name for where, name, _ in log if where == "world"]
        graph = [(name, args) for where, name, args in log if where == "graph"]
        neighbour_calls = [name for name, _ in graph if "eighbor_" in name]
        assert set(neighbour_calls) <= {"Neighbor_alltoall", "Ineighbor_alltoallv"}
        degree = len(topology.neighbours(comm.rank))
        assert len(neighbour_calls) == (2 * 2 * steps if degree else 0)
        assert not [name for name, _ in graph if "eighbor_" not in name
                    and name not in ("Free", "Get_dist_neighbors")]
        logs[steps] = world
    assert logs[3] == logs[9]
    # Destinations of the graph communicator: the topology's neighbours, nobody else.
    from mcdpf.comm import Neighbourhood as Hood
    hood = Hood(comm, topology.neighbours(comm.rank))
    sources, destinations, _ = hood.graph.Get_dist_neighbors()
    assert list(destinations) == topology.neighbours(comm.rank) == list(sources)
    hood.free()
