from .sentinels import NUM_SENTINELS, sentinel_indices, sentinel_symbol, sentinel_symbols  # noqa: F401
from .span_corruption import (  # noqa: F401
    SpanCorruptionDataset,
    corrupt_spans,
    example_lengths,
    random_spans_noise_mask,
    raw_length_for_input,
    span_layout,
)
