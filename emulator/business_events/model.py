"""Business events configuration and bookkeeping (ref §5.2, §5.3): endpoints, activations, delivery settings
and fault options, the error log and the delivery log. In memory, thread-safe; ``reset()`` forgets it all.

Endpoints are HTTPS-style: D365 reads the function URL (with its ``?code=`` key) from Key Vault (ref §5.2
[S35]); an endpoint here holds either that literal ``url`` or a ``key_vault_secret`` name looked up in the
emulator's own vault at delivery time. Activations pair an event with an endpoint for one legal entity or
for all (``legal_entity`` None); at most ``endpoints_per_event`` endpoints per event and legal entity (10 by
default, "Endpoints allowed per event", ref §5.2).
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from emulator.business_events.options import ConfigError, DeliveryFaults, DeliverySettings, integer_option
from emulator.business_events.payloads import EnvelopeVariant
from shared.redact import redact_text, redact_url

__all__ = [
    "Activation",
    "Attempt",
    "BusinessEventsModel",
    "ConfigError",
    "DeliveryFaults",
    "DeliveryRecord",
    "DeliverySettings",
    "Endpoint",
    "ErrorEntry",
    "safe_error",
    "utc_stamp",
]

_LOG_SIZE = 1000  # delivery log entries kept (oldest dropped)


def utc_stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Endpoint:
    id: str
    name: str
    url: str | None = None
    key_vault_secret: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    variant: EnvelopeVariant = EnvelopeVariant.CURRENT
    timeout_ms: int = 0  # 0 = the default of the settings (ref §5.2: "0 = default")
    faults: DeliveryFaults | None = None  # None: the global fault options apply
    created: str = ""

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, existing: Endpoint | None = None) -> Endpoint:
        """A new endpoint from an admin body, or ``existing`` with the given fields changed."""
        base = existing or cls(id=str(uuid.uuid4()), name="", created=utc_stamp())
        known = {"name", "url", "key_vault_secret", "headers", "payload_variant", "timeout_ms", "faults"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise ConfigError(
                f"unknown endpoint field {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        name = body.get("name", base.name)
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("'name' (a non-empty string) is required")
        url, secret = body.get("url", base.url), body.get("key_vault_secret", base.key_vault_secret)
        if "url" in body and "key_vault_secret" not in body:
            secret = None
        elif "key_vault_secret" in body and "url" not in body:
            url = None
        if (url is None) == (secret is None):
            raise ConfigError("give exactly one of 'url' (the function URL) or 'key_vault_secret' (its name)")
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise ConfigError("'url' must be an http:// or https:// URL")
        if secret is not None and (not isinstance(secret, str) or not secret.strip()):
            raise ConfigError("'key_vault_secret' must be a secret name")
        headers = body.get("headers", base.headers)
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ConfigError("'headers' must be an object of header names to string values")
        try:
            variant = EnvelopeVariant(body.get("payload_variant", base.variant))
        except ValueError:
            raise ConfigError("'payload_variant' must be 'current' or 'legacy'") from None
        timeout = integer_option(body, "timeout_ms", base.timeout_ms, low=0, high=600_000)
        faults = base.faults
        if "faults" in body:
            raw = body["faults"]
            if raw is not None and not isinstance(raw, Mapping):
                raise ConfigError("'faults' must be an object of fault options or null")
            faults = DeliveryFaults.from_json(raw) if raw is not None else None
        return replace(
            base,
            name=name.strip(),
            url=url,
            key_vault_secret=secret.strip() if isinstance(secret, str) else None,
            headers=dict(headers),
            variant=variant,
            timeout_ms=timeout,
            faults=faults,
        )

    def to_json(self) -> dict[str, Any]:
        """For the admin API: the URL's ``code`` key and credential-like header values are masked."""
        return {
            "id": self.id,
            "name": self.name,
            "url": redact_url(self.url) if self.url else None,
            "key_vault_secret": self.key_vault_secret,
            "headers": dict.fromkeys(self.headers, "***"),
            "payload_variant": self.variant.value,
            "timeout_ms": self.timeout_ms,
            "faults": self.faults.to_json() if self.faults else None,
            "created": self.created,
        }


