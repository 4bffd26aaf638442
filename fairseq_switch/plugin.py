"""Registering the plugin with fairseq: its models, architectures, tasks and criterions, and the stack
fixes of `compat`. Registration is the only thing in the package that changes the process.

Who registers:
- fairseq's --user-dir import (`fairseq.utils.import_user_module`, called by fairseq-train, -generate,
  -interactive, -hydra-train and every spawned rank): the package's `__init__` sees that caller on the
  stack and calls `register()`. An import from anywhere else registers nothing and patches nothing.
- `register()` itself, for Python users and for the package's own commands that run fairseq in this
  process (convert, the lab's benchmarks, reports and teacher precomputation, the reference trainer).

Decision (it replaced an import hook on `sys.meta_path` and a patch of import_user_module): fairseq
skips a --user-dir package that is already imported, so a process that imported a module of the
package first (logs, evaluation, ...) and then runs fairseq in-process with --user-dir must call
`register()` itself; fairseq then fails on the unknown --arch/--task, not silently. The console
commands that do this call it; separate processes (fairseq-train as a subprocess) need nothing.
"""

import warnings


def register() -> None:
    """Check the fairseq version, apply the stack fixes and register the plugin's criterions, models
    (with their architectures) and tasks with fairseq. Idempotent."""
    # fairscale 0.4.13 decorates with the deprecated torch.cuda.amp.custom_fwd/bwd at import time: two
    # FutureWarnings per process (per rank) that say nothing about the user's run
    warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.custom_(fwd|bwd)", category=FutureWarning)
    from . import compat

    compat.apply()
    from . import criterions, models, tasks  # noqa: F401  (their imports register them)
