"""Default folders of the corpora: the repository's data/ (committed) and data-raw/ (git-ignored)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
DATA_DIR = REPO_ROOT / "data"
DATA_RAW_DIR = REPO_ROOT / "data-raw"
MOBY_DICK_TEXT = DATA_DIR / "moby_dick" / "moby_dick.txt"  # the bundled demo corpus, one paragraph per line


def display_path(path: Path) -> str:
    """`path` relative to the repository when it lies inside it, else as given."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
