"""The HTTP front end: an ASGI app that serves HTTP-triggered functions as the host does.

Path ``/<routePrefix>/<route>`` is matched against the routes table (404 when no route takes the path and
method, as the host answers), the auth level is checked (401 without a valid key), the request becomes a
``func.HttpRequest`` and the function's result becomes the response. Results follow the Python worker's
HTTP output rules: a ``func.HttpResponse`` (status, headers, mimetype/charset -> Content-Type, body) or a
``str`` (200, ``text/plain; charset=utf-8``); anything else, ``None`` included, fails the invocation with
the worker's "unable to encode" error, and a failed invocation answers 500 with an empty body.

Host extras: ``GET /`` answers the "up and running" page; ``GET /admin/host/status`` and
``POST /admin/functions/<name>`` (run a timer or blob function now, body ``{"input": "..."}``) need the
master key. During shutdown new requests get 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import azure.functions as func
from azure.functions import _abc as functions_abc

from runner.discovery import FunctionSpec
from runner.invocation import Invoker, Outcome
from runner.keys import HostKeys
from runner.routes import RouteTable

__all__ = ["HttpFrontend", "encode_response", "listen"]

log = logging.getLogger("runner.http")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ManualTrigger = Callable[[str], Awaitable[Any]]
MAX_BODY = 100 * 1024 * 1024  # the host's default request size limit (100 MB)
HOME = b"<html><body><h1>Your Functions app is up and running</h1><p>(local runner)</p></body></html>"


class _Out(func.Out[Any]):
    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


class _TooLarge(Exception):
    pass


def encode_response(value: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A function's HTTP output as status, headers and body, or TypeError as the worker raises it."""
    if isinstance(value, str):
        return 200, [(b"content-type", b"text/plain; charset=utf-8")], value.encode()
    if isinstance(value, functions_abc.HttpResponse):
        headers = [
            (str(k).lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in value.headers.items()
        ]
        if not any(name == b"content-type" for name, _ in headers):
            mimetype, charset = value.mimetype, value.charset
            content_type = f"{mimetype}; charset={charset}" if mimetype.startswith("text/") else mimetype
            headers.append((b"content-type", content_type.encode("latin-1")))
        headers = [(k, v) for k, v in headers if k != b"content-length"]
        return int(value.status_code), headers, value.get_body() or b""
    raise TypeError(
        f'unable to encode outgoing TypedData: unsupported type "http" for Python type '
        f'"{type(value).__name__}" (return a func.HttpResponse or a str)'
    )


class HttpFrontend:
    """ASGI application serving the routes table; ``stopping`` makes it answer 503."""

    def __init__(
        self,
        *,
        functions: Mapping[str, FunctionSpec],
        table: RouteTable,
        keys: HostKeys,
        invoker: Invoker,
        prefix: str,
        host_status: Callable[[], dict[str, Any]],
        manual_triggers: Mapping[str, ManualTrigger],
        max_body: int = MAX_BODY,
    ) -> None:
        self.functions, self.table, self.keys, self.invoker = functions, table, keys, invoker
        self.prefix = prefix.strip("/")
        self.host_status = host_status
        self.manual_triggers = {name.lower(): hook for name, hook in manual_triggers.items()}
        self.max_body = max_body
        self.stopping = False
        self._background: set[asyncio.Task[Any]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if self.stopping:
            await _answer(send, 503, b"The host is shutting down.")
            return
        path: str = scope["path"]
        if path.startswith("/admin/"):
            await self._admin(scope, receive, send, path)
            return
        relative = self._relative(path)
        match = self.table.find(relative, scope["method"]) if relative is not None else None
        if match is None:
            if path == "/" and scope["method"] in ("GET", "HEAD"):
                await _answer(send, 200, HOME, b"text/html; charset=utf-8")
            else:
                await _answer(send, 404, b"")
            return
        spec = self.functions[match.route.target]
        auth_level = str(spec.trigger.get("authLevel") or "function")
        if not self.keys.authorize(spec.name, auth_level, _presented_key(scope)):
            await _answer(send, 401, b"")
            return
        try:
            body = await self._body(receive)
        except _TooLarge:
            await _answer(send, 413, b"Request body too large.")
            return
        await self._invoke(spec, scope, match.params, body, send)

    def _relative(self, path: str) -> str | None:
        if not self.prefix:
            return path
        head = "/" + self.prefix
        if path.lower() == head.lower() or path.lower().startswith(head.lower() + "/"):
            return path[len(head) :]
        return None

    async def _invoke(
        self, spec: FunctionSpec, scope: Scope, params: dict[str, str], body: bytes, send: Send
    ) -> None:
        request = func.HttpRequest(
            method=scope["method"],
            url=_url(scope),
            headers=_headers(scope),
            params=_query(scope),
            route_params=params,
            body=body,
        )
        arguments: dict[str, Any] = {spec.trigger_arg: request}
        output = spec.http_output
        out = _Out()
        if output and output != "$return":
            arguments[output] = out
        encoded: list[tuple[int, list[tuple[bytes, bytes]], bytes]] = []

        def finish(outcome: Outcome) -> None:
            if outcome.succeeded:
                encoded.append(encode_response(outcome.value if output == "$return" else out.get()))

        detail = f"{scope['method']} {scope['path']}"
        outcome = await self.invoker.invoke(spec, arguments, detail=detail, finish=finish)
        if not outcome.succeeded or not encoded:
            await _answer(send, 500, b"")
            return
        status, headers, content = encoded[0]
        if scope["method"] == "HEAD":
            content = b""
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(content)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": content})

    async def _body(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks)

    async def _admin(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        if not self.keys.authorize("", "admin", _presented_key(scope)):
            await _answer(send, 401, b"")
            return
        parts = path.strip("/").split("/")
        if parts == ["admin", "host", "status"] and scope["method"] == "GET":
            payload = json.dumps(self.host_status()).encode()
            await _answer(send, 200, payload, b"application/json; charset=utf-8")
            return
        if len(parts) == 3 and parts[1] == "functions" and scope["method"] == "POST":
            hook = self.manual_triggers.get(parts[2].lower())
            if hook is None:
                await _answer(send, 404, b"")
                return
            try:
                document = json.loads(await self._body(receive) or b"{}")
                text = str(document.get("input") or "") if isinstance(document, dict) else ""
            except (ValueError, _TooLarge):
                await _answer(send, 400, b'expected {"input": "..."}')
                return
            task = asyncio.ensure_future(hook(text))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            await _answer(send, 202, b"")
            return
        await _answer(send, 404, b"")


def _presented_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name.lower() == b"x-functions-key":
            return str(value.decode("latin-1"))
    for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
        if name == "code":
            return str(value)
    return None


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _query(scope: Scope) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
        params[name] = f"{params[name]},{value}" if name in params else value
    return params


def _url(scope: Scope) -> str:
    host = _headers(scope).get("host")
    if not host:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    raw_path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    url = f"{scope.get('scheme', 'http')}://{host}{raw_path.decode('latin-1')}"
    return f"{url}?{query.decode('latin-1')}" if query else url


async def _answer(
    send: Send, status: int, body: bytes, content_type: bytes = b"text/plain; charset=utf-8"
) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def listen(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front, so a taken port fails ``start()`` with a clear error."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock
