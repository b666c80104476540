"""Communication layer: the only module below the command line that uses mpi4py.

:class:`Neighbourhood` is planned once and exchanged many times (mpi4py-fft's
``Transfer`` pattern): it builds one distributed-graph communicator from the topology
(``Create_dist_graph_adjacent``, sources = destinations = the ranks of the node's sorted
neighbours, no reordering) and moves data with neighbourhood
collectives only: counts by ``Neighbor_alltoall``, then records by ``Neighbor_alltoallv``
on raw buffers (never pickles). No rank ever sends to a non-neighbour and nothing here is
a global collective.

**Lockstep.** Every exchange of a learner begins with a stamped handshake
(:meth:`Neighbourhood.handshake`): each node sends each neighbour a count and its step
number, and a node whose neighbour is at another step (a rank that skipped a step, or
stopped early: :meth:`Neighbourhood.goodbye`) raises :class:`LockstepError` on both sides
before any payload moves, instead of pairing wrong messages or waiting for ever.

The set-up helpers (:func:`agree_on_error`, :func:`agree_min`, :func:`gather_to_first`)
are global collectives; they run only before the first time step and after the last
(:func:`allgather_measurements` is the oracle's per-step exception, see its docstring).
"""

from __future__ import annotations

import sys
import time

import numpy as np
from mpi4py import MPI

from .errors import InputError, LockstepError

ERROR_MESSAGE_BYTES = 1024
COUNT_BYTES = np.dtype(np.int32).itemsize
STAMP_BYTES = 2 * np.dtype(np.int64).itemsize
CLOSING = -1


