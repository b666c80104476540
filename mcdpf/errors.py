"""Exceptions that the command line turns into one-line messages and exit code 2.

Every problem with what the user supplied (configuration, topology, data file, rank
count) is an :class:`InputError`. Its message names the file or key and the problem in
one line; :mod:`mcdpf.cli` prints it once (:func:`print_error`) and exits
:data:`EXIT_INPUT_ERROR` on every rank. Anything else that escapes is a bug and aborts the
whole MPI job.
"""

import sys

EXIT_INPUT_ERROR = 2


class InputError(Exception):
    """A bad input: configuration, topology, stream file, data set or rank count."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))



class LockstepError(InputError):
    """Neighbouring ranks are at different steps of the online protocol."""


def print_error(message: str) -> None:
    """The one line a command prints for a problem: ``mcdpf: error: MESSAGE``."""
    print(f"mcdpf: error: {message}", file=sys.stderr, flush=True)
