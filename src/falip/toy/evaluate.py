"""Measure a CLIP on held-out generated scenes: naming, referring expressions, region classification.

Plain CLIP has no region prompt, so for referring expressions it gives every box the same score
(expected accuracy: the mean of 1 / boxes, reported exactly), and for region classification it can
only name the whole image (the same label for every box).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..datasets.scene_world import ATTRIBUTE_VALUES, COLOURS, Scene, class_names, make_scene
from ..engine.attention import attention_share
from ..evaluation.stats import Accuracy
from ..inputs.settings import PAPER
from ..tasks.methods import TEMPLATE, region_features, text_features


@dataclass(frozen=True)
class Setting:
    """One FALIP setting of the toy evaluation: `alpha`, `sigma` (Eq. 1-2, sigma in token units) and
    0-based `layers` (None: the last third, as `FalipSettings`)."""

    alpha: float = PAPER.alpha
    sigma: float = PAPER.sigma
    layers: tuple[int, ...] | None = None

    def kwargs(self) -> dict:
        """The setting as `region_features` keyword arguments (`layers` None when empty)."""
        return {
            "alpha": self.alpha,
            "sigma": self.sigma,
            "layers": list(self.layers) if self.layers else None,
        }


@dataclass
class Split:
    """Held-out scenes of one split: single objects for naming, several for regions."""

    singles: list[Scene] = field(default_factory=list)
    multis: list[Scene] = field(default_factory=list)

    @classmethod
    def make(cls, split: str, singles: int, multis: int, size: int = 128, offset: int = 0) -> Split:
        """Scenes of `split`, `size` pixels square: `singles` one-object scenes (indices `offset + i`) and
        `multis` scenes of 2 to 4 objects (indices `offset + 1_000_000 + i`, apart from the singles')."""
        return cls(
            [make_scene(split, offset + i, size, objects=1) for i in range(singles)],
            [make_scene(split, offset + 1_000_000 + i, size, objects=(2, 4)) for i in range(multis)],
        )


REC_GROUPS = {
    "rec": "all",
    "rec_attribute": "attribute",
    "rec_relational": "relational",
    "rec_colour": "naming a colour",
    "rec_shape": "naming the shape alone",
}


def rec_groups(text: str, kind: str) -> list[str]:
    """The `REC_GROUPS` an expression counts in: all, its kind, and whether it names a colour
    ("the red circle", "the left red circle") or only the shape ("the circle")."""
    words = text.split()
    groups = ["rec", f"rec_{kind}"]
    if any(w in COLOURS for w in words):
        groups.append("rec_colour")
    elif words[1:] and all(w in ATTRIBUTE_VALUES["shape"] for w in words[1:]):
        groups.append("rec_shape")
    return groups


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


class Evaluator:
    """Caches text features; every method returns `Accuracy`."""

    def __init__(self, model, template: str = TEMPLATE):
        """`model`: a loaded `FalipModel`; `template`: the text prompt template. The features of the scene
        world's 30 class names (`class_names`, "<colour> <shape>", each as "a <name>") are encoded once."""
        self.model, self.template = model, template
        self.labels = class_names()
        self.label_feats = text_features(model, ["a " + c for c in self.labels], template)

    def naming(self, scenes: Sequence[Scene]) -> Accuracy:
        """Naming: each single-object scene's whole-image feature against every class name; a hit when the
        best is its object's `label`."""
        images = _unit(self.model.encode_image([s.image for s in scenes]))
        pred = (images @ self.label_feats.T).argmax(1).tolist()
        return Accuracy(sum(self.labels[p] == s.objects[0].label for p, s in zip(pred, scenes)), len(scenes))

    def _region_feats(self, scene: Scene, setting: Setting) -> torch.Tensor:
        return region_features(
            self.model, scene.image, [o.box for o in scene.objects], "falip", **setting.kwargs()
        )

    def regions(self, scenes: Sequence[Scene], setting: Setting) -> dict[str, Accuracy]:
        """Referring expressions (overall and per `REC_GROUPS`) and region classification, from one
        set of region features per scene: every object's box is a candidate and a region to name."""
        hits = {"region_cls": [0, 0], **{group: [0, 0] for group in REC_GROUPS}}
        for scene in scenes:
            regions = self._region_feats(scene, setting)
            pred = (regions @ self.label_feats.T).argmax(1).tolist()
            hits["region_cls"][0] += sum(self.labels[p] == o.label for p, o in zip(pred, scene.objects))
            hits["region_cls"][1] += len(scene.objects)
            exprs = scene.expressions()
            if not exprs:
                continue
            texts = text_features(self.model, [e[1] for e in exprs], self.template)
            for (target, text, kind), choice in zip(exprs, (regions @ texts.T).argmax(0).tolist()):
                for group in rec_groups(text, kind):
                    hits[group][0] += int(choice == target)
                    hits[group][1] += 1
        return {k: Accuracy(c, n) for k, (c, n) in hits.items()}

    def attributes(self, scenes: Sequence[Scene]) -> dict[str, Accuracy]:
        """Single-object images: each attribute named among its own values ("a photo of a red shape"),
        to see which ones the model has learnt."""
        images = _unit(self.model.encode_image([s.image for s in scenes]))
        out = {}
        for attribute, phrase in (
            ("colour", "a {} shape"),
            ("shape", "a {}"),
            ("size", "a {} shape"),
            ("texture", "a {} shape"),
        ):
            values = ATTRIBUTE_VALUES[attribute]
            texts = text_features(self.model, [phrase.format(v) for v in values], self.template)
            pred = (images @ texts.T).argmax(1).tolist()
            out[attribute] = Accuracy(
                sum(values[p] == getattr(s.objects[0], attribute) for p, s in zip(pred, scenes)), len(scenes)
            )
        return out

    def whole_image_classification(self, scenes: Sequence[Scene]) -> Accuracy:
        """Plain CLIP: one label per image, counted against every object in it."""
        images = _unit(self.model.encode_image([s.image for s in scenes]))
        pred = (images @ self.label_feats.T).argmax(1).tolist()
        return Accuracy(
            sum(sum(self.labels[p] == o.label for o in s.objects) for p, s in zip(pred, scenes)),
            sum(len(s.objects) for s in scenes),
        )


@torch.no_grad()
def attention_in_boxes(model, scenes: Sequence[Scene], setting: Setting | None) -> float:
    """Mean share of the last layer's [CLS] attention (head-averaged) that falls on each object's box
    tokens, without a region prompt (`setting` None) or with FALIP on that box."""
    from ..inputs.masks import attention_bias, resolve_layers

    shares = []
    visual = model.backbone.visual
    for scene in scenes:
        boxes = [o.box for o in scene.objects]
        rows = model.region_rows(scene.image.shape[1::-1], boxes)  # where each box is, on the token grid
        pixels = model.pixels(scene.image).to(model.device, model.dtype).expand(len(boxes), -1, -1, -1)
        if setting is None:
            probs = visual.cls_attention(pixels)
        else:
            prompt = model.region_rows(
                scene.image.shape[1::-1], boxes, alpha=setting.alpha, sigma=setting.sigma
            )
            layers = resolve_layers(list(setting.layers) if setting.layers else None, model.depth)
            probs = visual.cls_attention(pixels, attention_bias(prompt.to(model.dtype)), layers)
        shares += attention_share(probs.float().mean(1)[:, 1:], rows[:, 1:] > 0).tolist()
    return sum(shares) / len(shares)


def rec_chance(scenes: Sequence[Scene], group: str = "rec") -> Accuracy:
    """Expected accuracy on one of `REC_GROUPS` when every box scores the same (ties broken at random)."""
    probs = [
        1 / len(s.objects)
        for s in scenes
        for _, text, kind in s.expressions()
        if group in rec_groups(text, kind)
    ]
    return Accuracy(sum(probs), len(probs))


def tune_regions(
    evaluator: Evaluator, scenes: Sequence[Scene], grid: Sequence[Setting], progress=None
) -> dict[str, tuple[Setting, Accuracy]]:
    """Best setting per task ("rec", "region_cls") on `scenes` (the first on ties)."""
    best: dict[str, tuple[Setting, Accuracy]] = {}
    for setting in grid:
        for task, acc in evaluator.regions(scenes, setting).items():
            if task in ("rec", "region_cls") and (task not in best or acc.value > best[task][1].value):
                best[task] = (setting, acc)
        if progress:
            progress()
    return best


def tuning_grid(depth: int) -> list[Setting]:
    """The settings tried on validation scenes: alpha in (0.2, 0.5, 1, 2, 4), sigma in (1, 100) token
    units, and the last 2, 4, 6 or 8 layers of a `depth`-block tower (those that fit)."""
    alphas = (0.2, 0.5, 1.0, 2.0, 4.0)
    sigmas = (1.0, 100.0)
    layer_sets = [tuple(range(depth - k, depth)) for k in (2, 4, 6, 8) if k <= depth]
    return [Setting(a, s, l) for a, s, l in itertools.product(alphas, sigmas, layer_sets)]


def linear_probe(
    model, train: Sequence[Scene], test: Sequence[Scene], steps: int = 300
) -> dict[str, Accuracy]:
    """Does the image feature carry each attribute at all? A multinomial logistic regression per
    attribute, fitted on `train` single-object scenes' image features and scored on `test`. Unlike
    `Evaluator.attributes` it needs no text, so it tells a vision-side gap from a text-side one."""

    def features(scenes):
        return _unit(model.encode_image([s.image for s in scenes]))

    x_train, x_test = features(train), features(test)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    out = {}
    for attribute in ("colour", "shape", "size", "texture"):
        values = ATTRIBUTE_VALUES[attribute]
        y_train = torch.tensor([values.index(getattr(s.objects[0], attribute)) for s in train])
        y_test = torch.tensor([values.index(getattr(s.objects[0], attribute)) for s in test])
        weight = torch.zeros(x_train.shape[1], len(values), requires_grad=True)
        bias = torch.zeros(len(values), requires_grad=True)
        optimiser = torch.optim.LBFGS([weight, bias], max_iter=steps)

        def closure():
            optimiser.zero_grad()
            loss = F.cross_entropy(x_train @ weight + bias, y_train) + 1e-3 * weight.pow(2).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimiser.step(closure)
        with torch.no_grad():
            out[attribute] = Accuracy(int(((x_test @ weight + bias).argmax(1) == y_test).sum()), len(test))
    return out
