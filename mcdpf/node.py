"""One network node learning online: the step engine under ``mcdpf.train`` and the CLI.

A :class:`Node` is one rank's node of the network described by a configuration. Every
rank of the communicator builds its own, then all step in lockstep::

    node = Node(config, comm, input_dim=2)
    for X, d in my_stream:
        prediction = node.predict(X)   # before the label
        info = node.learn(d)           # StepInfo: ESS, bytes sent, ...

``predict(None)`` / ``learn(None)`` is a step without data at this node (it still takes
part in the exchanges). The node owns the learner's state between calls (one documented
place): ``predict`` returns the prediction and keeps the pending half-step, ``learn``
finishes it. ``[faults] drop`` events change the network at their steps: every rank
rebuilds the graph communicator, the walk and the diffusion weights; a node that left
predicts NaN from then on. A resumed job may have no rank for nodes that left
(:mod:`mcdpf.elastic`): its ranks map to nodes by a
:class:`~mcdpf.elastic.Membership`, and every node-loss event is given as the effective
drop schedule.

``save(path)`` writes a checkpoint of the node alone (configuration, step, learner
state); ``Node.load(path, comm)`` continues from it. Construction is collective over
``comm`` and raises the same :class:`~mcdpf.errors.InputError` on every rank.
"""

from __future__ import annotations

import json

import numpy as np

from . import __version__
from . import comm as comm_layer
from .algorithms import LearnerContext, build_learner, traits
from .allocator import keep_freed_memory
from .errors import InputError
from .io import read_checkpoint, write_checkpoint
from .learner import Adopting, CollectiveMeasurements, StepInfo
from .models import build_model
from .topology import build_topology
from .validation import check_drops, check_node, drop_schedule


class Network:
    """The graph as the run goes: the topology and this node's neighbourhood.

    Node-loss events (``drops``, the effective drop schedule ``[[node, step], ...]``)
    apply at their steps; :meth:`advance` is a collective over every rank at such a step
    (the graph communicator is rebuilt). ``membership`` maps ranks to nodes (default:
    rank ``k`` is node ``k``). A job resumed at the step where nodes without a rank leave
    connects at that step only: until then its graph still holds them.
    """

    def __init__(self, comm, topology, node: int, drops, communicating: bool,
                 start_step: int = 0, membership=None):
        self.comm = comm
        self.node = node
        self.communicating = communicating
        self.membership = membership
        self.events = dict(drop_schedule(drops))
        self.topology = topology
        for step, dropped in self.events.items():
            if step < start_step:
                self.topology = self.topology.without(dropped)
        self.neighbourhood = self._connect() if self._every_node_has_a_rank() else None

    def _every_node_has_a_rank(self) -> bool:
        return self.membership is None or all(node in self.membership
                                              for node in self.topology.active)

    def _connect(self):
        if not self.communicating:
            return None
        neighbours = self.topology.neighbours(self.node)
        ranks = None if self.membership is None else \
            [self.membership.rank_of(neighbour) for neighbour in neighbours]
        return comm_layer.Neighbourhood(self.comm, neighbours, ranks, self.node)

    @property
    def active(self) -> bool:
        """Whether this node is still in the network."""
        return self.node not in self.topology.removed

    def advance(self, step: int) -> bool:
        """Apply the node-loss events of ``step``; True if the graph changed."""
        if step not in self.events:
            return False
        self.topology = self.topology.without(self.events[step])
        if self.neighbourhood is not None:
            self.neighbourhood.free()
        self.neighbourhood = self._connect()
        return True

    def close(self) -> None:
        """Free the graph communicator."""
        if self.neighbourhood is not None:
            self.neighbourhood.free()
            self.neighbourhood = None


