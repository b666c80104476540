"""Process memory: keep freed large buffers for reuse (glibc), so steps do not page-fault.

Every step allocates arrays of the population's size (the propagated parameters, the
walkers after a move). glibc serves allocations above 32 MB (its largest mmap threshold)
by ``mmap`` and returns them to the system when freed, so the next step's array of the
same size is fresh memory: every page faults on first touch (measured: 10 ms of a 35 ms
fused gather + noise pass over 42 MB). :func:`keep_freed_memory` turns ``mmap`` off for
the process (``M_MMAP_MAX = 0``) and the trimming of the heap (``M_TRIM_THRESHOLD``), so
freed buffers are reused. That suits arrays that keep their size from step to step; with
sizes that change at every walk step (dpf) the retained heap fragments (measured: dpf's
peak memory 1.6x higher), so for those (``steady_arrays=False``) it only raises the mmap
threshold to its maximum, 32 MB: smaller buffers are reused (dpf at n = 16, N = 1000 ran
1.5x faster for it), larger ones still go back to the system. Elsewhere (no glibc) it
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64 bits
_done = False


def keep_freed_memory(steady_arrays: bool = True) -> bool:
    """Ask glibc to keep freed memory for reuse; True if it could (once per process).

    ``steady_arrays``: the arrays keep their size from step to step (all sizes are kept);
    otherwise only buffers below 32 MB are.
    """
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is None:
        return False
    if steady_arrays:
        kept = mallopt(M_MMAP_MAX, 0)
    else:
        kept = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    _done = bool(kept) and bool(mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
    return _done
