"""``monitor_imports``: the timer's pass over every in-flight import, and the sweep of the inbound container.

Per job record (``state/jobs/{job}.json``): ask D365 (``GetExecutionSummaryStatus`` for package imports;
``jobstatus``, else ``GetMessageStatus``, for recurring messages; both spellings of each status parse),
then

- still running: count the poll; past ``IMPORT_STUCK_AFTER_MINUTES`` the job is flagged ``stuck`` in its
  status record and a warning ``IMPORT_JOB_STUCK: ... | job_id=... route=... minutes=...`` is logged on
  every run (the line alerting keys on, docs/observability.md); polling goes on, a late finish is still
  recorded;
- succeeded: status record + input into the archive;
- anything else final (partially succeeded, failed, canceled, processed with errors...): D365's error
  detail is fetched (``details``), then status record + error files + input into the errors location.

Then inbound files older than ``IMPORT_RETRY_AFTER_MINUTES`` (a trigger missed, a deferred send, a crash)
are imported again through the same ``import_blob``, which the ledger and the input lease make safe; a
deferred file only once its last attempt is that long ago (``deferrals``), not on every run. One
run at a time (lease ``state/locks/import-monitor``); a run stops taking new work after
``IMPORT_MONITOR_MAX_SECONDS``, also between the entities whose error detail it fetches (the job record
keeps what was fetched, the next run goes on). A job whose input the intake is still moving to
``inflight/`` is finished on a later run, never without its input.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.context import AppContext
from shared.d365.connector import ConnectorClient
from shared.d365.dmf import DmfClient, ExecutionStatus, MessageStatus
from shared.d365.errors import D365ClientError, D365Error
from shared.logs import annotate, log_context, log_event
from shared.pipelines.imports import layout
from shared.pipelines.imports.deferrals import Deferrals
from shared.pipelines.imports.details import DetailIncomplete, collect_error_detail
from shared.pipelines.imports.intake import import_blob
from shared.pipelines.imports.ledger import InputRef, JobRecords, Ledger, LedgerState, StaleGeneration
from shared.pipelines.imports.outcome import Location, Outcomes
from shared.pipelines.imports.settings import ImportSettings
from shared.redact import redact_text
from shared.status import Outcome, StatusRecord
from shared.storage import LeaseUnavailableError

__all__ = [
    "MonitorReport",
    "Verdict",
    "monitor_imports",
    "poll_import_job",
    "verdict_for_execution",
    "verdict_for_message",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """Where a job stands in D365: ``outcome`` None while it runs; ``status`` is D365's own word."""

    status: str
    outcome: Outcome | None
    detail: dict[str, Any] = field(default_factory=dict)
    execution_id: str | None = None


_EXECUTION_OUTCOMES = {
    ExecutionStatus.SUCCEEDED: Outcome.SUCCEEDED,
    ExecutionStatus.PARTIALLY_SUCCEEDED: Outcome.PARTIALLY_SUCCEEDED,
}


def verdict_for_execution(status: ExecutionStatus, raw: str, unknown_polls: int, allowed: int) -> Verdict:
    """``GetExecutionSummaryStatus`` → verdict; ``Unknown`` only counts as final after ``allowed`` polls."""
    if not status.final or (status is ExecutionStatus.UNKNOWN and unknown_polls < allowed):
        return Verdict(raw or str(status), None)
    return Verdict(raw or str(status), _EXECUTION_OUTCOMES.get(status, Outcome.FAILED))


def verdict_for_message(status: MessageStatus, raw: str) -> Verdict:
    """``GetMessageStatus`` → verdict (``Processed`` succeeds; the error states fail)."""
    if not status.final:
        return Verdict(raw or str(status), None)
    return Verdict(raw or str(status), Outcome.SUCCEEDED if status.succeeded else Outcome.FAILED)


@dataclass
class MonitorReport:
    polled: int = 0
    in_progress: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    finished: dict[str, str] = field(default_factory=dict)  # job -> outcome
    poll_errors: dict[str, str] = field(default_factory=dict)
    swept: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None  # why the run did nothing (another run holds the lock)
    budget_exhausted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


