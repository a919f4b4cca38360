"""The ASGI application of `falip serve`: FastAPI routes over `falip.web.api`, the page, the OpenAPI
schema with offline `/docs` and `/redoc` (fastapi-offline ships their files: no CDN), and one error
shape for every refusal: a 4xx whose JSON body is `{"error": "<one line>"}`.

| refusal | status |
| --- | --- |
| a field of the wrong type, out of range, missing or unknown (pydantic) | 422 |
| a body that is not JSON (bad syntax, not UTF-8, nested too deeply, a 5000-digit number) | 400 |
| a value the library's doors refuse (`FalipError`: image, box, method, layers, ...) | 400 |
| a body over `MAX_BODY` (by its Content-Length, or counted as it arrives) | 413 |
| a path that does not exist / a method the path does not take | 404 / 405 |

The model runs in a worker thread, one request at a time (a capacity limiter of 1; waiting requests hold
no thread), so the page, `/api/info` and `/docs` answer while it works.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from ..engine.model import FalipModel
from ..errors import FalipError
from . import api
from .schema import (
    ERRORS,
    MAX_BODY,
    ExampleReply,
    InfoReply,
    RunReply,
    RunRequest,
    one_line,
    validation_message,
)

PAGE = Path(__file__).with_name("page.html")
MAX_SEED = 2**31 - 1
log = logging.getLogger("falip.web")


def _error(status: int, message: object, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def _unreadable_body(cause: BaseException | None) -> str:
    """What FastAPI's "There was an error parsing the body" was, said plainly."""
    if isinstance(cause, UnicodeDecodeError):
        return "the request body is not UTF-8 text"
    if isinstance(cause, RecursionError):
        return "the request body's JSON is nested too deeply"
    if isinstance(cause, ValueError):
        return f"the request body is not JSON that can be read: {cause}"
    return "the request body cannot be read as JSON"


class BodyLimit:
    """ASGI middleware: refuse a body over `limit` bytes with 413, by its Content-Length before reading
    it, or counted as it arrives (a chunked body). Closes the connection after the refusal."""

    def __init__(self, app, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        """Pass non-HTTP scopes and bodies within `limit` to the app; refuse larger ones with 413, closing."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _error(413, self._message(), {"Connection": "close"})(scope, receive, send)
            return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, self._message())  # FastAPI passes HTTPExceptions through
            return message

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return f"the request is over {self.limit // 2**20} MB (the limit of falip serve)"


def create_app(model: FalipModel, *, max_body: int = MAX_BODY) -> FastAPI:
    """The web application for `model`.

    Args:
        model: the model every request runs.
        max_body: largest request body in bytes (413 beyond).
    Returns:
        A FastAPI application (ASGI), with the page at `/`, the JSON API under `/api`, the OpenAPI schema
        at `/openapi.json` and its pages at `/docs` and `/redoc`.
    """
    app = FastAPIOffline(
        title="falip serve",
        description=(
            "FALIP in the browser: rank boxes of a picture for a text, name each box, and see where the "
            '[CLS] token looks, plain against FALIP. Every refusal is a 4xx with `{"error": "one line"}`.'
        ),
        version="1",
    )
    app.add_middleware(BodyLimit, limit=max_body)
    limiter: list[anyio.CapacityLimiter] = []

    async def on_model(function, *args):
        """`function(model, *args)` in a worker thread, one at a time."""
        if not limiter:  # made inside the event loop
            limiter.append(anyio.CapacityLimiter(1))
        return await anyio.to_thread.run_sync(functools.partial(function, model, *args), limiter=limiter[0])

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _error(422, validation_message(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            allowed = headers.get("Allow", "")
            message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
        elif exc.status_code == 404:
            message = f"no page {request.url.path}"
        elif exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            message = _unreadable_body(exc.__cause__)
        else:
            message = exc.detail
        if exc.status_code in (408, 413):
            headers["Connection"] = "close"
        return _error(exc.status_code, message, headers or None)

    @app.exception_handler(FalipError)
    async def refused(request: Request, exc: FalipError):
        return _error(400, exc)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):  # a bug of ours: one line, the details in the log
        log.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); see the server's log")

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})

    @app.get("/api/info", response_model=InfoReply, responses=ERRORS)
    async def info():
        """The model (the embedded toy one said plainly), the region methods, the default setting."""
        return api.model_info(model)

    @app.get("/api/example", response_model=ExampleReply, responses=ERRORS)
    async def example(seed: int = Query(0, ge=0, le=MAX_SEED, description="which generated scene")):
        """A generated test scene with its objects' boxes and an expression naming one of them."""
        return await on_model(api.example_scene, seed)

    @app.post("/api/run", response_model=RunReply, responses=ERRORS)
    async def run(request: RunRequest):
        """Rank the boxes for each text, name each box, and show the [CLS] attention plain and with FALIP."""
        return await on_model(api.run, request)

    return app
