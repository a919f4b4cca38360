"""`falip serve`: FALIP in the browser. A page where one drops a photo (or takes a generated scene),
draws or types boxes, types what to look for, and sees the boxes ranked, each box's best label, and
where the [CLS] token looks, plain against FALIP.

The server is Python's own `http.server` with a small JSON API and one static page (`page.html`):
no web framework. Gradio, the usual choice, pins Pillow below 13, whose bicubic resize differs from
the one the authors' reference vectors were made with (2.6e-3 relative on the image features, against
a tolerance of 1e-5), so it cannot share an environment with a faithful FALIP.

API (JSON): `GET /api/info` (the model, methods, defaults), `GET /api/example?seed=N` (a generated
scene with its boxes and an expression), `POST /api/run` ({image: data URL, boxes: [[x, y, w, h]],
texts: [...], labels: [...], method, alpha, sigma, layers}) -> the ranking and pictures as data URLs.
A bad input answers 400 with the library's one-line `FalipError` text; no stack trace ever reaches
the page.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import torch
from PIL import Image

from ..engine.model import FalipModel
from ..errors import FalipError
from ..inputs import checks
from ..inputs.images import open_image
from ..inputs.regions import to_xyxy
from ..tasks.methods import get_method, method_names, region_features, text_features
from ..viz.demo import attention_panels, boxes_panel, demo_scene, demo_setting

PAGE = Path(__file__).with_name("page.html")
MAX_BODY = 20 * 1024 * 1024
TOY_NOTE = "the embedded toy CLIP: a small CLIP trained on generated coloured shapes, not OpenAI's CLIP"
log = logging.getLogger("falip.web")


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _image_from_data_url(text) -> Image.Image:
    if not isinstance(text, str) or "," not in text or not text.startswith("data:image/"):
        raise FalipError("the image must be a data:image/... URL (an uploaded picture)")
    try:
        raw = base64.b64decode(text.split(",", 1)[1], validate=True)
    except ValueError as exc:
        raise FalipError(f"cannot read the uploaded image: {exc}") from None
    return open_image(raw)  # the one door: EXIF orientation as `falip score` and the API


def _number(payload: dict, key: str, default: float) -> float:
    value = payload.get(key, default)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise FalipError(f"{key} must be a number, got {value!r}") from None
    return checks.finite(key, value)


def _layers(payload: dict) -> list[int] | None:
    value = payload.get("layers")
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        try:
            return [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise FalipError(f"layers must be comma-separated 0-based indices, got {value!r}") from None
    return checks.layer_list(value)


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
    setting = demo_setting(model)
    return {
        "model": model.name,
        "is_toy": model.name == "toy",
        "note": TOY_NOTE if model.name == "toy" else f"{model.name} ({model!r})",
        "methods": method_names(),
        "alpha": setting["alpha"],
        "sigma": setting["sigma"],
        "layers": ",".join(map(str, setting["layers"])) if setting["layers"] else "",
        "setting": setting["source"],
    }


def example_scene(model: FalipModel, seed: int) -> dict:
    """A generated test scene, its objects' boxes and an expression naming one of them."""
    from ..datasets.scene_world import class_names

    scene, target, expression = demo_scene(model, checks.count("seed", seed, minimum=0))
    return {
        "image": _data_url(scene.pil()),
        "boxes": [[round(float(v), 2) for v in o.box] for o in scene.objects],
        "texts": [f"a photo of {expression}"],
        "labels": [f"a photo of a {c}" for c in class_names()],
        "expected": target,
    }


