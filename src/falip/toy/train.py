"""Train the embedded toy CLIP from scratch on generated scenes: seeded, CPU, minutes.

The result is a `transformers` `CLIPModel` directory (weights, config, tokenizer, preprocessing)
that `falip.load` reads like any Hugging Face checkpoint. It is a model organism for this project's
demo, tests and benchmarks, trained on coloured shapes only: not OpenAI's CLIP, and it knows
nothing about the real world.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..datasets.scene_world import (
    ATTRIBUTE_VALUES,
    COLOURS,
    SHAPES,
    SIZES,
    TEXTURES,
    Scene,
    SceneObject,
    layout,
    make_scene,
    render,
)
from ..inputs.preprocess import OPENAI_MEAN, OPENAI_STD

SPECIALS = ("<|startoftext|>", "<|endoftext|>")


@dataclass
class TrainConfig:
    """The toy CLIP's training recipe and architecture (`falip train-toy`); fields commented where not plain.

    `steps` optimiser steps of `batch` images (`batch // 2` contrast pairs), AdamW at peak `lr` after
    `warmup` linear steps, then cosine decay; `image_size` and `patch` in pixels; `width` /
    `text_width` channels, `layers` / `text_layers` blocks, `heads` / `text_heads` heads; `context`
    text tokens; `threads` CPU threads."""

    steps: int = 780
    batch: int = 96
    lr: float = 1e-3
    warmup: int = 40
    weight_decay: float = 0.05
    image_size: int = 128
    patch: int = 16
    width: int = 128
    layers: int = 12
    heads: int = 4
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    context: int = 48
    object_counts: tuple[float, ...] = (0.35, 0.25, 0.2, 0.2)  # probability of 1, 2, 3, 4 objects
    shape_rate: float = 0.65  # contrast twins differ in shape this often, else in texture
    presence_weight: float = 1.0  # auxiliary loss: which attribute values the image holds (0: off)
    object_weight: float = (
        1.0  # auxiliary loss: each object's attributes from the patch tokens in its box (0: off)
    )
    seed: int = 0
    minutes: float = 30.0  # stop early, at a whole step, once this much wall-clock time has passed
    threads: int = 2
    device: str = "cpu"  # "cuda" trains the same recipe far longer in the same minutes
    workers: int = 1  # data-loader processes rendering scenes


def vocabulary_corpus() -> list[str]:
    """Every word the scene world's captions and expressions use, for the tokenizer."""
    words = [
        *SHAPES,
        *COLOURS,
        *SIZES,
        *TEXTURES,
        "a",
        "the",
        "photo",
        "of",
        "and",
        "on",
        "at",
        "left",
        "right",
        "top",
        "bottom",
        "is",
        "in",
        "color",
        "colour",
        "there",
    ]
    return [" ".join(words)] * 4 + words


def build_tokenizer(context: int):
    """A byte-level BPE CLIP tokenizer trained on the world's vocabulary (whole words end up as tokens)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    base = CLIPTokenizer(vocab={SPECIALS[0]: 0, SPECIALS[1]: 1}, merges=[])
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = base.backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        min_frequency=1,
        special_tokens=list(SPECIALS),
        end_of_word_suffix="</w>",
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(vocabulary_corpus(), trainer)
    data = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in data["merges"]]
    # The trainer numbers the end-of-word symbols in hash-map order, different on every run
    # (huggingface/tokenizers#1794): renumber every token in a fixed order so a seeded run repeats.
    ordered = sorted(
        data["vocab"], key=lambda t: (t not in SPECIALS, SPECIALS.index(t) if t in SPECIALS else 0, len(t), t)
    )
    hf = CLIPTokenizer(vocab={t: i for i, t in enumerate(ordered)}, merges=merges, model_max_length=context)
    return hf


def build_model(cfg: TrainConfig, tokenizer):
    """An untrained `transformers` `CLIPModel` of `cfg`'s sizes, weights seeded by `cfg.seed`; its text
    tower sized to `tokenizer` (vocabulary, start / end-of-text ids, padding with end-of-text) and
    `cfg.context` positions; `projection_dim` = `cfg.width`."""
    from transformers import CLIPConfig, CLIPModel

    eos, bos = tokenizer.convert_tokens_to_ids(SPECIALS[1]), tokenizer.convert_tokens_to_ids(SPECIALS[0])
    config = CLIPConfig(
        text_config=dict(
            hidden_size=cfg.text_width,
            intermediate_size=4 * cfg.text_width,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            vocab_size=len(tokenizer),
            max_position_embeddings=cfg.context,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=cfg.width,
            intermediate_size=4 * cfg.width,
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch,
        ),
        projection_dim=cfg.width,
    )
    torch.manual_seed(cfg.seed)
    return CLIPModel(config)


def normalise(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> the model's input, as `Preprocessing.pixels` makes it for a same-size image."""
    x = torch.from_numpy(images).float().div_(255.0)
    x = (x - torch.tensor(OPENAI_MEAN)) / torch.tensor(OPENAI_STD)
    return x.permute(0, 3, 1, 2).contiguous()


