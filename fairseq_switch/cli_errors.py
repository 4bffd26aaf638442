"""Print the plugin's own input errors as one line, not as a traceback through fairseq and torch.

fairseq-train, fairseq-generate and friends let every exception reach the interpreter, which prints
its full traceback: for a bad option or a mismatched checkpoint the message the user needs comes
last, under a screen of frames. A ValueError, FileNotFoundError or UnsupportedStack raised by
fairseq_switch itself is such a message (they name the bad value and the fix), as is a WriteError (a
file it could not write: disk full, read-only folder), so the hook prints just
`fairseq-switch: error: <message>`; the exit status stays 1. FAIRSEQ_SWITCH_TRACEBACK=1 restores
the traceback; every other exception keeps it.
"""

import os
import sys
from types import TracebackType
from typing import Callable, Optional, Type

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class UnsupportedStack(ImportError):
    """The installed fairseq is not the version the plugin's fixes to it were written for."""


class WriteError(OSError):
    """A file the plugin writes could not be written (disk full, read-only folder): the message names the
    file, the reason and the fix (file_io.write_error)."""


USER_ERRORS = (ValueError, FileNotFoundError, UnsupportedStack, WriteError)


def raised_by_plugin(tb: Optional[TracebackType]) -> bool:
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and os.path.abspath(last.tb_frame.f_code.co_filename).startswith(PACKAGE_DIR + os.sep)


def one_line_errors(previous: Callable) -> Callable:
    """sys.excepthook that prints the plugin's user errors as one line and hands the rest to `previous`
    (installed in place of sys.excepthook by `compat`)."""

    def hook(exc_type: Type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> None:
        if (issubclass(exc_type, USER_ERRORS) and raised_by_plugin(tb)
                and os.environ.get("FAIRSEQ_SWITCH_TRACEBACK", "") in ("", "0")):
            print(f"fairseq-switch: error: {exc}\n(FAIRSEQ_SWITCH_TRACEBACK=1 shows where it was raised)",
                  file=sys.stderr)
            return
        previous(exc_type, exc, tb)

    return hook
