"""How labkit's command lines meet a user: one short message for a mistake, exit codes, Ctrl-C.

    sys.exit(run_command(_main))        # at the bottom of each ``python -m labkit...`` module
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
import warnings

from .checkpoint import CheckpointError

EXIT_ERROR = 1            # something labkit did not expect: a bug, reported in one line
EXIT_BAD_INPUT = 2        # a user's mistake (file, value, folder), as argparse uses 2
EXIT_INTERRUPTED = 130    # Ctrl-C, as a shell reports SIGINT


def _is_user_error(exc: BaseException) -> bool:
    # ValueError covers DataError, ParameterError, config values and bad weights files;
    # OSError covers missing files and folders, and folders that cannot be written.
    return isinstance(exc, (ValueError, OSError, CheckpointError, FloatingPointError))


@contextlib.contextmanager
def _short_warnings():
    """Print warnings as one "warning: ..." line each, not Python's file:line form."""
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = previous


def run_command(main, argv=None) -> int:
    """Run a command-line ``main(argv)`` as a user should meet it; returns the exit status.

    A user's mistake (``ValueError`` such as ``DataError`` / ``ParameterError``, a missing
    file, a ``CheckpointError``) prints its message on stderr and exits 2; anything else
    prints one line and exits 1; Ctrl-C prints where the training stopped and exits 130.
    ``--debug`` (or ``LABKIT_DEBUG=1``) prints the traceback too.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("LABKIT_DEBUG", "") not in ("", "0")
    try:
        with _short_warnings():
            return main(argv)
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        step = getattr(exc, "step", None)          # labkit.lab.run.TrainingInterrupted
        if step is None:
            message = "interrupted"
        else:
            message = str(exc) or (f"interrupted at step {step} of {getattr(exc, 'total', '?')}; "
                                   f"checkpoint saved at {getattr(exc, 'path', '?')}; run the "
                                   "same command again to resume")
        print(message, file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if debug:
            traceback.print_exc()
        if _is_user_error(exc):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        summary = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: unexpected {type(exc).__name__}: {summary}\n"
              "run with --debug (or LABKIT_DEBUG=1) for the traceback", file=sys.stderr)
        return EXIT_ERROR
