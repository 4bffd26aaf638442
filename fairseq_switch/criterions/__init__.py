from .. import compat

compat.apply()  # whoever uses the criterions gets the stack fixes they rely on (the gradient norm, ...)

from . import switch_cross_entropy  # noqa: E402,F401  registers the criterion
from . import switch_distillation  # noqa: E402,F401
