from .. import compat

compat.apply()  # whoever uses the tasks gets the stack fixes they rely on (checkpoints, batching, ...)

from . import multilingual_span_corruption, span_corruption, text_to_text  # noqa: E402,F401  registers the tasks
