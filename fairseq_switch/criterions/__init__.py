from . import switch_cross_entropy  # noqa: F401
from . import switch_distillation  # noqa: F401
