"""Every shared knob's default, written once (the papers' and the released code's values).

Standard library only: the entry points build their argument parsers from these before importing
torch, so ``--help`` and argument errors answer at once. The classes that own each knob
(:class:`wwbl.box_rules.BoxRule`, :class:`wwbl.inference.captioner.CaptionSettings`,
:class:`wwbl.inference.proposals.ProposalGenerator`, :mod:`wwbl.inference.community`) read them here.
"""
from __future__ import annotations

# Heatmap → boxes (paper §4 / released generate_bbox; REFERENCE.md W§6.4).
BOX_MODES = ("paper", "reference")
BOX_RULES = ("wsg", "wsol")
WSG_THRESHOLD = 0.5
WSOL_THRESHOLD = 0.1
WSG_NMS_IOU = {"paper": 0.3, "reference": 0.05}

# Pointing game: how a flat-topped map's point is chosen ("centre": deepest in the largest flat top;
# "first": the first maximum in row-major order, the reference's np.argmax). See wwbl.metrics.argmax_points.
POINTING_TIES = ("centre", "first")

# Selective search (REFERENCE.md W§7 items 1–3).
SS_ENCODINGS = ("reference", "uint8_bgr")
SS_ENCODING = "reference"
MIN_PROPOSAL_AREA = 0.1  # proposals must cover more than this fraction of the frame (the reference's)

# BLIP captioning (W§7 item 5) and the crops it sees.
DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-base"
CAPTION_PROMPT = "a picture of "
NUM_BEAMS = 3
MIN_CAPTION_LENGTH = 5
MAX_CAPTION_LENGTH = 30
CAPTION_CHUNK = 120
REFERENCE_CROP_SIZE = 224  # the released code crops captioned regions from its 224² dataset image

# Community detection of caption embeddings (W§7 item 7).
CLUSTER_THRESHOLD = 0.85
MIN_CLUSTER_SIZE = 2

# Detection confidence (wwbl.inference.scoring): how CLIP sees a box, the default first.
SCORE_VIEWS = ("context", "crop")

# Heatmap sources, for help texts (tests check this list against the extractor registry).
HEATMAP_SOURCES = ("g", "gae", "gem", "clip_surgery", "clip_text_span", "adapting_clip", "vl_score", "gradcam",
                   "crop_and_rank", "random", "centre")

# Devices: "auto" picks cuda, then mps, then cpu; inference precision (torch.autocast dtype).
DEVICE = "auto"
PRECISIONS = ("fp32", "bf16", "fp16")

# Working resolution: an image whose longer side exceeds MAX_SIDE pixels is processed on a copy scaled
# down to it (aspect kept), and its boxes and heatmaps are mapped back to the original frame. No model
# sees more than this anyway: g and CLIP take 224² inputs, proposals are searched at 224², and BLIP's
# 384² crops are proposals of at least 10 % of the frame, already ≥ 384² in a 1600 × 1200 copy. So
# images up to 1600 px (every benchmark: COCO 640, Flickr30k 500, Visual Genome ≤ 1280) are
# unchanged, while a 12000 × 9000 photo no longer needs gigabytes per full-size intermediate.
MAX_SIDE = 1600
