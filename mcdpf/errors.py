"""Exceptions that the command line turns into one-line messages and exit code 2.

Every problem with what the user supplied (configuration, topology, data file, rank
count) is an :class:`InputError`. Its message names the file or key and the problem in
one line; :mod:`mcdpf.cli` prints it once (:func:`print_error`) and exits
:data:`EXIT_INPUT_ERROR` on every rank. Anything else that escapes is a bug and aborts the
whole MPI job.
"""

import sys

EXIT_INPUT_ERROR = 2
EXIT_STORAGE_ERROR = 74  # sysexits.h EX_IOERR: a file of the run could not be written


class InputError(Exception):
    """A bad input: configuration, topology, stream file, data set or rank count."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))



class StorageError(Exception):
    """A file of the run could not be written: a full disk, a read-only or vanished directory.

    Raised by the writers in :mod:`mcdpf.io` (after removing their temporary file) with
    one line naming the path; :mod:`mcdpf.cli` prints it and ends the whole job with
    :data:`EXIT_STORAGE_ERROR` (the files already written under their final names, the
    previous checkpoints included, stay intact).
    """

    def __init__(self, path, reason: str):
        super().__init__(" ".join(f"{path}: cannot write ({reason})".split()))
        self.path = path


class LockstepError(InputError):
    """Neighbouring ranks are at different steps of the online protocol."""


def print_error(message: str) -> None:
    """The one line a command prints for a problem: ``mcdpf: error: MESSAGE``."""
    print(f"mcdpf: error: {message}", file=sys.stderr, flush=True)
