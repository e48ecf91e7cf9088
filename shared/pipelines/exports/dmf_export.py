"""DMF package export: one ``ExportToPackage`` per job and period, streamed into the exports container.

The execution id is ``{job}-{period start}`` (``layout.dmf_execution_id``), so every timer run in the same
period — a retry, a second instance, the next 15-minute tick — re-attaches to the same D365 execution
instead of starting another export. Progress lives in ``state/dmf-exports/{job}/{execution-id}.json``
(ETag-guarded updates) through the phases::

    requested → started → executed → finished

- **requested → started**: ``ExportToPackage`` — unless ``GetExecutionSummaryStatus`` already knows the
  execution (a crash right after the call). It is not retried after D365 may have received it (ref §3.1);
  a refusal (4xx) finishes the export as failed, anything else is retried by the next run.
- **started → executed**: bounded polling of ``GetExecutionSummaryStatus`` (the resilience policy on
  every read, an injectable ``sleep``, no longer than the run's budget). Not final yet: the next run
  polls again; older than ``DMF_EXPORT_GIVE_UP_HOURS``: failed.
- **executed → finished**: Succeeded / PartiallySucceeded: poll ``GetExportedPackageUrl`` until non-empty,
  stream the SAS URL (no token, drops resumed) into ``dmf/{group}/{yyyy}/{mm}/{dd}/{execution-id}.zip``
  with a conditional commit. PartiallySucceeded, Failed, Canceled, Unknown: ``GetExecutionErrors``.
  Either way a status record next to the package name says what happened, with D365's errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import IO, Any, cast

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.context import AppContext
from shared.d365.dmf import DmfActionError, DmfClient, ExecutionStatus, Poller, PollTimeoutError
from shared.d365.errors import D365ClientError, D365Error
from shared.logs import current_log_context, log_context, log_crash, log_event
from shared.pipelines.exports.blob_writer import BlockBlobWriter
from shared.pipelines.exports.layout import (
    dmf_execution_id,
    dmf_lock_name,
    dmf_package_name,
    dmf_period_of,
    dmf_period_start,
    dmf_state_name,
    dmf_state_prefix,
)
from shared.pipelines.exports.report import ItemReport, RunBudget, RunReport
from shared.pipelines.exports.settings import DmfExportJob, ExportSettings
from shared.redact import redact_text
from shared.status import Outcome, StatusRecord, status_name
from shared.storage import BlobStore, LeaseUnavailableError

__all__ = ["run_all_dmf_exports", "run_dmf_export"]

log = logging.getLogger(__name__)

MAX_ERRORS_KEPT = 200
_SUCCEEDED = (ExecutionStatus.SUCCEEDED, ExecutionStatus.PARTIALLY_SUCCEEDED)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _started(state: dict[str, Any], execution_id: str) -> datetime:
    """When this pipeline first asked for the export (the give-up clock), else the period start."""
    try:
        return datetime.fromisoformat(str(state["created"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return dmf_period_of(execution_id)


def run_dmf_export(
    context: AppContext,
    job: DmfExportJob,
    *,
    now: datetime,
    budget: RunBudget | None = None,
    sleep: Callable[[float], None] = time.sleep,
    dmf: DmfClient | None = None,
) -> RunReport:
    """Start, re-attach to or finish this period's export of ``job`` (and unfinished earlier ones).

    ``now`` is the timer occurrence (it picks the period); never raises for D365 or storage failures.
    """
    settings = context.settings.section(ExportSettings)
    budget = budget if budget is not None else RunBudget.from_settings(settings)
    run = _DmfRun(
        context.store, settings, job, dmf or DmfClient(context.odata, context.transport), sleep, budget
    )
    started = budget.elapsed()
    with (
        log_context(dmf_job=job.name, definition_group=job.definition_group),
        log_crash(log, "dmf_export"),
    ):
        try:
            with context.store.lease(
                settings.state_container, dmf_lock_name(job.name), seconds=settings.lease_seconds
            ):
                run.execute(now)
        except LeaseUnavailableError:
            run.report.stopped_by = "lease_held"
        except AzureError as exc:
            run.report.stopped_by = "error"
            run.report.errors.append(f"blob storage: {redact_text(str(exc).splitlines()[0])}")
        run.report.seconds = budget.elapsed() - started
        # the summary is about this period's execution (earlier unfinished ones have their own events)
        period = dmf_period_start(now, job.period_minutes, job.offset_minutes)
        with log_context(execution_id=dmf_execution_id(job.name, period)):
            run.report.log_ids = current_log_context()  # the trigger's summary line carries them too
            log.log(logging.INFO if run.report.ok else logging.WARNING, "%s", run.report.summary())
    return run.report


class _DmfRun:
    def __init__(
        self,
        store: BlobStore,
        settings: ExportSettings,
        job: DmfExportJob,
        dmf: DmfClient,
        sleep: Callable[[float], None],
        budget: RunBudget,
    ) -> None:
        self.store, self.settings, self.job, self.dmf = store, settings, job, dmf
        self.sleep, self.budget = sleep, budget
        self.report = RunReport("dmf_export", job.name)

    def execute(self, now: datetime) -> None:
        period = dmf_period_start(now, self.job.period_minutes, self.job.offset_minutes)
        current = dmf_execution_id(self.job.name, period)
        for execution_id in [*self.unfinished(now, current), current]:
            try:
                with log_context(execution_id=execution_id):
                    self.report.add(self.drive(execution_id, now, create=execution_id == current))
            except D365Error as exc:  # a read failed after the policy's retries: try again next run
                log_event(
                    log,
                    "DMF_EXPORT_POLL_FAILED",
                    logging.WARNING,
                    f"tried again next run: {exc}",
                    execution_id=execution_id,
                )
                self.report.add(ItemReport(execution_id, "waiting", error=str(exc)))
                self.report.errors.append(f"{execution_id}: {exc}")
        if not self.report.stopped_by:
            self.report.stopped_by = self.budget.exhausted() or "done"

    def unfinished(self, now: datetime, current: str) -> list[str]:
        """Earlier executions of this job still in flight (oldest first), within the give-up window."""
        window = timedelta(hours=self.settings.dmf_give_up_hours, minutes=2 * self.job.period_minutes)
        container = self.store.container(self.settings.state_container)
        found = []
        prefix = dmf_state_prefix(self.job.name)
        for blob in container.list_blobs(name_starts_with=prefix):
            execution_id = blob.name[len(prefix) :].removesuffix(".json")
            try:
                if execution_id == current or dmf_period_of(execution_id) < now - window:
                    continue
            except ValueError:
                continue  # not a name this pipeline made
            state = self.store.read_json(self.settings.state_container, blob.name)
            if state is not None and state.value.get("phase") != "finished":
                found.append(execution_id)
        return sorted(found)

    def update(self, execution_id: str, **changes: Any) -> dict[str, Any]:
        def change(current: Any) -> Any:
            return {**(current or {}), **changes, "updated": _iso(datetime.now(UTC))}

        name = dmf_state_name(self.job.name, execution_id)
        result: dict[str, Any] = self.store.update_json(self.settings.state_container, name, change)
        return result

    def claim(self, execution_id: str, now: datetime, create: bool) -> dict[str, Any] | None:
        name = dmf_state_name(self.job.name, execution_id)
        current = self.store.read_json(self.settings.state_container, name)
        if current is not None:
            return dict(current.value)
        if not create:
            return None
        fresh = {
            "kind": "dmf-export",
            "job": self.job.name,
            "execution_id": execution_id,
            "definition_group": self.job.definition_group,
            "legal_entity": self.job.legal_entity,
            "package_name": self.job.package_name,
            "container": self.settings.container,
            "path": dmf_package_name(self.job.definition_group, dmf_period_of(execution_id), execution_id),
            "phase": "requested",
            "created": _iso(now),
        }
        if self.store.create_json(self.settings.state_container, name, fresh):
            return fresh
        again = self.store.read_json(self.settings.state_container, name)
        return None if again is None else dict(again.value)

    # -- one execution through its phases

    def drive(self, execution_id: str, now: datetime, *, create: bool) -> ItemReport:
        state = self.claim(execution_id, now, create)
        if state is None:
            return ItemReport(execution_id, "skipped", error="state record vanished")
        path = str(state["path"])
        item = ItemReport(execution_id, "waiting", path=f"{self.settings.container}/{path}")
        if state.get("phase") == "finished":
            item.action = "already_done"  # reported when it happened: not a problem of this run
            item.details["outcome"] = state.get("outcome")
            return item
        too_old = now - _started(state, execution_id) > timedelta(hours=self.settings.dmf_give_up_hours)
        if state.get("phase") == "requested":
            refused = self.start(execution_id)
            if refused is not None:
                return self.finish(item, state, Outcome.FAILED, f"ExportToPackage refused: {refused}", None)
            state = self.update(execution_id, phase="started", started=_iso(now))
        if state.get("phase") == "started":
            if self.budget.exhausted():
                item.details["d365_status"] = "not polled: run budget used"
                return item
            try:
                status = self.dmf.wait_for_execution(execution_id, self.poller())
            except PollTimeoutError as exc:
                last = str(exc.last) if exc.last is not None else "unknown"
                if too_old:
                    text = f"gave up: still {last} after {self.settings.dmf_give_up_hours:g} hours"
                    log_event(log, "DMF_EXPORT_GIVEN_UP", logging.ERROR, text, d365_status=last)
                    return self.finish(item, state, Outcome.FAILED, text, None)
                item.details["d365_status"] = last
                self.update(execution_id, last_status=last)
                return item
            state = self.update(execution_id, phase="executed", d365_status=status.value)
        return self.conclude(item, state, ExecutionStatus.parse(state.get("d365_status")), too_old)

    def start(self, execution_id: str) -> str | None:
        """Start the export unless D365 already knows it; D365's refusal text, or None when running."""
        if self.known(execution_id):
            return None
        job = self.job
        try:
            self.dmf.export_to_package(
                job.definition_group, job.package_name, execution_id, legal_entity_id=job.legal_entity
            )
        except (D365ClientError, DmfActionError) as exc:  # refused: 4xx, or the empty GUID (ref §3.2)
            if self.known(execution_id):  # an earlier attempt of ours started it after all
                return None
            return getattr(exc, "inner_message", None) or exc.message
        log_event(
            log, "DMF_EXPORT_STARTED", logging.INFO, "ExportToPackage called", execution_id=execution_id
        )
        return None

    def known(self, execution_id: str) -> bool:
        """Whether D365 has this execution (``Unknown`` or a 400 "not found" mean it does not)."""
        try:
            return self.dmf.execution_status(execution_id) is not ExecutionStatus.UNKNOWN
        except D365ClientError as exc:
            if exc.status_code in (400, 404):
                return False
            raise

    def poller(self) -> Poller:
        interval = self.settings.dmf_poll_seconds
        attempts = int(self.budget.remaining() / interval) + 1 if interval > 0 else 100
        return Poller(interval=interval, max_attempts=max(1, min(attempts, 10_000)), sleep=self.sleep)

    def conclude(
        self, item: ItemReport, state: dict[str, Any], status: ExecutionStatus, too_old: bool
    ) -> ItemReport:
        execution_id = item.id
        errors = [] if status is ExecutionStatus.SUCCEEDED else self.errors(execution_id)
        if status not in _SUCCEEDED:
            return self.finish(
                item, state, Outcome.FAILED, f"D365 finished the export: {status.value}", errors
            )
        stored = self.store_package(item, state)
        if stored is None:
            if too_old:
                text = f"gave up: no package URL after {self.settings.dmf_give_up_hours:g} hours"
                log_event(log, "DMF_EXPORT_GIVEN_UP", logging.ERROR, text, d365_status=status.value)
                return self.finish(item, state, Outcome.FAILED, text, errors)
            return item
        if status is ExecutionStatus.PARTIALLY_SUCCEEDED:
            text = f"stored; D365 finished the export PartiallySucceeded with {len(errors)} error(s)"
            return self.finish(item, state, Outcome.PARTIALLY_SUCCEEDED, text, errors, stored)
        return self.finish(item, state, Outcome.SUCCEEDED, "stored", errors, stored)

    def errors(self, execution_id: str) -> list[dict[str, str]]:
        try:
            rows = self.dmf.execution_errors(execution_id)
        except D365Error as exc:
            return [{"record_id": "", "field": "", "message": f"GetExecutionErrors failed: {exc}"}]
        return [{"record_id": r.record_id, "field": r.field, "message": r.message} for r in rows]

    def store_package(self, item: ItemReport, state: dict[str, Any]) -> dict[str, Any] | None:
        """Stream the exported package into its blob once; its facts, or None while no URL is ready."""
        path = str(state["path"])
        blob = self.store.blob(self.settings.container, path)
        try:
            properties = blob.get_blob_properties()
            sha256 = (properties.metadata or {}).get("sha256")
            return {"bytes": properties.size, "sha256": sha256, "created": False}  # stored by an earlier run
        except ResourceNotFoundError:
            pass
        try:
            url = self.dmf.wait_for_exported_package_url(item.id, self.poller())
        except PollTimeoutError:
            item.details["d365_status"] = "package URL not ready yet"
            return None
        with BlockBlobWriter(blob, content_type="application/zip") as writer:
            received = self.dmf.download(url, cast("IO[bytes]", writer))  # needs only write()
            if received != writer.size:
                raise D365Error(f"download returned {received} bytes but {writer.size} arrived")
            metadata = {"execution_id": item.id, "job": self.job.name, "sha256": writer.sha256}
            created = writer.commit(metadata=metadata)
        item.bytes = writer.size
        return {"bytes": writer.size, "sha256": writer.sha256, "created": created}

    def finish(
        self,
        item: ItemReport,
        state: dict[str, Any],
        outcome: Outcome,
        text: str,
        errors: list[dict[str, str]] | None,
        stored: dict[str, Any] | None = None,
    ) -> ItemReport:
        path = str(state["path"])
        d365: dict[str, Any] = {"status": state.get("d365_status") or state.get("last_status") or "unknown"}
        if errors:
            d365["errors"] = errors[:MAX_ERRORS_KEPT]
            d365["error_count"] = len(errors)
        record = StatusRecord(
            kind="dmf-export",
            subject=f"{self.settings.container}/{path}",
            outcome=outcome,
            message=text,
            correlation={
                "execution_id": item.id,
                "job": self.job.name,
                "definition_group": self.job.definition_group,
                "legal_entity": self.job.legal_entity,
            },
            d365=d365,
            details={k: v for k, v in (stored or {}).items() if k != "created"},
        )
        status_blob = status_name(path)
        self.store.write_json(self.settings.container, status_blob, record.to_dict())
        self.update(item.id, phase="finished", outcome=str(outcome), message=text, **(stored or {}))
        item.outcome = str(outcome)
        item.action = "stored" if stored else "failed"
        if stored and not stored.get("created", True):
            item.action = "already_stored"
        if outcome is not Outcome.SUCCEEDED:
            item.error = text
            item.details["status_record"] = f"{self.settings.container}/{status_blob}"
        level = {Outcome.SUCCEEDED: logging.INFO, Outcome.PARTIALLY_SUCCEEDED: logging.WARNING}
        log_event(
            log,
            "DMF_EXPORT_SUCCEEDED" if outcome is Outcome.SUCCEEDED else "DMF_EXPORT_FAILED",
            level.get(outcome, logging.ERROR),
            text,
            execution_id=item.id,
            outcome=str(outcome),
            d365_status=d365["status"],
            errors=len(errors or ()),
            path=item.path,
        )
        return item


def run_all_dmf_exports(
    context: AppContext,
    *,
    now: datetime,
    budget: RunBudget | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[RunReport]:
    """Run :func:`run_dmf_export` for every configured job, sharing one budget.

    Every job's export is started (or re-attached to) even when the budget is used up: only the polling
    waits for a later run, so one slow export cannot keep the others from starting.
    """
    settings = context.settings.section(ExportSettings)
    budget = budget if budget is not None else RunBudget.from_settings(settings)
    dmf = DmfClient(context.odata, context.transport)
    return [
        run_dmf_export(context, job, now=now, budget=budget, sleep=sleep, dmf=dmf)
        for job in settings.dmf_jobs
    ]
