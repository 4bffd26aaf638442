"""Default folders of the corpora: data/ (committed) and data-raw/ (git-ignored) in the project folder
($FAIRSEQ_SWITCH_HOME, else the current folder: see fairseq_switch/lab/project.py)."""

from pathlib import Path

from ..project import PROJECT_DIR

__all__ = ["DATA_DIR", "DATA_RAW_DIR", "MOBY_DICK_TEXT", "PROJECT_DIR", "display_path"]

DATA_DIR = PROJECT_DIR / "data"
DATA_RAW_DIR = PROJECT_DIR / "data-raw"
MOBY_DICK_TEXT = DATA_DIR / "moby_dick" / "moby_dick.txt"  # the bundled demo corpus, one paragraph per line


def display_path(path: Path) -> str:
    """`path` relative to the project folder when it lies inside it, else as given."""
    try:
        return str(path.resolve().relative_to(PROJECT_DIR.resolve()))
    except ValueError:
        return str(path)