@torch.no_grad()
def run(model: FalipModel, payload: dict) -> dict:
    """Rank the boxes for each text, name each box, and draw it (the `falip demo` picture)."""
    if not isinstance(payload, dict):
        raise FalipError("the request must be a JSON object")
    image = _image_from_data_url(payload.get("image"))
    boxes = payload.get("boxes") or []
    if not isinstance(boxes, list) or not boxes:
        raise FalipError("give at least one box (x, y, w, h in pixels): draw it on the image or type it")
    boxes = [_xywh(b, i) for i, b in enumerate(boxes)]
    texts = [t.strip() for t in payload.get("texts") or [] if isinstance(t, str) and t.strip()]
    if not texts:
        raise FalipError("give a text to look for (a referring expression)")
    labels = [t.strip() for t in payload.get("labels") or [] if isinstance(t, str) and t.strip()]
    method = payload.get("method") or "falip"
    get_method(method)  # an unknown name is refused with the list of methods
    setting = demo_setting(model)
    alpha = _number(payload, "alpha", setting["alpha"])
    sigma = _number(payload, "sigma", setting["sigma"])
    layers = _layers(payload) if "layers" in payload else setting["layers"]
    options = {"alpha": alpha, "sigma": sigma, "layers": layers}
    feats = region_features(model, image, boxes, method, **options)  # (R, D), unit
    scale = model.backbone.logit_scale.float().exp().item()
    scores = scale * feats @ text_features(model, texts, "{}", method).T  # (R, T)
    names = [""] * len(boxes)
    if labels:
        picks = (feats @ text_features(model, labels, "{}", method).T).argmax(1).tolist()
        names = [labels[i].removeprefix("a photo of ").removeprefix("a ") for i in picks]
    ranking = []
    for j, text in enumerate(texts):
        order = scores[:, j].argsort(descending=True).tolist()
        ranking.append(
            {
                "text": text,
                "boxes": [
                    {"box": boxes[i], "index": i, "score": round(float(scores[i, j]), 3), "label": names[i]}
                    for i in order
                ],
            }
        )
    best = ranking[0]["boxes"][0]["index"]
    masked = model.masked_layers(layers)
    row = model.region_rows(image.size, [boxes[best]], alpha=alpha, sigma=sigma)[0]
    shown, fit, (plain, focused), share = attention_panels(model, image, row, masked, Image.BILINEAR)
    first = scores[:, 0].tolist()
    return {
        "ranking": ranking,
        "boxes_picture": _data_url(
            boxes_panel(shown, [to_xyxy(b) for b in boxes], first, names, best, fit, None)
        ),
        "attention_plain": _data_url(plain),
        "attention_falip": _data_url(focused),
        "attention_inside": list(share),
        "method": method,
        "setting": {"alpha": alpha, "sigma": sigma, "layers": masked},
    }


class Handler(BaseHTTPRequestHandler):
    model: FalipModel  # set on the subclass `serve` makes
    server_version = "falip"

    def log_message(self, format: str, *args) -> None:  # noqa: A002  (the base class's name)
        log.info("%s - %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: dict) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _answer(self, compute) -> None:
        try:
            self._json(HTTPStatus.OK, compute())
        except FalipError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except Exception as exc:  # never a stack trace in the page: one line, the details in the server's log
            log.exception("request failed")
            self._json(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": f"internal error ({type(exc).__name__}); see the server's log"},
            )

    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        url = urlparse(self.path)
        if url.path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, PAGE.read_bytes(), "text/html; charset=utf-8")
        elif url.path == "/api/info":
            self._answer(lambda: model_info(self.model))
        elif url.path == "/api/example":
            seed = parse_qs(url.query).get("seed", ["0"])[0]
            self._answer(lambda: example_scene(self.model, int(seed) if seed.isdigit() else -1))
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {url.path}"})

    def do_POST(self) -> None:  # noqa: N802
        if urlparse(self.path).path != "/api/run":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"the request is over {MAX_BODY // 2**20} MB"}
            )
            return
        body = self.rfile.read(length)

        def compute():
            try:
                payload = json.loads(body or b"{}")
            except json.JSONDecodeError:
                raise FalipError("the request is not JSON") from None
            with self.lock:
                return run(self.model, payload)

        self._answer(compute)


def make_server(model: FalipModel, host: str = "127.0.0.1", port: int = 7860) -> ThreadingHTTPServer:
    """A server for `model` (not yet serving: call `serve_forever`, or run it in a thread)."""
    handler = type("FalipHandler", (Handler,), {"model": model, "lock": threading.Lock()})
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise FalipError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
