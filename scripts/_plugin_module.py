"""Load one fairseq_switch module by path, for light command-line tools.

Importing the package imports torch and fairseq (it registers the model): seconds that log and
text post-processing do not need. Only modules that import nothing from the package qualify.
"""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_plugin_module(name: str):
    """fairseq_switch/<name>.py as a standalone module."""
    spec = importlib.util.spec_from_file_location(f"fairseq_switch_{name}", ROOT / "fairseq_switch" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