class _Monitor:
    def __init__(
        self,
        context: AppContext,
        settings: ImportSettings,
        now: datetime,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        self.context, self.settings, self.now, self.sleep, self.clock = context, settings, now, sleep, clock
        self.store = context.store
        self.jobs = JobRecords(self.store, settings.state_container)
        self.ledger = Ledger(self.store, settings.state_container)
        self.outcomes = Outcomes(self.store, settings)
        self.dmf = DmfClient(context.odata, context.transport)
        self.connector = ConnectorClient(context.transport)
        self.deadline = clock() + settings.monitor_max_seconds
        self.report = MonitorReport()

    def out_of_time(self) -> bool:
        if self.clock() >= self.deadline:
            self.report.budget_exhausted = True
            return True
        return False

    def run(self) -> MonitorReport:
        for job_id in sorted(self.jobs.ids()):
            if self.out_of_time():
                break
            with log_context(job_id=job_id):  # the failure line too carries the job's file, route, ...
                try:
                    self.poll(job_id)
                except Exception as exc:  # one job's trouble (D365 down, storage) must not stop the rest
                    self.report.poll_errors[job_id] = redact_text(f"{type(exc).__name__}: {exc}")
                    log_event(
                        log,
                        "IMPORT_POLL_FAILED",
                        logging.WARNING,
                        self.report.poll_errors[job_id],
                        job_id=job_id,
                    )
        self.sweep()
        return self.report

    # -- one job

    def status(self, job: dict[str, Any]) -> Verdict:
        if job.get("target") == "package":
            execution_id = str(job.get("execution_id") or job["job_id"])
            try:
                reading = self.dmf.read_execution_status(execution_id)
            except D365ClientError as exc:
                if exc.status_code == 400:  # the execution row may not exist yet (ref §1.7)
                    return Verdict("NotFoundYet", None, execution_id=execution_id)
                raise
            unknown = int(job.get("unknown_polls", 0)) + (reading.status is ExecutionStatus.UNKNOWN)
            verdict = verdict_for_execution(
                reading.status, reading.raw, unknown, self.settings.unknown_status_polls
            )
            return Verdict(verdict.status, verdict.outcome, {"unknown_polls": unknown}, execution_id)
        activity, message_id = str(job.get("activity_id")), str(job.get("message_id"))
        try:
            status = self.connector.job_status(activity, message_id)
        except D365Error as exc:
            log.info("jobstatus of %s failed (%s); asking GetMessageStatus", message_id, type(exc).__name__)
            message = self.dmf.read_message_status(message_id)
            verdict = verdict_for_message(message.status, message.raw)
            return Verdict(verdict.status, verdict.outcome, {"source": "GetMessageStatus"})
        outcome = None
        if status.state.final:
            outcome = Outcome.SUCCEEDED if status.state.succeeded else Outcome.FAILED
        detail = {
            "source": "jobstatus",
            "execution_detail": [asdict(d) for d in status.details],
            "execution_log": status.execution_log[-4000:],
        }
        return Verdict(str(status.state), outcome, detail, status.execution_id)

    def poll(self, job_id: str) -> None:
        found = self.jobs.read(job_id)
        if found is None:
            return
        job = found.value
        annotate(
            route=job.get("route"),
            file=job.get("original"),
            execution_id=job.get("execution_id"),
            message_id=job.get("message_id"),
        )
        self.report.polled += 1
        try:
            verdict = self.status(job)
        except D365Error as exc:  # D365 unreachable or refusing: still counts towards "stuck"
            self.report.poll_errors[job_id] = redact_text(str(exc))
            log_event(
                log, "IMPORT_POLL_FAILED", logging.WARNING, self.report.poll_errors[job_id], job_id=job_id
            )
            verdict = Verdict(str(job.get("last_status") or "unknown (D365 could not be asked)"), None)
        if verdict.outcome is not None:
            self.finish(job, verdict)
            return
        minutes = (self.now - _parse_time(str(job["sent_at"]))).total_seconds() / 60
        stuck = minutes > self.settings.stuck_after_minutes

        def change(current: dict[str, Any]) -> dict[str, Any]:
            record = StatusRecord.from_dict(current["status"])
            if stuck:
                message = (f"D365 has not finished after {minutes:.0f} minutes (status {verdict.status}); "
                           f"flagged stuck after {self.settings.stuck_after_minutes:g}")  # fmt: skip
                if record.outcome is not Outcome.STUCK:
                    record.advance(Outcome.STUCK, message, status=verdict.status)
                else:
                    record.message = message
            elif record.outcome is not Outcome.IN_PROGRESS:
                record.advance(Outcome.IN_PROGRESS, f"D365 is working on it (status {verdict.status})")
            record.d365["status"] = verdict.status
            current.update(verdict.detail)
            current.update(polls=int(current.get("polls", 0)) + 1, last_status=verdict.status,
                           last_polled=self.now.isoformat(), status=record.to_dict())  # fmt: skip
            if verdict.execution_id:
                current.setdefault("execution_id", verdict.execution_id)
            return current

        updated = self.jobs.update(job_id, change)
        if updated["status"]["outcome"] != job["status"]["outcome"]:  # shown beside the in-flight input too
            inflight = Location(str(job["input"]["container"]), str(job["input"]["name"]))
            self.outcomes.write_record(inflight, StatusRecord.from_dict(updated["status"]))
        if stuck:
            self.report.stuck.append(job_id)
            log_event(
                log,
                "IMPORT_JOB_STUCK",
                logging.WARNING,
                f"D365 has not finished after {minutes:.0f} minutes (status {verdict.status})",
                job_id=job_id,
                route=job.get("route"),
                minutes=round(minutes),
                d365_status=verdict.status,
            )
        else:
            self.report.in_progress.append(job_id)

    def finish(self, job: dict[str, Any], verdict: Verdict) -> None:
        assert verdict.outcome is not None
        job_id = str(job["job_id"])
        if self._input_still_arriving(job):
            self.report.in_progress.append(job_id)
            return
        record = StatusRecord.from_dict(job["status"])
        final = self.outcomes.final_location(
            verdict.outcome, str(job["route"]), _parse_time(str(job["day"])), job_id, str(job["file_name"])
        )
        d365: dict[str, Any] = {"status": verdict.status, **verdict.detail}
        execution_id = verdict.execution_id or job.get("execution_id")
        if verdict.outcome is not Outcome.SUCCEEDED:
            if not execution_id and job.get("message_id"):
                execution_id = self._message_execution(str(job["message_id"]))
            if execution_id:
                entities = list(job.get("entities") or [])
                entities += [d["entity_name"] for d in verdict.detail.get("execution_detail", [])
                             if d.get("entity_name") and d["entity_name"] not in entities]  # fmt: skip
                try:
                    d365.update(collect_error_detail(
                        self.dmf, self.outcomes, self.settings, execution_id=str(execution_id),
                        entities=entities, final=final, sleep=self.sleep,
                        progress=job.get("error_detail"), out_of_time=self.out_of_time,
                    ))  # fmt: skip
                except DetailIncomplete as exc:  # out of time: the next run goes on from here
                    paused = exc.progress
                    self.jobs.update(job_id, lambda current: {**current, "error_detail": paused})
                    self.report.in_progress.append(job_id)
                    return
        if execution_id:
            record.correlation["execution_id"] = str(execution_id)
        message = {
            Outcome.SUCCEEDED: "D365 imported the file",
            Outcome.PARTIALLY_SUCCEEDED: "D365 imported part of the file; some records failed (d365.errors)",
        }.get(verdict.outcome, f"D365 finished the import with errors (status {verdict.status})")
        source = Location(str(job["input"]["container"]), str(job["input"]["name"]))
        if (
            not self.store.blob(source.container, source.name).exists()
            and not self.store.blob(final.container, final.name).exists()
        ):
            message += (
                f"; the in-flight copy of the input ({source}) was missing, so only this record is here"
            )
            log_event(
                log,
                "IMPORT_INPUT_MISSING",
                logging.ERROR,
                "the in-flight copy of the input was missing",
                job_id=job_id,
                input=str(source),
            )
        record.advance(verdict.outcome, message, **d365)
        self._finish_input(source, final, record)
        ledger_state = LedgerState.SUCCEEDED if verdict.outcome is Outcome.SUCCEEDED else LedgerState.FAILED
        try:
            self.ledger.set_state(str(job["ledger"]), ledger_state, expect_job=job_id, stored_as=str(final))
        except StaleGeneration as exc:  # a re-import owns the entry now: its state is not this job's
            log.warning("job %s finished %s; ledger left alone: %s", job_id, verdict.outcome, exc)
        self.jobs.delete(job_id)
        self.report.finished[job_id] = str(verdict.outcome)
        level = {Outcome.SUCCEEDED: logging.INFO, Outcome.PARTIALLY_SUCCEEDED: logging.WARNING}
        log_event(
            log,
            "IMPORT_JOB_SUCCEEDED" if verdict.outcome is Outcome.SUCCEEDED else "IMPORT_JOB_FAILED",
            level.get(verdict.outcome, logging.ERROR),
            message,
            job_id=job_id,
            outcome=str(verdict.outcome),
            d365_status=verdict.status,
            execution_id=execution_id,
            stored_as=str(final),
        )

    def _input_still_arriving(self, job: dict[str, Any]) -> bool:
        """Whether the intake has not yet moved this job's input to ``inflight/`` (the job record is written
        before that move, which takes a while for a big file; or the intake stopped before it, and the retry
        of that drop completes it): then the job is finished on a later run, never without its input."""
        source = job["input"]
        if self.store.blob(str(source["container"]), str(source["name"])).exists():
            return False
        container, _, name = str(job.get("original", "")).partition("/")
        if not name:
            return False
        try:
            props = self.store.blob(container, name).get_blob_properties()
        except ResourceNotFoundError:
            return False
        if layout.drop_id(container, name, str(props.etag)) != job.get("drop_id"):
            return False  # a later drop under the same name: not this job's input
        log.info(
            "job %s finished in D365 but its input is still being moved to in-flight; next run", job["job_id"]
        )
        return True

    def _finish_input(self, source: Location, final: Location, record: StatusRecord) -> None:
        """Record + move to the final location; an input already gone leaves the record alone there."""
        record.details.setdefault("stored_as", str(final))
        self.outcomes.write_record(final, record)
        with suppress(ResourceNotFoundError):  # a missing in-flight copy is noted in the record
            self.outcomes.move(source, final)
        self.outcomes.delete_record(source)

    def _message_execution(self, message_id: str) -> str | None:
        try:
            return self.dmf.execution_id_for_message(message_id)
        except D365Error as exc:
            log.warning("no execution id for message %s: %s", message_id, redact_text(str(exc)))
            return None

    # -- inbound sweep

    def sweep(self) -> None:
        if self.out_of_time():
            return
        cutoff = self.now - timedelta(minutes=self.settings.retry_after_minutes)
        container = self.store.container(self.settings.inbound_container)
        blobs = container.list_blobs()
        inbound = self.settings.inbound_container
        deferrals = Deferrals(self.store, self.settings.state_container)
        waiting = [b for b in blobs if b.last_modified is not None and b.last_modified <= cutoff]
        for blob in waiting:
            name, etag = str(blob.name), str(blob.etag)
            if self.out_of_time():
                return
            drop = InputRef(inbound, name, etag, layout.drop_id(inbound, name, etag), int(blob.size or 0))
            if deferrals.tried_since(drop, cutoff):  # deferred less than a retry interval ago
                continue
            try:
                report = import_blob(
                    self.context, name, settings=self.settings, sleep=self.sleep, now=self.now
                )
            except Exception as exc:  # left in inbound; the next run tries again
                failure = redact_text(f"{type(exc).__name__}: {exc}")
                log_event(
                    log,
                    "IMPORT_SWEEP_FAILED",
                    logging.WARNING,
                    failure,
                    file=f"{self.settings.inbound_container}/{name}",
                )
                self.report.swept.append({"blob": name, "outcome": "error", "message": failure})
                continue
            self.report.swept.append(report.to_dict())


def monitor_imports(
    context: AppContext,
    *,
    now: datetime | None = None,
    settings: ImportSettings | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> MonitorReport:
    """Poll every in-flight import once, finish those D365 finished, flag stuck ones, sweep inbound."""
    settings = settings or context.settings.section(ImportSettings)
    now = now or datetime.now(UTC)
    try:
        with context.store.lease(
            settings.state_container, layout.MONITOR_LOCK, seconds=settings.lease_seconds
        ):
            return _Monitor(context, settings, now, sleep, clock).run()
    except LeaseUnavailableError:
        return MonitorReport(skipped="another instance is running the import monitor")


def poll_import_job(
    context: AppContext,
    job_id: str,
    *,
    settings: ImportSettings | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> MonitorReport:
    """The monitor's step for one in-flight job (an operator following their own file), under the same lock
    as the timer's run so the two never finish a job twice; ``skipped`` while the timer's run holds it."""
    settings = settings or context.settings.section(ImportSettings)
    try:
        with context.store.lease(
            settings.state_container, layout.MONITOR_LOCK, seconds=settings.lease_seconds
        ):
            monitor = _Monitor(context, settings, datetime.now(UTC), sleep, time.monotonic)
            monitor.poll(job_id)
            return monitor.report
    except LeaseUnavailableError:
        return MonitorReport(skipped="another instance is running the import monitor")
