"""Shared fixtures: tiny CLIPs in every supported checkpoint format, and the `../shared` data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from falip.backbones import ClipBackbone, ClipConfig, TextConfig, VisionConfig
from falip.backbones.tokenizer import byte_symbols

SHARED = Path(os.environ.get("FALIP_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
REFERENCE = SHARED / "reference" / "authors-falip"


def tiny_config(layers: int = 6, act: str = "quick_gelu") -> ClipConfig:
    vision = VisionConfig(
        width=64, layers=layers, heads=4, patch_size=8, image_size=32, mlp_dim=128, output_dim=16, act=act
    )
    text = TextConfig(
        width=32, layers=2, heads=2, context_length=16, vocab_size=520, mlp_dim=64, output_dim=16, act=act
    )
    return ClipConfig(vision, text)


@pytest.fixture
def tiny_backbone() -> ClipBackbone:
    """A 6-layer random CLIP ViT (4x4 tokens) with attention sharp enough that masks matter."""
    return ClipBackbone(tiny_config()).init_random(seed=0, std=0.2).eval()


@pytest.fixture(scope="session")
def reference():
    """The authors' FALIP vectors in `../shared`; skips when that folder is absent."""
    if not (REFERENCE / "reference.npz").is_file():
        pytest.skip(f"authors' reference vectors not found at {REFERENCE} (../shared is absent)")
    data = dict(np.load(REFERENCE / "reference.npz"))
    meta = json.loads((REFERENCE / "reference.json").read_text())
    return {"dir": REFERENCE, "meta": meta, **data}


def byte_vocab() -> dict[str, int]:
    """A merge-free CLIP vocabulary: the 512 byte symbols plus start and end (ids 512, 513)."""
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def make_hf_dir(path: Path, act: str = "quick_gelu", seed: int = 0, layers: int = 6) -> Path:
    """A tiny random `CLIPModel` with its tokenizer, written with `save_pretrained`."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    torch.manual_seed(seed)
    text = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        vocab_size=520,
        max_position_embeddings=16,
        hidden_act=act,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    vision = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        hidden_act=act,
    )
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    model = CLIPModel(config).eval()
    with torch.no_grad():  # sharper attention than the default init, so the foveal bias has an effect
        for name, param in model.named_parameters():
            if "self_attn" in name and name.endswith("weight"):
                param.mul_(8.0)
    model.save_pretrained(path)
    CLIPTokenizer(vocab=byte_vocab(), merges=[]).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory) -> Path:
    return make_hf_dir(tmp_path_factory.mktemp("hf") / "tiny-clip")


def openai_state_dict(backbone: ClipBackbone) -> dict[str, torch.Tensor]:
    """The backbone's weights under OpenAI CLIP's key names (text tower at the top level)."""
    return {k.removeprefix("text."): v.clone() for k, v in backbone.state_dict().items()}


def image_array(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def hub_cache(root: Path, repo: str, write) -> dict:
    """A Hugging Face cache under `root` holding `repo` (its files written by `write(snapshot_folder)`);
    returns the environment that points the hub client at it."""
    folder = root / "hf" / "hub" / f"models--{repo.replace('/', '--')}"
    write(folder / "snapshots" / ("0" * 40))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HOME": str(root / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    return env


def run_with_hub_unreachable(env: dict, code: str):
    """Run Python `code` in a fresh process that sees the hub as unreachable (as with no network)."""
    import subprocess
    import sys

    prelude = "import falip\nfrom falip.backbones import hf\nhf.hub_reachable = lambda timeout=3.0: False\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env, timeout=300
    )


def close(actual, expected, rel: float = 1e-5) -> bool:
    """Whether two arrays or tensors (broadcast as `torch.allclose` does) agree to within `rel` times the
    size of the values: the largest magnitude in either. The tolerance scales with the numbers compared,
    so another machine's BLAS, which orders its sums differently, still passes; and unlike an element-wise
    `rtol` it does not shrink to nothing where one element happens to be near 0 while the sums that made it
    were of order 1."""

    def as_array(value):
        return np.asarray(
            value.detach().cpu().double() if torch.is_tensor(value) else value, dtype=np.float64
        )

    a, e = np.broadcast_arrays(as_array(actual), as_array(expected))
    scale = max(np.abs(a).max(initial=0.0), np.abs(e).max(initial=0.0))
    return bool(np.all(np.abs(a - e) <= rel * scale))
