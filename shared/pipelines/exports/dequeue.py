"""Recurring export dequeue: drain an activity's queue into the exports container, each package exactly once.

Per run (one activity, under a blob lease so one instance at a time drains it):
dequeue until 204 or the run's budget is used. Per message (ref §4; peers §2.1, §5):

1. **Claim** ``state/exports/{activity-id}/{correlation-id}.json`` with If-None-Match: the first sight fixes
   the package's name (its date); a re-offered message reads the same name back.
2. **Store** unless the package already exists: ``DownloadLocation`` (https rewrite, bearer token, resumed
   after drops by ``ConnectorClient.download_to``) streams into staged blocks that become the blob in one
   commit with If-None-Match: nothing half-written is ever visible, and a second writer cannot make a copy.
3. **Describe** (optional): unpack the package next to it and/or write its manifest record.
4. **Ack** with the exact dequeue body, only now that the package is durably stored. The client retries
   the ack under the resilience policy; if it still fails, D365 re-offers the message in 30 minutes and
   the next run finds the package stored and only acks.

A crash before step 2 finishes leaves nothing visible: D365 re-offers the message. A crash after it, a
failed ack or a redelivery all end in "already stored → ack". A status record next to the package says
what happened (``shared.status``), with the history of every delivery. A package that keeps failing to
download is given up on after ``EXPORT_DOWNLOAD_MAX_ATTEMPTS`` (``give_up``), not re-tried for ever.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import IO, Any, cast

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.context import AppContext
from shared.d365.connector import ConnectorClient, DequeuedMessage
from shared.d365.errors import D365Error
from shared.logs import current_log_context, log_context, log_crash, log_event
from shared.pipelines.exports.blob_writer import BlockBlobWriter
from shared.pipelines.exports.give_up import DownloadFailure, count_failure, give_up_text, mark_given_up
from shared.pipelines.exports.layout import (
    export_lock_name,
    export_state_name,
    manifest_name,
    package_name,
    safe_correlation_id,
    unpacked_prefix,
)
from shared.pipelines.exports.report import ItemReport, RunBudget, RunReport
from shared.pipelines.exports.settings import ExportActivity, ExportSettings
from shared.pipelines.exports.unpack import UnpackLimits, describe_package
from shared.redact import redact_text
from shared.status import Outcome, StatusRecord, status_name
from shared.storage import BlobStore, LeaseUnavailableError

__all__ = ["dequeue_all_exports", "dequeue_exports"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def dequeue_exports(
    context: AppContext,
    activity: ExportActivity,
    *,
    budget: RunBudget | None = None,
    now: Clock = _utc_now,
    connector: ConnectorClient | None = None,
) -> RunReport:
    """Dequeue, store and ack every waiting message of ``activity`` within ``budget``; never raises for
    D365 or storage failures (they are in the report and the status records)."""
    settings = context.settings.section(ExportSettings)
    budget = budget if budget is not None else RunBudget.from_settings(settings)
    run = _Run(context.store, settings, activity, connector or ConnectorClient(context.transport), now)
    started = budget.elapsed()
    with (
        log_context(activity=activity.name, activity_id=activity.activity_id),
        log_crash(log, "export_dequeue"),
    ):
        try:
            with context.store.lease(
                settings.state_container, export_lock_name(activity.key), seconds=settings.lease_seconds
            ):
                run.drain(budget)
        except LeaseUnavailableError:
            run.report.stopped_by = "lease_held"
        except AzureError as exc:  # the lock itself could not be taken: storage is unreachable
            run.report.stopped_by = "error"
            run.report.errors.append(f"blob storage: {redact_text(str(exc).splitlines()[0])}")
        run.report.seconds = budget.elapsed() - started
        run.report.log_ids = current_log_context()  # the trigger's summary line carries them too
        log.log(logging.INFO if run.report.ok else logging.WARNING, "%s", run.report.summary())
    return run.report


class _Run:
    def __init__(
        self,
        store: BlobStore,
        settings: ExportSettings,
        activity: ExportActivity,
        client: ConnectorClient,
        now: Clock,
    ) -> None:
        self.store, self.settings, self.activity = store, settings, activity
        self.client, self.now = client, now
        self.container = settings.container
        self.report = RunReport("dequeue", activity.name)

    def drain(self, budget: RunBudget) -> None:
        while True:
            reason = budget.exhausted()
            if reason is not None:
                self.report.stopped_by = reason
                return
            try:
                message = self.client.dequeue(self.activity.activity_id)
            except D365Error as exc:
                log_event(log, "EXPORT_DEQUEUE_FAILED", logging.ERROR, str(exc))
                self.report.errors.append(f"dequeue failed: {exc}")
                self.report.stopped_by = "error"
                return
            if message is None:
                self.report.stopped_by = "queue_empty"
                return
            budget.charge(messages=1)
            try:
                with log_context(message_id=message.correlation_id[:100]):
                    item = self.report.add(self.handle(message))
            except AzureError as exc:  # storage failed mid-message: not acked, D365 re-offers it
                text = redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                log_event(
                    log,
                    "EXPORT_STORAGE_FAILED",
                    logging.ERROR,
                    f"not acked; D365 offers it again: {text}",
                    message_id=message.correlation_id[:100],
                )
                self.report.add(ItemReport(message.correlation_id[:100], "failed", acked=False, error=text))
                self.report.errors.append(f"blob storage: {text}")
                self.report.stopped_by = "error"
                return
            budget.charge(size=item.bytes)

    # -- one message

    def handle(self, message: DequeuedMessage) -> ItemReport:
        try:
            correlation_id = safe_correlation_id(message.correlation_id)
        except ValueError as exc:  # never used in a name; the message stays with D365
            log_event(log, "EXPORT_MESSAGE_INVALID", logging.ERROR, f"not stored, not acked: {exc}")
            return ItemReport(message.correlation_id[:100], "failed", acked=False, error=str(exc))
        state, first = self.claim(correlation_id)
        path = str(state["path"])
        item = ItemReport(correlation_id, "already_stored", path=f"{self.container}/{path}")
        blob = self.store.blob(self.container, path)
        stored = _properties(blob)
        if stored is None:
            if state.get("given_up_at") and self.settings.give_up_ack:  # its ack failed: only ack now
                return self.give_up(message, item, state, first)
            try:
                created, size, digest = self.download(message, blob, correlation_id, state)
            except D365Error as exc:
                return self.download_failed(message, item, state, first, exc)
            item.action, item.bytes = ("stored" if created else "already_stored"), size
            facts = {"bytes": size, "sha256": digest}
        else:
            facts = {"bytes": stored["size"], "sha256": stored["sha256"]}
        described = self.describe(path, correlation_id, state)
        item.details.update({k: v for k, v in described.items() if k != "problems"})
        try:
            self.client.ack(self.activity.activity_id, message)
            item.acked = True
        except D365Error as exc:
            item.acked, item.error = False, f"ack failed: {exc}"
            log_event(
                log, "EXPORT_ACK_FAILED", logging.ERROR, f"stored but not acknowledged: {exc}", path=item.path
            )
        outcome, text = _outcome(item, described)
        self.finish(item, state, first, outcome, text, {**facts, **described})
        log_event(
            log,
            "EXPORT_STORED",
            logging.INFO,
            f"{item.action.replace('_', ' ')}; {text}",
            action=item.action,
            bytes=facts["bytes"],
            path=item.path,
            acked=item.acked,
        )
        return item

    def download_failed(
        self, message: DequeuedMessage, item: ItemReport, state: dict[str, Any], first: bool, exc: D365Error
    ) -> ItemReport:
        """Count the failure in storage; below the limit D365's re-offer is the retry, then give up."""
        failure = DownloadFailure.of(exc, message)
        name = export_state_name(self.activity.key, item.id)
        counted = count_failure(self.store, self.settings.state_container, name, failure, _iso(self.now()))
        failures, limit = int(counted["download_failures"]), self.settings.download_max_attempts
        item.action, item.acked, item.error = "failed", False, f"download failed: {failure.error}"
        if failures >= limit or counted.get("given_up_at"):
            return self.give_up(message, item, counted, first)
        log_event(
            log,
            "EXPORT_DOWNLOAD_FAILED",
            logging.WARNING,
            f"attempt {failures} of {limit}; not stored, not acked; D365 offers it again in 30 minutes: "
            f"{failure.error}",
            attempts=failures,
            max_attempts=limit,
        )
        text = f"{_not_stored_message(item.error)} (failed attempt {failures} of {limit})"
        details = {"download_failures": failures}
        self.finish(item, state, first, Outcome.IN_PROGRESS, text, details, failure.d365)
        return item

    def give_up(
        self, message: DequeuedMessage, item: ItemReport, state: dict[str, Any], first: bool
    ) -> ItemReport:
        """The status record says failed and why, once; the message is acked if EXPORT_GIVE_UP_ACK."""
        repeat, wanted = bool(state.get("given_up_at")), self.settings.give_up_ack
        item.action, item.acked = "given_up", None
        if repeat and not wanted:  # re-offered, still unreadable: counted already, no second alert
            log.info("export message %s given up earlier, still not downloadable: %s", item.id, item.error)
            return item
        acked, ack_error = False, None
        if wanted:
            try:
                self.client.ack(self.activity.activity_id, message)
                acked = True
            except D365Error as exc:
                ack_error = redact_text(str(exc))[:500]
                log.warning("export message %s given up, but its ack failed: %s", item.id, ack_error)
            item.acked = acked
        name = export_state_name(self.activity.key, item.id)
        at = _iso(self.now())
        state = {**state, **mark_given_up(self.store, self.settings.state_container, name, at, acked)}
        text = give_up_text(state, acked=acked, ack_error=ack_error, ack_wanted=wanted)
        keys = ("download_failures", "first_failure", "last_failure", "first_seen", "given_up_at")
        details: dict[str, Any] = {k: state.get(k) for k in keys} | {"acked": acked}
        if not repeat:
            log_event(
                log,
                "EXPORT_MESSAGE_GIVEN_UP",
                logging.ERROR,
                text,
                attempts=details["download_failures"],
                first_failure=details["first_failure"],
                last_failure=details["last_failure"],
                acked=acked,
                path=item.path,
            )
        self.finish(item, state, first, Outcome.FAILED, text, details, state.get("d365"))
        return item

    def claim(self, correlation_id: str) -> tuple[dict[str, Any], bool]:
        """The message's state record, created on first sight (the name it is stored under), and whether
        this call created it."""
        name = export_state_name(self.activity.key, correlation_id)
        seen = self.now()
        fresh = {
            "kind": "export-message",
            "activity": self.activity.name,
            "activity_id": self.activity.activity_id,
            "correlation_id": correlation_id,
            "container": self.container,
            "path": package_name(self.activity.name, seen, correlation_id, self.activity.extension),
            "first_seen": _iso(seen),
            "deliveries": 1,
        }
        for _ in range(2):
            if self.store.create_json(self.settings.state_container, name, fresh):
                return fresh, True
            current = self.store.read_json(self.settings.state_container, name)
            if current is not None:
                return dict(current.value), False
        raise RuntimeError(f"state record {name} keeps disappearing")  # pragma: no cover

    def download(
        self, message: DequeuedMessage, blob: Any, correlation_id: str, state: dict[str, Any]
    ) -> tuple[bool, int, str]:
        """Stream the package into ``blob``; (created by this call, bytes, sha256)."""
        content_type = mimetypes.guess_type(f"x.{self.activity.extension}")[0] or "application/octet-stream"
        with BlockBlobWriter(blob, content_type=content_type) as writer:
            received = self.client.download_to(message, cast("IO[bytes]", writer))  # needs only write()
            if received != writer.size:
                raise D365Error(f"download returned {received} bytes but {writer.size} arrived")
            metadata = {
                "correlation_id": correlation_id,
                "activity": self.activity.name,
                "activity_id": self.activity.key,
                "first_seen": str(state["first_seen"]),
                "sha256": writer.sha256,
            }
            created = writer.commit(metadata=metadata)
        return created, writer.size, writer.sha256

    def describe(self, path: str, correlation_id: str, state: dict[str, Any]) -> dict[str, Any]:
        """Unpack and/or write the manifest record, once: the state record remembers it was done (a rerun
        after a crash in between redoes it, writing the same bytes under the same names)."""
        if not (self.activity.unpack or self.activity.manifest):
            return {}
        if isinstance(state.get("described"), dict):
            return dict(state["described"])
        record_name = manifest_name(path)
        settings = self.settings
        result = describe_package(
            self.store,
            self.container,
            path,
            unpack_to=unpacked_prefix(path) if self.activity.unpack else None,
            limits=UnpackLimits(
                settings.unpack_max_files, settings.unpack_max_file_bytes, settings.unpack_max_total_bytes
            ),
            about={"correlation_id": correlation_id, "activity": self.activity.name},
        )
        summary: dict[str, Any] = {
            "files": len(result.record.get("files", [])),
            "rejected": len(result.rejected),
            "problems": [r["message"] for r in result.rejected] + ([result.error] if result.error else []),
        }
        if self.activity.unpack:
            summary["unpacked_to"] = f"{self.container}/{unpacked_prefix(path)}"
        if self.activity.manifest:
            self.store.write_json(self.container, record_name, result.record)
            summary["manifest"] = f"{self.container}/{record_name}"
        return summary

    def finish(
        self,
        item: ItemReport,
        state: dict[str, Any],
        first: bool,
        outcome: Outcome,
        text: str,
        details: dict[str, Any],
        d365: dict[str, Any] | None = None,
    ) -> None:
        """Record the delivery in the state record and the package's status record (``d365``: D365's
        own words about it)."""
        item.outcome = str(outcome)
        at = _iso(self.now())
        name = export_state_name(self.activity.key, item.id)
        described = {k: v for k, v in details.items() if k in _DESCRIBED_KEYS}

        def note(current: Any) -> Any:
            record = dict(current or state)
            record["deliveries"] = int(record.get("deliveries", 1)) + (0 if first else 1)
            record.update(last_seen=at, last_action=item.action, outcome=str(outcome))
            if item.acked:
                record["acked_at"] = at
            if item.error:
                record["last_error"] = item.error
            if described:
                record["described"] = described
            return record

        self.store.update_json(self.settings.state_container, name, note)
        package = str(state["path"])
        correlation = {
            "correlation_id": item.id,
            "activity": self.activity.name,
            "activity_id": self.activity.activity_id,
        }
        subject = f"{self.container}/{package}"
        shown = {k: v for k, v in details.items() if k != "problems"}
        if details.get("problems"):
            shown["problems"] = details["problems"][:20]

        def status(current: Any) -> Any:
            if current is None:
                fresh = StatusRecord("export", subject, outcome, text, correlation, dict(d365 or {}), shown)
                return fresh.to_dict()
            record = StatusRecord.from_dict(current).advance(outcome, text, **(d365 or {}))
            return replace(record, details={**record.details, **shown}).to_dict()

        self.store.update_json(self.container, status_name(package), status)