def contrast_pair(
    split: str, index: int, objects: list[SceneObject], size: int, rng: np.random.Generator, shape_rate: float
) -> tuple[Scene, Scene, tuple[int, str]]:
    """A scene of these objects and a twin that differs in one object's shape or texture, both drawn
    on the same background: a hard negative that colour alone cannot tell apart."""
    target = int(rng.integers(len(objects)))
    obj = objects[target]
    if rng.random() < shape_rate:
        attribute, value = (
            "shape",
            SHAPES[(SHAPES.index(obj.shape) + 1 + int(rng.integers(len(SHAPES) - 1))) % len(SHAPES)],
        )
    else:
        attribute, value = "texture", TEXTURES[1 - TEXTURES.index(obj.texture)]
    changed = list(objects)
    changed[target] = replace(obj, **{attribute: value})
    background = int(rng.integers(2**63))
    first = Scene(render(objects, size, np.random.default_rng(background)), objects, split, index)
    second = Scene(render(changed, size, np.random.default_rng(background)), changed, split, index)
    return first, second, (target, attribute)


VALUES = [value for values in ATTRIBUTE_VALUES.values() for value in values]


def presence(scene: Scene) -> np.ndarray:
    """Multi-hot over `VALUES`: which shapes, colours, sizes and textures the scene's objects have."""
    held = {getattr(o, a) for o in scene.objects for a in ATTRIBUTE_VALUES}
    return np.array([v in held for v in VALUES], np.float32)


