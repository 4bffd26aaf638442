from . import span_corruption, text_to_text  # noqa: F401  registers the span_corruption and text_to_text tasks