class Neighbourhood:
    """A node's links to its graph neighbours, and buffers to exchange over them.

    Parameters
    ----------
    comm
        Communicator whose ranks are the network nodes.
    neighbours
        Sorted neighbour nodes of this node.
    ranks
        The neighbours' ranks in ``comm``, in the same order (default: rank ``k`` is node
        ``k``; a resumed job without some nodes maps them otherwise,
        :class:`~mcdpf.elastic.Membership`).
    node
        This node, for messages (default: its rank).
    """

    def __init__(self, comm, neighbours: list[int], ranks: list[int] | None = None,
                 node: int | None = None):
        self.neighbours = list(neighbours)
        self.degree = len(self.neighbours)
        peers = self.neighbours if ranks is None else list(ranks)
        self.graph = comm.Create_dist_graph_adjacent(peers, peers, reorder=False)
        self._send_counts = np.zeros(self.degree, dtype=np.int32)
        self._recv_counts = np.zeros(self.degree, dtype=np.int32)
        self._send_stamps = np.zeros((self.degree, 2), dtype=np.int64)
        self._recv_stamps = np.zeros((self.degree, 2), dtype=np.int64)
        self._record_types: dict[int, MPI.Datatype] = {}
        self.rank = comm.Get_rank() if node is None else node

    def _record_type(self, itemsize: int) -> MPI.Datatype:
        if itemsize not in self._record_types:
            self._record_types[itemsize] = MPI.BYTE.Create_contiguous(itemsize).Commit()
        return self._record_types[itemsize]

    def handshake(self, step: int, counts) -> np.ndarray:
        """Send each neighbour a count and ``step``; their counts (int64, degree).

        Raises :class:`LockstepError` if a neighbour is at another step or has stopped.
        """
        stamps = self._send_stamps
        stamps[:, 0] = counts
        stamps[:, 1] = step
        self.graph.Neighbor_alltoall(stamps, self._recv_stamps)
        self._check_stamps(step, self._recv_stamps)
        return self._recv_stamps[:, 0].copy()

    def _check_stamps(self, step: int, received: np.ndarray, closing: bool = False) -> None:
        for neighbour, (count, their_step) in zip(self.neighbours, received.tolist(),
                                                  strict=True):
            if closing and count != CLOSING:
                raise LockstepError(f"node {self.rank} stopped after {step} steps but "
                                    f"neighbour {neighbour} is at step {their_step}: every "
                                    "rank must take every step (predict(None)/learn(None) "
                                    "for a step without data)")
            if not closing and (count == CLOSING or their_step != step):
                state = (f"stopped after {their_step} steps" if count == CLOSING
                         else f"is at step {their_step}")
                raise LockstepError(f"node {self.rank} is at step {step} but neighbour "
                                    f"{neighbour} {state}: every rank must take every step "
                                    "(predict(None)/learn(None) for a step without data)")

    def goodbye(self, step: int) -> None:
        """Tell the neighbours this node stopped after ``step`` steps; check they did too."""
        if self.degree == 0:
            return
        self._send_stamps[:, 0] = CLOSING
        self._send_stamps[:, 1] = step
        self.graph.Neighbor_alltoall(self._send_stamps, self._recv_stamps)
        self._check_stamps(step, self._recv_stamps, closing=True)

    def start_exchange(self, records: np.ndarray, counts: np.ndarray, allocate=None,
                       stamp: int | None = None):
        """Send ``counts[i]`` consecutive records to neighbour ``i``; receive theirs.

        ``records`` is a 1-D structured array grouped by destination in neighbour order.
        The counts go first (blocking: the receiver must size its buffer; with ``stamp``
        as a :meth:`handshake` on that step), the records by a non-blocking
        ``Ineighbor_alltoallv``, so that the caller can compute until
        :meth:`finish_exchange`. ``allocate(count)``, if given, returns the contiguous
        array the incoming records are written to (so a caller can receive straight into
        its own storage).
        """
        sent = int(counts.sum())
        if allocate is None:
            def allocate(count):
                return np.empty(count, dtype=records.dtype)
        if self.degree == 0:
            return None, allocate(0), records, 0, sent
        if stamp is None:
            self._send_counts[:] = counts
            self.graph.Neighbor_alltoall(self._send_counts, self._recv_counts)
            recv_counts = self._recv_counts.tolist()
            header_bytes = self.degree * COUNT_BYTES
        else:
            recv_counts = self.handshake(stamp, counts).tolist()
            header_bytes = self.degree * STAMP_BYTES
        send_counts = [int(c) for c in counts]
        received = allocate(sum(recv_counts))
        record_type = self._record_type(records.dtype.itemsize)
        request = self.graph.Ineighbor_alltoallv(
            [records.view(np.uint8), (send_counts, _displacements(send_counts)), record_type],
            [received.view(np.uint8), (recv_counts, _displacements(recv_counts)),
             record_type])
        sent_bytes = header_bytes + sent * records.dtype.itemsize
        return request, received, records, sent_bytes, sent

    @staticmethod
    def finish_exchange(pending) -> tuple[np.ndarray, int, int]:
        """Wait for :meth:`start_exchange`; return (received records, bytes sent, sent)."""
        request, received, _, sent_bytes, sent = pending
        if request is not None:
            request.Wait()
        return received, sent_bytes, sent

    def exchange(self, records: np.ndarray, counts: np.ndarray,
                 stamp: int | None = None) -> tuple[np.ndarray, int]:
        """Blocking :meth:`start_exchange` + :meth:`finish_exchange`: (received, bytes)."""
        received, sent_bytes, _ = self.finish_exchange(
            self.start_exchange(records, counts, stamp=stamp))
        return received, sent_bytes

    def exchange_vectors(self, step: int, outgoing: list[np.ndarray]
                         ) -> tuple[list[np.ndarray], int]:
        """Send float64 vector ``outgoing[i]`` to neighbour ``i``; theirs, and bytes sent.

        The lengths travel in a :meth:`handshake` on ``step``.
        """
        if self.degree == 0:
            return [], 0
        send_counts = [int(v.size) for v in outgoing]
        recv_counts = self.handshake(step, send_counts).tolist()
        send = np.concatenate(outgoing) if outgoing else np.empty(0)
        received = np.empty(sum(recv_counts))
        self.graph.Neighbor_alltoallv(
            [send, (send_counts, _displacements(send_counts)), MPI.DOUBLE],
            [received, (recv_counts, _displacements(recv_counts)), MPI.DOUBLE])
        pieces, first = [], 0
        for count in recv_counts:
            pieces.append(received[first:first + count])
            first += count
        return pieces, self.degree * STAMP_BYTES + send.nbytes

    def allgather(self, vector: np.ndarray,
                  stamp: int | None = None) -> tuple[np.ndarray, int]:
        """Every neighbour's copy of a same-shaped array: (degree, *shape), bytes sent.

        With ``stamp``, begins with a :meth:`handshake` on that step (needed when this is
        the step's first exchange).
        """
        vector = np.ascontiguousarray(vector)
        gathered = np.empty((self.degree, *vector.shape), dtype=vector.dtype)
        if self.degree == 0:
            return gathered, 0
        header_bytes = 0
        if stamp is not None:
            self.handshake(stamp, vector.size)
            header_bytes = STAMP_BYTES
        self.graph.Neighbor_allgather(vector, gathered)
        return gathered, self.degree * (header_bytes + vector.nbytes)

    def allgatherv(self, vector: np.ndarray, stamp: int) -> tuple[list[np.ndarray], int]:
        """Every neighbour's float64 vector, of any length each; bytes sent.

        The lengths travel in a :meth:`handshake` on step ``stamp``.
        """
        vector = np.ascontiguousarray(vector, dtype=np.float64)
        if self.degree == 0:
            return [], 0
        lengths = self.handshake(stamp, vector.size).astype(np.int32)
        received = np.empty(int(lengths.sum()), dtype=np.float64)
        displacements = np.zeros(self.degree, dtype=np.int32)
        np.cumsum(lengths[:-1], out=displacements[1:])
        self.graph.Neighbor_allgatherv([vector, MPI.DOUBLE],
                                       [received, (lengths, displacements), MPI.DOUBLE])
        pieces = [received[d:d + n] for d, n in zip(displacements, lengths, strict=True)]
        return pieces, self.degree * (STAMP_BYTES + vector.nbytes)

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