def object_targets(scene: Scene, grid: int, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of the first `slots` objects: the patch tokens of its box (cells whose centre lies
    inside it, or else the cell of its centre), as a (slots, grid * grid) 0/1 map, and the index of
    its value of each attribute of `ATTRIBUTE_VALUES` (slots, attributes); empty slots: no cells, -100."""
    cells = np.zeros((slots, grid, grid), np.float32)
    labels = np.full((slots, len(ATTRIBUTE_VALUES)), -100, np.int64)
    step = scene.size / grid
    centres = (np.arange(grid) + 0.5) * step
    for k, obj in enumerate(scene.objects[:slots]):
        x, y, w, h = obj.box
        inside = np.outer((centres >= y) & (centres <= y + h), (centres >= x) & (centres <= x + w))
        if not inside.any():
            cx, cy = obj.centre
            inside[min(int(cy // step), grid - 1), min(int(cx // step), grid - 1)] = True
        cells[k] = inside
        labels[k] = [values.index(getattr(obj, a)) for a, values in ATTRIBUTE_VALUES.items()]
    return cells.reshape(slots, grid * grid), labels


def object_loss(
    head: torch.nn.Linear, tokens: torch.Tensor, cells: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy of each object's attributes, predicted by `head` from the mean of the
    projected patch `tokens` (B, T, D) inside its box (`object_targets`)."""
    pooled = cells @ tokens / cells.sum(-1, keepdim=True).clamp(min=1)
    logits = head(pooled).split([len(v) for v in ATTRIBUTE_VALUES.values()], dim=-1)
    return torch.stack(
        [
            torch.nn.functional.cross_entropy(part.flatten(0, 1), labels[..., a].flatten(), ignore_index=-100)
            for a, part in enumerate(logits)
        ]
    ).mean()


class SceneBatches(torch.utils.data.IterableDataset):
    """Batch `step` holds train scenes `step * batch // 2 ...`, each with its contrast twin
    (`contrast_pair`) and one caption each, worded alike but for the changed word, and each image's
    `presence` and `object_targets`: fully seeded."""

    def __init__(self, cfg: TrainConfig, tokenizer, start: int = 0):
        """`cfg`: the recipe; `tokenizer`: from `build_tokenizer`; `start`: the first step (a resumed run)."""
        self.cfg, self.tokenizer, self.start = cfg, tokenizer, start

    def batch(self, step: int) -> tuple[torch.Tensor, ...]:
        """Batch number `step`, a pure function of (`cfg.seed`, `step`).

        Returns (pixels (2P, 3, S, S) normalised as `normalise` does, token ids (2P, context),
        presence (2P, len(VALUES)), object cells (2P, K, g * g), object labels (2P, K, attributes)),
        P = batch // 2 contrast pairs, S = image_size, g = S // patch, K = len(object_counts)."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        pairs = cfg.batch // 2
        counts = rng.choice(len(cfg.object_counts), size=pairs, p=cfg.object_counts) + 1
        images, captions, targets, cells, labels = [], [], [], [], []
        for i, n in enumerate(counts):
            index = step * pairs + i
            objects = layout("train", index, cfg.image_size, int(n))
            first, second, must = contrast_pair("train", index, objects, cfg.image_size, rng, cfg.shape_rate)
            words = int(rng.integers(2**63))
            for member in (first, second):
                images.append(member.image)
                targets.append(presence(member))
                captions.append(member.caption(np.random.default_rng(words), must=must))
                where, what = object_targets(member, cfg.image_size // cfg.patch, len(cfg.object_counts))
                cells.append(where)
                labels.append(what)
        ids = self.tokenizer(
            captions, padding="max_length", truncation=True, max_length=cfg.context, return_tensors="pt"
        )["input_ids"]
        return (
            normalise(np.stack(images)),
            ids,
            torch.from_numpy(np.stack(targets)),
            torch.from_numpy(np.stack(cells)),
            torch.from_numpy(np.stack(labels)),
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        """Batches `start` .. `steps - 1`, in order."""
        for step in range(self.start, self.cfg.steps):
            yield self.batch(step)


def train(cfg: TrainConfig, out_dir: str | Path, log: Callable[[str], None] = print) -> dict:
    """Train and save to `out_dir` (a `save_pretrained` directory); returns what was done."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    torch.set_num_threads(cfg.threads)
    tokenizer = build_tokenizer(cfg.context)
    model = build_model(cfg, tokenizer).to(cfg.device).train()
    # Linear heads on the image embedding and on the projected patch tokens, trained with the model
    # and then dropped: the checkpoint is a plain CLIPModel.
    presence_head = torch.nn.Linear(cfg.width, len(VALUES)).to(cfg.device)
    object_head = torch.nn.Linear(cfg.width, len(VALUES)).to(cfg.device)
    named = [
        *model.named_parameters(),
        *presence_head.named_parameters(prefix="presence_head"),
        *object_head.named_parameters(prefix="object_head"),
    ]
    decay = [p for n, p in named if p.dim() >= 2 and "embedding" not in n]
    rest = [p for n, p in named if not (p.dim() >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))

    loader = torch.utils.data.DataLoader(
        SceneBatches(cfg, tokenizer),
        batch_size=None,
        num_workers=cfg.workers,
        prefetch_factor=2 if cfg.workers else None,
    )
    start, losses, presence_losses, object_losses, step = time.time(), [], [], [], 0
    bar = tqdm(loader, total=cfg.steps, desc="training", disable=None)
    for step, (pixels, ids, targets, cells, labels) in enumerate(bar):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        out = model(input_ids=ids.to(cfg.device), pixel_values=pixels.to(cfg.device), return_loss=True)
        vision = out.vision_model_output
        logits = presence_head(model.visual_projection(vision.pooler_output))
        presence_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.to(cfg.device))
        tokens = model.visual_projection(model.vision_model.post_layernorm(vision.last_hidden_state[:, 1:]))
        objects_loss = object_loss(object_head, tokens, cells.to(cfg.device), labels.to(cfg.device))
        loss = out.loss + cfg.presence_weight * presence_loss + cfg.object_weight * objects_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(out.loss.item())
        presence_losses.append(presence_loss.item())
        object_losses.append(objects_loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if step % 50 == 0:
            log(
                f"step {step} loss {np.mean(losses[-20:]):.3f} presence {np.mean(presence_losses[-20:]):.3f} "
                f"objects {np.mean(object_losses[-20:]):.3f} lr {lr_at(step):.2e} {time.time() - start:.0f}s"
            )
        if time.time() - start > cfg.minutes * 60:
            log(f"time limit reached after step {step}")
            break
    bar.close()
    model.cpu().eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(
        json.dumps(
            {"image_mean": list(OPENAI_MEAN), "image_std": list(OPENAI_STD), "size": cfg.image_size}, indent=1
        )
    )
    summary = {
        "config": asdict(cfg),
        "steps_done": step + 1,
        "seconds": round(time.time() - start, 1),
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "final_presence_loss": round(float(np.mean(presence_losses[-20:])), 4),
        "final_object_loss": round(float(np.mean(object_losses[-20:])), 4),
        "torch": torch.__version__,
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=1))
    return summary


