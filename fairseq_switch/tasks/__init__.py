from . import multilingual_span_corruption, span_corruption, text_to_text  # noqa: F401  registers the tasks