_DESCRIBED_KEYS = ("files", "rejected", "problems", "unpacked_to", "manifest")


def _properties(blob: Any) -> dict[str, Any] | None:
    try:
        properties = blob.get_blob_properties()
    except ResourceNotFoundError:
        return None
    return {"size": properties.size, "sha256": (properties.metadata or {}).get("sha256")}


def _not_stored_message(error: str) -> str:
    return f"not stored: {error}. Not acked: D365 offers the message again in 30 minutes"


def _outcome(item: ItemReport, described: dict[str, Any]) -> tuple[Outcome, str]:
    again = " again (a redelivery: no second copy)" if item.action == "already_stored" else ""
    if not item.acked:
        return (
            Outcome.IN_PROGRESS,
            f"stored, but the ack failed ({item.error}); D365 re-offers the message and the next run "
            "acks it without storing a copy",
        )
    if described.get("problems"):
        problems = "; ".join(described["problems"][:3])
        return Outcome.PARTIALLY_SUCCEEDED, f"stored and acknowledged{again}; not fully unpacked: {problems}"
    return Outcome.SUCCEEDED, f"stored and acknowledged{again}"


def dequeue_all_exports(
    context: AppContext, *, budget: RunBudget | None = None, now: Clock = _utc_now
) -> list[RunReport]:
    """Run :func:`dequeue_exports` for every configured activity, in order, sharing one budget."""
    settings = context.settings.section(ExportSettings)
    budget = budget if budget is not None else RunBudget.from_settings(settings)
    connector = ConnectorClient(context.transport)
    return [
        dequeue_exports(context, activity, budget=budget, now=now, connector=connector)
        for activity in settings.activities
    ]
