"""Registering the plugin with fairseq: its models, architectures, tasks and criterions, and the stack
fixes of `compat`.

fairseq registers a user dir by importing it (`fairseq.utils.import_user_module`, which fairseq-train,
fairseq-generate, fairseq-hydra-train and friends call for --user-dir, with fairseq already imported),
so importing `fairseq_switch` registers when fairseq is already imported. A process may import an
analysis module of the package first (evaluation, logs, ...), without fairseq; fairseq then finds
`fairseq_switch` already imported and only logs "has already been imported". For that case importing
the package without fairseq leaves `register_on_user_dir`'s import hook: once fairseq is imported, its
import_user_module registers the plugin when it is given this package's folder.
"""

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Callable, Optional, Sequence




def register() -> None:
    """Check the fairseq version, apply the stack fixes and register the plugin's criterions, models
    (with their architectures) and tasks with fairseq. Idempotent."""
    from . import compat

    compat.apply()
    from . import criterions, models, tasks  # noqa: F401  (their imports register them)


class _AfterImport(importlib.abc.Loader):
    """Runs a module's own loader, then `after(module)`."""

    def __init__(self, loader: importlib.abc.Loader, after: Callable[[ModuleType], None]) -> None:
        self.loader, self.after = loader, after

    def __getattr__(self, name: str):  # get_source, is_package, get_resource_reader, ...
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # the module keeps its own loader
        self.loader.exec_module(module)
        self.after(module)


class _WhenFairseqIsImported(importlib.abc.MetaPathFinder):
    """Import hook: once `fairseq` is imported, install the `user_dir_registers` patch (then it leaves)."""

    def __init__(self) -> None:
        self._finding = False

    def find_spec(self, name: str, path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None) -> Optional[importlib.machinery.ModuleSpec]:
        if name != "fairseq" or self._finding:
            return None
        self._finding = True
        try:  # the finder that would have found fairseq
            spec = next((s for s in (f.find_spec(name, path, target) for f in list(sys.meta_path)
                                     if f is not self and hasattr(f, "find_spec")) if s is not None), None)
        finally:
            self._finding = False
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        # a spec asked for and not loaded (importlib.util.find_spec) leaves the hook in place
        spec.loader = _AfterImport(spec.loader, self._imported)
        return spec

    def _imported(self, fairseq: ModuleType) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        from . import compat

        compat.install("user_dir_registers")


def register_on_user_dir() -> None:
    """Make a later `--user-dir fairseq_switch` register the plugin (for a package imported before fairseq)."""
    if "fairseq" in sys.modules:
        from . import compat

        compat.install("user_dir_registers")
    elif not any(isinstance(f, _WhenFairseqIsImported) for f in sys.meta_path):
        sys.meta_path.insert(0, _WhenFairseqIsImported())
