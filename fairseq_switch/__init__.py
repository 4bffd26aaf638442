"""fairseq-switch: Switch Transformers as a fairseq user-dir plugin.

    fairseq-train --user-dir fairseq_switch --arch switch_tiny --criterion switch_cross_entropy ...

When importing the package registers the plugin with fairseq (its models, architectures, tasks and
criterions, and the stack fixes of `compat`; see `plugin`):
- fairseq already imported (always so when fairseq imports a --user-dir: fairseq-train, fairseq-generate,
  fairseq-hydra-train): on import;
- `import fairseq_switch.models` / `.tasks` / `.criterions`: the fixes are applied, and what the module
  defines is registered;
- otherwise nothing is imported: the analysis, report, evaluation and data-preparation modules
  (evaluation, probe_selection, logs, file_io, data.corpus, reports.*) load without fairseq and without
  patches. Call `fairseq_switch.plugin.register()` (idempotent) to register explicitly; a later
  `--user-dir fairseq_switch` in the same process registers too.
"""

import sys
import warnings

# fairscale 0.4.13 decorates with the deprecated torch.cuda.amp.custom_fwd/bwd at import time: two
# FutureWarnings per process (per rank) that say nothing about the user's run
warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.custom_(fwd|bwd)", category=FutureWarning)

if "fairseq" in sys.modules:
    from .plugin import register

    register()
else:
    from .plugin import register_on_user_dir

    register_on_user_dir()
