"""A real HTTP/1.1 server on 127.0.0.1 that answers from a script, for testing clients over real sockets.

Each incoming request takes the next ``Reply`` from the script (or a handler's answer): status, headers and
body, an optional delay, or a misbehaviour — dropping the connection before answering, or mid-body after
promising more bytes. Every request is recorded (method, path, headers, body) for assertions.

    with ScriptedServer([Reply(429, {"Retry-After": "1"}), Reply.json({"ok": True})]) as server:
        requests.get(server.url + "/data/X")
        assert len(server.requests) == 2
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

__all__ = ["RecordedRequest", "Reply", "ScriptedServer", "refused_url"]

Drop = Literal["before_response", "mid_body", "mid_chunks"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    ``drop``: ``before_response`` closes the socket after reading the request, ``mid_body`` sends headers with
    the full Content-Length and only ``drop_after`` bytes of the body (default half), ``mid_chunks`` does the
    same with chunked encoding. ``reset`` makes the close an RST instead of a FIN. ``delay`` waits before
    answering (to trigger read timeouts).
    """

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    drop: Drop | None = None
    drop_after: int | None = None
    reset: bool = False

    @classmethod
    def json(
        cls, payload: Any, status: int = 200, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> Reply:
        merged = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        return cls(status, merged, json.dumps(payload).encode(), **kwargs)

    @classmethod
    def odata_error(
        cls, status: int, message: str, inner: str | None = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """D365's error envelope (ref §1.7)."""
        error: dict[str, Any] = {"code": "", "message": message}
        if inner is not None:
            error["innererror"] = {
                "message": inner,
                "type": "System.InvalidOperationException",
                "stacktrace": "   at X.Y()",
            }
        return cls.json({"error": error}, status, headers)


@dataclass
class RecordedRequest:
    method: str
    path: str  # path with query string, as sent
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float  # time.monotonic() when the request was fully read

    @property
    def route(self) -> str:
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)


Handler = Callable[[RecordedRequest], Reply]


class QuietHTTPServer(ThreadingHTTPServer):
    """Scripts drop connections on purpose: a client hanging up then is expected, not worth a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class ScriptedServer:
    """Serve ``script`` replies in order; after it runs out, serve ``default`` (or 599 to flag a surprise)."""

    def __init__(self, script: Iterable[Reply] | Handler = (), *, default: Reply | None = None) -> None:
        self._handler: Handler | None = script if callable(script) else None
        self._script: deque[Reply] = deque() if callable(script) else deque(script)
        self._default = default
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.connections = 0
        outer = self

        class _Handler(_ScriptedHandler):
            server_ref = outer

        self._httpd = QuietHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._handler is not None:
                handler = self._handler
            elif self._script:
                return self._script.popleft()
            else:
                return self._default or Reply(599, {}, b"scripted server: script exhausted")
        return handler(request)

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections end so shutdown is never held up
    server_ref: ScriptedServer

    def setup(self) -> None:
        super().setup()
        with self.server_ref._lock:
            self.server_ref.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        body = self._read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = RecordedRequest(self.command, self.path, headers, body, time.monotonic())
        reply = self.server_ref.next_reply(request)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.drop == "before_response":
            self._drop(reply.reset)
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        cut = len(reply.body) // 2 if reply.drop_after is None else reply.drop_after
        if reply.drop == "mid_chunks":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            piece = reply.body[:cut]
            self.wfile.write(f"{len(reply.body):x}\r\n".encode() + piece)
            self.wfile.flush()
            self._drop(reply.reset)
            return
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.drop == "mid_body":
            self.wfile.write(reply.body[:cut])
            self.wfile.flush()
            self._drop(reply.reset)
            return
        if self.command != "HEAD":
            self.wfile.write(reply.body)
        self.wfile.flush()

    def _drop(self, reset: bool) -> None:
        self.close_connection = True
        if reset:  # SO_LINGER 0 turns close() into an RST
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


def refused_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
