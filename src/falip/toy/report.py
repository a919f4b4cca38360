"""The measured numbers of a scene-world CLIP: held-out naming, and FALIP against plain CLIP on
referring expressions and region classification, at the defaults and tuned on validation scenes.
One run writes `metrics.json` and the model card's table; docs/TOY_MODEL.md carries the same table
(tests/test_toy_model.py checks that all three agree)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from .evaluate import (
    REC_GROUPS,
    Accuracy,
    Evaluator,
    Setting,
    Split,
    attention_in_boxes,
    rec_chance,
    tune_regions,
    tuning_grid,
)

# Small fixed subsets that a test re-measures on the shipped model and compares with the card.
CHECK_SINGLES, CHECK_MULTIS = 200, 60
ATTENTION_SCENES = 100


def check_numbers(model) -> dict[str, float]:
    """Naming and default-FALIP numbers on the first test scenes: fast enough for a unit test."""
    split = Split.make("test", CHECK_SINGLES, CHECK_MULTIS)
    ev = Evaluator(model)
    regions = ev.regions(split.multis, Setting())
    return {
        "naming": ev.naming(split.singles).value,
        "rec": regions["rec"].value,
        "region_cls": regions["region_cls"].value,
    }


def measure(model, test_singles: int = 500, test_multis: int = 500, val_multis: int = 150) -> dict:
    """Every number of the report for `model`, as the dict written to `metrics.json`.

    Naming, referring expressions (per `REC_GROUPS`) and region classification on `test_multis` and
    `test_singles` test scenes for plain CLIP, FALIP at the defaults and FALIP tuned on `val_multis`
    validation scenes (`tuning_grid`); the per-attribute naming accuracies, the [CLS] attention share
    in the boxes, and `check_numbers` for the test that re-measures the shipped model."""
    test = Split.make("test", test_singles, test_multis)
    val = Split.make("val", 0, val_multis)
    ev = Evaluator(model)
    grid = tuning_grid(model.depth)
    with tqdm(total=len(grid), desc="tuning on validation scenes", disable=None) as bar:
        best = tune_regions(ev, val.multis, grid, progress=bar.update)
    default = ev.regions(test.multis, Setting())
    tuned_rec = ev.regions(test.multis, best["rec"][0])
    probed = test.multis[:ATTENTION_SCENES]
    tuned_cls = (
        tuned_rec
        if best["region_cls"][0] == best["rec"][0]
        else ev.regions(test.multis, best["region_cls"][0])
    )
    rows = {
        "naming (single objects, 30 names)": {"plain CLIP": ev.naming(test.singles)},
        **{
            f"referring expressions, {name}": {
                "plain CLIP (same score for every box: chance)": rec_chance(test.multis, group),
                "FALIP defaults": default[group],
                "FALIP tuned on val": tuned_rec[group],
            }
            for group, name in REC_GROUPS.items()
        },
        "region classification (30 names)": {
            "plain CLIP (whole image, one label per image)": ev.whole_image_classification(test.multis),
            "FALIP defaults": default["region_cls"],
            "FALIP tuned on val": tuned_cls["region_cls"],
        },
    }
    return {
        "rows": {task: {m: a.to_dict() for m, a in methods.items()} for task, methods in rows.items()},
        "tuned": {task: {**asdict(s), "val": a.to_dict()} for task, (s, a) in best.items()},
        "attention_in_box": {
            "scenes": len(probed),
            "plain CLIP": round(attention_in_boxes(model, probed, None), 4),
            "FALIP defaults": round(attention_in_boxes(model, probed, Setting()), 4),
            "FALIP tuned for rec": round(attention_in_boxes(model, probed, best["rec"][0]), 4),
        },
        "scenes": {"test_singles": test_singles, "test_multis": test_multis, "val_multis": val_multis},
        "attributes": {k: a.to_dict() for k, a in ev.attributes(test.singles).items()},
        "check": check_numbers(model),
    }


def markdown_table(metrics: dict) -> str:
    """The measured table of `metrics` (from `measure`) as markdown, for the README and the model card,
    with the attribute, attention-share and tuned-setting lines beneath it."""
    lines = ["| task | method | accuracy | 95% CI | n |", "| --- | --- | ---: | --- | ---: |"]
    for task, methods in metrics["rows"].items():
        for method, m in methods.items():
            if not m["n"]:
                lines.append(f"| {task} | {method} | - | - | 0 |")
                continue
            lo, hi = m["ci95"]
            lines.append(
                f"| {task} | {method} | {100 * m['accuracy']:.1f}% | {100 * lo:.1f}-{100 * hi:.1f} | "
                f"{m['n']} |"
            )
    if "attributes" in metrics:
        lines.append("")
        lines.append(
            "Each attribute named among its own values on the single-object test scenes (chance: colour "
            "1/6, shape 1/5, "
            "size and texture 1/2): "
            + ", ".join(f"{k} {100 * v['accuracy']:.1f}%" for k, v in metrics["attributes"].items())
            + "."
        )
    share = metrics["attention_in_box"]
    lines.append("")
    lines.append(
        "Share of the last layer's [CLS] attention on the object's box tokens (mean over the objects of "
        f"{share['scenes']} test scenes): "
        + ", ".join(f"{k} {100 * v:.1f}%" for k, v in share.items() if k != "scenes")
        + "."
    )
    tuned = metrics["tuned"]
    for task, t in tuned.items():
        layers = t["layers"]
        lines.append("")
        lines.append(
            f"Tuned for {task} on {metrics['scenes']['val_multis']} validation scenes: alpha {t['alpha']}, "
            f"sigma {t['sigma']}, "
            f"layers {layers[0]}-{layers[-1]} (0-based) [validation accuracy "
            f"{100 * t['val']['accuracy']:.1f}%]."
        )
    return "\n".join(lines)


def auxiliary_text(config: dict) -> str:
    """How the card words the auxiliary losses, if the run used any."""
    parts = []
    if config.get("presence_weight", 0.0):
        parts.append(
            f"{config['presence_weight']} x a presence loss (a linear head on the image embedding predicts "
            "which"
            " shapes, colours, sizes and textures the image holds; binary cross-entropy)"
        )
    if config.get("object_weight", 0.0):
        parts.append(
            f"{config['object_weight']} x an object loss (a linear head on the projected last-layer patch "
            "tokens,"
            " averaged over each object's box, predicts that object's shape, colour, size and texture; "
            "cross-entropy)"
        )
    if not parts:
        return ""
    text = (
        " plus "
        + " plus ".join(parts)
        + ". The heads are dropped after training, so the checkpoint is a plain `CLIPModel`"
    )
    if config.get("object_weight", 0.0):
        text += (
            ". The object loss keeps what each object is in the patch tokens where it lies, the tokens "
            "FALIP's [CLS]"
            " attention reads: a trained-in stand-in for the local content that a real CLIP's patch tokens "
            "carry."
            " Neither loss ever sees a region prompt or FALIP"
        )
    return text


def model_card(metrics: dict, training: dict) -> str:
    """The card beside the shipped checkpoint: what it is, how it was made, what it measures."""
    c = training["config"]
    return f"""# falip toy CLIP: a model organism, not OpenAI's CLIP

