from .. import compat

compat.apply()  # whoever uses the models gets the stack fixes they rely on (checkpoints, batching, ...)

from . import switch_transformer  # noqa: E402,F401  registers the model
from . import architectures  # noqa: E402,F401  registers t5_* / switch_* architectures
