"""fairseq-switch: Switch Transformers as a fairseq user-dir plugin.

`fairseq-train --user-dir fairseq_switch --arch switch_tiny --criterion switch_cross_entropy ...`
"""

import warnings

# fairscale 0.4.13 decorates with the deprecated torch.cuda.amp.custom_fwd/bwd at import time: two
# FutureWarnings per process (per rank) that say nothing about the user's run
warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.custom_(fwd|bwd)", category=FutureWarning)

from . import fairseq_compat  # noqa: E402

fairseq_compat.apply()

from . import criterions, models, tasks  # noqa: E402,F401  (registers models, architectures, criterion, tasks)
