"""Set-up validators: the rules a run's faults, node-loss events and threads must obey.

Each raises :class:`~mcdpf.errors.InputError` with one line naming the key; none touches
a communicator (callers agree on the verdict: :func:`mcdpf.comm.agreed`).
"""

from __future__ import annotations

from .algorithms import traits
from .errors import InputError


def drop_schedule(drops) -> list[tuple[int, list[int]]]:
    """``[(step, [nodes leaving at that step]), ...]`` in step order, of ``[[node, step]]``."""
    events: dict[int, list[int]] = {}
    for node, step in drops or []:
        events.setdefault(step, []).append(node)
    return sorted(events.items())


def check_drops(faults, topology) -> None:
    """Every fault names an existing node; every node-loss event leaves a connected graph."""
    for kind in ("drop", "crash", "kill"):
        for node, _ in getattr(faults, kind) or []:
            if node >= topology.nodes:
                raise InputError(f"faults.{kind}: node {node} does not exist (nodes 0.."
                                 f"{topology.nodes - 1})")
    check_schedule(faults.drop, topology, "faults.drop")


def check_schedule(drops, topology, label: str) -> None:
    """Every node-loss event of ``drops`` leaves a connected graph (messages: ``label``)."""
    network = topology
    for step, dropped in drop_schedule(drops):
        try:
            network = network.without(dropped)
        except InputError as error:
            raise InputError(f"{label} at step {step}: {error}") from None


def check_threads(threads: int) -> None:
    """``run.threads`` within what numba may start here; set it (1: serial kernels)."""
    from .kernels import get_num_threads_limit, set_threads

    limit = get_num_threads_limit()
    if threads > limit:
        raise InputError(f"run.threads = {threads}: numba may start at most {limit} threads "
                         "in this process (NUMBA_NUM_THREADS, default: the core count)")
    if threads > 1:
        set_threads(threads)


def check_node(config, model, topology) -> None:
    """The algorithm's own rules (its ``check`` trait) and ``run.threads``, for one rank."""
    traits(config.run.algorithm)["check"](config, model, topology)
    check_threads(config.run.threads)
