"""fairseq-switch: Switch Transformers as a fairseq user-dir plugin.

    fairseq-train --user-dir fairseq_switch --arch switch_tiny --criterion switch_cross_entropy ...

Imported by fairseq's --user-dir (fairseq-train, fairseq-generate, fairseq-hydra-train, ...), the
package registers the plugin: its models, architectures, tasks and criterions, and the stack fixes of
`compat` (see `plugin`). Imported any other way, it and its modules change nothing global: no fairseq
function replaced, no excepthook, no warnings filter, no import hook, no process group. Call
`fairseq_switch.plugin.register()` (idempotent) to register explicitly, e.g. before running fairseq
in a process that imported the package first (fairseq then skips the --user-dir).
"""

import sys


def _imported_by_fairseq_user_dir() -> bool:
    """Is fairseq's --user-dir import (fairseq.utils.import_user_module) importing this package?"""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "import_user_module" and frame.f_globals.get("__name__") == "fairseq.utils":
            return True
        frame = frame.f_back
    return False


if _imported_by_fairseq_user_dir():
    from .plugin import register

    register()
