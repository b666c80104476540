"""Fault injection (``[faults]`` crash and kill): failures on purpose, for the tests.

``faults.drop`` is not injected here: a node that leaves the network is part of the run
(:class:`~mcdpf.node.Network`).
"""

from __future__ import annotations

import os
import signal
import sys


class InjectedFault(RuntimeError):
    """Raised on purpose by ``faults.crash``."""


def inject_faults(faults, node: int, step: int, rank: int) -> None:
    """``faults.crash`` raises, ``faults.kill`` SIGKILLs this process, at their steps."""
    if [node, step] in (faults.crash or []):
        raise InjectedFault(f"faults.crash: injected failure of node {node} at step {step}")
    if [node, step] in (faults.kill or []):
        print(f"mcdpf: rank {rank}: faults.kill: killing the process of node {node} "
              f"(SIGKILL) at step {step}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
