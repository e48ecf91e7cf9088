"""``state.business_events``: the business events family of one emulator process — the model (endpoints,
activations, logs), the delivery workers and the raise path that builds payloads for the activated endpoints.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emulator.business_events.catalog import event_definition
from emulator.business_events.delivery import DeliveryService, EndpointUnavailableError
from emulator.business_events.model import BusinessEventsModel, DeliveryRecord, Endpoint, utc_stamp
from emulator.business_events.payloads import (
    EnvelopeVariant,
    build_payload,
    contract_fields,
    next_control_number,
)
from emulator.keyvault_model import KeyVaultError

if TYPE_CHECKING:
    from emulator.state import EmulatorState

__all__ = ["INITIATING_USER_OBJECT_ID", "BusinessEvents", "RaisedEvent"]

# The Entra object id of the F&O user "Admin" that service calls run as (ref §8.2); an emulator constant.
INITIATING_USER_OBJECT_ID = uuid.UUID("410a2690-5ec2-42ee-9f2a-e75b4e324930")


@dataclass(frozen=True)
class RaisedEvent:
    """What one raise produced: the envelope identity and the copies queued per endpoint."""

    business_event_id: str
    legal_entity: str
    event_id: str
    control_number: int | None
    payload: dict[str, Any]  # the current-envelope payload (what most endpoints get)
    deliveries: tuple[DeliveryRecord, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "business_event_id": self.business_event_id,
            "legal_entity": self.legal_entity,
            "event_id": self.event_id,
            "control_number": self.control_number,
            "deliveries": [
                {"id": d.id, "endpoint": d.endpoint_id, "endpoint_name": d.endpoint_name, "kind": d.kind}
                for d in self.deliveries
            ],
            "payload": self.payload,
        }


class BusinessEvents:
    def __init__(self) -> None:
        self.model = BusinessEventsModel()
        self.delivery = DeliveryService(self.model, self._endpoint_url)
        self._state: EmulatorState | None = None
        self._url_cache: dict[str, tuple[str, float]] = {}

    def attach(self, state: EmulatorState) -> None:
        """Wire to the rest of the emulator: the vault for endpoint URLs, OData changes as event sources."""
        from emulator.business_events.emission import watch_odata

        self._state = state
        watch_odata(state.odata, self)

    def reset(self) -> None:
        """No endpoints, activations, logs or faults; queued deliveries dropped (in-flight answers ignored).
        Control numbers keep increasing."""
        self.delivery.cancel_all()
        self.model.reset()
        with self.model.lock:
            self._url_cache.clear()

    def close(self) -> None:
        self.delivery.close()

    @property
    def default_company(self) -> str:
        return self._state.config.default_company if self._state is not None else "usmf"

    # -- raising ------------------------------------------------------------------------------------------

    def raise_event(
        self,
        event_id: str,
        legal_entity: str | None = None,
        fields: Mapping[str, Any] | None = None,
        *,
        initiating_user: uuid.UUID | None = None,
    ) -> RaisedEvent:
        """Raise one business event: check the fields against the contract and queue one payload per
        activated endpoint. Not activated anywhere: nothing is queued and no ControlNumber is used, like D365
        (only activated events are built, ref §5.3). ``PayloadError`` for an unknown event or a bad field."""
        definition = event_definition(event_id)
        company = (legal_entity or self.default_company).strip()
        values = contract_fields(definition, fields or {}, legal_entity=company)
        targets = self.model.targets(definition.event_id, company)
        control = next_control_number() if targets else None
        event_guid, now_ns = uuid.uuid4(), time.time_ns()
        user = initiating_user or INITIATING_USER_OBJECT_ID

        def payload_for(variant: EnvelopeVariant) -> dict[str, Any]:
            return build_payload(
                definition,
                legal_entity=company,
                fields=values,
                control_number=control or 0,
                event_id=event_guid,
                event_time_ns=now_ns,
                initiating_user=user,
                variant=variant,
            )

        payloads = {variant: payload_for(variant) for variant in EnvelopeVariant}
        event_id_text = str(event_guid).upper()
        deliveries: list[DeliveryRecord] = []
        for endpoint in targets:
            record = DeliveryRecord(
                id=str(uuid.uuid4()),
                endpoint_id=endpoint.id,
                endpoint_name=endpoint.name,
                business_event_id=definition.event_id,
                event_id=event_id_text,
                control_number=control,
                legal_entity=company,
                payload=json.dumps(payloads[endpoint.variant], separators=(",", ":")).encode(),
                enqueued=utc_stamp(),
            )
            deliveries += self.delivery.submit(record, endpoint)
        self.model.count("raised")
        if not targets:
            self.model.count("not_activated")
        return RaisedEvent(
            definition.event_id,
            company,
            event_id_text,
            control,
            payloads[EnvelopeVariant.CURRENT],
            tuple(deliveries),
        )

    def activated(self, event_id: str, legal_entity: str) -> bool:
        """Whether raising this event in this legal entity would send anything."""
        return bool(self.model.targets(event_id, legal_entity))

    # -- endpoint URLs ------------------------------------------------------------------------------------

    def _endpoint_url(self, endpoint: Endpoint) -> str:
        """The literal URL, or the Key Vault secret's value, cached like D365's "Key vault secret cache
        interval" (ref §5.2, default 5 minutes; ``key_vault_cache_seconds``)."""
        if endpoint.url is not None:
            return endpoint.url
        name = endpoint.key_vault_secret or ""
        now = time.monotonic()
        with self.model.lock:
            cached = self._url_cache.get(name.lower())
            ttl = self.model.settings.key_vault_cache_seconds
        if cached is not None and cached[1] > now:
            return cached[0]
        if self._state is None:
            raise EndpointUnavailableError(f"no Key Vault to read the secret '{name}' from")
        try:
            value = self._state.vault.get_secret(name).value.strip()
        except KeyVaultError as exc:
            raise EndpointUnavailableError(
                f"the endpoint URL could not be read from Key Vault secret '{name}': {exc.message}"
            ) from None
        if not value.startswith(("http://", "https://")):
            raise EndpointUnavailableError(f"Key Vault secret '{name}' does not hold an http(s) URL")
        if ttl > 0:
            with self.model.lock:
                self._url_cache[name.lower()] = (value, now + ttl)
        return value

    def forget_cached_url(self, secret_name: str | None) -> None:
        if secret_name:
            with self.model.lock:
                self._url_cache.pop(secret_name.lower(), None)
