# Importing registers the tasks with fairseq; the stack fixes come with registration (`plugin.register`).
from . import multilingual_span_corruption, span_corruption, text_to_text  # noqa: F401  registers the tasks
