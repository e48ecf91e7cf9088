"""Receiver checks: who may post (shared secret), what (content type, size) and which events (allow-lists).

Every refusal is a :class:`Rejection`: a 4xx status and a short JSON body saying what is wrong, in terms of
the request only; nothing about the server, its storage or its configuration values leaks.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.events.model import BusinessEvent
from shared.events.settings import BusinessEventSettings

__all__ = ["Rejection", "check_event", "check_request", "check_secret", "content_type_allowed"]


@dataclass(frozen=True)
class Rejection:
    status: int
    code: str
    message: str

    def body(self) -> dict[str, Any]:
        return {"status": "rejected", "error": self.code, "message": self.message}


def content_type_allowed(value: str | None, allowed: tuple[str, ...]) -> bool:
    """Media type (parameters ignored) in ``allowed``; ``type/*+json`` entries match any ``+json`` subtype."""
    if value is None or not value.strip():
        return True  # D365's Content-Type is UNCONFIRMED (ref §5.2): the JSON check decides instead
    media = value.split(";", 1)[0].strip().lower()
    for pattern in allowed:
        if pattern == media:
            return True
        kind, _, subtype = pattern.partition("/")
        if subtype.startswith("*+") and media.startswith(f"{kind}/") and media.endswith(subtype[1:]):
            return True
    return False


def check_secret(headers: Mapping[str, str], settings: BusinessEventSettings) -> Rejection | None:
    if settings.shared_secret is None:
        return None
    given = headers.get(settings.secret_header.lower(), "")
    expected = settings.shared_secret.reveal()
    if not given or not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        return Rejection(401, "unauthorized", f"missing or wrong {settings.secret_header} header")
    return None


def check_request(
    headers: Mapping[str, str], body: bytes, settings: BusinessEventSettings
) -> Rejection | None:
    """Size and content type; ``headers`` have lower-case names. The secret is checked separately."""
    if len(body) > settings.max_bytes:
        return Rejection(
            413, "too_large", f"the body has {len(body)} bytes; at most {settings.max_bytes} are accepted"
        )
    content_type = headers.get("content-type")
    if not content_type_allowed(content_type, settings.content_types):
        shown = (content_type or "").split(";", 1)[0].strip()[:100]
        return Rejection(
            415,
            "unsupported_content_type",
            f"content type {shown!r} is not accepted; send {settings.content_types[0]}",
        )
    return None


def check_event(event: BusinessEvent, settings: BusinessEventSettings) -> Rejection | None:
    """Required fields and the allow-lists of business event ids and legal entities."""
    missing = [name for name in settings.required_fields if event.fields.get(name) in (None, "")]
    if missing:
        return Rejection(400, "missing_fields", "missing required field(s) " + ", ".join(missing))
    allowed_ids = settings.allowed_event_ids
    if allowed_ids is not None and event.business_event_id not in allowed_ids:
        shown = event.business_event_id or "(none)"
        return Rejection(422, "event_not_accepted", f"business event {shown!r} is not accepted here")
    entities = settings.allowed_legal_entities
    if entities is not None and (event.legal_entity or "").lower() not in entities:
        shown = event.legal_entity or "(none)"
        return Rejection(422, "legal_entity_not_accepted", f"legal entity {shown!r} is not accepted here")
    return None
