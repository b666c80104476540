"""Topology files and the topology of a configuration.

A topology file is TOML: ``nodes = K``, ``edges = [[0, 1], ...]`` (undirected, each pair
once, no self-loops) and an optional ``transition = [[...], ...]`` (K x K,
row-stochastic, support on edges and the diagonal). A configuration's ``[topology]``
names a file, a built-in graph, or gives ``edges`` (and ``transition``) inline.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from ..errors import InputError
from ..registry import TOPOLOGIES
from .graph import Topology, check_graph, check_transition, finish, from_edges, named_topology
from .walks import make_walk


def read_topology_file(path: str | Path, walk: str | None = None) -> Topology:
    """Read and validate a topology file."""
    source = str(path)
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{source}: topology file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{source}: cannot read topology file: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{source}: invalid TOML: {error}") from None
    unknown = set(document) - {"nodes", "edges", "transition"}
    if unknown:
        raise InputError(f"{source}: unknown key '{sorted(unknown)[0]}' (a topology file "
                         "has nodes, edges, transition)")
    for key in ("nodes", "edges"):
        if key not in document:
            raise InputError(f"{source}: missing '{key}'")
    nodes = document["nodes"]
    edges = check_graph(nodes, document["edges"], source)
    given = None
    if "transition" in document:
        given = check_transition(document["transition"], nodes, edges, source)
    walk, transition = make_walk(walk, nodes, edges, given, source)
    return finish(nodes, edges, transition, walk, source)


def build_topology(spec, world_size: int) -> Topology:
    """The topology of a ``[topology]`` section for a communicator of ``world_size`` ranks.

    The node count must equal the number of ranks.
    """
    if spec.file is not None:
        topology = read_topology_file(spec.file, spec.walk)
    elif spec.edges is not None:
        topology = from_edges(spec.edges, spec.nodes, transition=spec.transition,
                              walk=spec.walk, source="[topology] edges")
    else:
        nodes = spec.nodes if spec.nodes is not None else world_size
        topology = named_topology(spec.name, nodes, walk=spec.walk, seed=spec.seed,
                                  edge_probability=spec.edge_probability, rows=spec.rows)
    if topology.nodes != world_size:
        raise InputError(f"{topology.source}: topology has {topology.nodes} nodes but the job "
                         f"has {world_size} MPI ranks (start it with mpiexec -n "
                         f"{topology.nodes})")
    return topology


def resolve_topology_argument(argument: str, nodes: int | None, walk: str | None,
                              seed: int = 0) -> Topology:
    """``mcdpf topology FILE|NAME``: a path if it names a file or ends in .toml."""
    if argument in TOPOLOGIES and not Path(argument).exists():
        fixed = TOPOLOGIES.entry(argument).traits.get("nodes")
        if nodes is None:
            if fixed is None:
                raise InputError(f"topology {argument}: give --nodes K")
            nodes = fixed
        return named_topology(argument, nodes, walk=walk, seed=seed)
    if nodes is not None:
        raise InputError(f"{argument}: --nodes goes with a built-in name; a topology file "
                         "states its own node count")
    if not argument.endswith(".toml") and not Path(argument).exists():
        raise InputError(f"{argument}: neither a topology file nor a built-in name "
                         f"({', '.join(TOPOLOGIES)})")
    return read_topology_file(argument, walk)
