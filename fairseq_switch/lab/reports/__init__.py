"""Reports and analyses of training runs: read logs, checkpoints and generations, write tables and plots.

The scripts in scripts/ are thin command lines over these modules (each has a `main(argv) -> int`).
Modules that only read logs (scaling, distillation, multilingual, upstream_downstream, generations)
import neither torch nor fairseq; the ones that build or load models import them inside functions.
"""
