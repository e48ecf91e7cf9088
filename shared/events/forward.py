"""Built-in handlers that pass an event on: to an HTTP endpoint, or into a blob container.

``forward_http`` POSTs the event (its original bytes, or the normalised document) through the project's one
resilience policy (``D365Transport`` with ``authenticate=False``: bounded attempts with backoff on 5xx,
429 and network errors, a deadline), with ``Idempotency-Key: <EventId>`` so the receiver can deduplicate:
delivery stays at-least-once. ``forward_blob`` writes the event once (If-None-Match: *).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from shared.d365.retry import RetryPolicy
from shared.d365.transport import D365Transport
from shared.events.handler_api import HandlerContext, HandlerResult, PermanentHandlerError
from shared.events.layout import RAW_TEMPLATE
from shared.events.model import BusinessEvent
from shared.events.templates import render_path
from shared.keyvault import is_loopback_host
from shared.redact import redact_url
from shared.storage import JSON_CONTENT

__all__ = ["ForwardBlob", "ForwardHttp", "event_body"]


def event_body(event: BusinessEvent, kind: str) -> bytes:
    """``original``: the bytes as received; ``document``: the normalised event as JSON."""
    if kind == "document":
        return json.dumps(event.document(), ensure_ascii=False).encode("utf-8")
    return event.original


def _body_kind(options: Mapping[str, Any]) -> str:
    kind = options.get("body", "original")
    if kind not in ("original", "document"):
        raise ValueError("body must be 'original' or 'document'")
    return str(kind)


def _string_map(options: Mapping[str, Any], name: str) -> dict[str, str]:
    value = options.get(name) or {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"{name} must be an object of strings")
    return {str(k): v for k, v in value.items()}


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    allowed = parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname))
    if allowed and parts.hostname:
        return url
    raise PermanentHandlerError(f"forward URL {redact_url(url)} must be https (http only for loopback)")


class ForwardHttp:
    """``{"type": "forward_http", "url" | "url_setting", "headers", "secret_headers", "body",
    "timeout_seconds" (30), "attempts" (3)}``; ``url_setting`` and ``secret_headers`` values name app
    settings (Key Vault references welcome), read on each call so rotations apply."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        url, url_setting = options.get("url"), options.get("url_setting")
        if url is not None:
            if not isinstance(url, str):
                raise ValueError("url must be a string")
            _check_url(url)
        elif not isinstance(url_setting, str) or not url_setting:
            raise ValueError("url_setting must name an app setting")
        self.url: str | None = url
        self.url_setting: str = url_setting or ""
        self.headers = _string_map(options, "headers")
        self.secret_headers = _string_map(options, "secret_headers")
        self.body = _body_kind(options)
        timeout = options.get("timeout_seconds", 30)
        attempts = options.get("attempts", 3)
        if not isinstance(timeout, int | float) or not 1 <= timeout <= 600:
            raise ValueError("timeout_seconds must be a number from 1 to 600")
        if not isinstance(attempts, int) or not 1 <= attempts <= 10:
            raise ValueError("attempts must be a whole number from 1 to 10")
        self.policy = RetryPolicy(max_attempts=attempts, total_timeout=float(timeout), backoff_max=5.0)
        self._transports: dict[str, D365Transport] = {}
        self._lock = threading.Lock()

    def _setting(self, context: HandlerContext, name: str) -> str:
        secret = context.app.settings.read(lambda r: r.secret(name, required="a value for a forward handler"))
        assert secret is not None
        return secret.reveal().strip()

    def _transport(self, url: str) -> D365Transport:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:  # one pooled session per target origin, shared by every invocation
            transport = self._transports.get(origin)
            if transport is None:
                read = min(30.0, self.policy.total_timeout)
                transport = D365Transport(origin, None, policy=self.policy, read_timeout=read)
                self._transports[origin] = transport
        return transport

    def __call__(self, event: BusinessEvent, context: HandlerContext) -> HandlerResult:
        url = _check_url(self.url or self._setting(context, self.url_setting))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Idempotency-Key": event.event_id,
            "X-Business-Event-Id": event.event_key,
            **self.headers,
        }
        for header, setting in self.secret_headers.items():
            headers[header] = self._setting(context, setting)
        response = self._transport(url).request(
            "POST",
            url,
            data=event_body(event, self.body),
            headers=headers,
            authenticate=False,
            idempotent=True,  # the target deduplicates on Idempotency-Key; delivery is at-least-once anyway
        )
        return HandlerResult(f"forwarded to {redact_url(url)} (HTTP {response.status_code})")


class ForwardBlob:
    """``{"type": "forward_blob", "container", "path" (default the raw layout), "body"}``: written once."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        container = options.get("container")
        if not isinstance(container, str) or not container:
            raise ValueError("container must be a container name")
        path = options.get("path", RAW_TEMPLATE)
        if not isinstance(path, str) or not path:
            raise ValueError("path must be a template string")
        self.container, self.path, self.body = container, path, _body_kind(options)

    def __call__(self, event: BusinessEvent, context: HandlerContext) -> HandlerResult:
        name = render_path(self.path, event.template_values())
        created = context.app.store.create_if_absent(
            self.container,
            name,
            event_body(event, self.body),
            metadata={"event_id": event.event_id},
            content_settings=JSON_CONTENT,
        )
        state = "written" if created else "already there"
        return HandlerResult(f"{self.container}/{name} {state}", (f"{self.container}/{name}",))
