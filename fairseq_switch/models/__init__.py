# Importing registers the model and its architectures with fairseq's registries; the stack fixes the
# models rely on in training (checkpoints, batching, ...) come with registration (`plugin.register`).
from . import switch_transformer  # noqa: F401  registers the model
from . import architectures  # noqa: F401  registers t5_* / switch_* architectures
