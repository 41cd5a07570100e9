"""Heatmap extractors behind one interface (`HeatmapExtractor.heatmaps`) and a registry by name.

Importing this package registers every extractor: `build_extractor("gem", clip)`,
`available_extractors()`.
"""
from wwbl.extractors import (  # noqa: F401  (imported for their registrations)
    adapting_clip,
    baselines,
    clip_surgery,
    clip_text_span,
    crop_and_rank,
    gae,
    gem,
    gradcam,
    network_g,
    vl_score,
)
from wwbl.extractors.base import HeatmapExtractor, available_extractors, build_extractor, register_extractor

__all__ = ["HeatmapExtractor", "available_extractors", "build_extractor", "register_extractor"]
