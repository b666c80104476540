"""The Python API at any rank count, on COMM_WORLD, a Dup() and a Split() communicator.

For every algorithm: a Node fed step by step, mcdpf.train on the same in-memory streams,
and mcdpf.train on the same data in a stream file (what ``mcdpf train`` runs) give
bit-identical predictions, estimates and diagnostics. With Split() two independent
networks train side by side in one job. Bad use raises clear InputErrors.
"""

import numpy as np
import pytest
from mpi4py import MPI

import mcdpf
from mcdpf.io import write_stream_file
from mcdpf.registry import ALGORITHMS

pytestmark = pytest.mark.mpi

STEPS = 24
COMPARED = ("prediction", "squared_error", "ess", "particles_held", "particles_received",
            "bytes_sent", "theta_estimates")


def node_stream(network: int, node: int, steps: int = STEPS) -> mcdpf.Stream:
    """A different stream for every node of every network (lengths 1..4, p = 2)."""
    rng = np.random.default_rng([network, node, 77])
    sequences = [rng.standard_normal((int(rng.integers(1, 5)), 2)) for _ in range(steps)]
    targets = np.array([np.tanh(s.sum()) for s in sequences]) + 0.1 * rng.standard_normal(steps)
    return mcdpf.Stream.from_sequences(sequences, targets)


def config_for(algorithm: str, comm, **extra) -> mcdpf.Config:
    table = {"run": {"algorithm": algorithm, "seed": 3, "progress_seconds": 0,
                     "record_estimates": True},
             "topology": {"name": "ring", "nodes": comm.size},
             "filter": {"particles": 20, "walk_steps": 2}}
    for key, value in extra.items():
        section, name = key.split("__")
        table.setdefault(section, {})[name] = value
    return mcdpf.load_config(table)


def run_node(config, comm, stream):
    """Feed a Node step by step; its predictions, estimates and step infos."""
    predictions, estimates, infos = [], [], []
    with mcdpf.Node(config, comm, input_dim=stream.input_dim) as node:
        for t in range(stream.steps):
            predictions.append(node.predict(stream.sequence(t)))
            infos.append(node.learn(stream.targets[t]))
            estimates.append(node.estimate.copy())
        assert node.step == stream.steps
    return np.array(predictions), np.array(estimates), infos


class CommunicatorSuite:
    """One body on every kind of communicator (mpi4py's test_cco_ngh_buf pattern)."""

    network = 0

    def make_comm(self):
        raise NotImplementedError

    @pytest.fixture
    def comm(self):
        comm = self.make_comm()
        yield comm
        if comm not in (MPI.COMM_WORLD, MPI.COMM_SELF):
            comm.Free()

    @pytest.mark.parametrize("algorithm", ALGORITHMS.names())
    def test_node_equals_train_equals_stream_file(self, comm, algorithm, mpi_tmp_path):
        network = self.network_of(comm)
        stream = node_stream(network, comm.rank)
        config = config_for(algorithm, comm)
        predictions, estimates, infos = run_node(config, comm, stream)
        result = mcdpf.train(config, comm, stream=stream)
        np.testing.assert_array_equal(predictions, result.predictions)
        np.testing.assert_array_equal(estimates, result.datasets["theta_estimates"])
        np.testing.assert_array_equal([info.bytes_sent for info in infos], result.bytes_sent)
        np.testing.assert_array_equal(estimates[-1], result.theta_mean)
        assert result.out_dir is None
        # The same data in a stream file, read by [data] as the command line does.
        directory = mpi_tmp_path / f"network-{network}"  # split networks: one each
        path = directory / "streams.h5"
        streams = [node_stream(network, k) for k in range(comm.size)]
        if comm.rank == 0:
            directory.mkdir()
            write_stream_file(path, streams)
        comm.Barrier()
        from_file = config_for(algorithm, comm, data__source="file", data__path=str(path))
        written = mcdpf.train(from_file, comm, out=directory / "run")
        for key in COMPARED:
            np.testing.assert_array_equal(written.datasets[key], result.datasets[key],
                                          err_msg=key)
        assert (directory / "run" / f"node-{comm.rank:04d}.h5").is_file()
        report = written.report()
        assert report["node"] == comm.rank and report["mse"] == pytest.approx(
            np.mean(written.squared_error))

    def network_of(self, comm) -> int:
        return self.network


