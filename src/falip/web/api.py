"""What the web API computes, apart from HTTP: the model's description, an example scene, and a run
(boxes ranked for texts, each box's best label, the [CLS] attention plain against FALIP).

Every input comes through the library's doors (`falip.inputs`): the uploaded picture through
`open_image` (EXIF orientation applied, as `falip score` and the API do), boxes through `to_xyxy`, the
settings through `FalipSettings`' checks, so the page refuses what the CLI refuses, in the same words.
"""

from __future__ import annotations

import base64
import binascii
import io

import torch
from PIL import Image
from pydantic import ValidationError

from ..engine.model import FalipModel
from ..errors import FalipError
from ..inputs import checks
from ..inputs.images import open_image
from ..inputs.regions import to_xyxy
from ..inputs.texts import check_texts
from ..tasks.methods import get_method, method_names, region_features, text_features
from ..viz.demo import attention_panels, boxes_panel, demo_scene, demo_setting
from .schema import RunRequest, validation_message

TOY_NOTE = "the embedded toy CLIP: a small CLIP trained on generated coloured shapes, not OpenAI's CLIP"
MAX_PIXELS = 50_000_000
"""Largest upload the server decodes, in pixels (an 8-bit RGB copy of it takes 150 MB)."""


def data_url(image: Image.Image) -> str:
    """A PNG data URL of `image` (the pictures the API sends back)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_from_data_url(text: str) -> Image.Image:
    """The uploaded picture: a `data:image/...;base64,` URL decoded, its size checked against `MAX_PIXELS`
    from the header alone, then through the library's image door (EXIF orientation, any mode -> RGB).

    Raises:
        FalipError: not a base64 image data URL, more than `MAX_PIXELS` pixels, or bytes Pillow cannot decode.
    """
    head, comma, body = text.partition(",")
    if not comma or not head.startswith("data:image/") or not head.endswith(";base64"):
        raise FalipError("the image must be a data:image/...;base64, URL (an uploaded picture)")
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise FalipError("the uploaded image's data URL is not valid base64") from None
    try:  # the header says the size; nothing is decoded yet
        with Image.open(io.BytesIO(raw)) as probe:
            width, height = probe.size
    except Image.DecompressionBombError:
        raise FalipError(f"the uploaded image has more than {MAX_PIXELS:,} pixels") from None
    except (OSError, ValueError, SyntaxError):
        width = height = 0  # undecodable: the door below says so, in its words
    if width * height > MAX_PIXELS:
        raise FalipError(f"the uploaded image has {width} x {height} pixels; the limit is {MAX_PIXELS:,}")
    return open_image(raw)  # the one door: EXIF orientation as `falip score` and the API


def _xywh(box, index: int) -> list[float]:
    """A box checked (four finite numbers, positive size), as `[x, y, w, h]`."""
    try:
        x0, y0, x1, y1 = to_xyxy(box)
    except FalipError as exc:
        raise FalipError(f"box {index + 1}: {exc}") from None
    if x1 <= x0 or y1 <= y0:
        raise FalipError(f"box {index + 1} has no width or height: {list(box)}")
    return [x0, y0, x1 - x0, y1 - y0]


def model_info(model: FalipModel) -> dict:
    """`GET /api/info`: which model runs (the toy one said plainly), the methods, the default setting."""
    setting = demo_setting(model)
    return {
        "model": model.name,
        "is_toy": model.name == "toy",
        "note": TOY_NOTE if model.name == "toy" else f"{model.name} ({model!r})",
        "methods": method_names(),
        "alpha": setting["alpha"],
        "sigma": setting["sigma"],
        "layers": list(setting["layers"]) if setting["layers"] else None,
        "setting": setting["source"],
    }


def example_scene(model: FalipModel, seed: int) -> dict:
    """`GET /api/example`: a generated test scene, its objects' boxes and an expression naming one."""
    from ..datasets.scene_world import class_names

    scene, target, expression = demo_scene(model, checks.count("seed", seed, minimum=0))
    return {
        "image": data_url(scene.pil()),
        "boxes": [[round(float(v), 2) for v in o.box] for o in scene.objects],
        "texts": [f"a photo of {expression}"],
        "labels": [f"a photo of a {c}" for c in class_names()],
        "expected": target,
    }


