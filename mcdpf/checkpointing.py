"""Checkpointing of a training run: one node's checkpoints, written on time, pruned.

The files and their format are the run directory's (:mod:`mcdpf.rundir`,
:mod:`mcdpf.io`); which checkpoint a resume continues from is :mod:`mcdpf.resume`'s.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from .resume import checkpoints_to_keep


def checkpointer_for(setup, on_stop: bool = False) -> Checkpointer | None:
    """The :class:`Checkpointer` of a run's node (``None``: it writes no checkpoints).

    ``on_stop``: a signal may stop the run (:mod:`mcdpf.shutdown`), which is then
    checkpointed whether or not ``run.checkpoint_every`` is set.
    """
    config = setup.config
    if setup.run_dir is None or not (config.run.checkpoint_every or on_stop):
        return None
    return Checkpointer(setup.run_dir, setup.node, checkpoints_to_keep(config, setup.topology),
                        config.run.checkpoint_async, config.run.checkpoint_every)


class Checkpointer:
    """Writes one node's checkpoints into its run directory, keeping the newest ``keep``.

    Synchronous by default: :meth:`save` returns when the file is on disk under its final
    name. With ``asynchronous`` (``run.checkpoint_async``) :meth:`save` copies the state
    and records and hands them to a writer thread, which writes the file the same way
    (temporary name, fsync, rename: a file under its final name is always complete);
    at most one checkpoint is in flight (the next :meth:`save` waits for it), and a
    failure of the writer is raised by the next :meth:`save` or :meth:`close`.

    Parameters
    ----------
    run_dir
        The :class:`~mcdpf.rundir.RunDirectory`.
    node
        The node whose checkpoints these are.
    keep
        Checkpoints kept (:func:`~mcdpf.resume.checkpoints_to_keep`).
    asynchronous
        Write from a thread.
    every
        The interval of :meth:`due` (``run.checkpoint_every``).
    """

    def __init__(self, run_dir, node: int, keep: int, asynchronous: bool = False,
                 every: int = 0):
        self.run_dir = run_dir
        self.node = node
        self.keep = keep
        self.asynchronous = asynchronous
        self.every = every
        self._named: list[int] | None = None  # this node's checkpoint files, once listed
        self.newest: int | None = None  # the step of the latest save
        self._work: queue.Queue = queue.Queue(maxsize=1)
        self._failure: BaseException | None = None
        self._writer = None
        if asynchronous:
            self._writer = threading.Thread(target=self._write_queued, daemon=True,
                                            name=f"mcdpf-checkpoints-{node}")
            self._writer.start()

    def save(self, step: int, state: dict, records: dict, attributes: dict) -> None:
        """Write the checkpoint of ``step`` (after ``step`` completed steps)."""
        self.newest = step
        if not self.asynchronous:
            self._write(step, state, records, attributes)
            return
        self._wait()
        self._work.put((step, _copied(state), _copied(records), dict(attributes)))

    def due(self, step: int, steps: int) -> bool:
        """Whether a checkpoint is written after ``step`` of a run of ``steps`` steps."""
        return self.every > 0 and step % self.every == 0 and step < steps

    def save_node(self, step: int, node, records: dict, loop_seconds: float) -> None:
        """:meth:`save` a :class:`~mcdpf.node.Node`'s state after ``step`` completed steps."""
        self.save(step, node.checkpoint_state(), records,
                  {**node.checkpoint_attributes(), "loop_seconds": loop_seconds})

    def _write(self, step, state, records, attributes) -> None:
        # The directory is listed once (files of an earlier job included), then tracked:
        # listing it at every save would read every node's files each time.
        self._named = self.run_dir.write_checkpoint(self.node, step, state, records,
                                                    attributes, self.keep, self._named)

    def _write_queued(self) -> None:
        while (item := self._work.get()) is not None:
            try:
                self._write(*item)
            except BaseException as failure:  # raised again on the main thread
                self._failure = failure
            finally:
                self._work.task_done()
        self._work.task_done()

    def _wait(self) -> None:
        self._work.join()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def close(self) -> None:
        """Wait until every checkpoint saved is on disk; stop the writer thread."""
        if self._writer is not None:
            self._wait()
            self._work.put(None)
            self._writer.join()
            self._writer = None


def _copied(values: dict) -> dict:
    """A copy of a dictionary of arrays and scalars that later steps cannot change."""
    return {name: value.copy() if isinstance(value, np.ndarray) else value
            for name, value in values.items()}
