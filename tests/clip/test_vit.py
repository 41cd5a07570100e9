"""The parameter-level ViT forward (`ViTInternals`) against open_clip's own on tiny models."""
import json

import torch

from wwbl.clip import FrozenCLIP, register_model_configs
from wwbl.clip.adapter import MODEL_CONFIG_DIR
from wwbl.extractors.clip_text_span import cls_decomposition


def test_functional_vit_equals_open_clip(tiny_clip):
    x = tiny_clip.prepare(torch.rand(3, 3, 40, 90))
    ours = tiny_clip.vit.forward(x)
    theirs = tiny_clip.model.encode_image(x)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_functional_vit_applies_layer_scale(tmp_path):
    # The tiny model has no layer scale (ls_1/ls_2 are identities); one with random gammas checks
    # that the accessors apply it, in the forward and in the ClipTextSpan decomposition.
    config = json.loads((MODEL_CONFIG_DIR / "wwbl-tiny-vit.json").read_text())
    config["vision_cfg"]["ls_init_value"] = 0.5
    (tmp_path / "wwbl-test-layer-scale.json").write_text(json.dumps(config))
    register_model_configs(tmp_path / "wwbl-test-layer-scale.json")
    torch.manual_seed(0)
    clip = FrozenCLIP("wwbl-test-layer-scale", pretrained="random")
    gammas = [p for name, p in clip.model.visual.named_parameters() if name.endswith("gamma")]
    assert len(gammas) == 4  # ls_1 and ls_2 of both blocks
    with torch.no_grad():
        for gamma in gammas:
            gamma.uniform_(0.2, 2.0, generator=torch.Generator().manual_seed(gamma.numel()))
        x = clip.prepare(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)))
        theirs = clip.model.encode_image(x)
        parts = cls_decomposition(clip.vit, x)
    assert torch.allclose(clip.vit.forward(x), theirs, atol=1e-5)
    assert torch.allclose(parts.tokens.sum(dim=1) + parts.rest, theirs, atol=1e-4)


def test_functional_vit_notices_a_changed_block(tiny_clip):
    # The equality above must depend on every block: a one-block run differs.
    x = tiny_clip.prepare(torch.rand(2, 3, 64, 64))
    vit = tiny_clip.vit
    partial = vit.head(vit.run_blocks(vit.tokens_in(x), 0, vit.num_layers - 1))
    assert not torch.allclose(partial, tiny_clip.model.encode_image(x), atol=1e-3)


def test_attention_probabilities_match_torch_mha(tiny_clip):
    vit = tiny_clip.vit
    tokens = vit.tokens_in(tiny_clip.prepare(torch.rand(2, 3, 64, 64)))
    block = tiny_clip.model.visual.transformer.resblocks[0]
    normed = block.ln_1(tokens)
    _, probs = vit.attention(0, normed)
    _, torch_probs = block.attn(normed, normed, normed, need_weights=True, average_attn_weights=False)
    assert torch.allclose(probs, torch_probs, atol=1e-5)
    assert torch.allclose(probs.sum(-1), torch.ones_like(probs.sum(-1)), atol=1e-5)
