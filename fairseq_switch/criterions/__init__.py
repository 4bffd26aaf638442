# Importing registers the criterions with fairseq; the stack fixes (the gradient norm, ...) come with
# registration (`plugin.register`).
from . import switch_cross_entropy  # noqa: F401  registers the criterion
from . import switch_distillation  # noqa: F401
