"""open_clip checkpoints (their own config decides heads and activation), and other input sizes."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import falip
from conftest import close, hub_cache, openai_state_dict, run_with_hub_unreachable, tiny_config
from falip.backbones import ClipBackbone
from falip.errors import FalipError


def open_clip_folder(
    folder, *, quick_gelu: bool, head_width: int = 32, name_flag: bool = True, extra_vision=None, seed=0
):
    """A tiny open_clip checkpoint: open_clip_config.json and OpenAI-named safetensors weights."""
    folder.mkdir(parents=True, exist_ok=True)
    backbone = ClipBackbone(tiny_config()).init_random(seed=seed, std=0.2)
    state = openai_state_dict(backbone)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "open_clip_model.safetensors")
    vision = {
        "image_size": 32,
        "patch_size": 8,
        "width": 64,
        "layers": 6,
        "head_width": head_width,
        "mlp_ratio": 2.0,
        **(extra_vision or {}),
    }
    text = {"context_length": 16, "vocab_size": 520, "width": 32, "heads": 2, "layers": 2, "mlp_ratio": 2.0}
    model_cfg = {"embed_dim": 16, "vision_cfg": vision, "text_cfg": text}
    if name_flag:
        model_cfg["quick_gelu"] = quick_gelu
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "resize_mode": "squash"},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return folder, state


def reference_image(state, pixels, heads, quick):
    """The ViT written out with PyTorch's own multi-head attention, independent of falip's tower."""
    act = (lambda x: x * torch.sigmoid(1.702 * x)) if quick else F.gelu
    w = state["visual.conv1.weight"]
    width, patch = w.shape[0], w.shape[-1]
    x = F.conv2d(pixels, w, stride=patch).flatten(2).transpose(1, 2)
    x = (
        torch.cat([state["visual.class_embedding"].expand(len(x), 1, -1), x], 1)
        + state["visual.positional_embedding"]
    )
    ln = lambda t, key: F.layer_norm(t, (width,), state[f"{key}.weight"], state[f"{key}.bias"])  # noqa: E731
    x = ln(x, "visual.ln_pre")
    for layer in range(6):
        p = f"visual.transformer.resblocks.{layer}."
        y = ln(x, p + "ln_1").transpose(0, 1)
        attn, _ = F.multi_head_attention_forward(
            y,
            y,
            y,
            width,
            heads,
            state[p + "attn.in_proj_weight"],
            state[p + "attn.in_proj_bias"],
            None,
            None,
            False,
            0.0,
            state[p + "attn.out_proj.weight"],
            state[p + "attn.out_proj.bias"],
            need_weights=False,
        )
        x = x + attn.transpose(0, 1)
        y = ln(x, p + "ln_2")
        x = (
            x
            + act(y @ state[p + "mlp.c_fc.weight"].T + state[p + "mlp.c_fc.bias"])
            @ state[p + "mlp.c_proj.weight"].T
            + state[p + "mlp.c_proj.bias"]
        )
    return ln(x[:, 0], "visual.ln_post") @ state["visual.proj"]


@pytest.mark.parametrize("quick, head_width", [(False, 32), (True, 64), (False, 16)])
def test_an_open_clip_folder_equals_a_reference_forward(tmp_path, quick, head_width):
    folder, state = open_clip_folder(tmp_path / "ckpt", quick_gelu=quick, head_width=head_width)
    model = falip.load(folder)
    assert model.backbone.cfg.vision.heads == 64 // head_width
    assert model.backbone.cfg.vision.act == ("quick_gelu" if quick else "gelu")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours = model.encode_image(pixels)
    with torch.no_grad():
        reference = reference_image(state, pixels, 64 // head_width, quick)
    assert ((ours - reference).norm() / reference.norm()).item() < 1e-5
    with torch.no_grad():
        wrong = reference_image(
            state, pixels, 1, not quick
        )  # read as an OpenAI file would be: heads 64 // 64, other activation
    assert ((ours - wrong).norm() / wrong.norm()).item() > 1e-3
    assert model.preprocessing.mean == (0.5, 0.5, 0.5) and model.preprocessing.std == (0.25, 0.25, 0.25)
    assert falip.load(folder, preprocess="checkpoint").preprocessing.mode == "squash"


def test_the_quickgelu_name_marks_quickgelu(tmp_path):
    folder, _ = open_clip_folder(tmp_path / "ViT-T-8-quickgelu", quick_gelu=False, name_flag=False)
    assert falip.load(folder).backbone.cfg.vision.act == "quick_gelu"
    plain, _ = open_clip_folder(tmp_path / "ViT-T-8", quick_gelu=False, name_flag=False)
    assert falip.load(plain).backbone.cfg.vision.act == "gelu"


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"global_average_pool": True}, "average pooling"),
        ({"timm_model_name": "vit_base_patch16_224"}, "a timm image tower"),
        ({"attentional_pool": True}, "an attentional pooler"),
        ({"ls_init_value": 1e-5}, "layer scale"),
        ({"pool_type": "avg"}, "pool_type 'avg'"),
    ],
)
def test_unsupported_open_clip_towers_are_named(tmp_path, extra, message):
    folder, _ = open_clip_folder(tmp_path / "ckpt", quick_gelu=False, extra_vision=extra)
    with pytest.raises(FalipError, match=message):
        falip.load(folder)


def test_an_open_clip_hub_id_loads_from_the_cache_offline(tmp_path):
    env = hub_cache(
        tmp_path, "someone/tiny-open-clip", lambda folder: open_clip_folder(folder, quick_gelu=True)
    )
    out = run_with_hub_unreachable(
        env,
        "m = falip.load('hf-hub:someone/tiny-open-clip')\n"
        "print('LOADED', m.backbone.cfg.vision.heads, m.backbone.cfg.vision.act)\n"
        "try:\n    falip.load('hf-hub:someone/absent')\nexcept falip.FalipError as e:\n    print('ERR', e)",
    )
    assert "LOADED 2 quick_gelu" in out.stdout, out.stderr
    assert (
        "ERR hf-hub:someone/absent: open_clip_config.json is not in the Hugging Face cache" in out.stdout
    ), out.stderr


def test_another_input_size_interpolates_the_positions_and_the_grid_follows(hf_dir):
    same = falip.load(hf_dir, image_size=32)
    base = falip.load(hf_dir)
    image = np.random.default_rng(0).integers(0, 255, size=(48, 48, 3), dtype=np.uint8)
    assert close(same.encode_image(image), base.encode_image(image))
    big = falip.load(hf_dir, image_size=48)  # patch 8: a 6 x 6 grid instead of 4 x 4
    vision = big.backbone.cfg.vision
    assert (vision.grid, vision.num_tokens, big.preprocessing.size) == (6, 37, 48)
    assert big.backbone.visual.positional_embedding.shape == (37, 64)
    assert torch.equal(
        big.backbone.visual.positional_embedding[0], base.backbone.visual.positional_embedding[0]
    )
    row = big.region_rows((48, 48), [[25, 0, 23, 48]])[0, 1:].reshape(
        6, 6
    )  # the right half of the image (off the token edge)
    assert (row[:, 3:] > 0).all() and not (row[:, :3] > 0).any()
    feats = big.encode_regions(image, [[24, 0, 24, 48]], alpha=2.0)
    assert feats.shape == (1, 16) and not close(feats, big.encode_image(image), rel=1e-3)
    with pytest.raises(FalipError, match="not a multiple of the patch size"):
        falip.load(hf_dir, image_size=50)


def test_a_b16_shaped_model_runs_at_336_pixels_on_a_21_by_21_grid(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=520,
        max_position_embeddings=16,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    vision = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=224,
        patch_size=16,
    )
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(
        tmp_path / "b16"
    )
    model = falip.load(tmp_path / "b16", image_size=336)
    assert (
        model.backbone.cfg.vision.grid,
        model.backbone.cfg.vision.num_tokens,
        model.preprocessing.size,
    ) == (21, 442, 336)
    image = np.random.default_rng(0).integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
    box = [320, 240, 320, 240]  # the bottom-right quarter
    row = model.region_rows((640, 480), [box])[0, 1:].reshape(21, 21)
    rows, cols = torch.nonzero(row > 0, as_tuple=True)
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (10, 20, 10, 20)
    assert model.encode_regions(image, [box]).shape == (1, 16)
