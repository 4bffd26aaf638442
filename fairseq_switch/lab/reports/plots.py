"""matplotlib for the reports: headless, and every figure saved the same way."""

from pathlib import Path
from types import ModuleType
from typing import Any


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend: reports run on machines without a display. Imported on
    first use, so that reading logs does not pay for matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> Path:
    """Lay out, write as a 120 dpi PNG and close `fig` (a matplotlib Figure); returns `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path
