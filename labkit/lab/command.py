"""How labkit's command lines meet a user: one short message for a mistake, exit codes, Ctrl-C
and SIGTERM.

    sys.exit(run_command(_main))        # at the bottom of each ``python -m labkit...`` module
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings

from .checkpoint import CheckpointError
from .run import Stopped, default_in_forked_child
from .utils import EnvironmentProblem

EXIT_ERROR = 1            # something labkit did not expect: a bug, reported in one line
EXIT_BAD_INPUT = 2        # a user's mistake (file, value, folder), as argparse uses 2
EXIT_ENVIRONMENT = 3      # the machine's: no space left, a missing package or Jupyter kernel
EXIT_INTERRUPTED = 130    # Ctrl-C, as a shell reports SIGINT (128 + 2)
EXIT_TERMINATED = 143     # SIGTERM (kill, a cluster's scheduler), as a shell reports it (128 + 15)


def _is_user_error(exc: BaseException) -> bool:
    # ValueError covers DataError, ParameterError, config values and bad weights files;
    # OSError covers missing files and folders, and folders that cannot be written.
    return isinstance(exc, (ValueError, OSError, CheckpointError, FloatingPointError))


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM stops the command as Ctrl-C does (training saves a checkpoint, every file being
    written is left unwritten) instead of killing it mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def stop(signum, frame):
        if not default_in_forked_child(owner, signum):
            raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _missing_package(error: ImportError) -> str:
    return (f"{error} in this Python ({sys.executable}): a package labkit needs here is missing "
            "or broken. Install labkit with its extras in this environment (pip install -e "
            "'.[lab,test]' in the checkout, which `make setup` does), then run the same command again")


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
    file, a ``CheckpointError``) prints its message on stderr and exits 2; a problem of the
    machine (``EnvironmentProblem``: no space left; a missing package) exits 3; anything else
    prints one line and exits 1; Ctrl-C prints where the training stopped and exits 130,
    SIGTERM the same with 143. ``--debug`` (or ``LABKIT_DEBUG=1``) prints the traceback too.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("LABKIT_DEBUG", "") not in ("", "0")
    try:
        with _short_warnings(), _sigterm_as_interrupt():
            return main(argv)
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        step = getattr(exc, "step", None)          # labkit.lab.run.TrainingInterrupted
        if step is None:
            message = str(exc) if isinstance(exc, Stopped) else "interrupted"
        else:
            message = str(exc) or (f"interrupted at step {step} of {getattr(exc, 'total', '?')}; "
                                   f"checkpoint saved at {getattr(exc, 'path', '?')}; run the "
                                   "same command again to resume")
        print(message, file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        if isinstance(exc, (EnvironmentProblem, ImportError)):
            print(f"error: {_missing_package(exc) if isinstance(exc, ImportError) else exc}",
                  file=sys.stderr)
            return EXIT_ENVIRONMENT
        if _is_user_error(exc):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        summary = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: unexpected {type(exc).__name__}: {summary}\n"
              "run with --debug (or LABKIT_DEBUG=1) for the traceback", file=sys.stderr)
        return EXIT_ERROR
