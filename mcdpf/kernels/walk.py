"""The random walk's kernels: routing draws to destinations, and moving particle rows.

Routing gives each particle its destination, the counts per destination and a stable
order by destination (a counting sort). The row kernels compact the particles that stay
and pack (unpack) the movers into (from) wire records at memory speed, converting
between the model dtype and the wire dtype.
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def route_kernel(uniforms, cumulative, destination, counts, order):
    """Destination slot of every particle, slot counts, and particles sorted by slot.

    Parameters
    ----------
    uniforms : (M,) float64
        U(0, 1) draws, one per particle.
    cumulative : (d + 1,) float64
        Cumulative move probabilities of [stay, neighbour 1, ..., neighbour d].
    destination : (M,) int64, written
        Slot of each particle (0 stays).
    counts : (d + 1,) int64, written (must be zero on entry)
        Particles per slot.
    order : (M,) int64, written
        Particle indices grouped by slot, in their original order within a slot
        (a counting sort).
    """
    slots = cumulative.shape[0]
    total = cumulative[slots - 1]
    for i in range(uniforms.shape[0]):
        position = uniforms[i] * total
        slot = 0
        while slot < slots - 1 and position >= cumulative[slot]:
            slot += 1
        destination[i] = slot
        counts[slot] += 1
    start = 0
    offsets = counts.copy()
    for slot in range(slots):
        offsets[slot] = start
        start += counts[slot]
    for i in range(uniforms.shape[0]):
        slot = destination[i]
        order[offsets[slot]] = i
        offsets[slot] += 1


@njit(cache=True, nogil=True)
def take_rows_kernel(source, rows, out):
    """``out[i, :] = source[rows[i], :]`` (2-D, C-contiguous; any float or int dtype)."""
    width = source.shape[1]
    for i in range(rows.shape[0]):
        src = source[rows[i]]
        dst = out[i]
        for j in range(width):
            dst[j] = src[j]


@njit(cache=True, nogil=True)
def take_kernel(source, rows, out):
    """``out[i] = source[rows[i]]`` (1-D)."""
    for i in range(rows.shape[0]):
        out[i] = source[rows[i]]


@njit(cache=True, nogil=True)
def pack_records_kernel(buffer, rows, ids, log_weight, theta, carry, wire_like, theta_at,
                        carry_at):
    """Write particles ``rows`` as wire records into ``buffer`` (M, record bytes) uint8.

    A record is ``id`` (int64, bytes 0-8), ``log_weight`` (float64, 8-16), ``theta`` and
    ``carry`` in the dtype of ``wire_like`` (an empty array: a dtype object would cost
    microseconds of dispatch per call) from byte ``theta_at`` and ``carry_at``
    (converted from the model dtype), the layout of :func:`mcdpf.dpf.wire_record_dtype`.
    """
    width, state = theta.shape[1], carry.shape[1]
    for i in range(rows.shape[0]):
        r = rows[i]
        record = buffer[i]
        record[0:8].view(np.int64)[0] = ids[r]
        record[8:16].view(np.float64)[0] = log_weight[r]
        values = record[theta_at:carry_at].view(wire_like.dtype)
        for j in range(width):
            values[j] = theta[r, j]
        if state:
            values = record[carry_at:carry_at + state * values.itemsize].view(wire_like.dtype)
            for j in range(state):
                values[j] = carry[r, j]


@njit(cache=True, nogil=True)
def unpack_records_kernel(buffer, ids, log_weight, theta, carry, wire_like, theta_at,
                          carry_at):
    """Read wire records (M, record bytes) into rows ``0..M-1`` of the given arrays."""
    width, state = theta.shape[1], carry.shape[1]
    for i in range(buffer.shape[0]):
        record = buffer[i]
        ids[i] = record[0:8].view(np.int64)[0]
        log_weight[i] = record[8:16].view(np.float64)[0]
        values = record[theta_at:carry_at].view(wire_like.dtype)
        for j in range(width):
            theta[i, j] = values[j]
        if state:
            values = record[carry_at:carry_at + state * values.itemsize].view(wire_like.dtype)
            for j in range(state):
                carry[i, j] = values[j]
