"""fairseq-switch: Switch Transformers as a fairseq user-dir plugin.

`fairseq-train --user-dir fairseq_switch --arch switch_tiny --criterion switch_cross_entropy ...`
"""

from .checkpoint_compat import allow_fairseq_checkpoints

allow_fairseq_checkpoints()

from . import criterions, models  # noqa: E402,F401  (registers the model, architectures and criterion)
