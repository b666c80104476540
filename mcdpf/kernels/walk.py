"""Routing kernel of the random walk: draws to destinations, counts and a stable order."""

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
