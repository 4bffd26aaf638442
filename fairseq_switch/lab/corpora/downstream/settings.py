"""The downstream sets: their task, output folders and the settings of the bundled sets."""

from ..paths import DATA_DIR, DATA_RAW_DIR

DEFAULT_OUT_ROOT = DATA_DIR / "downstream"
DEFAULT_CACHE_DIR = DATA_RAW_DIR / "downstream"
SPLITS = ("train", "valid", "test")

# Settings of the bundled sets (``--source all``); docs/finetuning.md quotes them.
BUNDLE = {
    "debian": dict(train=3000, valid=200, test=200, min_words=25, max_words=60),
    "bbc-topic": dict(train=1200, valid=150, test=150, max_words=32),
    "spam": dict(train=1200, valid=150, test=150, max_words=32),
    "bbc-headline": dict(train=1200, valid=150, test=150, min_words=20, max_words=100),
}
DEFAULTS = {  # per-source defaults for a single --source run
    "debian": dict(train=None, valid=200, test=200, min_words=25, max_words=80),
    "bbc-topic": dict(train=None, valid=150, test=150, min_words=None, max_words=100),
    "spam": dict(train=None, valid=150, test=150, min_words=None, max_words=100),
    "bbc-headline": dict(train=None, valid=150, test=150, min_words=20, max_words=120),
}
STRATIFY = {"bbc-topic": True, "spam": True, "debian": False, "bbc-headline": False}
TASK = {"debian": "summarization", "bbc-headline": "summarization",
        "bbc-topic": "classification", "spam": "classification"}
