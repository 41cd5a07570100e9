"""Only `wwbl/clip/` may read open_clip internals (so that an open_clip upgrade touches one package)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Attribute names of open_clip's CLIP, its towers and blocks (ViT, ModifiedResNet, text transformer).
OPEN_CLIP_INTERNALS = frozenset({
    "visual", "transformer", "resblocks", "token_embedding", "positional_embedding", "class_embedding",
    "text_projection", "ln_pre", "ln_post", "ln_final", "proj", "conv1", "attnpool", "attn_pool", "_embeds",
    "attn", "in_proj_weight", "in_proj_bias", "out_proj", "ln_1", "ln_2", "ls_1", "ls_2", "mlp", "c_fc", "c_proj",
    "v_proj", "layer1", "layer2", "layer3", "layer4",
})
# (file, name) pairs that are not open_clip internals, with the reason.
ALLOWED = {
    # torchvision's ResNet (g's and the U-Net's encoder), not open_clip's
    ("wwbl/networks/backbones.py", "conv1"), ("wwbl/networks/backbones.py", "layer1"),
    ("wwbl/networks/backbones.py", "layer2"), ("wwbl/networks/backbones.py", "layer3"),
    ("wwbl/networks/backbones.py", "layer4"),
}


def open_clip_reads(source: str) -> list[str]:
    """Attribute reads in `source` that reach into open_clip: an internal's name, or `clip.model`
    (the open_clip model inside a FrozenCLIP, bound to a name or attribute called `clip`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        if node.attr in OPEN_CLIP_INTERNALS:
            found.append(node.attr)
        owner = node.value
        owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
        if node.attr == "model" and owner_name == "clip":
            found.append("clip.model")
    return found


def test_the_scan_finds_internals_and_passes_accessors():
    reads = open_clip_reads("w = self.clip.model.visual.transformer.resblocks[0].attn.in_proj_weight\n"
                            "f = clip.model.encode_text(t)\nb.ls_1(x)\n")
    assert sorted(reads) == sorted(["clip.model", "visual", "transformer", "resblocks", "attn", "in_proj_weight",
                                    "clip.model", "ls_1"])
    accessors = ("x = vit.attn_scale(i, vit.attn_proj(i, vit.qkv(i, vit.attn_norm(i, t))[2]))\n"
                 "n, p = vit.final_norm, vit.projection\nf = clip.resnet.last_stage_features(x)\n"
                 "e = clip.encode_text_full_context(['']); name = clip.model_name; m = self.model\n")
    assert open_clip_reads(accessors) == []


def test_no_module_outside_wwbl_clip_reads_open_clip_internals():
    files = [p for p in sorted((ROOT / "wwbl").rglob("*.py")) if "clip" != p.relative_to(ROOT / "wwbl").parts[0]]
    files += [ROOT / "train.py", ROOT / "infer.py"]
    assert len(files) > 50  # the scan sees the library, not an empty folder
    offending = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        offending += [f"{rel}: .{name}" for name in open_clip_reads(path.read_text(encoding="utf-8"))
                      if (rel, name) not in ALLOWED]
    assert not offending, "open_clip internals outside wwbl/clip/ (add an accessor there):\n" + "\n".join(offending)