class Node:
    """One node of the network, learning online in lockstep with the other ranks.

    Parameters
    ----------
    config
        A :class:`~mcdpf.config.Config` (``[data]`` is not read).
    comm
        Intracommunicator whose ranks are the network's nodes (rank ``k`` is node ``k``,
        unless ``membership`` says otherwise).
    input_dim
        ``p``, columns of every sequence.
    topology, model
        Both given: already validated for this configuration
        (:func:`~mcdpf.validation.check_drops`, :func:`~mcdpf.validation.check_node`, as
        :func:`~mcdpf.preparation.prepare_node` does); else built and validated here, in a
        set-up collective.
    drops
        The effective drop schedule ``[[node, step], ...]`` (default ``faults.drop``).
    membership
        The :class:`~mcdpf.elastic.Membership` of a resumed job without some nodes.
    """

    def __init__(self, config, comm, input_dim: int, *, topology=None, model=None,
                 measurements=None, start_step: int = 0, state: dict | None = None,
                 drops=None, membership=None):
        self.config = config
        self.comm = comm
        self.rank = comm.Get_rank()
        self.node = self.rank if membership is None else membership.node_of(self.rank)
        self.input_dim = input_dim
        self.algorithm = config.run.algorithm
        self.traits = traits(self.algorithm)
        if model is None or topology is None:
            topology, model = comm_layer.agreed(comm, lambda: _validated(config, comm,
                                                                         input_dim))
        self.model = model
        keep_freed_memory(self.traits["steady_arrays"])
        self.initial_topology = topology
        if measurements is None and self.traits["needs_all_streams"]:
            measurements = LiveMeasurements(comm, self.model)
        self.measurements = measurements
        self.network = Network(comm, topology, self.node,
                               config.faults.drop if drops is None else drops,
                               self.traits["communicating"], start_step, membership)
        self.learner = self._build_learner()
        self.step = start_step
        self.state = self.learner.initial_state() if state is None \
            else self.learner.restore(state)
        self._pending = None

    def _build_learner(self):
        network = self.network
        context = LearnerContext(config=self.config, model=self.model,
                                 topology=network.topology, node=self.node,
                                 neighbourhood=network.neighbourhood,
                                 measurements=self.measurements)
        return build_learner(self.algorithm, context)

    @property
    def active(self) -> bool:
        """Whether this node is still in the network (``faults.drop``)."""
        return self.network.active

    @property
    def estimate(self) -> np.ndarray:
        """The current float64 parameter estimate."""
        return self.state.estimate

    @property
    def topology(self):
        """The network's current topology."""
        return self.network.topology

    def _columns(self, columns):
        if columns is None:
            return None
        columns = np.asarray(columns)
        if columns.ndim == 1 and self.input_dim == 1:
            columns = columns[:, None]
        if columns.ndim != 2 or columns.shape[1] != self.input_dim or columns.shape[0] < 1:
            raise InputError(f"node {self.node}, step {self.step}: X has shape "
                             f"{columns.shape}; this node's model takes (m, "
                             f"{self.input_dim}) sequences with m >= 1")
        if not np.all(np.isfinite(columns)):
            raise InputError(f"node {self.node}, step {self.step}: X has non-finite values "
                             "(pass None for a step without data)")
        return np.ascontiguousarray(columns, dtype=self.model.dtype)

    def predict(self, columns) -> float:
        """This node's prediction of step ``step``'s label, before the label.

        ``columns``: the sequence (m, p), or ``None`` for a step without data.
        """
        if self._pending is not None:
            raise InputError(f"node {self.node}, step {self.step}: predict called twice; "
                             "call learn(d) (or learn(None)) to finish the step first")
        columns = self._columns(columns)
        if self.network.advance(self.step) and self.active:
            previous, self.learner = self.learner, self._build_learner()
            if isinstance(self.learner, Adopting):
                self.state = self.learner.adopt(self.state, previous)
        if not self.active:
            self._pending = ("inactive", None)
            return float("nan")
        prediction, pending = self.learner.predict(self.state, self.step, columns)
        self._pending = ("active", pending)
        return prediction

    def learn(self, target) -> StepInfo:
        """Finish the step with its label (``None``: no label); returns its diagnostics."""
        if self._pending is None:
            raise InputError(f"node {self.node}, step {self.step}: learn called without "
                             "predict; every step is predict(X) then learn(d)")
        if target is not None:
            target = float(target)
            if not np.isfinite(target):
                raise InputError(f"node {self.node}, step {self.step}: label {target} is "
                                 "not finite (pass None for a step without a label)")
        kind, pending = self._pending
        self._pending = None
        self.step += 1
        if kind == "inactive":
            if isinstance(self.measurements, CollectiveMeasurements):
                self.measurements.join(self.step - 1)
            return StepInfo()
        self.state, info = self.learner.learn(self.state, pending, target)
        return info

    def checkpoint_state(self) -> dict:
        """The learner state as arrays and scalars (for a checkpoint)."""
        return self.learner.state_arrays(self.state)

    def checkpoint_attributes(self) -> dict:
        """What a checkpoint records about the run besides the state."""
        return {"config": self.config.to_json(), "n_nodes": self.initial_topology.nodes,
                "input_dim": self.input_dim, "mcdpf_version": __version__,
                "active": int(self.active)}

    def save(self, path) -> None:
        """Write this node's checkpoint (configuration, step, state) to ``path``."""
        if self._pending is not None:
            raise InputError(f"node {self.node}: save between learn and the next predict, "
                             "not in the middle of a step")
        write_checkpoint(path, self.checkpoint_state(), None,
                         {**self.checkpoint_attributes(), "step": self.step,
                          "node": self.node})

    @classmethod
    def load(cls, path, comm) -> Node:
        """Continue from a checkpoint written by :meth:`save` (collective over ``comm``)."""
        from .config import config_from_json

        def read():
            loaded = read_checkpoint(path)
            if int(loaded[2]["node"]) != comm.Get_rank():
                raise InputError(f"{path}: checkpoint of node {loaded[2]['node']}, loaded "
                                 f"on rank {comm.Get_rank()}")
            return loaded

        state, _, attributes = comm_layer.agreed(comm, read)
        config = config_from_json(json.loads(attributes["config"]), str(path))
        return cls(config, comm, int(attributes["input_dim"]), start_step=int(attributes["step"]),
                   state=state)

    def close(self, handshake: bool = True) -> None:
        """End the run at this node and release the graph communicator.

        With ``handshake`` (communicating algorithms) the node first checks with its
        neighbours that they stopped after as many steps; a neighbour still stepping
        gets a :class:`~mcdpf.errors.LockstepError` instead of waiting for ever.
        """
        neighbourhood = self.network.neighbourhood
        if handshake and neighbourhood is not None and self.active:
            neighbourhood.goodbye(self.step)
        self.network.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(handshake=kind is None)


def _validated(config, comm, input_dim: int) -> tuple:
    """The topology and model of ``config`` for ``comm``'s ranks, validated."""
    topology = build_topology(config.topology, comm.Get_size())
    check_drops(config.faults, topology)
    model = build_model(config.model, input_dim)
    check_node(config, model, topology)
    return topology, model


class LiveMeasurements:
    """The ``cpf`` oracle's view of every node's data when fed live: a gather per step.

    A :class:`~mcdpf.learner.CollectiveMeasurements`: a node that has left still joins.
    """

    def __init__(self, comm, model):
        self.comm = comm
        self.model = model

    def __call__(self, step: int, columns, target) -> tuple[list, int]:
        """Every node's ``(columns, target)`` of ``step`` (``None``: no data); 0 bytes.

        The oracle's data access is not counted as communication (as in ``train``).
        """
        gathered = comm_layer.allgather_measurements(self.comm, columns, target,
                                                     self.model.inputs)
        return [None if item is None else
                (np.ascontiguousarray(item[0], dtype=self.model.dtype), item[1])
                for item in gathered], 0

    def join(self, step: int) -> None:
        """Take part in step ``step``'s gather without data (a node that has left)."""
        self(step, None, None)
