"""fairseq-switch: Switch Transformers as a fairseq user-dir plugin.

`fairseq-train --user-dir fairseq_switch --arch switch_tiny --criterion switch_cross_entropy ...`
"""

from . import fairseq_compat

fairseq_compat.apply()

from . import criterions, models, tasks  # noqa: E402,F401  (registers models, architectures, criterion, tasks)
