"""fairseq-switch: Switch Transformers as a fairseq user-dir plugin.

`fairseq-train --user-dir fairseq_switch --arch switch_tiny --criterion switch_cross_entropy ...`
"""

from . import fairseq_compat

fairseq_compat.apply()

from . import criterions, models  # noqa: E402,F401  (registers the model, architectures and criterion)
