"""Business events processed: each stored event runs its handlers once, with retries, poison and replay.

``process_stored_event`` runs for each raw event blob (the blob trigger), for a due retry (the retry timer),
for an event the trigger missed (the timer's sweep) and for an operator's replay. At-least-once triggers
and several instances are expected:

- the raw blob's **lease** is the per-event mutex across instances (another holder → "busy", no work);
- the **status record** (``state/business-events/{EventId}.json``) is the processed marker: a succeeded
  event is not processed again, and each attempt is counted *before* the handlers run, so a crash counts;
- handlers that already succeeded are recorded and skipped on later attempts;
- a failure schedules the next attempt with backoff (a retry marker the timer picks up), and after
  ``BUSINESS_EVENTS_MAX_ATTEMPTS`` (or at once for a permanent error) the event goes to the **poison
  area** with its error; ``business_event_replay`` runs due retries and operators' replays;
- once the status record first exists, the raw blob's ``processing`` tag says ``started`` (the sweep's
  index, ``business_event_sweep``; a crash in between is repaired by the sweep, which checks the record).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobLeaseClient

from shared.context import AppContext
from shared.events.handler_api import HandlerContext, is_permanent
from shared.events.handlers import HandlerRegistry, default_registry
from shared.events.layout import poison_path, retry_path, state_path
from shared.events.model import (
    BusinessEvent,
    EventFormatError,
    EventSource,
    iso,
    parse_event,
)
from shared.events.sequence import SequenceVerdict, observe
from shared.events.settings import BusinessEventProcessingSettings, BusinessEventSettings
from shared.logs import log_context, log_crash, log_event
from shared.pipelines.business_event_tags import mark_started
from shared.redact import redact_text
from shared.status import Outcome, StatusRecord
from shared.storage import JSON_CONTENT, LeaseUnavailableError

__all__ = ["Mode", "ProcessOutcome", "ProcessResult", "delete_blob", "process_stored_event", "utc_now"]

log = logging.getLogger(__name__)

Mode = Literal["trigger", "retry", "replay", "sweep"]
_LEASE_SECONDS = 60
_KEPT_ERRORS = 10
_KEPT_SUMMARIES = 20


class ProcessOutcome(StrEnum):
    PROCESSED = "processed"
    ALREADY_PROCESSED = "already_processed"
    RETRY_SCHEDULED = "retry_scheduled"
    POISONED = "poisoned"
    BUSY = "busy"  # another instance is processing this event right now
    MISSING = "missing"  # the raw event blob does not exist


@dataclass(frozen=True)
class ProcessResult:
    outcome: ProcessOutcome
    blob: str
    event_id: str | None = None
    attempts: int = 0
    message: str = ""
    out_of_order: bool | None = None
    outputs: tuple[str, ...] = ()
    next_attempt_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = str(self.outcome)
        data["outputs"] = list(self.outputs)
        return data


def utc_now() -> datetime:
    return datetime.now(UTC)


def _raw_name(blob_name: str, container: str) -> str:
    """Accept ``container/path`` (what a blob trigger gives) or the path alone."""
    return blob_name.removeprefix(f"{container}/").lstrip("/")


def _error_text(exc: BaseException) -> str:
    return redact_text(f"{type(exc).__name__}: {exc}")[:2000]


def _read_event(context: AppContext, settings: BusinessEventSettings, name: str) -> BusinessEvent | None:
    """The stored event (None when the blob is missing); EventFormatError when it is not an event."""
    try:
        downloader = context.store.blob(settings.raw_container, name).download_blob()
    except ResourceNotFoundError:
        return None
    data = downloader.readall()
    metadata = downloader.properties.metadata or {}
    try:
        fields = json.loads(data)
    except ValueError:
        raise EventFormatError("invalid_json", "the stored blob is not JSON") from None
    source = metadata.get("source", EventSource.NATIVE)
    return parse_event(
        fields,
        data,
        source=EventSource(source) if source in set(EventSource) else EventSource.NATIVE,
        exact_original=metadata.get("original") != "reserialized",
        envelope={k.removeprefix("envelope_"): v for k, v in metadata.items() if k.startswith("envelope_")},
    )


def _put(context: AppContext, container: str, name: str, value: Any, metadata: dict[str, str]) -> None:
    """Overwrite a small JSON record with listing metadata (so a sweep needs no read per record)."""
    body = json.dumps(value, indent=2, sort_keys=True, default=str).encode("utf-8")
    context.store.blob(container, name).upload_blob(
        body, overwrite=True, metadata=metadata, content_settings=JSON_CONTENT
    )


def delete_blob(context: AppContext, container: str, name: str) -> None:
    with suppress(ResourceNotFoundError):
        context.store.blob(container, name).delete_blob()


class _Attempt:
    """One processing attempt of one event, holding its lease; writes the status record as it goes."""

    def __init__(
        self,
        context: AppContext,
        settings: BusinessEventSettings,
        event: BusinessEvent,
        raw_blob: str,
        record: StatusRecord | None,
        clock: Callable[[], datetime],
        lease: BlobLeaseClient | None = None,
    ) -> None:
        self.context, self.settings, self.event = context, settings, event
        self.raw_blob, self.clock, self.lease = raw_blob, clock, lease
        self.first_record = record is None
        self.processing = context.settings.section(BusinessEventProcessingSettings)
        self.record = record or StatusRecord(
            kind="business-event",
            subject=raw_blob,
            outcome=Outcome.RECEIVED,
            message="stored on receipt",
            correlation={
                "event_id": event.event_id,
                "business_event_id": event.event_key,
                "legal_entity": event.legal_entity_key,
                "control_number": "" if event.control_number is None else str(event.control_number),
            },
        )
        self.details = self.record.details

    def save(self) -> None:
        # The raw blob's lease serialises every writer of this record, so a plain overwrite is safe.
        self.context.store.write_json(
            self.settings.state_container, state_path(self.event.event_id), self.record.to_dict()
        )

    def result(self, outcome: ProcessOutcome, **extra: Any) -> ProcessResult:
        return ProcessResult(
            outcome,
            self.raw_blob,
            self.event.event_id,
            int(self.details.get("attempts", 0)),
            self.record.message,
            **extra,
        )

    def poison(self, error: str, permanent: bool) -> ProcessResult:
        attempts = int(self.details.get("attempts", 0))
        why = "a permanent error" if permanent else f"{attempts} attempt(s)"
        poison = {
            "event_id": self.event.event_id,
            "blob": self.raw_blob,
            "business_event_id": self.event.business_event_id,
            "legal_entity": self.event.legal_entity,
            "control_number": self.event.control_number,
            "attempts": attempts,
            "permanent": permanent,
            "error": error,
            "errors": self.details.get("errors", []),
            "poisoned_at": iso(self.clock()),
        }
        # The poison record first: whoever sees the status record say "poisoned" can replay it at once.
        _put(
            self.context,
            self.settings.poison_container,
            poison_path(self.event.event_id),
            poison,
            {"blob": self.raw_blob, "event_id": self.event.event_id},
        )
        self.details.update(poisoned=True, next_attempt_at=None)
        self.record.advance(Outcome.FAILED, f"poisoned after {why}: {error}")
        self.save()
        delete_blob(self.context, self.settings.state_container, retry_path(self.event.event_id))
        log_event(
            log,
            "EVENT_POISONED",
            logging.ERROR,
            f"poisoned after {why}: {error}",
            business_event=self.event.event_key,
            attempts=attempts,
            permanent=permanent,
            poison=f"{self.settings.poison_container}/{poison_path(self.event.event_id)}",
        )
        return self.result(ProcessOutcome.POISONED)

    def schedule_retry(self, error: str) -> ProcessResult:
        attempts = int(self.details.get("attempts", 0))
        due = self.clock() + timedelta(seconds=self.processing.retry_delay(attempts))
        marker = {
            "blob": self.raw_blob,
            "event_id": self.event.event_id,
            "due": iso(due),
            "attempts": attempts,
        }
        metadata = {"blob": self.raw_blob, "due": f"{due.timestamp():.3f}"}
        # The marker first: a crash before the status record is written still leaves the retry scheduled.
        _put(self.context, self.settings.state_container, retry_path(self.event.event_id), marker, metadata)
        self.details.update(next_attempt_at=iso(due))
        self.record.advance(Outcome.IN_PROGRESS, f"attempt {attempts} failed, next at {iso(due)}: {error}")
        self.save()
        log_event(
            log,
            "EVENT_RETRY_SCHEDULED",
            logging.WARNING,
            f"attempt {attempts} failed: {error}",
            attempts=attempts,
            next_attempt_at=iso(due),
        )
        return self.result(ProcessOutcome.RETRY_SCHEDULED, next_attempt_at=iso(due))

    def run(self, registry: HandlerRegistry, mode: Mode) -> ProcessResult:
        details = self.details
        was_poisoned = bool(details.get("poisoned"))
        if mode == "replay":
            if self.record.outcome is Outcome.SUCCEEDED:
                details["completed_handlers"] = []  # a forced replay runs every handler again
            details.update(attempts=0, poisoned=False)
        details["attempts"] = int(details.get("attempts", 0)) + 1
        details["next_attempt_at"] = None
        self.record.advance(Outcome.IN_PROGRESS, f"attempt {details['attempts']} ({mode})")
        self.save()  # counted before the handlers run: an attempt that crashes the process still counts
        if self.first_record:  # only now: a tag saying "started" must never hide an event without a record
            name = _raw_name(self.raw_blob, self.settings.raw_container)
            mark_started(self.context, self.settings, name, self.lease)
        if was_poisoned:
            delete_blob(self.context, self.settings.poison_container, poison_path(self.event.event_id))
        verdict = observe(self.context.store, self.settings.state_container, self.event)
        details["sequence"] = verdict.to_dict()
        completed: list[str] = list(details.get("completed_handlers", []))
        outputs: list[str] = list(details.get("outputs", []))
        try:
            handlers = registry.resolve(self.event.business_event_id, self.processing.handlers)
            for handler in handlers:
                if handler.name in completed:
                    continue
                if verdict.out_of_order and handler.skip_out_of_order:
                    summary = f"{handler.name}: skipped (out of order)"
                else:
                    outcome = handler.run(self.event, self._handler_context(verdict))
                    summary = f"{handler.name}: {outcome.summary if outcome else 'done'}"
                    outputs.extend(o for o in (outcome.outputs if outcome else ()) if o not in outputs)
                completed.append(handler.name)
                details["summaries"] = [*details.get("summaries", []), summary][-_KEPT_SUMMARIES:]
                details.update(completed_handlers=completed, outputs=outputs)
        except Exception as exc:  # a handler's failure is an outcome of this event, not of the trigger
            error = _error_text(exc)
            errors = [
                *details.get("errors", []),
                {"attempt": details["attempts"], "at": iso(self.clock()), "error": error},
            ]
            details.update(errors=errors[-_KEPT_ERRORS:], completed_handlers=completed, outputs=outputs)
            permanent = is_permanent(exc)
            if permanent or details["attempts"] >= self.processing.max_attempts:
                return self.poison(error, permanent)
            return self.schedule_retry(error)
        self.record.advance(Outcome.SUCCEEDED, f"handled by {', '.join(h.name for h in handlers)}")
        self.save()
        if details.get("errors"):  # an earlier attempt failed, so a retry marker may be left
            delete_blob(self.context, self.settings.state_container, retry_path(self.event.event_id))
        log_event(
            log,
            "EVENT_PROCESSED",
            logging.INFO,
            f"handled by {', '.join(h.name for h in handlers)}",
            attempts=details["attempts"],
            out_of_order=verdict.out_of_order,
        )
        return self.result(
            ProcessOutcome.PROCESSED, out_of_order=verdict.out_of_order, outputs=tuple(outputs)
        )

    def _handler_context(self, verdict: SequenceVerdict) -> HandlerContext:
        return HandlerContext(
            app=self.context,
            settings=self.processing,
            sequence=verdict,
            attempt=int(self.details["attempts"]),
            raw_blob=self.raw_blob,
        )


def _poison_unreadable(
    context: AppContext, settings: BusinessEventSettings, name: str, error: str
) -> ProcessResult:
    raw_blob = f"{settings.raw_container}/{name}"
    record = {
        "event_id": None,
        "blob": raw_blob,
        "permanent": True,
        "error": error,
        "poisoned_at": iso(utc_now()),
    }
    _put(context, settings.poison_container, f"_unreadable/{name}", record, {"blob": raw_blob})
    mark_started(context, settings, name)  # the poison record is its outcome: the sweep leaves it alone
    log_event(
        log,
        "EVENT_POISONED",
        logging.ERROR,
        f"the stored blob is not a business event: {error}",
        blob=raw_blob,
        permanent=True,
        unreadable=True,
    )
    return ProcessResult(ProcessOutcome.POISONED, raw_blob, message=error)


def process_stored_event(
    context: AppContext,
    blob_name: str,
    *,
    registry: HandlerRegistry | None = None,
    mode: Mode = "trigger",
    force: bool = False,
    clock: Callable[[], datetime] = utc_now,
) -> ProcessResult:
    """Run the handlers of one stored event (``container/path`` or the path in the raw container).

    ``mode="replay"`` processes a poisoned event again; with ``force`` also a processed one (every handler).
    """
    settings = context.settings.section(BusinessEventSettings)
    name = _raw_name(blob_name, settings.raw_container)
    raw_blob = f"{settings.raw_container}/{name}"
    try:
        event = _read_event(context, settings, name)
    except EventFormatError as exc:
        return _poison_unreadable(context, settings, name, exc.message)
    if event is None:
        return ProcessResult(ProcessOutcome.MISSING, raw_blob, message="the stored event does not exist")
    try:
        with (
            log_context(event_id=event.event_id, blob=raw_blob, mode=mode),
            log_crash(log, "business_event", expected=(LeaseUnavailableError,)),
            context.store.lease(settings.raw_container, name, seconds=_LEASE_SECONDS) as lease,
        ):
            found = context.store.read_json(settings.state_container, state_path(event.event_id))
            record = StatusRecord.from_dict(found.value) if found is not None else None
            attempt = _Attempt(context, settings, event, raw_blob, record, clock, lease)
            if record is not None and record.outcome is Outcome.SUCCEEDED and mode == "replay" and not force:
                # a poison record left by a crash before the event later succeeded: only tidy it up
                delete_blob(context, settings.poison_container, poison_path(event.event_id))
                return attempt.result(ProcessOutcome.ALREADY_PROCESSED)
            if record is not None and mode != "replay":
                if record.outcome is Outcome.SUCCEEDED:
                    return attempt.result(ProcessOutcome.ALREADY_PROCESSED)
                if record.details.get("poisoned"):
                    return attempt.result(ProcessOutcome.POISONED)
                due = record.details.get("next_attempt_at")
                if mode in ("trigger", "sweep") and due and datetime.fromisoformat(due) > clock():
                    return attempt.result(ProcessOutcome.RETRY_SCHEDULED, next_attempt_at=due)
            return attempt.run(registry or default_registry, mode)
    except LeaseUnavailableError:
        return ProcessResult(
            ProcessOutcome.BUSY, raw_blob, event.event_id, message="another instance holds it"
        )
