"""The gate every request passes, as one pure ASGI middleware (no BaseHTTPMiddleware: streaming bodies
pass through untouched and the per-request cost stays a few microseconds). In order:

1. request log: method, path, redacted query, status, duration, family, caller; counters;
2. fault injection (emulator/faults.py): injected errors and "before response" drops answer here;
3. D365 families (odata, services, connector, metadata): bearer token validated for audience = the
   environment URL (ref §8.1), the app must be registered in F&O (ref §8.2), else 401; the caller is put
   on ``request.state.principal``;
4. service protection limits (ref §2) for odata and services only (connector is exempt, ref §2.5).

Injected latency is slept after steps 3-4, just before the route runs, so it behaves like slow server
processing: it counts toward the combined execution time and the concurrency of the caller.
The admin API (``/_emulator``) bypasses all of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emulator.entra import InvalidTokenError
from emulator.faults import FaultDecision
from emulator.requestlog import RequestRecord, redact_query
from emulator.state import Principal
from emulator.throttling import Admission, Rejection

if TYPE_CHECKING:
    from emulator.state import EmulatorState

logger = logging.getLogger("emulator.requests")

D365_FAMILIES = frozenset({"odata", "services", "connector", "metadata"})
LIMITED_FAMILIES = frozenset({"odata", "services"})  # ref §2.5: OData and custom services only


class ConnectionDroppedError(ConnectionError):
    """Raised instead of dropping when the server gives no access to its transport (in-process tests)."""


def classify(path: str) -> str:
    """The API family of a request path."""
    if path == "/data" or path.startswith("/data/"):
        return "odata"
    if path.startswith("/api/services"):
        return "services"
    if path.startswith("/api/connector"):
        return "connector"
    if path.startswith("/_emulator"):
        return "admin"
    if path.startswith(("/secrets", "/deletedsecrets")):
        return "keyvault"
    lower = path.lower()
    if lower.startswith("/metadata/identity/"):
        return "token"  # the managed-identity endpoint, not the D365 metadata service
    if lower == "/metadata" or lower.startswith("/metadata/"):
        return "metadata"
    if "/oauth2/" in path or "/.well-known/" in path or "/discovery/" in path:
        return "token"
    return "other"


def odata_error(message: str, inner: str | None = None, *, error_type: str = "") -> bytes:
    """D365's error envelope (ref §1.7); UNCONFIRMED for 401/429/injected errors, assumed the same."""
    inner_error: dict[str, Any] = {"message": inner or message, "type": error_type, "stacktrace": ""}
    return json.dumps({"error": {"code": "", "message": message, "innererror": inner_error}}).encode()


_FAULT_TEXT = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def fault_body(family: str, status: int, rule_id: str) -> bytes:
    """An injected error shaped like the service of the family."""
    text = _FAULT_TEXT.get(status, "Error")
    detail = f"Injected fault (rule {rule_id}): {status} {text}."
    if family == "token":
        return json.dumps(
            {
                "error": "temporarily_unavailable",
                "error_description": f"AADSTS50196: The server is temporarily unavailable. {detail}",
                "error_codes": [50196],
            }
        ).encode()
    if family == "keyvault":
        return json.dumps({"error": {"code": text.replace(" ", ""), "message": detail}}).encode()
    return odata_error("An error has occurred.", detail)


@dataclass(slots=True)
class _Outcome:
    status: int = 0
    app_id: str | None = None
    fault: str | None = None
    throttled: str | None = None
    dropped: str | None = None


