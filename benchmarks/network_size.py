"""dpf on networks of 16-64 nodes: the walk length and exponent that make migration help.

    python benchmarks/network_size.py [--seeds 1,2,3] [--steps 400] [--study NAME,...]
        [--out benchmarks/results/network_size]

The setting of issue 16 ("network size"): a teacher LSTM (``data.source =
"synthetic-lstm"``, n = 2) interleaved over the nodes, model n = 2, N = 80 particles per
node, 400 steps; final = the final-10 % MSE, mean over nodes (noise floor 0.010). Every
variant runs for every seed; the table gives the mean and the spread (min .. max over
seeds) of the final MSE and of dpf's mean ESS after the walk (as a fraction of N).

A network of K nodes runs **in one process** (:class:`InProcessNetwork`): each node's
learner is built exactly as ``mcdpf train`` builds it, on a neighbourhood whose
exchanges go through shared memory between K threads instead of MPI, so a 64-node study
fits a 2-core machine. The learners, random streams and data are the CLI's, so a run here
gives the same predictions as ``mpiexec -n K mcdpf train`` with the same configuration
(``--check-mpi`` compares them on a 4-node ring and fails if they differ).

Studies (``--study``): ``torus16`` (the 4x4 torus, where the rule was tuned),
``random16`` (``topologies/random16.toml``, validation), ``hk16``, ``co2-16`` and
``sunspots16`` (real series interleaved over the 4x4 torus, validation) and ``torus64``
(8x8 torus, accuracy only, 200 steps).
"""

import argparse
import json
import threading
import time
from importlib import resources
from pathlib import Path

# common pins the BLAS and numba threads before numpy loads
# isort: off
from common import REPO, RESULTS, mpiexec, write_json
import numpy as np
# isort: on

from mcdpf import load_config
from mcdpf.algorithms import LearnerContext, build_learner
from mcdpf.models import build_model
from mcdpf.preparation import StreamTable, load_stream
from mcdpf.topology.files import build_topology


class InProcessNetwork:
    """Mailboxes and a barrier shared by the K node threads of one in-process network."""

    def __init__(self, nodes: int):
        self.barrier = threading.Barrier(nodes)
        self.mail = {}


class InProcessNeighbourhood:
    """A node's exchanges with its neighbours through an :class:`InProcessNetwork`.

    The same contract as :class:`mcdpf.comm.Neighbourhood`'s ``start_exchange`` /
    ``finish_exchange`` (records grouped by destination in neighbour order; received
    records in neighbour order), counting the same bytes (a stamped handshake per
    exchange).
    """

    STAMP_BYTES = 16

    def __init__(self, network: InProcessNetwork, node: int, neighbours):
        self.network, self.node, self.neighbours = network, node, list(neighbours)
        self.degree = len(self.neighbours)

    def start_exchange(self, records, counts, allocate=None, stamp=None):
        """Post each neighbour its records, wait for every node, collect the arrivals."""
        mail, barrier = self.network.mail, self.network.barrier
        start = 0
        for neighbour, count in zip(self.neighbours, counts, strict=True):
            mail[self.node, neighbour] = records[start:start + int(count)].copy()
            start += int(count)
        barrier.wait()
        parts = [mail.pop((neighbour, self.node)) for neighbour in self.neighbours]
        barrier.wait()
        received = np.concatenate(parts) if parts else np.empty(0, dtype=records.dtype)
        sent = int(np.sum(counts))
        header = self.degree * self.STAMP_BYTES if self.degree else 0
        return None, received, records, header + sent * records.dtype.itemsize, sent

    @staticmethod
    def finish_exchange(pending):
        """The received records, bytes sent and particles sent of an exchange."""
        _, received, _, sent_bytes, sent = pending
        return received, sent_bytes, sent


def simulate(overrides: dict, nodes: int) -> dict:
    """Train one configuration on ``nodes`` in-process nodes; the study's numbers.

    Returns ``final_mse`` (final-10 % MSE, mean over nodes), ``mse``, ``ess`` (mean over
    nodes and steps of the ESS after the step's update, as a fraction of N), ``bytes``
    (per node per step) and, for dpf, ``walk_steps`` (the s every node used).
    """
    config = load_config({}, overrides)
    topology = build_topology(config.topology, nodes)
    streams = [load_stream(config, nodes, node)[0] for node in range(nodes)]
    model = build_model(config.model, streams[0].input_dim)
    streams = [stream.astype(model.dtype) for stream in streams]
    steps = min(stream.steps for stream in streams)
    algorithm = config.run.algorithm
    table = StreamTable(streams, [np.zeros(steps, dtype=bool)] * nodes)
    network = InProcessNetwork(nodes)
    errors = np.zeros((nodes, steps))
    ess = np.zeros((nodes, steps))
    sent = np.zeros((nodes, steps))
    learners = [build_learner(algorithm, LearnerContext(
        config=config, model=model, topology=topology, node=node,
        neighbourhood=InProcessNeighbourhood(network, node, topology.neighbours(node)),
        measurements=table)) for node in range(nodes)]

    def run(node):
        learner, stream = learners[node], streams[node]
        state = learner.initial_state()
        for t in range(steps):
            prediction, pending = learner.predict(state, t, stream.sequence(t))
            target = float(stream.targets[t])
            state, info = learner.learn(state, pending, target)
            errors[node, t] = (target - prediction) ** 2
            ess[node, t] = info.ess
            sent[node, t] = info.bytes_sent

    if algorithm == "cpf":
        # Every node's oracle holds the same population: run node 0's, and let every
        # node predict its own label from it (what each rank of ``mcdpf train`` does).
        state = learners[0].initial_state()
        for t in range(steps):
            pendings = [learner.predict(state, t, stream.sequence(t))
                        for learner, stream in zip(learners, streams, strict=True)]
            for node, (prediction, _) in enumerate(pendings):
                errors[node, t] = (float(streams[node].targets[t]) - prediction) ** 2
            state, info = learners[0].learn(state, pendings[0][1],
                                            float(streams[0].targets[t]))
            ess[:, t] = info.ess
    elif algorithm == "dpf":
        threads = [threading.Thread(target=run, args=(node,)) for node in range(nodes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        for node in range(nodes):
            run(node)
    final = max(1, steps // 10)
    count = learners[0].count if hasattr(learners[0], "count") else 1
    result = {"final_mse": float(errors[:, -final:].mean()),
              "mse": float(errors.mean()),
              "ess": float(np.nanmean(ess) / count),
              "bytes": float(sent.mean()),
              "errors": errors}
    if algorithm == "dpf":
        result["walk_steps"] = int(learners[0].walk_steps)
    return result
