"""Atomic writes: a temporary file, flushed (and optionally fsynced), then renamed.

A write that fails (a full disk, a read-only or vanished directory, an I/O error) removes
its temporary file and raises :class:`~mcdpf.errors.StorageError` naming the final path:
nothing is left under a temporary name, and a file already under the final name (an
earlier checkpoint, say) is untouched.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

import h5py

from ..errors import StorageError

HDF5_ERRNO = re.compile(r"errno = (\d+)")


def storage_error(path, error: OSError) -> StorageError:
    """A :class:`StorageError` for ``path``, with the system's words for ``error``.

    HDF5 reports a failed system call inside a long message (``errno = 28, ...``); the
    errno's own text (``No space left on device``) is what the line shows.
    """
    number = error.errno or next((int(match) for match in
                                  HDF5_ERRNO.findall(str(error)) if int(match)), None)
    return StorageError(path, os.strerror(number) if number else str(error))


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

    With ``durable`` the data and the directory entry are fsynced, so the file survives a
    crash of the machine as well as of the process. Raises :class:`StorageError` if the
    file cannot be written (its temporary file removed).
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    try:
        handle = h5py.File(temporary, "w")
    except OSError as error:
        _remove(temporary)
        raise storage_error(path, error) from None
    try:
        try:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.id.get_vfd_handle())
        finally:
            handle.close()
        os.replace(temporary, path)
        if durable:
            _sync_directory(path.parent)
    except OSError as error:
        _remove(temporary)
        raise storage_error(path, error) from None
    except BaseException:
        _remove(temporary)
        raise


def atomic_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` whole (temporary name, then rename); :class:`StorageError`."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as error:
        _remove(temporary)
        raise storage_error(path, error) from None
