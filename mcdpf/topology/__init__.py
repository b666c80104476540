"""Network topologies and the random walks that particles take over them.

:mod:`~mcdpf.topology.graph` holds the :class:`Topology` (graph, walk, stationary
distribution, SLEM, period, diameter, node loss) and the built-in graphs;
:mod:`~mcdpf.topology.walks` the registered walks; :mod:`~mcdpf.topology.files` topology
files and the topology of a configuration.
"""

from .files import build_topology, read_topology_file, resolve_topology_argument
from .graph import (
    PAPER_RING_TRANSITION,
    Topology,
    check_graph,
    check_transition,
    finish,
    from_edges,
    from_networkx,
    hop_distances,
    named_topology,
    stationary_distribution,
    topology_toml,
    walk_period,
)
from .walks import make_walk, metropolis_walk, simple_walk

__all__ = ["PAPER_RING_TRANSITION", "Topology", "build_topology", "check_graph",
           "check_transition", "finish", "from_edges", "from_networkx", "hop_distances",
           "make_walk", "metropolis_walk", "named_topology", "read_topology_file",
           "resolve_topology_argument", "simple_walk", "stationary_distribution",
           "topology_toml", "walk_period"]