def agreed(comm, work):
    """Set-up collective: the result of ``work()`` on this rank, or an ``InputError``.

    If ``work`` raised :class:`~mcdpf.errors.InputError` on any rank, every rank raises
    the lowest failing rank's message.
    """
    result, error = None, None
    try:
        result = work()
    except InputError as problem:
        error = str(problem)
    error = agree_on_error(comm, error)
    if error:
        raise InputError(error)
    return result


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


def allgather_measurements(comm, columns, target, inputs: int) -> list:
    """Every rank's ``(columns, target)`` of this step, or ``None`` (no data), on every rank.

    The ``cpf`` oracle's access to every node's data when fed live (:class:`mcdpf.Node`):
    a global collective per step, which is what a central node would need; no other
    algorithm uses it.
    """
    observed = columns is not None and target is not None
    mine = np.zeros(1 + (columns.size + 1 if observed else 0))
    if observed:
        mine[0] = 1.0
        mine[1] = target
        mine[2:] = np.asarray(columns, dtype=np.float64).ravel()
    sizes = np.empty(comm.Get_size(), dtype=np.int64)
    comm.Allgather(np.array([mine.size], dtype=np.int64), sizes)
    received = np.empty(int(sizes.sum()))
    displacements = np.zeros(sizes.size, dtype=np.int64)
    np.cumsum(sizes[:-1], out=displacements[1:])
    comm.Allgatherv(mine, [received, (sizes, displacements)])
    measured = []
    for first, size in zip(displacements.tolist(), sizes.tolist(), strict=True):
        piece = received[first:first + size]
        measured.append((piece[2:].reshape(-1, inputs), float(piece[1])) if piece[0] else None)
    return measured


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


def allgather_pairs(comm, pair: tuple[int, int] | None) -> list[tuple[int, int]]:
    """Set-up collective: every rank's pair of integers (``None``: none), on every rank."""
    mine = np.array(pair if pair is not None else (-1, -1), dtype=np.int64)
    everyone = np.empty((comm.Get_size(), 2), dtype=np.int64)
    comm.Allgather(mine, everyone)
    return [(int(a), int(b)) for a, b in everyone if a >= 0]


def _agree(comm, value: int, op) -> int:
    mine = np.array([value], dtype=np.int64)
    result = np.empty(1, dtype=np.int64)
    comm.Allreduce(mine, result, op=op)
    return int(result[0])


def agree_min(comm, value: int) -> int:
    """Set-up collective: the minimum of an integer over all ranks."""
    return _agree(comm, value, MPI.MIN)


def agree_max(comm, value: int) -> int:
    """Set-up collective: the maximum of an integer over all ranks."""
    return _agree(comm, value, MPI.MAX)