@dataclass(frozen=True)
class Activation:
    id: str
    event_id: str
    legal_entity: str | None  # None: all legal entities
    endpoint_id: str
    created: str

    def matches(self, event_id: str, legal_entity: str) -> bool:
        return self.event_id == event_id and (
            self.legal_entity is None or self.legal_entity.lower() == legal_entity.lower()
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event": self.event_id,
            "legal_entity": self.legal_entity,
            "endpoint": self.endpoint_id,
            "created": self.created,
        }


@dataclass(frozen=True)
class Attempt:
    at: str
    status: int | None  # HTTP status, None when no answer came (timeout, refused, Key Vault failure)
    error: str | None  # None on success; redacted
    duration_ms: int

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "status": self.status, "error": self.error, "duration_ms": self.duration_ms}


@dataclass
class DeliveryRecord:
    """One event on its way to one endpoint (a duplicate or a resend is a record of its own)."""

    id: str
    endpoint_id: str
    endpoint_name: str
    business_event_id: str
    event_id: str  # the payload's EventId (same for every endpoint and every copy)
    control_number: int | None
    legal_entity: str
    payload: bytes
    enqueued: str
    kind: str = "event"  # "event", "duplicate" (fault injected) or "resend" (from the error log)
    attempts: list[Attempt] = field(default_factory=list)
    outcome: str = "pending"  # "pending", "delivered", "failed", "cancelled"

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "endpoint": self.endpoint_id,
            "endpoint_name": self.endpoint_name,
            "business_event_id": self.business_event_id,
            "event_id": self.event_id,
            "control_number": self.control_number,
            "legal_entity": self.legal_entity,
            "kind": self.kind,
            "enqueued": self.enqueued,
            "outcome": self.outcome,
            "status": self.attempts[-1].status if self.attempts else None,
            "attempts": [a.to_json() for a in self.attempts],
        }


@dataclass(frozen=True)
class ErrorEntry:
    """An event whose retries are exhausted (the "Errors" tab, ref §5.3); resend or download its payload."""

    id: str
    at: str
    delivery: DeliveryRecord

    def to_json(self) -> dict[str, Any]:
        record = self.delivery
        last = record.attempts[-1] if record.attempts else None
        return {
            "id": self.id,
            "at": self.at,
            "endpoint": record.endpoint_id,
            "endpoint_name": record.endpoint_name,
            "business_event_id": record.business_event_id,
            "event_id": record.event_id,
            "control_number": record.control_number,
            "legal_entity": record.legal_entity,
            "attempts": len(record.attempts),
            "last_status": last.status if last else None,
            "last_error": last.error if last else None,
        }