def _request(payload: RunRequest | dict) -> RunRequest:
    if isinstance(payload, RunRequest):
        return payload
    try:
        return RunRequest.model_validate(payload)
    except ValidationError as exc:
        raise FalipError(validation_message(exc.errors())) from None


@torch.no_grad()
def run(model: FalipModel, payload: RunRequest | dict) -> dict:
    """`POST /api/run`: rank the boxes for each text, name each box, and draw it (the `falip demo` picture).

    Args:
        model: the served model.
        payload: a `RunRequest`, or a dict checked as one.
    Returns:
        The `RunReply` fields: per text the boxes best first with their scores (logit scale x cosine),
        each box's best label, the boxes picture and the last layer's [CLS] attention, plain and with FALIP
        on the best box, as PNG data URLs, and the share of that attention inside the best box.
    Raises:
        FalipError: anything the library's doors refuse (image, boxes, texts, method, settings, layers).
    """
    request = _request(payload)
    # texts through the door every entry point shares: a blank one is refused with the API's message
    texts = [t.strip() for t in check_texts(request.texts)]
    labels = [t.strip() for t in check_texts(request.labels)] if request.labels else []
    get_method(request.method)  # an unknown name is refused with the list of methods
    boxes = [_xywh(b, i) for i, b in enumerate(request.boxes)]
    setting = demo_setting(model)
    alpha = setting["alpha"] if request.alpha is None else request.alpha
    sigma = setting["sigma"] if request.sigma is None else request.sigma
    # layers left out: the setting's; null: the library's default (the last third), as the page's empty field
    layers = request.layers if "layers" in request.model_fields_set else setting["layers"]
    alpha, sigma = checks.falip_strength(alpha, sigma)
    masked = model.masked_layers(layers)
    image = image_from_data_url(request.image)
    options = {"alpha": alpha, "sigma": sigma, "layers": layers}

    feats = region_features(model, image, boxes, request.method, **options)  # (R, D), unit
    scale = model.backbone.logit_scale.float().exp().item()
    scores = scale * feats @ text_features(model, texts, "{}", request.method).T  # (R, T)
    if not torch.isfinite(scores).all():  # the bounds make this unreachable; JSON must never carry NaN
        raise FalipError(f"the scores are not finite with alpha {alpha:g}, sigma {sigma:g}")
    names = [""] * len(boxes)
    if labels:
        picks = (feats @ text_features(model, labels, "{}", request.method).T).argmax(1).tolist()
        names = [labels[i].removeprefix("a photo of ").removeprefix("a ") for i in picks]
    ranking = []
    for j, text in enumerate(texts):
        order = scores[:, j].argsort(descending=True).tolist()
        ranked = [
            {"box": boxes[i], "index": i, "score": round(float(scores[i, j]), 3), "label": names[i]}
            for i in order
        ]
        ranking.append({"text": text, "boxes": ranked})
    best = ranking[0]["boxes"][0]["index"]
    row = model.region_rows(image.size, [boxes[best]], alpha=alpha, sigma=sigma)[0]
    shown, fit, (plain, focused), share = attention_panels(model, image, row, masked, Image.BILINEAR)
    first = scores[:, 0].tolist()
    return {
        "ranking": ranking,
        "boxes_picture": data_url(
            boxes_panel(shown, [to_xyxy(b) for b in boxes], first, names, best, fit, None)
        ),
        "attention_plain": data_url(plain),
        "attention_falip": data_url(focused),
        "attention_inside": [float(s) for s in share],
        "method": request.method,
        "setting": {"alpha": alpha, "sigma": sigma, "layers": masked},
    }
