from . import switch_cross_entropy  # noqa: F401