class BusinessEventsModel:
    """Endpoints, activations, settings, fault options and the two logs of one emulator process."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.endpoints: dict[str, Endpoint] = {}
        self.activations: dict[str, Activation] = {}
        self.settings = DeliverySettings()
        self.faults = DeliveryFaults()
        self.errors: dict[str, ErrorEntry] = {}
        self.log: deque[DeliveryRecord] = deque(maxlen=_LOG_SIZE)
        self.counters: dict[str, int] = {}

    def reset(self) -> None:
        with self.lock:
            self.endpoints.clear()
            self.activations.clear()
            self.settings = DeliverySettings()
            self.faults = DeliveryFaults()
            self.errors.clear()
            self.log.clear()
            self.counters.clear()

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + n

    # -- endpoints --------------------------------------------------------------------------------------

    def endpoint(self, key: str) -> Endpoint:
        """By id, or by name (case-insensitive)."""
        with self.lock:
            found = self.endpoints.get(key) or next(
                (e for e in self.endpoints.values() if e.name.lower() == key.lower()), None
            )
        if found is None:
            raise ConfigError(f"no business event endpoint '{key}'", 404)
        return found

    def put_endpoint(self, endpoint: Endpoint) -> Endpoint:
        with self.lock:
            clash = next(
                (
                    e
                    for e in self.endpoints.values()
                    if e.name.lower() == endpoint.name.lower() and e.id != endpoint.id
                ),
                None,
            )
            if clash is not None:
                raise ConfigError(f"an endpoint named '{endpoint.name}' exists already ({clash.id})", 409)
            self.endpoints[endpoint.id] = endpoint
        return endpoint

    def delete_endpoint(self, key: str) -> None:
        """Like D365, an endpoint that events are activated for cannot be deleted: deactivate them first."""
        with self.lock:
            endpoint = self.endpoint(key)
            used = sorted({a.event_id for a in self.activations.values() if a.endpoint_id == endpoint.id})
            if used:
                raise ConfigError(
                    f"endpoint '{endpoint.name}' is in use by {', '.join(used)}; deactivate them first", 409
                )
            del self.endpoints[endpoint.id]

    # -- activations ------------------------------------------------------------------------------------

    def activate(self, event_id: str, legal_entity: str | None, endpoint_key: str) -> Activation:
        with self.lock:
            endpoint = self.endpoint(endpoint_key)
            for existing in self.activations.values():
                same_entity = (existing.legal_entity or "").lower() == (legal_entity or "").lower()
                if existing.event_id == event_id and existing.endpoint_id == endpoint.id and same_entity:
                    return existing
            # the limit counts per legal entity; an "all legal entities" activation overlaps every one
            targets = {
                a.endpoint_id
                for a in self.activations.values()
                if a.event_id == event_id
                and (
                    a.legal_entity is None
                    or legal_entity is None
                    or a.legal_entity.lower() == legal_entity.lower()
                )
            } | {endpoint.id}
            limit = self.settings.endpoints_per_event
            if len(targets) > limit:
                where = f"legal entity {legal_entity}" if legal_entity else "all legal entities"
                raise ConfigError(
                    f"{event_id} is activated for {limit} endpoints in {where} already (the limit)", 409
                )
            activation = Activation(str(uuid.uuid4()), event_id, legal_entity, endpoint.id, utc_stamp())
            self.activations[activation.id] = activation
            return activation

    def deactivate(self, activation_id: str) -> None:
        with self.lock:
            if self.activations.pop(activation_id, None) is None:
                raise ConfigError(f"no activation '{activation_id}'", 404)

    def targets(self, event_id: str, legal_entity: str) -> list[Endpoint]:
        """The endpoints an event raised in ``legal_entity`` goes to (each once)."""
        with self.lock:
            ids = dict.fromkeys(
                a.endpoint_id for a in self.activations.values() if a.matches(event_id, legal_entity)
            )
            return [self.endpoints[i] for i in ids if i in self.endpoints]

    # -- logs -------------------------------------------------------------------------------------------

    def logged(self, record: DeliveryRecord) -> None:
        with self.lock:
            self.log.append(record)

    def add_error(self, record: DeliveryRecord) -> ErrorEntry:
        entry = ErrorEntry(str(uuid.uuid4()), utc_stamp(), record)
        with self.lock:
            self.errors[entry.id] = entry
        return entry

    def error(self, error_id: str) -> ErrorEntry:
        with self.lock:
            found = self.errors.get(error_id)
        if found is None:
            raise ConfigError(f"no business event error '{error_id}'", 404)
        return found

    def take_error(self, error_id: str) -> ErrorEntry:
        with self.lock:
            entry = self.error(error_id)
            del self.errors[error_id]
            return entry


def safe_error(text: str) -> str:
    """Error text for the logs: function keys, SAS signatures and tokens masked, kept short."""
    return redact_text(text)[:500]
