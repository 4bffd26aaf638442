from . import span_corruption  # noqa: F401  registers the span_corruption task
