"""`falip.load` for Hugging Face directories and OpenAI-format files, and its errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import falip
from conftest import close, hub_cache, image_array, make_hf_dir, openai_state_dict, run_with_hub_unreachable
from falip.backbones import ClipBackbone

IMAGE = image_array(48, 40)


def rel(a, b):
    return ((a - b).norm(dim=-1) / b.norm(dim=-1)).max().item()


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_hf_directory_equals_transformers(tmp_path, act):
    from transformers import CLIPModel

    path = make_hf_dir(tmp_path / "m", act=act)
    model = falip.load(path)
    hf = CLIPModel.from_pretrained(path).eval()
    pixels = model.pixels(IMAGE)
    with torch.no_grad():
        expected = hf.get_image_features(pixel_values=pixels)
        expected = getattr(expected, "pooler_output", expected)
    assert rel(model.encode_image(pixels), expected) <= 1e-5
    assert rel(model.encode_regions(IMAGE, [[0, 0, 20, 20], [10, 5, 30, 30]], alpha=0.0), expected) <= 1e-5
    focused = model.encode_regions(IMAGE, [[0, 0, 20, 20]], alpha=2.0)
    assert rel(focused, expected) > 1e-3

    ids = model.tokenize(["a red ball", "the man on the left"])
    assert ids[0, 0] == 512 and (ids[0] == 513).any()
    with torch.no_grad():
        text = hf.get_text_features(input_ids=ids)  # causal: the padding after the end token changes nothing
        text = getattr(text, "pooler_output", text)
    assert rel(model.encode_text(["a red ball", "the man on the left"]), text) <= 1e-5
    assert model.backbone.logit_scale.item() == pytest.approx(hf.logit_scale.item())


def test_score_is_logit_scale_times_cosine(hf_dir):
    model = falip.load(hf_dir)
    boxes = [[0, 0, 20, 20], [10, 5, 30, 30]]
    logits = model.score(IMAGE, boxes, ["a", "bb", "ccc"])
    r = torch.nn.functional.normalize(model.encode_regions(IMAGE, boxes), dim=-1)
    t = torch.nn.functional.normalize(model.encode_text(["a", "bb", "ccc"]), dim=-1)
    assert logits.shape == (2, 3)
    assert close(logits, model.backbone.logit_scale.exp() * r @ t.T, rel=1e-4)


def test_preprocessing_is_chosen_at_load(hf_dir):
    squash, crop = falip.load(hf_dir), falip.load(hf_dir, preprocess="crop")
    assert not torch.allclose(squash.pixels(IMAGE), crop.pixels(IMAGE))
    assert rel(crop.encode_regions(IMAGE, [[10, 0, 20, 20]], alpha=0.0), crop.encode_image(IMAGE)) <= 1e-5


@pytest.fixture
def tiny_openai(tiny_backbone):
    return openai_state_dict(tiny_backbone)


def check_same_as(backbone: ClipBackbone, model: falip.FalipModel):
    pixels = torch.randn(2, 3, 32, 32)
    assert close(model.encode_image(pixels), backbone.visual(pixels), rel=1e-5)
    ids = torch.randint(1, 500, (2, 16))
    assert close(model.encode_text(ids), backbone.text(ids), rel=1e-5)


def test_openai_safetensors_and_state_dict_pt(tmp_path, tiny_backbone, tiny_openai):
    save_file({k: v.half() for k, v in tiny_openai.items()}, tmp_path / "clip.safetensors")
    model = falip.load(tmp_path / "clip.safetensors")
    assert (model.backbone.cfg.vision.heads, model.backbone.cfg.vision.layers) == (
        1,
        6,
    )  # width // 64, as OpenAI
    reference = ClipBackbone(model.backbone.cfg)  # one head per 64 channels, weights as stored (fp16)
    reference.load_state_dict({k: v.half().float() for k, v in tiny_backbone.state_dict().items()})
    check_same_as(reference.eval(), model)

    torch.save({**tiny_openai, "input_resolution": torch.tensor(32)}, tmp_path / "clip.pt")
    pt = falip.load(tmp_path / "clip.pt")
    assert pt.backbone.cfg == model.backbone.cfg
    reference.load_state_dict(tiny_backbone.state_dict())
    check_same_as(reference.eval(), pt)


class _OpenAILayout(torch.nn.Module):
    """Holds a backbone's modules under OpenAI's attribute names, for a TorchScript archive."""

    def __init__(self, backbone: ClipBackbone):
        super().__init__()
        self.visual = backbone.visual
        for name in ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection"):
            setattr(self, name, getattr(backbone.text, name))
        self.logit_scale = backbone.logit_scale

    def forward(self, x):
        return self.visual.conv1(x)


def test_openai_torchscript_archive(tmp_path, tiny_backbone):
    traced = torch.jit.trace(_OpenAILayout(tiny_backbone), torch.randn(1, 3, 32, 32))
    traced.save(str(tmp_path / "ViT-tiny.pt"))
    model = falip.load(tmp_path / "ViT-tiny.pt")
    assert model.backbone.cfg.vision.image_size == 32 and model.backbone.cfg.vision.patch_size == 8
    for key, value in openai_state_dict(tiny_backbone).items():
        internal = key if key.startswith("visual.") or key == "logit_scale" else "text." + key
        assert torch.equal(model.backbone.state_dict()[internal], value), key


def test_tokenizer_is_required_only_for_strings(tmp_path, tiny_openai):
    save_file(tiny_openai, tmp_path / "clip.safetensors")
    model = falip.load(tmp_path / "clip.safetensors")
    assert model.encode_text(torch.randint(1, 500, (1, 16))).shape == (1, 16)
    with pytest.raises(falip.FalipError, match="no tokenizer"):
        model.encode_text(["a cat"])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.pt", "not found"),
        (lambda p: p / "nested" / "dir" / "model", "not found"),
        (
            lambda p: (p / "junk.pt").write_bytes(os.urandom(256)) and p / "junk.pt",
            "not a PyTorch checkpoint",
        ),
        (
            lambda p: (
                (p / "junk.safetensors").write_bytes(b"\x10\x00" + os.urandom(64)) and p / "junk.safetensors"
            ),
            "corrupt",
        ),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no CLIP checkpoint"),
        (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "no CLIP checkpoint"),
    ],
)
def test_bad_inputs_fail_with_one_clear_line(tmp_path, make, message):
    with pytest.raises(falip.FalipError, match=message) as info:
        falip.load(make(tmp_path))
    assert "\n" not in str(info.value)


def test_resnet_and_truncated_checkpoints_are_named(tmp_path, tiny_openai):
    save_file(
        {"visual.layer1.0.conv1.weight": torch.zeros(4, 4, 1, 1), "text_projection": torch.zeros(4, 4)},
        tmp_path / "rn.safetensors",
    )
    with pytest.raises(falip.FalipError, match="ResNet"):
        falip.load(tmp_path / "rn.safetensors")
    partial = {k: v for k, v in tiny_openai.items() if "resblocks.3.mlp" not in k}
    save_file(partial, tmp_path / "partial.safetensors")
    with pytest.raises(falip.FalipError, match="missing"):
        falip.load(tmp_path / "partial.safetensors")


def test_hf_weights_are_read_without_clipmodel_and_sharded_ones_through_it(tmp_path, hf_dir):
    """A folder's single `model.safetensors` is read straight into the backbone (no `CLIPModel`: its
    import cost every command ~1.7 s); sharded weights go through `CLIPModel.from_pretrained`. Both equal."""
    from transformers import CLIPModel

    code = (
        "import sys, falip\nfalip.load(sys.argv[1]).encode_text(['a cat'])\n"
        "print('transformers.models.clip.modeling_clip' in sys.modules)"
    )
    imported = subprocess.run(
        [sys.executable, "-c", code, str(hf_dir)], capture_output=True, text=True, timeout=300
    )
    assert imported.stdout.split() == ["False"], imported.stderr

    sharded = tmp_path / "sharded"
    CLIPModel.from_pretrained(hf_dir).save_pretrained(sharded, max_shard_size="100KB")
    for file in hf_dir.iterdir():  # the tokenizer and preprocessing files
        if not file.name.startswith("model"):
            (sharded / file.name).write_bytes(file.read_bytes())
    assert not (sharded / "model.safetensors").exists()
    assert (sharded / "model.safetensors.index.json").is_file()
    direct, through = falip.load(hf_dir), falip.load(sharded)
    for key, value in direct.backbone.state_dict().items():
        assert torch.equal(through.backbone.state_dict()[key], value), key


def test_hf_directory_of_another_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(falip.FalipError, match="not a CLIP"):
        falip.load(tmp_path)


def test_hf_directory_with_corrupt_weights(tmp_path, hf_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_bytes((hf_dir / "config.json").read_bytes())
    (bad / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(falip.FalipError, match="weights"):
        falip.load(bad)


def test_hub_id_offline_fails_clearly(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    code = (
        "import falip\ntry:\n    falip.load('openai/clip-vit-base-patch16')\n"
        "except falip.FalipError as e:\n    print('ERR', e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert (
        "ERR 'openai/clip-vit-base-patch16' is not a local path, not in the Hugging Face cache" in out.stdout
    ), out.stderr


def test_a_cached_hub_id_loads_offline_and_an_uncached_one_fails_without_retries(tmp_path):
    env = hub_cache(tmp_path, "someone/tiny-clip", make_hf_dir)
    out = run_with_hub_unreachable(
        env,
        "m = falip.load('someone/tiny-clip')\nprint('LOADED', m.encode_text(['a cat']).shape[1])\n"
        "try:\n    falip.load('someone/missing-clip')\nexcept falip.FalipError as e:\n    print('ERR', e)",
    )
    assert "LOADED 16" in out.stdout, out.stderr
    assert (
        "ERR 'someone/missing-clip' is not a local path, not in the Hugging Face cache, and the hub cannot "
        "be reached" in out.stdout
    ), out.stderr


def test_dtype_and_device_are_validated(hf_dir):
    with pytest.raises(falip.FalipError, match="dtype"):
        falip.load(hf_dir, dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(falip.FalipError, match="CUDA"):
            falip.load(hf_dir, device="cuda")
    half = falip.load(hf_dir, dtype="bfloat16")
    assert half.encode_regions(IMAGE, [[0, 0, 20, 20]]).dtype == torch.bfloat16


def test_layers_and_forms_are_validated(hf_dir):
    model = falip.load(hf_dir)
    with pytest.raises(falip.FalipError, match="layer 6 does not exist"):
        model.encode_regions(IMAGE, [[0, 0, 20, 20]], layers=[6])
    with pytest.raises(falip.FalipError, match="form"):
        model.encode_regions(IMAGE, [[0, 0, 20, 20]], form="x")
    single = model.encode_regions(IMAGE, [0, 0, 20, 20])
    assert single.shape == (1, 16)
    assert np.allclose(single, model.encode_regions(IMAGE, [[0, 0, 20, 20]]))