def shape_pilot(
    steps: int = 120,
    batch: int = 96,
    image_size: int = 128,
    patch: int = 16,
    width: int = 128,
    layers: int = 12,
    lr: float = 1e-3,
    test_scenes: int = 300,
    seed: int = 0,
    lattice: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Can the toy's ViT learn shape at all in a CPU budget? Train the same image tower with a
    linear shape head, supervised (a far stronger signal than contrastive captions), on
    single-object train scenes, and score shape on held-out test scenes (chance 1 / 5).
    `lattice=False` places the objects anywhere, as the world did before it had a lattice."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=max(1, width // 32),
        image_size=image_size,
        patch_size=patch,
    )
    tower, head = CLIPVisionModel(config), torch.nn.Linear(width, len(SHAPES))
    opt = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=lr, weight_decay=0.05)

    def scenes(split: str, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        made = [make_scene(split, start + i, image_size, objects=1, lattice=lattice) for i in range(count)]
        return normalise(np.stack([s.image for s in made])), torch.tensor(
            [SHAPES.index(s.objects[0].shape) for s in made]
        )

    start, losses = time.time(), []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / steps))
        pixels, labels = scenes("train", seed * 10**7 + step * batch, batch)
        loss = torch.nn.functional.cross_entropy(head(tower(pixel_values=pixels).pooler_output), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 25 == 0:
            log(f"step {step} loss {np.mean(losses[-10:]):.3f} {time.time() - start:.0f}s")
    tower.eval()
    with torch.no_grad():
        pixels, labels = scenes("test", 0, test_scenes)
        accuracy = (head(tower(pixel_values=pixels).pooler_output).argmax(1) == labels).float().mean().item()
    return {
        "steps": steps,
        "images_seen": steps * batch,
        "final_loss": round(float(np.mean(losses[-10:])), 4),
        "chance_loss": round(math.log(len(SHAPES)), 4),
        "test_shape_accuracy": round(accuracy, 4),
        "lattice": lattice,
        "seconds": round(time.time() - start, 1),
    }
