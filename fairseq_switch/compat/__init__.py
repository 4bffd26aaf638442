"""Fixes for the stack the plugin runs on (fairseq 0.12, torch 2.13), applied in one place.

`apply()` checks the fairseq version, then installs every patch of `registry.PATCHES` (their targets,
what they replace and why are listed there), keeping each original (`original(name)`). It is idempotent
and is called only when the plugin registers (`fairseq_switch.plugin.register`): importing `compat`, or
any other module of the package, installs nothing.
"""

import inspect
from typing import Any, Dict, Tuple

from ..cli_errors import UnsupportedStack
from .registry import PATCHES, Patch

SUPPORTED_FAIRSEQ = "0.12"  # major.minor the patches were written for
PINNED_FAIRSEQ = "fairseq-fixed==0.12.3.1"  # what scripts/install.sh installs

BY_NAME: Dict[str, Patch] = {p.name: p for p in PATCHES}
# name -> (original, replacement) of each installed patch in this process
_installed: Dict[str, Tuple[Any, Any]] = {}


def check_fairseq_version() -> None:
    """Refuse a fairseq the patches were not written for, in one line that names the fix."""
    import fairseq

    version = str(getattr(fairseq, "__version__", "unknown"))
    if version.split(".")[:2] == SUPPORTED_FAIRSEQ.split("."):
        return
    raise UnsupportedStack(
        f"fairseq {version} is installed, but fairseq-switch's fixes to fairseq were written for fairseq "
        f"{SUPPORTED_FAIRSEQ}.x: install the pinned stack with `bash scripts/install.sh` (or pip install --no-deps "
        f"{PINNED_FAIRSEQ})"
    )


def _install(patch: Patch) -> None:
    if patch.name in _installed:
        return
    original = patch.current()  # kept as found, so it can be inspected (and put back)
    replacement = patch.make(original)
    if inspect.isfunction(replacement):  # the functools.wraps convention: callers that need fairseq's own find it
        replacement.__wrapped__ = original
    if patch.assign:
        setattr(*patch.resolve(), replacement)
    _installed[patch.name] = (original, replacement)


def install(name: str) -> None:
    """Install one patch, without the version check (`apply` installs them all)."""
    _install(BY_NAME[name])


def apply() -> None:
    """Check the fairseq version, then install every patch not installed yet (idempotent)."""
    install("plugin_errors_as_one_line")  # first, so that a refused version prints as one line
    check_fairseq_version()
    for patch in PATCHES:
        _install(patch)


def installed(name: str) -> bool:
    return name in _installed


def original(name: str) -> Any:
    """What patch `name` replaced (it must be installed)."""
    if name not in _installed:
        raise KeyError(f"patch {name!r} is not installed (compat.apply() installs every patch)")
    return _installed[name][0]


def signature_of(target: Any, checked: str = "") -> str:
    """`target`'s parameters as registry entries write them: annotations left out."""
    if checked:
        target = inspect.getattr_static(target, checked)
    if isinstance(target, property):
        target = target.fget
    if isinstance(target, (staticmethod, classmethod)):
        target = target.__func__
    sig = inspect.signature(target)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def signature_matches(patch: Patch, target: Any) -> bool:
    """Does `target` (what `patch` replaces) have the signature the patch was written for?"""
    actual = signature_of(target, patch.checked)
    if patch.signature.endswith(", ...)"):
        return actual.startswith(patch.signature[: -len("...)")])
    return actual == patch.signature


__all__ = ["PATCHES", "Patch", "apply", "check_fairseq_version", "install", "installed", "original",
           "signature_matches", "signature_of", "UnsupportedStack"]
