"""Where the lab finds its folders and fairseq's commands, in a checkout or with the package installed.

The project folder holds data/ (the bundled corpora), data-raw/, data-bin/, runs/ and config/: it is
$FAIRSEQ_SWITCH_HOME when set, else the current folder. An installed package has no checkout around
it, so nothing is looked up next to the package's own files: run the lab from a checkout, point the
variable at one, or give the folders as options.
"""

import os
import sys
from pathlib import Path
from typing import List

HOME_ENV = "FAIRSEQ_SWITCH_HOME"
PROJECT_DIR = Path(os.environ.get(HOME_ENV, ""))  # "" is the current folder, resolved when a path is used
PLUGIN_DIR = Path(__file__).resolve().parents[1]  # the fairseq_switch package: fairseq's --user-dir


def missing_bundled(path: Path, option: str) -> str:
    """The one-line error for a bundled file or folder that is not where the default expects it."""
    where = path.parent if path.is_absolute() else Path.cwd()
    return (f"{path} not found in {where} (the lab finds the checkout's files from the current folder or "
            f"${HOME_ENV}): run from a fairseq-switch checkout, set {HOME_ENV} to one, or give {option}")


def fairseq_command(name: str) -> List[str]:
    """fairseq's console command `name` (fairseq-train, ...): next to this interpreter, else its module
    (a venv that reuses another's packages has no such script)."""
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "fairseq_cli." + name.split("-", 1)[1].replace("-", "_")]
