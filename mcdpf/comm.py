"""Communication layer: the only module below the command line that uses mpi4py.

:class:`Neighbourhood` is planned once and exchanged many times (mpi4py-fft's
``Transfer`` pattern): it builds one distributed-graph communicator from the topology
(``Create_dist_graph_adjacent``, sources = destinations = the node's sorted neighbours,
no reordering, so rank ``k`` is node ``k``) and moves data with neighbourhood
collectives only: counts by ``Neighbor_alltoall``, then records by ``Neighbor_alltoallv``
on raw buffers (never pickles). No rank ever sends to a non-neighbour and nothing here is
a global collective.

The set-up helpers (:func:`agree_on_error`, :func:`agree_min`, :func:`gather_to_first`)
are global collectives; they run only before the first time step and after the last.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

ERROR_MESSAGE_BYTES = 1024
COUNT_BYTES = np.dtype(np.int32).itemsize


class Neighbourhood:
    """A node's links to its graph neighbours, and buffers to exchange over them.

    Parameters
    ----------
    comm
        Communicator whose ranks are the network nodes (rank ``k`` is node ``k``).
    neighbours
        Sorted neighbour ranks of this node.
    """

    def __init__(self, comm, neighbours: list[int]):
        self.neighbours = list(neighbours)
        self.degree = len(self.neighbours)
        self.graph = comm.Create_dist_graph_adjacent(self.neighbours, self.neighbours,
                                                     reorder=False)
        self._send_counts = np.zeros(self.degree, dtype=np.int32)
        self._recv_counts = np.zeros(self.degree, dtype=np.int32)
        self._record_types: dict[int, MPI.Datatype] = {}

    def _record_type(self, itemsize: int) -> MPI.Datatype:
        if itemsize not in self._record_types:
            self._record_types[itemsize] = MPI.BYTE.Create_contiguous(itemsize).Commit()
        return self._record_types[itemsize]

    def start_exchange(self, records: np.ndarray, counts: np.ndarray, allocate=None):
        """Send ``counts[i]`` consecutive records to neighbour ``i``; receive theirs.

        ``records`` is a 1-D structured array grouped by destination in neighbour order.
        The counts go first (blocking ``Neighbor_alltoall``: the receiver must size its
        buffer), the records by a non-blocking ``Ineighbor_alltoallv``, so that the
        caller can compute until :meth:`finish_exchange`. ``allocate(count)``, if given,
        returns the contiguous array the incoming records are written to (so a caller
        can receive straight into its own storage).
        """
        sent = int(counts.sum())
        if allocate is None:
            def allocate(count):
                return np.empty(count, dtype=records.dtype)
        if self.degree == 0:
            return None, allocate(0), records, 0, sent
        self._send_counts[:] = counts
        self.graph.Neighbor_alltoall(self._send_counts, self._recv_counts)
        send_counts = self._send_counts.tolist()
        recv_counts = self._recv_counts.tolist()
        received = allocate(sum(recv_counts))
        record_type = self._record_type(records.dtype.itemsize)
        request = self.graph.Ineighbor_alltoallv(
            [records.view(np.uint8), (send_counts, _displacements(send_counts)), record_type],
            [received.view(np.uint8), (recv_counts, _displacements(recv_counts)),
             record_type])
        sent_bytes = self.degree * COUNT_BYTES + sent * records.dtype.itemsize
        return request, received, records, sent_bytes, sent

    @staticmethod
    def finish_exchange(pending) -> tuple[np.ndarray, int, int]:
        """Wait for :meth:`start_exchange`; return (received records, bytes sent, sent)."""
        request, received, _, sent_bytes, sent = pending
        if request is not None:
            request.Wait()
        return received, sent_bytes, sent

    def exchange(self, records: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, int]:
        """Blocking :meth:`start_exchange` + :meth:`finish_exchange`: (received, bytes)."""
        received, sent_bytes, _ = self.finish_exchange(self.start_exchange(records, counts))
        return received, sent_bytes

    def allgather(self, vector: np.ndarray) -> tuple[np.ndarray, int]:
        """Every neighbour's copy of a same-shaped array: (degree, *shape), bytes sent."""
        vector = np.ascontiguousarray(vector)
        gathered = np.empty((self.degree, *vector.shape), dtype=vector.dtype)
        if self.degree:
            self.graph.Neighbor_allgather(vector, gathered)
        return gathered, self.degree * vector.nbytes

    def allgatherv(self, vector: np.ndarray) -> tuple[list[np.ndarray], int]:
        """Every neighbour's float64 vector, of any length each; bytes sent."""
        vector = np.ascontiguousarray(vector, dtype=np.float64)
        if self.degree == 0:
            return [], 0
        length = np.array([vector.size], dtype=np.int32)
        lengths = np.empty(self.degree, dtype=np.int32)
        self.graph.Neighbor_allgather(length, lengths)
        received = np.empty(int(lengths.sum()), dtype=np.float64)
        displacements = np.zeros(self.degree, dtype=np.int32)
        np.cumsum(lengths[:-1], out=displacements[1:])
        self.graph.Neighbor_allgatherv([vector, MPI.DOUBLE],
                                       [received, (lengths, displacements), MPI.DOUBLE])
        pieces = [received[d:d + n] for d, n in zip(displacements, lengths, strict=True)]
        return pieces, self.degree * (COUNT_BYTES + vector.nbytes)

    def free(self) -> None:
        """Release the graph communicator and the record datatypes."""
        for datatype in self._record_types.values():
            datatype.Free()
        self._record_types.clear()
        if self.graph != MPI.COMM_NULL:
            self.graph.Free()


