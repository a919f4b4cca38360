"""`falip serve`: FALIP in the browser. A page where one drops a photo (or takes a generated scene),
draws or types boxes, types what to look for, and sees the boxes ranked, each box's best label, and
where the [CLS] token looks, plain against FALIP.

The application is FastAPI (`falip.web.app`: pydantic request models, an OpenAPI schema at `/docs`);
this module serves it with uvicorn's h11 protocol and the limits a server facing any client needs:

- a deadline on receiving each request (`request_timeout`, from its first byte, or from the connection
  being opened, until its last body byte): uvicorn has none (its `timeout_keep_alive` only runs between
  requests and every byte received cancels it), so a client that sends half its headers, a body shorter
  than its Content-Length, or one byte a minute would hold its connection forever. Past the deadline
  the client gets `408 {"error": ...}` and the connection is closed. Waiting costs no thread: a stalled
  client never delays another;
- malformed HTTP (a Content-Length of "abc" or -1, a broken request line) answered with a one-line JSON
  400 instead of uvicorn's plain text;
- at most `limit_concurrency` connections and tasks at once (uvicorn answers 503 beyond), headers of at
  most 16 KiB (h11), idle keep-alive connections closed after 5 s.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..engine.model import FalipModel
from ..errors import FalipError
from .api import TOY_NOTE, example_scene, run  # noqa: F401  (the web layer's public names)
from .app import create_app
from .schema import MAX_BODY

REQUEST_TIMEOUT = 30.0
"""Seconds a client has to send a whole request (headers and body: a 20 MB upload at ~5 Mbit/s)."""
LIMIT_CONCURRENCY = 64
MAX_HEADER_BYTES = 16 * 1024


def _reply(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 response with a JSON error body, closing the connection."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on receiving each request.

    The deadline runs while h11 says the client is sending (IDLE: a request not begun or its headers
    incomplete; SEND_BODY: its body incomplete), from the connection's opening or the previous response,
    and stops once the request is whole (the model may then take as long as it needs). A trickle of bytes
    does not extend it. `request_timeout` is set on the subclass `Server` makes.
    """

    request_timeout: float = REQUEST_TIMEOUT
    _deadline = None
    _answered = False  # a response went out on this connection

    def connection_made(self, transport) -> None:
        """Start the request deadline on a new connection."""
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        """Feed the bytes to uvicorn, then start or stop the deadline by what the client is sending now."""
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        """After a response, give the next request a deadline of its own."""
        self._answered = True
        self._stop()  # the next request gets a deadline of its own
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc) -> None:
        """Cancel the deadline, then let uvicorn clean up after the lost connection."""
        self._stop()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:  # malformed HTTP; uvicorn's own answer is plain text
        """Answer malformed HTTP with a 400 JSON error (not uvicorn's plain text) and close the connection."""
        self.transport.write(
            _reply(
                400,
                "Bad Request",
                "the request is not valid HTTP/1.1 (its request line or a header is malformed)",
            )
        )
        self.transport.close()

    def _stop(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _watch(self) -> None:
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            if self._deadline is None and not self.transport.is_closing():
                self._deadline = self.loop.call_later(self.request_timeout, self._expired)
        else:
            self._stop()

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        idle = state is h11.IDLE and not self.conn.trailing_data[0]
        answered_early = state is h11.SEND_BODY and self.cycle is not None and self.cycle.response_started
        if not (idle and self._answered) and not answered_early:  # an idle keep-alive connection just closes
            message = f"the request did not arrive within {self.request_timeout:g} s"
            self.transport.write(_reply(408, "Request Timeout", message))
        self.transport.close()  # a handler waiting for the body gets http.disconnect


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address or 'localhost' (served to this machine only)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_warning(host: str) -> str | None:
    """The warning `falip serve` prints when `host` is not a loopback address, else None."""
    if is_loopback(host):
        return None
    return (
        f"warning: serving on {host} makes the page and its API reachable from other machines on your "
        "network, with no authentication and no TLS; the default 127.0.0.1 serves this machine only"
    )


class Server:
    """`falip serve`'s server for one model: bound at construction, serving on `serve_forever()` (blocking,
    Ctrl-C stops) or `start()` (a background thread, as the tests use), stopped by `stop()`.

    Args:
        model: the model every request runs.
        host, port: where to listen; port 0 picks a free port (`port` then says which).
        request_timeout: seconds a client has to send a whole request (408 beyond).
        max_body: largest request body in bytes (413 beyond).
        limit_concurrency: connections and tasks at once (503 beyond).
        quiet: no access log, only warnings (tests).
    Raises:
        FalipError: the address cannot be bound (in use, not this machine's, no permission).
    """

    def __init__(
        self,
        model: FalipModel,
        host: str = "127.0.0.1",
        port: int = 7860,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        max_body: int = MAX_BODY,
        limit_concurrency: int = LIMIT_CONCURRENCY,
        quiet: bool = False,
    ) -> None:
        self.host = host
        self.socket = self._bind(host, port)
        protocol = type(
            "FalipH11Protocol", (DeadlineH11Protocol,), {"request_timeout": float(request_timeout)}
        )
        config = uvicorn.Config(
            create_app(model, max_body=max_body),
            http=protocol,
            timeout_keep_alive=5,
            limit_concurrency=limit_concurrency,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            backlog=2 * limit_concurrency,
            server_header=False,
            log_level="warning" if quiet else "info",
            access_log=not quiet,
            log_config=None if quiet else uvicorn.config.LOGGING_CONFIG,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @staticmethod
    def _bind(host: str, port: int) -> socket.socket:
        try:
            family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError as exc:
            raise FalipError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
        sock.set_inheritable(True)
        return sock

    @property
    def port(self) -> int:
        """The port the server is bound to (the one the system chose for port 0)."""
        return self.socket.getsockname()[1]

    @property
    def url(self) -> str:
        """The server's address, http://host:port (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        """Serve until Ctrl-C (uvicorn's signal handling; in the main thread)."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def start(self, wait: float = 60.0) -> Server:
        """Serve in a background thread; return once it accepts connections.

        Raises:
            FalipError: the server did not start within `wait` seconds.
        """
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )
        self._thread.start()
        for _ in range(int(wait * 20)):
            if self.server.started or not self._thread.is_alive():
                break
            time.sleep(0.05)
        if not self.server.started:
            raise FalipError(f"the server on {self.url} did not start")
        return self

    def stop(self) -> None:
        """Stop a server started with `start()` and release its port."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.socket.close()


def make_server(model: FalipModel, host: str = "127.0.0.1", port: int = 7860, **options) -> Server:
    """A `Server` for `model` on `host:port` (bound, not yet serving); `options` as `Server` takes."""
    return Server(model, host, port, **options)
