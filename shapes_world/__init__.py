"""The shapes world: a procedural offline benchmark where every stage of WWbL runs for real.

- :mod:`shapes_world.generator` — deterministic scenes (``ShapesWorld(WorldConfig()).scene(split, i)``)
- :mod:`shapes_world.captions` — object phrases, COCO-style captions, Flickr30k-Entities sentences
- :mod:`shapes_world.writers` — the datasets in COCO 2014 / Flickr30k Entities layouts, sample scenes
- :mod:`shapes_world.train_clip` — stage (a): a small open_clip ViT, contrastive pretraining
- :mod:`shapes_world.train_blip` — stage (b): a small BLIP captioner for region crops
- stage (c), network g: ``python train.py --config configs/shapes/g.yaml``
- :mod:`shapes_world.history` — g's training record and val curve
- :mod:`shapes_world.report` — the benchmark report (CLI); its parts in ``report_settings``,
  ``report_runs`` (evaluations), ``report_ablation``, ``report_diagnostics``, ``report_claims``,
  ``report_provenance`` and ``report_markdown``
- :mod:`shapes_world.score_auc` — ROC AUC of the detection confidence vs the box rule's score

It sits beside the ``wwbl`` library, not inside its wheel: it imports ``wwbl``, never the reverse.
Run its commands from the repository root (``python -m shapes_world.report``).
"""
from shapes_world.generator import ShapesWorld, WorldConfig

__all__ = ["ShapesWorld", "WorldConfig"]
