from . import switch_transformer  # noqa: F401  registers the model
from . import architectures  # noqa: F401  registers t5_* / switch_* architectures
