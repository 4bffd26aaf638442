"""Print the plugin's own input errors as one line, not as a traceback through fairseq and torch.

fairseq-train, fairseq-generate and friends let every exception reach the interpreter, which prints
its full traceback: for a bad option or a mismatched checkpoint the message the user needs comes
last, under a screen of frames. A ValueError or FileNotFoundError raised by fairseq_switch itself is
such a message (they name the bad value and the fix), so the hook prints just
`fairseq-switch: error: <message>`; the exit status stays 1. FAIRSEQ_SWITCH_TRACEBACK=1 restores
the traceback; every other exception keeps it.
"""

import os
import sys

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
USER_ERRORS = (ValueError, FileNotFoundError)


def raised_by_plugin(tb) -> bool:
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and os.path.abspath(last.tb_frame.f_code.co_filename).startswith(PACKAGE_DIR + os.sep)


def install() -> None:
    previous = sys.excepthook
    if getattr(previous, "_fairseq_switch", False):
        return

    def hook(exc_type, exc, tb):
        if (issubclass(exc_type, USER_ERRORS) and raised_by_plugin(tb)
                and os.environ.get("FAIRSEQ_SWITCH_TRACEBACK", "") in ("", "0")):
            print(f"fairseq-switch: error: {exc}\n(FAIRSEQ_SWITCH_TRACEBACK=1 shows where it was raised)",
                  file=sys.stderr)
            return
        previous(exc_type, exc, tb)

    hook._fairseq_switch = True
    sys.excepthook = hook