class TestWorld(CommunicatorSuite):
    def make_comm(self):
        return MPI.COMM_WORLD


class TestDup(CommunicatorSuite):
    def make_comm(self):
        return MPI.COMM_WORLD.Dup()


class TestSplit(CommunicatorSuite):
    """Two networks (even and odd world ranks) train side by side in one job."""

    def make_comm(self):
        return MPI.COMM_WORLD.Split(MPI.COMM_WORLD.rank % 2, MPI.COMM_WORLD.rank)

    def network_of(self, comm) -> int:
        return 1 + MPI.COMM_WORLD.rank % 2


def test_split_networks_are_independent():
    """Each half's result does not depend on what the other half trains."""
    world = MPI.COMM_WORLD
    half = world.Split(world.rank % 2, world.rank)
    stream = node_stream(5, half.rank)
    algorithm = "dpf" if world.rank % 2 == 0 else "dekf"
    together = mcdpf.train(config_for(algorithm, half), half, stream=stream)
    alone_comm = half.Dup()
    alone = mcdpf.train(config_for(algorithm, alone_comm), alone_comm, stream=stream)
    np.testing.assert_array_equal(together.predictions, alone.predictions)
    alone_comm.Free()
    half.Free()


def test_wrong_input_dim_and_protocol_errors():
    comm = MPI.COMM_WORLD
    config = config_for("pf", comm)
    with mcdpf.Node(config, comm, input_dim=2) as node:
        with pytest.raises(mcdpf.InputError, match=r"X has shape \(3, 3\).*\(m, 2\)"):
            node.predict(np.zeros((3, 3)))
        with pytest.raises(mcdpf.InputError, match="learn called without predict"):
            node.learn(0.5)
        node.predict(np.zeros((2, 2)))
        with pytest.raises(mcdpf.InputError, match="predict called twice"):
            node.predict(np.zeros((2, 2)))
        node.learn(0.1)
        with pytest.raises(mcdpf.InputError, match="not finite"):
            node.predict(np.zeros((2, 2)))
            node.learn(float("nan"))


def test_a_rank_that_skips_a_step_is_named():
    """Rank 0 skips step 3 (one step short at the end): a LockstepError, no hang.

    On a complete graph every node is rank 0's neighbour, so every rank sees the
    mismatch in the same handshake.
    """
    comm = MPI.COMM_WORLD
    if comm.size < 2:
        pytest.skip("needs a neighbour")
    config = config_for("dpf", comm, topology__name="complete")
    stream = node_stream(9, comm.rank, steps=6)
    node = mcdpf.Node(config, comm, input_dim=2)
    with pytest.raises(mcdpf.LockstepError, match="every rank must take every step"):
        for t in range(stream.steps):
            if comm.rank == 0 and t == 3:
                continue
            node.predict(stream.sequence(t))
            node.learn(stream.targets[t])
        node.close()
    node.network.close()


def test_stream_shorter_than_run_steps():
    comm = MPI.COMM_WORLD
    config = config_for("pf", comm, run__steps=STEPS + 5)
    with pytest.raises(mcdpf.InputError, match=f"run.steps = {STEPS + 5} exceeds the "
                                               f"shortest node stream \\({STEPS} steps\\)"):
        mcdpf.train(config, comm, stream=node_stream(0, comm.rank))


@pytest.mark.parametrize("algorithm", ["dpf", "adam", "dadam"])
def test_node_save_and_load_continue_bit_identically(mpi_tmp_path, algorithm):
    comm = MPI.COMM_WORLD
    stream = node_stream(4, comm.rank)
    config = config_for(algorithm, comm)
    reference, _, _ = run_node(config, comm, stream)
    node = mcdpf.Node(config, comm, input_dim=2)
    first = []
    for t in range(10):
        first.append(node.predict(stream.sequence(t)))
        node.learn(stream.targets[t])
    path = mpi_tmp_path / f"node-{comm.rank}.h5"
    node.save(path)
    node.close()
    resumed = mcdpf.Node.load(path, comm)
    assert resumed.step == 10
    rest = []
    for t in range(10, stream.steps):
        rest.append(resumed.predict(stream.sequence(t)))
        resumed.learn(stream.targets[t])
    resumed.close()
    np.testing.assert_array_equal(np.array(first + rest), reference)