def idle_barrier(comm, poll_seconds: float = 0.05) -> None:
    """Set-up collective: wait for every rank, sleeping instead of spinning.

    MPI's blocking barrier busy-waits; ranks that wait for one rank's long task (the
    first compilation of the kernels) would take the CPU from it.
    """
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll_seconds)


def gather_to_first(comm, values: np.ndarray) -> np.ndarray | None:
    """Shutdown collective: rank 0 receives every rank's float64 vector (others: None)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    result = np.empty((comm.Get_size(), values.size)) if comm.Get_rank() == 0 else None
    comm.Gather(values, result, root=0)
    return result


ABORT_GRACE_SECONDS = 0.25  # for the launcher to forward this rank's last lines


def _let_output_out() -> None:
    """Flush stdout and stderr and give the launcher a moment to forward them.

    ``MPI_Abort`` makes MPICH's launcher kill every rank at once, and lines a rank wrote
    just before may still sit in the pipe to the launcher's proxy and be lost (seen:
    ``second SIGINT: aborting ...`` missing from a job's output under load).
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken: nothing to forward
            pass
    time.sleep(ABORT_GRACE_SECONDS)


def abort(comm, code: int) -> None:
    """End every rank of the job now (used after an unexpected error on one rank)."""
    _let_output_out()
    comm.Abort(code)


def abort_world(code: int) -> None:
    """``MPI_Abort`` on ``COMM_WORLD`` if MPI is running (the uncaught-exception hook)."""
    if MPI.Is_initialized() and not MPI.Is_finalized():
        abort(MPI.COMM_WORLD, code)


STOP_TAG = 17  # the only point-to-point tag: stop requests (mcdpf.shutdown)


class StopChannel:
    """Stop requests between graph neighbours, on a private duplicate of ``comm``.

    A request is two int64 (the proposed stop step and the signal number), sent by
    ``Isend`` and looked for by ``Iprobe`` at each step boundary: nothing is sent, and a
    poll costs one ``Iprobe``, while no stop is under way. :meth:`agree` and :meth:`close`
    are the shutdown collectives of :mod:`mcdpf.shutdown`. Creating the channel
    (``Dup``) is a set-up collective.
    """

    def __init__(self, comm):
        self.comm = comm.Dup()
        self._sent_to = np.zeros(self.comm.Get_size(), dtype=np.int64)
        self._received = 0
        self._pending: list = []  # (request, buffer) of every send not yet completed
        self._incoming = np.empty(2, dtype=np.int64)

    def send(self, ranks, step: int, signal: int) -> None:
        """Propose stop step ``step`` (for ``signal``) to each of ``ranks``."""
        for rank in ranks:
            message = np.array([step, signal], dtype=np.int64)
            self._pending.append((self.comm.Isend(message, dest=rank, tag=STOP_TAG), message))
            self._sent_to[rank] += 1

    def poll(self) -> list[tuple[int, int]]:
        """Every request that has arrived: ``[(step, signal), ...]`` (usually none)."""
        arrived = []
        while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=STOP_TAG):
            self.comm.Recv(self._incoming, source=MPI.ANY_SOURCE, tag=STOP_TAG)
            self._received += 1
            arrived.append((int(self._incoming[0]), int(self._incoming[1])))
        return arrived

    def agree(self, step: int, signal: int) -> tuple[int, int, int]:
        """Shutdown collective: (min, max) of ``step`` and max of ``signal`` over ranks."""
        mine = np.array([-step, step, signal], dtype=np.int64)
        result = np.empty(3, dtype=np.int64)
        self.comm.Allreduce(mine, result, op=MPI.MAX)
        return -int(result[0]), int(result[1]), int(result[2])

    def close(self, drain: bool) -> None:
        """Complete every send and free the channel.

        With ``drain`` (a shutdown collective: on every rank or none) it first receives
        the requests still on their way, so that none is left unreceived.
        """
        if drain:
            expected = np.empty(1, dtype=np.int64)
            self.comm.Reduce_scatter_block(self._sent_to, expected, op=MPI.SUM)
            for _ in range(int(expected[0]) - self._received):
                self.comm.Recv(self._incoming, source=MPI.ANY_SOURCE, tag=STOP_TAG)
            self._received = int(expected[0])
        MPI.Request.Waitall([request for request, _ in self._pending])
        self._pending.clear()
        self.comm.Free()