def _displacements(counts: list[int]) -> list[int]:
    """Exclusive prefix sums (plain Python: faster than numpy for a few neighbours)."""
    total, displacements = 0, []
    for count in counts:
        displacements.append(total)
        total += count
    return displacements


def agree_on_error(comm, message: str | None) -> str | None:
    """Set-up collective: every rank learns the lowest failing rank's message (or None)."""
    encoded = (message or "").encode("utf-8")[:ERROR_MESSAGE_BYTES]
    mine = np.zeros(ERROR_MESSAGE_BYTES + 1, dtype=np.uint8)
    mine[0] = 1 if message else 0
    mine[1:1 + len(encoded)] = np.frombuffer(encoded, dtype=np.uint8)
    everyone = np.empty((comm.Get_size(), mine.size), dtype=np.uint8)
    comm.Allgather(mine, everyone)
    for row in everyone:
        if row[0]:
            return bytes(row[1:]).rstrip(b"\0").decode("utf-8", "replace")
    return None


def allgather_streams(comm, stream, skipped: np.ndarray) -> tuple[list, list]:
    """Set-up collective: every rank's stream and skipped-step mask, on every rank."""
    from .streams import Stream

    columns = np.ascontiguousarray(stream.columns, dtype=np.float64)
    header = np.array([columns.shape[0], columns.shape[1], stream.steps], dtype=np.int64)
    headers = np.empty((comm.Get_size(), 3), dtype=np.int64)
    comm.Allgather(header, headers)

    def gathered(values, sizes, dtype):
        values = np.ascontiguousarray(values, dtype=dtype)
        received = np.empty(int(sizes.sum()), dtype=dtype)
        displacements = np.zeros(sizes.size, dtype=np.int64)
        np.cumsum(sizes[:-1], out=displacements[1:])
        comm.Allgatherv(values.ravel(), [received, (sizes, displacements)])
        return np.split(received, np.cumsum(sizes)[:-1])

    sizes = headers[:, 0] * headers[:, 1]
    all_columns = gathered(columns, sizes, np.float64)
    all_offsets = gathered(stream.offsets, headers[:, 2] + 1, np.int64)
    all_targets = gathered(stream.targets, headers[:, 2], np.float64)
    all_skipped = gathered(skipped.astype(np.int8), headers[:, 2], np.int8)
    streams = [Stream(columns=c.reshape(int(h[0]), int(h[1])), offsets=o, targets=t)
               for c, o, t, h in zip(all_columns, all_offsets, all_targets, headers,
                                     strict=True)]
    return streams, [mask.astype(bool) for mask in all_skipped]


def process_table(comm) -> list[dict]:
    """Set-up collective: ``[{rank, host, pid}, ...]`` of every rank, on every rank."""
    import os
    import socket

    host = socket.gethostname().encode("utf-8")[:ERROR_MESSAGE_BYTES - 8]
    mine = np.zeros(ERROR_MESSAGE_BYTES, dtype=np.uint8)
    mine[:8] = np.frombuffer(np.int64(os.getpid()).tobytes(), dtype=np.uint8)
    mine[8:8 + len(host)] = np.frombuffer(host, dtype=np.uint8)
    everyone = np.empty((comm.Get_size(), mine.size), dtype=np.uint8)
    comm.Allgather(mine, everyone)
    return [{"rank": rank, "host": bytes(row[8:]).rstrip(b"\0").decode("utf-8", "replace"),
             "pid": int(row[:8].view(np.int64)[0])} for rank, row in enumerate(everyone)]


def agree_min(comm, value: int) -> int:
    """Set-up collective: the minimum of an integer over all ranks."""
    mine = np.array([value], dtype=np.int64)
    result = np.empty(1, dtype=np.int64)
    comm.Allreduce(mine, result, op=MPI.MIN)
    return int(result[0])


def agree_max(comm, value: int) -> int:
    """Set-up collective: the maximum of an integer over all ranks."""
    mine = np.array([value], dtype=np.int64)
    result = np.empty(1, dtype=np.int64)
    comm.Allreduce(mine, result, op=MPI.MAX)
    return int(result[0])


def gather_to_first(comm, values: np.ndarray) -> np.ndarray | None:
    """Shutdown collective: rank 0 receives every rank's float64 vector (others: None)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    result = np.empty((comm.Get_size(), values.size)) if comm.Get_rank() == 0 else None
    comm.Gather(values, result, root=0)
    return result


def abort(comm, code: int) -> None:
    """End every rank of the job now (used after an unexpected error on one rank)."""
    comm.Abort(code)
