"""The stop agreement (mcdpf.shutdown) at any rank count, without signals or processes.

A stand-in watch "receives" a signal on chosen ranks at chosen steps; every rank must stop
at one step, the communicating algorithms within 2 * diameter + margin steps of the
earliest request, and the agreement must not change what the ranks computed before it.
"""

import signal

import numpy as np
import pytest
from mpi4py import MPI

import mcdpf
from mcdpf.algorithms import traits
from mcdpf.shutdown import STOP_MARGIN, Stopper

pytestmark = pytest.mark.mpi
STEPS = 60


class StandInWatch:
    """What a :class:`~mcdpf.shutdown.SignalWatch` offers a Stopper, set by the test."""

    def __init__(self):
        self.signal = None
        self.training = False


def run(algorithm, comm, requests, drops=()):
    """Train on a fixed stream; ``requests`` maps rank -> (step, signal) of its signal.

    Returns (the step this rank stopped before, the Stop, the predictions made).
    """
    config = mcdpf.load_config({
        "run": {"algorithm": algorithm, "seed": 5, "progress_seconds": 0},
        "topology": {"name": "ring", "nodes": comm.size},
        "filter": {"particles": 12, "walk_steps": 2},
        "faults": {"drop": [list(drop) for drop in drops]}})
    rng = np.random.default_rng([comm.rank, 9])
    watch = StandInWatch()
    predictions = []
    node = mcdpf.Node(config, comm, input_dim=2)
    stopper = Stopper(watch, comm, node, traits(algorithm)["communicating"], STEPS)
    stopped = STEPS
    for t in range(STEPS):
        if comm.rank in requests and requests[comm.rank][0] == t:
            watch.signal = requests[comm.rank][1]
        if stopper.should_stop(t):
            stopped = t
            break
        predictions.append(node.predict(rng.standard_normal((3, 2))))
        node.learn(float(rng.standard_normal()))
    return stopped, stopper.finish(stopped), np.array(predictions), node.topology.diameter


@pytest.mark.parametrize("algorithm", ["dpf", "rpf", "dekf", "pf", "sgd"])
def test_every_rank_stops_at_one_step(algorithm):
    comm = MPI.COMM_WORLD.Dup()
    try:
        # The last rank first (SIGTERM), rank 0 later (SIGINT): one run, at 1 rank.
        requests = {0: (9 + comm.size, signal.SIGINT), comm.size - 1: (7, signal.SIGTERM)}
        first = min(step for step, _ in requests.values())
        stopped, stop, predictions, diameter = run(algorithm, comm, requests)
        everyone = comm.allgather(stopped)
        assert len(set(everyone)) == 1, everyone
        assert stop is not None and stop.step == stopped
        # Ranks without communication drift apart: one may stop before the first
        # request's rank gets its own signal, or even finish first (then all finish).
        assert stop.signal in [number for _, number in requests.values()]
        if traits(algorithm)["communicating"]:
            assert stop.signal == requests[comm.size - 1][1] and not stop.finished
            assert first <= stopped <= first + 2 * diameter + STOP_MARGIN
        # The same run without a signal: the steps before the stop are the same.
        _, none, uninterrupted, _ = run(algorithm, comm, {})
        assert none is None
        np.testing.assert_array_equal(predictions, uninterrupted[:stopped])
    finally:
        comm.Free()


def test_a_request_too_late_lets_the_run_finish():
    comm = MPI.COMM_WORLD.Dup()
    try:
        stopped, stop, _, _ = run("dpf", comm, {0: (STEPS - 1, signal.SIGUSR1)})
        assert stopped == STEPS
        assert stop is not None and stop.finished and stop.signal == signal.SIGUSR1
    finally:
        comm.Free()


def test_a_stop_before_a_later_departure_joins_its_graph_rebuild():
    """A node that left idles ahead to the next departure, whose graph rebuild is a
    collective over every rank: the ranks that stop before it join it at shutdown."""
    comm = MPI.COMM_WORLD.Dup()
    try:
        if comm.size < 3:
            pytest.skip("two departures that keep the network connected need 3 nodes")
        left, leaving = comm.size - 1, comm.size - 2
        stopped, stop, _, diameter = run("dpf", comm, {0: (10, signal.SIGTERM)},
                                         drops=[(left, 4), (leaving, 40)])
        everyone = comm.allgather(stopped)
        assert everyone[left] == STEPS  # it never heard: it had no neighbours
        assert len(set(everyone[:left])) == 1 and 10 <= everyone[0] < 40, everyone
        assert stop is not None and stop.step == everyone[0]
    finally:
        comm.Free()