async def _send_bytes(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def _transport_of(send: Send) -> tuple[Any, Any]:
    """uvicorn's connection transport behind its ``send`` (a bound method of the request cycle)."""
    cycle = getattr(send, "__self__", None)
    return getattr(cycle, "transport", None), cycle


async def _wait_disconnected(cycle: Any, timeout: float = 2.0) -> None:
    """Let uvicorn notice the closed connection, so it neither answers 500 nor logs an app error."""
    deadline = time.monotonic() + timeout
    while not getattr(cycle, "disconnected", True) and time.monotonic() < deadline:
        await asyncio.sleep(0.002)


class EmulatorGate:
    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state
        self.audience = state.config.base_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        family = classify(path)
        if family == "admin":
            await self.app(scope, receive, send)
            return
        seq = self.state.log.next_seq()  # numbered on arrival; the log itself is in completion order
        arrived = time.time()
        started = time.perf_counter()
        outcome = _Outcome()

        async def send_and_watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome.status = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send_and_watch, send, family, outcome)
        finally:
            self._record(scope, family, outcome, seq, arrived, time.perf_counter() - started)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, raw_send: Send, family: str, outcome: _Outcome
    ) -> None:
        state = self.state
        decision: FaultDecision | None = None
        if state.faults.active:
            decision = state.faults.decide(family, scope["method"], scope["path"])
            if decision is not None:
                outcome.fault = decision.rule_id
                if decision.action == "error":
                    await self._inject_error(send, family, decision)
                    return
                if decision.action == "drop" and decision.drop_mode == "before_response":
                    if decision.latency_seconds:
                        await asyncio.sleep(decision.latency_seconds)
                    outcome.dropped = "before_response"
                    await self._drop_before_response(raw_send)
                    return

        admission: Admission | None = None
        if family in D365_FAMILIES:
            principal = await self._authenticate(scope, send, outcome)
            if principal is None:
                return
            if family in LIMITED_FAMILIES and state.limits.active:
                verdict = state.limits.admit(principal.throttle_key)
                if isinstance(verdict, Rejection):
                    outcome.throttled = verdict.kind
                    await _send_bytes(
                        send,
                        429,
                        odata_error(verdict.message),
                        [(b"retry-after", str(verdict.retry_after).encode())],
                    )
                    return
                admission = verdict
        try:
            if decision is not None:
                if decision.latency_seconds:
                    await asyncio.sleep(decision.latency_seconds)
                if decision.action == "drop":
                    outcome.dropped = "mid_body"
                    await self._drop_mid_body(scope, receive, send, raw_send)
                    return
            await self.app(scope, receive, send)
        finally:
            if admission is not None:
                state.limits.release(admission)

    async def _authenticate(self, scope: Scope, send: Send, outcome: _Outcome) -> Principal | None:
        state = self.state
        token = _bearer_token(scope)
        try:
            if token is None:
                raise InvalidTokenError(
                    "Bearer token is missing from the Authorization header.", kind="missing"
                )
            claims = state.tokens.validate(token, self.audience)
            app_id = str(claims["appid"])
            outcome.app_id = app_id
            app = state.apps.get(app_id)
            if app is None or app.d365_user_id is None:
                # UNCONFIRMED: the exact D365 answer for a valid token of an app missing from the
                # "Microsoft Entra applications" page; a 401 as for other token problems.
                raise InvalidTokenError(
                    f"The application '{app_id}' is not registered in Finance and Operations "
                    "(System administration > Setup > Microsoft Entra applications).",
                    kind="unregistered",
                )
        except InvalidTokenError as exc:
            challenge = b"Bearer"
            if exc.kind != "missing":
                description = exc.reason.replace('"', "'")
                challenge = f'Bearer error="invalid_token", error_description="{description}"'.encode()
            await _send_bytes(
                send,
                401,
                odata_error("Authorization has been denied for this request.", exc.reason),
                [(b"www-authenticate", challenge)],
            )
            return None
        principal = Principal(
            app_id=app.client_id,
            object_id=str(claims["oid"]),
            tenant_id=str(claims["tid"]),
            default_company=app.default_company,
            claims=claims,
            user_id=app.d365_user_id,
        )
        scope.setdefault("state", {})["principal"] = principal
        return principal

    async def _inject_error(self, send: Send, family: str, decision: FaultDecision) -> None:
        if decision.latency_seconds:
            await asyncio.sleep(decision.latency_seconds)
        extra: list[tuple[bytes, bytes]] = []
        if decision.retry_after is not None:
            extra.append((b"retry-after", str(decision.retry_after).encode()))
        await _send_bytes(send, decision.status, fault_body(family, decision.status, decision.rule_id), extra)

    async def _drop_before_response(self, raw_send: Send) -> None:
        transport, cycle = _transport_of(raw_send)
        if transport is None:
            raise ConnectionDroppedError("fault injection: connection dropped before the response")
        transport.abort()
        await _wait_disconnected(cycle)

    async def _drop_mid_body(self, scope: Scope, receive: Receive, send: Send, raw_send: Send) -> None:
        """Run the route, then send the status, headers with the full Content-Length and only half of
        the body, and close the connection: the client sees a truncated body."""
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        transport, cycle = _transport_of(raw_send)
        if start is None or not body or transport is None:
            # Nothing to cut in half (or no transport): drop before the response instead.
            await self._drop_before_response(raw_send)
            return
        headers = [
            (name, value)
            for name, value in start.get("headers", [])
            if name.lower() not in (b"content-length", b"transfer-encoding")
        ]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": start["status"], "headers": headers})
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        transport.close()  # flushes what was written, then closes
        await _wait_disconnected(cycle)

    def _record(
        self, scope: Scope, family: str, outcome: _Outcome, seq: int, arrived: float, duration: float
    ) -> None:
        log = self.state.log
        query = scope.get("query_string", b"")
        record = RequestRecord(
            seq=seq,
            time=arrived,
            method=scope["method"],
            path=scope["path"],
            query=redact_query(query) if query else "",
            family=family,
            status=0 if outcome.dropped == "before_response" else outcome.status,
            duration_ms=round(duration * 1000.0, 3),
            app_id=outcome.app_id,
            fault=outcome.fault,
            throttled=outcome.throttled,
            dropped=outcome.dropped,
        )
        log.add(record)
        if logger.isEnabledFor(logging.INFO):
            notes = " ".join(
                f"{k}={v}"
                for k, v in (
                    ("app", outcome.app_id),
                    ("fault", outcome.fault),
                    ("throttled", outcome.throttled),
                    ("dropped", outcome.dropped),
                )
                if v
            )
            logger.info(
                "%s %s%s -> %s %.1fms [%s]%s",
                record.method,
                record.path,
                f"?{record.query}" if record.query else "",
                record.status or "dropped",
                record.duration_ms,
                family,
                f" {notes}" if notes else "",
            )
