"""Atomic HDF5 writes: a temporary file, flushed (and optionally fsynced), then renamed."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import h5py


@contextmanager
def atomic_hdf5(path: str | Path, durable: bool = False):
    """Yield an open HDF5 file that appears under ``path`` only once complete.

    With ``durable`` the data and the directory entry are fsynced, so the file survives a
    crash of the machine as well as of the process.
    """
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with h5py.File(temporary, "w") as handle:
        yield handle
        handle.flush()
        if durable:
            os.fsync(handle.id.get_vfd_handle())
    os.replace(temporary, path)
    if durable:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
