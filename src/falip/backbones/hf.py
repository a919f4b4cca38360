"""Hugging Face `CLIPModel` checkpoints: hub ids or local `save_pretrained` directories.

Weights, config and tokenizer come through `transformers`, so hub caching and offline mode behave
as everywhere else in that ecosystem; the weights are then renamed into `ClipBackbone`'s layout.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..errors import FalipError, first_line
from .base import LoadedCheckpoint, build_backbone
from .clip import ClipBackbone, ClipConfig, TextConfig, VisionConfig
from .tokenizer import ClipTokenizer

_RENAMES = [
    (r"^vision_model\.embeddings\.class_embedding$", "visual.class_embedding"),
    (r"^vision_model\.embeddings\.patch_embedding\.weight$", "visual.conv1.weight"),
    (r"^vision_model\.embeddings\.position_embedding\.weight$", "visual.positional_embedding"),
    (r"^vision_model\.pre_layrnorm\.", "visual.ln_pre."),
    (r"^vision_model\.post_layernorm\.", "visual.ln_post."),
    (r"^vision_model\.encoder\.layers\.", "visual.transformer.resblocks."),
    (r"^text_model\.embeddings\.token_embedding\.", "text.token_embedding."),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "text.positional_embedding"),
    (r"^text_model\.encoder\.layers\.", "text.transformer.resblocks."),
    (r"^text_model\.final_layer_norm\.", "text.ln_final."),
    (r"\.layer_norm1\.", ".ln_1."),
    (r"\.layer_norm2\.", ".ln_2."),
    (r"\.mlp\.fc1\.", ".mlp.c_fc."),
    (r"\.mlp\.fc2\.", ".mlp.c_proj."),
    (r"\.self_attn\.out_proj\.", ".attn.out_proj."),
]
_QKV = re.compile(r"^(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$")


def can_load(spec: str) -> bool:
    """A local directory with `config.json`, or anything that is not a local path (a hub id)."""
    path = Path(spec)
    return (path / "config.json").is_file() if path.exists() else True


def config_from_hf(config) -> ClipConfig:
    """A `transformers` `CLIPConfig` -> `ClipConfig`: both towers' sizes, `hidden_act` and LN epsilons.

    Text pooling follows transformers' `CLIPTextTransformer`: an `eos_token_id` of None or 2 (configs
    written before 2023) pools at the highest token id (OpenAI's argmax rule), any other id at that token."""
    v, t = config.vision_config, config.text_config
    eos = getattr(t, "eos_token_id", None)
    vision = VisionConfig(
        width=v.hidden_size,
        layers=v.num_hidden_layers,
        heads=v.num_attention_heads,
        patch_size=v.patch_size,
        image_size=v.image_size,
        mlp_dim=v.intermediate_size,
        output_dim=config.projection_dim,
        act=v.hidden_act,
        ln_eps=v.layer_norm_eps,
    )
    text = TextConfig(
        width=t.hidden_size,
        layers=t.num_hidden_layers,
        heads=t.num_attention_heads,
        context_length=t.max_position_embeddings,
        vocab_size=t.vocab_size,
        mlp_dim=t.intermediate_size,
        output_dim=config.projection_dim,
        act=t.hidden_act,
        ln_eps=t.layer_norm_eps,
        eos_token_id=None if eos in (None, 2) else eos,  # 2: pre-2023 configs, pooled by argmax
    )
    return ClipConfig(vision, text)


def state_from_hf(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename `CLIPModel` tensors into `ClipBackbone` keys; q/k/v are fused into `in_proj`."""
    out, qkv = {}, {}
    for key, value in hf_state.items():
        if key.endswith("position_ids"):
            continue
        match = _QKV.match(key)
        if match:
            qkv.setdefault((match.group(1), match.group(3)), {})[match.group(2)] = value
            continue
        if key == "visual_projection.weight":
            out["visual.proj"] = value.t()
        elif key == "text_projection.weight":
            out["text.text_projection"] = value.t()
        else:
            for pattern, repl in _RENAMES:
                key = re.sub(pattern, repl, key)
            out[key] = value
    for (prefix, kind), parts in qkv.items():
        for pattern, repl in _RENAMES:
            prefix = re.sub(pattern, repl, prefix)
        out[f"{prefix}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def _image_stats(spec: str, local_only: bool = False):
    """Mean and std from `preprocessor_config.json`, when the checkpoint has one."""
    from transformers.utils import cached_file

    try:
        path = cached_file(
            spec,
            "preprocessor_config.json",
            _raise_exceptions_for_missing_entries=False,
            local_files_only=local_only,
        )
    except Exception:  # absent, offline, or a repo without it: OpenAI's statistics apply
        return None, None
    if not path:
        return None, None
    data = json.loads(Path(path).read_text())
    mean, std = data.get("image_mean"), data.get("image_std")
    return (tuple(mean) if mean else None), (tuple(std) if std else None)


_REACHABLE: dict[str, bool] = {}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within `timeout` s (asked once per process).
    Off when HF_HUB_OFFLINE is set."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    if url.geturl() not in _REACHABLE:
        import socket

        try:
            socket.create_connection(
                (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout
            ).close()
            _REACHABLE[url.geturl()] = True
        except OSError:
            _REACHABLE[url.geturl()] = False
    return _REACHABLE[url.geturl()]


def _offline_only(spec: str) -> bool:
    """True when a hub id must be read from the cache alone; a clear error when it is not there
    either (instead of transformers' retries, half a minute with no network)."""
    if Path(spec).is_dir() or hub_reachable():
        return False
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(spec, "config.json")
    except Exception:  # not a valid repo id
        cached = None
    if not isinstance(cached, str):
        raise FalipError(
            f"{spec!r} is not a local path, not in the Hugging Face cache, and the hub cannot be reached "
            "(no network?): give a local checkpoint folder or file"
        )
    return True


def _backbone_from_safetensors(spec: str, cfg: ClipConfig) -> ClipBackbone | None:
    """The backbone read straight from the checkpoint's single `model.safetensors` (what `save_pretrained`
    writes), in a local folder or the Hugging Face cache, without building transformers' `CLIPModel`:
    importing its modelling code alone takes about 1.7 s, which every `falip` command paid on start (the
    embedded toy model is such a folder). The same tensors, renamed by `state_from_hf` (tested equal to
    the `CLIPModel` route). None where there is no such file (sharded or `.bin` weights, a hub id not yet
    downloaded) or its tensors do not fit `cfg` under the current names: `CLIPModel.from_pretrained` then
    reads them, with transformers' conversions and its own errors."""
    from safetensors.torch import load_file

    if Path(spec).is_dir():
        path = Path(spec) / "model.safetensors"
        path = str(path) if path.is_file() else None
    else:
        from huggingface_hub import try_to_load_from_cache

        try:
            path = try_to_load_from_cache(spec, "model.safetensors")
        except Exception:  # not a valid repo id
            path = None
    if not isinstance(path, str):
        return None
    try:
        return build_backbone(cfg, state_from_hf(load_file(path)), spec)
    except Exception:  # unreadable, or names from another transformers version
        return None


def load(spec: str) -> LoadedCheckpoint:
    """Load a Hugging Face checkpoint: a hub id or a local `save_pretrained` folder.

    A `CLIPModel` becomes a `ClipBackbone` (weights renamed by `state_from_hf`), with its tokenizer and
    `preprocessor_config.json` statistics when the checkpoint has them; a `SiglipModel` goes to falip's
    SigLIP model. With no network, a hub id is read from the local cache only. Raises FalipError for a
    config or weights that cannot be read, a SigLIP 2 NaFlex model, any other model type, a hub id that
    is neither cached nor reachable, or weights that do not match the config (`build_backbone`)."""
    from transformers import AutoConfig, AutoTokenizer

    local_only = _offline_only(spec)
    try:
        hf_config = AutoConfig.from_pretrained(spec, local_files_only=local_only)
    except Exception as exc:  # OSError when offline or missing, ValueError for unknown model types
        raise FalipError(
            f"cannot load {spec!r} as a Hugging Face CLIP checkpoint: {first_line(exc)}"
        ) from None
    if hf_config.model_type == "siglip":
        return _load_siglip(spec, hf_config, local_only)
    if hf_config.model_type == "siglip2":
        raise FalipError(
            f"{spec!r} is a SigLIP 2 NaFlex (variable-resolution) model, which falip does not support; "
            "its fixed-resolution checkpoints load as SigLIP"
        )
    if hf_config.model_type != "clip":
        raise FalipError(
            f"{spec!r} is a {hf_config.model_type!r} model, not a CLIP (`CLIPModel`) or SigLIP checkpoint"
        )
    cfg = config_from_hf(hf_config)
    model = _backbone_from_safetensors(spec, cfg)
    if model is None:
        from transformers import CLIPModel
        from transformers.utils import logging as hf_logging

        quiet = Path(spec).is_dir() and hf_logging.is_progress_bar_enabled()  # no bar for a local folder
        if quiet:
            hf_logging.disable_progress_bar()
        try:
            hf_model = CLIPModel.from_pretrained(
                spec, config=hf_config, dtype=torch.float32, local_files_only=local_only
            )
        except Exception as exc:  # corrupt or missing weight files
            raise FalipError(f"cannot read the weights of {spec!r}: {first_line(exc)}") from None
        finally:
            if quiet:
                hf_logging.enable_progress_bar()
        model = build_backbone(cfg, state_from_hf(hf_model.state_dict()), spec)
    try:
        tok = ClipTokenizer(
            AutoTokenizer.from_pretrained(spec, local_files_only=local_only), cfg.text.context_length
        )
    except Exception:  # a checkpoint saved without tokenizer files: text needs `tokenizer=`
        tok = None
    if tok is not None and not tok.tells_apart():
        tok = None  # transformers hands back an empty vocabulary for a folder without tokenizer files
    mean, std = _image_stats(spec, local_only)
    return LoadedCheckpoint(model=model, tokenizer=tok, name=spec, mean=mean, std=std)


def _load_siglip(spec: str, hf_config, local_only: bool) -> LoadedCheckpoint:
    """A `SiglipModel` checkpoint: its weights into falip's explicit SigLIP, its own tokenizer
    (padding to the full length, as SigLIP was trained) and image statistics."""
    from transformers import AutoTokenizer, SiglipModel

    from . import siglip

    try:
        hf_model = SiglipModel.from_pretrained(
            spec, config=hf_config, dtype=torch.float32, local_files_only=local_only
        )
    except Exception as exc:  # corrupt or missing weight files
        raise FalipError(f"cannot read the weights of {spec!r}: {first_line(exc)}") from None
    model = siglip.build(hf_config, hf_model.state_dict(), spec)
    problem = None
    try:
        hf_tok = AutoTokenizer.from_pretrained(spec, local_files_only=local_only)
        tok = ClipTokenizer(hf_tok, model.cfg.text.context_length, pad_id=hf_tok.pad_token_id or 0)
    except Exception as exc:  # no tokenizer files, or the packages SigLIP's needs are missing
        tok, problem = None, exc
    if tok is not None and not tok.tells_apart():
        tok = None
    note = _siglip_tokenizer_note(spec, local_only, problem) if tok is None else None
    mean, std = _image_stats(spec, local_only)
    return LoadedCheckpoint(
        model=model, tokenizer=tok, name=spec, mean=mean, std=std, resize_mode="squash", tokenizer_note=note
    )


SIGLIP_TOKENIZER_PACKAGES = {"sentencepiece": "sentencepiece", "google.protobuf": "protobuf"}


def _missing(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a parent package missing, or a module set to None
        return True


def _siglip_tokenizer_note(spec: str, local_only: bool, problem: Exception | None) -> str | None:
    """Why a SigLIP checkpoint has no tokenizer, for `FalipModel.tokenize`'s message: its SentencePiece
    model (`spiece.model`) needs the sentencepiece package (and transformers asks for protobuf to read
    it); transformers may then fail, or hand back a tokenizer with an empty vocabulary."""
    missing = [pip for module, pip in SIGLIP_TOKENIZER_PACKAGES.items() if _missing(module)]
    if Path(spec).is_dir():
        has_spiece = (Path(spec) / "spiece.model").is_file()
    else:
        from huggingface_hub import try_to_load_from_cache

        try:
            has_spiece = isinstance(try_to_load_from_cache(spec, "spiece.model"), str)
        except Exception:  # not a valid repo id
            has_spiece = False
    said = str(problem or "").lower()
    if missing and (has_spiece or "sentencepiece" in said or "protobuf" in said):
        return (
            f"its tokenizer (a SentencePiece model, spiece.model) needs the {' and '.join(missing)} "
            f"package{'s' if len(missing) > 1 else ''}, not installed here: pip install {' '.join(missing)} "
            '(falip\'s SigLIP extra, `pip install -e ".[siglip]"`, brings them)'
        )
    if problem is not None:
        return f"its tokenizer files could not be read ({first_line(problem)})"
    return None
