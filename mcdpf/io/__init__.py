"""Files: HDF5 stream files, per-rank run outputs and checkpoints.

Only this package imports h5py. Every input file is checked for structure, dtype and
shape before its data are used; problems raise :class:`~mcdpf.errors.InputError`.
Outputs are written to a temporary name, flushed and renamed, so a reader never sees a
half-written file; a write that fails removes its temporary file and raises
:class:`~mcdpf.errors.StorageError` naming the path.
"""

from .atomic import atomic_text, storage_error
from .checkpoints import (
    DamagedCheckpoint,
    is_complete,
    read_checkpoint,
    read_checkpoint_attributes,
    write_checkpoint,
)
from .run_files import NodeRecord, read_node_files, write_node_file
from .stream_file import read_stream_file, write_stream_file

__all__ = ["DamagedCheckpoint", "NodeRecord", "atomic_text", "is_complete", "read_checkpoint",
           "read_checkpoint_attributes", "read_node_files", "read_stream_file",
           "storage_error", "write_checkpoint", "write_node_file", "write_stream_file"]
