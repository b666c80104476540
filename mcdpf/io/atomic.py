"""Atomic writes: a temporary file, flushed (and optionally fsynced), then renamed.

A write that fails (a full disk, a read-only or vanished directory, an I/O error) removes
its temporary file and raises :class:`~mcdpf.errors.StorageError` naming the final path:
nothing is left under a temporary name, and a file already under the final name (an
earlier checkpoint, say) is untouched.
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager
from pathlib import Path

import h5py

from ..errors import StorageError


def storage_error(path, error: OSError) -> StorageError:
    """A :class:`StorageError` for ``path``, with the system's words for ``error``."""
    return StorageError(path, error.strerror or str(error))


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # the directory itself is gone or read-only: nothing was left there
        pass


def _sync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextmanager
def atomic_hdf5(path: str | Path, durable: bool = False):
    """Yield an open HDF5 file that appears under ``path`` only once complete.

    The file is built in memory and then written by plain file I/O: a full disk or an I/O
    error is then an ordinary ``OSError`` and not a failure inside the HDF5 library, whose
    state after a failed write produced tracebacks at garbage collection and could crash
    the process (it costs one in-memory copy of the file while it is written). With
    ``durable`` the data and the directory entry are fsynced, so the file survives a crash
    of the machine as well as of the process. Raises :class:`StorageError` if the file
    cannot be written (its temporary file removed).
    """
    image = io.BytesIO()
    with h5py.File(image, "w") as handle:
        yield handle
    with image.getbuffer() as data:
        write_whole(path, data, durable)


def write_whole(path: str | Path, data, durable: bool = False) -> None:
    """Write ``data`` (bytes-like) to ``path`` whole: temporary name, then rename.

    With ``durable`` the file and its directory entry are fsynced. Raises
    :class:`StorageError` (the temporary file removed).
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(temporary, path)
        if durable:
            _sync_directory(path.parent)
    except OSError as error:
        _remove(temporary)
        raise storage_error(path, error) from None


def atomic_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole (temporary name, then rename); :class:`StorageError`."""
    write_whole(path, text.encode())