A small CLIP trained from scratch by this repository (`falip train-toy`, code in
`src/falip/toy/train.py`) on generated scenes of coloured shapes (`src/falip/datasets/scene_world.py`):
{", ".join(["circle", "square", "triangle", "diamond", "cross"])} in 6 colours, 2 sizes, plain or striped, 1-4 per
image on cluttered backgrounds, each image paired with one generated caption naming its objects.
Objects sit centred in blocks of an 8x8 lattice that matches the ViT's patch grid (2x2 cells for a
small object, 3x3 for a big one): without it, the ViT did not learn shape within the CPU budget.
Every scene comes with a contrast twin in the same batch: the same background and objects but one
object's shape ({c.get("shape_rate", 0.65):.0%} of twins) or texture changed, captioned alike but for that
word, so that colour alone cannot tell the captions apart (a first run without twins learnt colour
and size but stayed at chance on shape and texture).
It knows nothing else. It exists so that `falip demo`, the tests and the benchmarks run offline; use
a real checkpoint (`falip.load("openai/clip-vit-base-patch16")`) for real images.

## Architecture (`transformers` `CLIPModel`)
- Vision: ViT, {c["image_size"]}x{c["image_size"]} input, patch {c["patch"]} ({c["image_size"] // c["patch"]}x{c["image_size"] // c["patch"]} tokens + [CLS]), width {c["width"]}, {c["layers"]} layers, {c["heads"]} heads, QuickGELU, [CLS] pooling.
- Text: width {c["text_width"]}, {c["text_layers"]} layers, {c["text_heads"]} heads, context {c["context"]}, byte-level BPE trained on the world's vocabulary.
- Projection: {c["width"]}-d. Preprocessing: OpenAI's mean and std; images are made at the input size.

## Training
Contrastive (CLIP) loss{auxiliary_text(c)}.
AdamW (lr {c["lr"]}, {c["warmup"]} warm-up steps, cosine decay, weight decay {c["weight_decay"]}),
batch {c["batch"]}, seed {c["seed"]}, {c["threads"]} CPU threads. Planned {c["steps"]} steps with a {c["minutes"]}-minute limit:
ran {training["steps_done"]} steps ({training["steps_done"] * c["batch"]} scenes, each seen once) in {training["seconds"]:.0f} s, final loss {training["final_loss"]}
(torch {training["torch"]}). Training scenes come from the `train` seed stream; evaluation uses the disjoint `val` and `test` streams.

## Measured on held-out scenes
Made by `falip eval-toy` ({metrics["scenes"]["test_singles"]} single-object and {metrics["scenes"]["test_multis"]} multi-object test scenes; 95% Wilson intervals).
Plain CLIP has no region prompt: for referring expressions it scores every box alike (chance, computed exactly).

{markdown_table(metrics)}

`tests/test_toy_model.py` re-measures the first {CHECK_SINGLES} single-object and {CHECK_MULTIS} multi-object test scenes
on the shipped weights and compares with `metrics.json` (`check`): naming {100 * metrics["check"]["naming"]:.1f}%,
referring expressions {100 * metrics["check"]["rec"]:.1f}%, region classification {100 * metrics["check"]["region_cls"]:.1f}%.
"""


def write_report(model, out_dir: str | Path, **sizes) -> dict:
    """Measure; write `metrics.json` and `MODEL_CARD.md` into `out_dir` (the checkpoint directory)."""
    out_dir = Path(out_dir)
    metrics = measure(model, **sizes)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    training = json.loads((out_dir / "training.json").read_text())
    (out_dir / "MODEL_CARD.md").write_text(model_card(metrics, training))
    return metrics


__all__ = ["Accuracy", "check_numbers", "markdown_table", "measure", "model_card", "write_report"]
