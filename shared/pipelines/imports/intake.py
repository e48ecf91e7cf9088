"""``import_blob``: one dropped file, from the inbound container to D365, exactly once.

Steps: lease the input (another instance working on it: skip) → route it → check sizes → prepare what D365
receives while hashing the input (``preparing``) → claim the ledger entry for target + content → send
(``send``) → record: ledger ``sent`` with the job, the job record the monitor follows, the input moved to
``state/inflight/{job}/``. Bad input ends in the errors location with a status record and nothing is sent.

A repeated trigger of the same blob version finds the input gone, or leased, or its ledger entry via the
drop marker (no re-read of the content); a crash between sending and recording is recovered from the
ledger (``recover``). See ``ledger.decide`` for the re-drop rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.context import AppContext
from shared.d365.connector import ConnectorClient
from shared.d365.dmf import DmfClient
from shared.d365.errors import D365Error
from shared.logs import annotate, log_context, log_crash, log_event
from shared.packages.errors import PackageRejected
from shared.pipelines.imports import layout
from shared.pipelines.imports.lease import InputGone, input_lease
from shared.pipelines.imports.ledger import Decision, InputRef, JobRecords, Ledger, LedgerState, decide
from shared.pipelines.imports.outcome import Location, Outcomes, import_record
from shared.pipelines.imports.preparing import Prepared, prepare
from shared.pipelines.imports.routing import RouteMatch, RoutingError, resolve
from shared.pipelines.imports.send import (
    Deferred,
    Refused,
    SendError,
    Uncertain,
    execution_known,
    import_under_lock,
)
from shared.pipelines.imports.send import enqueue as send_enqueue
from shared.pipelines.imports.settings import ImportSettings
from shared.status import Outcome, StatusRecord, status_name, utc_now
from shared.storage import LeaseUnavailableError

__all__ = ["ImportReport", "import_blob"]

log = logging.getLogger(__name__)


@dataclass
class ImportReport:
    """What one ``import_blob`` call did; ``outcome``: sent, rejected, failed, duplicate, deferred, busy,
    gone or resumed."""

    blob: str
    outcome: str
    message: str
    route: str | None = None
    job_id: str | None = None
    sha256: str | None = None
    message_id: str | None = None
    execution_id: str | None = None
    stored_as: str | None = None
    reason_code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def import_blob(
    context: AppContext,
    blob_name: str,
    *,
    settings: ImportSettings | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ImportReport:
    """Import ``blob_name`` (a name inside the inbound container) once; see the module docstring."""
    settings = settings or context.settings.section(ImportSettings)
    inbound = settings.inbound_container
    blob = context.store.blob(inbound, blob_name)
    subject = f"{inbound}/{blob_name}"
    # one scope for the whole run: the outcome event, and a crash (PIPELINE_CRASHED), carry the ids learnt
    with log_context(file=subject), log_crash(log, "import"):
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            return ImportReport(
                subject, "gone", "the file is no longer in the inbound container (already handled)"
            )
        etag = str(props.etag)
        drop = InputRef(inbound, blob_name, etag, layout.drop_id(inbound, blob_name, etag), int(props.size))
        try:
            with input_lease(blob, seconds=settings.lease_seconds, etag=etag) as lease:
                intake = _Intake(context, settings, drop, lease, sleep)
                report = intake.run()
        except LeaseUnavailableError:
            report = ImportReport(subject, "busy", "another instance is processing this file")
        except InputGone:
            report = ImportReport(
                subject, "gone", "the file was moved or replaced meanwhile (handled elsewhere)"
            )
        _log_outcome(subject, report)
    return report


def _log_outcome(subject: str, report: ImportReport) -> None:
    level = {"failed": logging.ERROR, "rejected": logging.WARNING, "deferred": logging.WARNING,
             "partially_succeeded": logging.WARNING}.get(report.outcome, logging.INFO)  # fmt: skip
    log_event(
        log,
        f"IMPORT_{report.outcome.upper()}",
        level,
        report.message,
        file=subject,
        route=report.route,
        job_id=report.job_id,
        execution_id=report.execution_id,
        message_id=report.message_id,
        reason=report.reason_code,
        stored_as=report.stored_as,
    )


class _Intake:
    def __init__(
        self,
        context: AppContext,
        settings: ImportSettings,
        drop: InputRef,
        lease: Any,
        sleep: Callable[[float], None],
    ) -> None:
        self.context, self.settings, self.drop, self.lease, self.sleep = context, settings, drop, lease, sleep
        self.store = context.store
        self.ledger = Ledger(self.store, settings.state_container)
        self.jobs = JobRecords(self.store, settings.state_container)
        self.outcomes = Outcomes(self.store, settings)
        self.dmf = DmfClient(context.odata, context.transport)
        self.subject = f"{drop.container}/{drop.name}"
        self.when = datetime.now(UTC)
        self.match: RouteMatch | None = None

    # -- the flow

    def run(self) -> ImportReport:
        try:
            self.match = resolve(self.settings.routes, self.drop.name)
        except RoutingError as exc:
            return self.finish_input(
                Outcome.REJECTED, exc.message, exc.reason_code, route=exc.route or "_unrouted"
            )
        annotate(route=self.match.route.name, legal_entity=self.match.legal_entity)
        if self.match.route.populate is not None:
            return self.populate()
        prior = self.ledger.for_drop(self.drop)
        if prior is not None:
            shortcut = self.continue_claimed(*prior)
            if shortcut is not None:
                return shortcut
        try:
            prepared = prepare(self.context, self.settings, self.match, self.drop, self.dmf)
        except PackageRejected as exc:
            return self.finish_input(Outcome.REJECTED, exc.message, exc.reason_code.value, entry=exc.entry)
        except Deferred as exc:
            return self.report("deferred", exc.message, reason_code=exc.reason_code)
        try:
            return self.claim_and_send(prepared)
        finally:
            prepared.close()

    def populate(self) -> ImportReport:
        """``odata``/``service`` routes: written record by record and finished here (shared/populate)."""
        from shared.populate.file_route import populate_drop  # imports this package: loaded on first use

        assert self.match is not None
        done = populate_drop(
            self.context,
            self.match,
            self.drop,
            lease=self.lease,
            ledger=self.ledger,
            outcomes=self.outcomes,
            when=self.when,
            subject=self.subject,
            sleep=self.sleep,
        )
        keep = ("job_id", "sha256", "stored_as", "reason_code")
        return self.report(done.outcome, done.message, **{k: done.fields.get(k) for k in keep})

    def continue_claimed(self, name: str, entry: dict[str, Any]) -> ImportReport | None:
        """A trigger of a drop that was claimed before: finish it without re-reading the content."""
        assert self.match is not None
        decision, _ = decide(entry, self.drop, self.match.route.on_redrop)
        if decision is Decision.RESUME:
            return self.record_sent(name, entry, dict(entry.get("job", {})))
        if decision is Decision.FINISHED:
            return self.leftover(entry)
        if decision is Decision.RECOVER:
            found = self.recover(name, entry)
            if found is not None:
                return found
        return None  # send again (deferred before, or a package import D365 never started)

    def claim_and_send(self, prepared: Prepared) -> ImportReport:
        assert self.match is not None
        route, legal_entity = self.match.route, self.match.legal_entity
        target = route.target_key(legal_entity)
        claim = self.ledger.claim(
            target=target,
            sha256=prepared.sha256,
            route=route.name,
            on_redrop=route.on_redrop,
            drop=self.drop,
            job_for=lambda generation: layout.job_id(route.name, prepared.sha256, generation),
            job=self.job_draft("", prepared),
        )
        draft = self.job_draft(claim.job_id, prepared)
        annotate(job_id=claim.job_id)
        if claim.decision is Decision.DUPLICATE:
            return self.duplicate(claim.entry, prepared)
        if claim.decision is Decision.BUSY:
            return self.report("deferred", "the same content is being imported from another drop right now; "
                               "this re-import is tried again later", job_id=claim.job_id)  # fmt: skip
        if claim.decision is Decision.RESUME:
            return self.record_sent(claim.name, claim.entry, {**draft, **claim.entry.get("job", {})})
        if claim.decision is Decision.FINISHED:
            return self.leftover(claim.entry)
        if claim.decision is Decision.RECOVER:
            found = self.recover(claim.name, {**claim.entry, "job": draft})
            if found is not None:
                return found
        try:
            ids = self.send(prepared, claim.job_id)
        except SendError as exc:
            return self.send_failed(claim.name, exc, draft)
        return self.record_sent(claim.name, claim.entry, {**draft, **ids})

    def send(self, prepared: Prepared, job: str) -> dict[str, str]:
        assert self.match is not None
        route, legal_entity = self.match.route, self.match.legal_entity
        if route.is_recurring:
            assert prepared.body is not None
            prepared.body.seek(0)
            message_id = send_enqueue(
                ConnectorClient(self.context.transport),
                route,
                legal_entity,
                prepared.body,
                external_id=layout.external_id(self.match.file_name, prepared.sha256),
                is_package=prepared.is_package,
            )
            return {"message_id": message_id}
        package_url = prepared.package_url(self.dmf, route.name, self.drop.drop_id, self.settings)
        execution_id = import_under_lock(
            self.store, self.settings, self.dmf, route, legal_entity, package_url, job, sleep=self.sleep
        )
        return {"execution_id": execution_id}

    # -- crash recovery

    def recover(self, name: str, entry: dict[str, Any]) -> ImportReport | None:
        """The drop was being sent when its instance stopped: did it reach D365?"""
        assert self.match is not None
        job = str(entry["job_id"])
        draft = dict(entry.get("job", {}))
        if self.match.route.is_recurring:
            # send_failed stores the input here; a re-drop would be skipped as a duplicate (on_redrop skip)
            stored = self.outcomes.final_location(
                Outcome.FAILED, self.match.route.name, self.when, job, self.match.file_name
            )
            return self.send_failed(
                name,
                Uncertain(
                    "needs_operator_check",
                    "the app stopped while enqueueing this file, so it may or may not have reached D365; the "
                    "recurring API cannot be asked by external identifier, so it is not sent again "
                    "automatically. Check the recurring data job's history in D365 for "
                    f"{layout.external_id(self.match.file_name, str(entry.get('sha256', '')))!r}; if it is "
                    f"not there, send the file again with: python -m ops resubmit {status_name(str(stored))}",
                ),
                draft,
            )
        try:
            known = execution_known(self.dmf, job)
        except D365Error as exc:
            return self.report("deferred", f"could not ask D365 whether job {job} exists: {exc}", job_id=job)
        if not known:
            return None
        log_event(
            log, "IMPORT_RECOVERED", logging.WARNING, "sent before a crash; re-attached to it", job_id=job
        )
        return self.record_sent(name, entry, {**draft, "execution_id": job})

    # -- outcomes

    def job_draft(self, job: str, prepared: Prepared) -> dict[str, Any]:
        assert self.match is not None
        route = self.match.route
        return {
            "job_id": job,
            "route": route.name,
            "target": route.target,
            "activity_id": route.activity_id or None,
            "definition_group": route.definition_group or None,
            "legal_entity": self.match.legal_entity,
            "file_name": self.match.file_name,
            "sha256": prepared.sha256,
            "size": prepared.size,
            "entities": list(prepared.entities),
            "is_package": prepared.is_package,
            "original": self.subject,
            "drop_id": self.drop.drop_id,
            "day": self.when.isoformat(),
        }

    def record_sent(self, ledger_name: str, entry: dict[str, Any], job: dict[str, Any]) -> ImportReport:
        """Ledger ``sent`` → job record → input to ``inflight/``; each step safe to repeat."""
        job_id = str(job.get("job_id") or entry["job_id"])
        self.ledger.set_state(ledger_name, LedgerState.SENT, job=job)
        inflight = Location(
            self.settings.state_container, layout.inflight_name(job_id, str(job["file_name"]))
        )
        record = import_record(
            self.subject,
            Outcome.SENT,
            "sent to D365; waiting for D365 to process it",
            self.correlation(job),
        )
        self.jobs.create(
            job_id,
            {**job, "input": {"container": inflight.container, "name": inflight.name}, "ledger": ledger_name,
             "sent_at": utc_now(), "polls": 0, "unknown_polls": 0, "status": record.to_dict()},
        )  # fmt: skip
        self.outcomes.write_record(inflight, record)  # operators see where the file is and why
        self.outcomes.move(Location(self.drop.container, self.drop.name), inflight, lease=self.lease)
        return self.report(
            "sent",
            f"sent to D365 as job {job_id}",
            job_id=job_id,
            sha256=job.get("sha256"),
            message_id=job.get("message_id"),
            execution_id=job.get("execution_id"),
        )

    def send_failed(self, ledger_name: str, exc: SendError, draft: dict[str, Any]) -> ImportReport:
        job = str(draft.get("job_id", ""))
        if isinstance(exc, Deferred) or exc.reason_code == "import_unconfirmed":
            if isinstance(exc, Deferred):
                self.ledger.set_state(ledger_name, LedgerState.NOT_SENT, note=exc.message)
            return self.report("deferred", exc.message, job_id=job, reason_code=exc.reason_code)
        state = LedgerState.NOT_SENT if isinstance(exc, Refused) else LedgerState.UNCERTAIN
        report = self.finish_input(Outcome.FAILED, exc.message, exc.reason_code, folder=job, job=draft)
        self.ledger.set_state(ledger_name, state, note=exc.message, stored_as=report.stored_as)
        return report

    def duplicate(self, entry: dict[str, Any], prepared: Prepared) -> ImportReport:
        earlier = str(entry.get("job_id"))
        assert self.match is not None
        message = (
            f"identical content was already sent to this target as job {earlier} "
            f"(from {entry.get('input', {}).get('name')!r}, state {entry.get('state')}); skipped "
            f"(route {self.match.route.name!r} has on_redrop 'skip')"
        )
        folder = f"dup-{self.drop.drop_id[:12]}"
        draft = {**self.job_draft(earlier, prepared), "duplicate_of": earlier}
        return self.finish_input(Outcome.DUPLICATE, message, "duplicate", folder=folder, job=draft)

    def leftover(self, entry: dict[str, Any]) -> ImportReport:
        """The job of this very drop is finished; what is still in inbound is a copy left by a cut move."""
        stored = str(entry.get("stored_as") or "")
        container, _, name = stored.partition("/")
        if stored and self.store.blob(container, name).exists():
            self.store.blob(self.drop.container, self.drop.name).delete_blob(lease=self.lease)
            return self.report("gone", f"already imported and stored as {stored}; removed the leftover copy",
                               job_id=str(entry.get("job_id")), stored_as=stored)  # fmt: skip
        return self.finish_input(
            Outcome.DUPLICATE,
            f"this file was already handled as job {entry.get('job_id')} (state {entry.get('state')})",
            "duplicate",
            folder=f"dup-{self.drop.drop_id[:12]}",
        )

    def finish_input(
        self,
        outcome: Outcome,
        message: str,
        reason_code: str,
        *,
        route: str | None = None,
        folder: str | None = None,
        entry: str | None = None,
        job: dict[str, Any] | None = None,
    ) -> ImportReport:
        """Status record + move of the input straight from inbound to its final location."""
        route_name = route or (self.match.route.name if self.match else "_unrouted")
        file_name = self.match.file_name if self.match else self.drop.name.rsplit("/", 1)[-1] or "unnamed"
        target = self.outcomes.final_location(
            outcome, route_name, self.when, folder or f"drop-{self.drop.drop_id[:12]}", file_name
        )
        record = import_record(
            self.subject, outcome, message, self.correlation(job or {}), reason_code=reason_code, entry=entry
        )
        self.outcomes.finish(Location(self.drop.container, self.drop.name), target, record, lease=self.lease)
        kind = {Outcome.REJECTED: "rejected", Outcome.DUPLICATE: "duplicate"}.get(outcome, "failed")
        return self.report(
            kind, message, job_id=(job or {}).get("job_id"), stored_as=str(target), reason_code=reason_code
        )

    def correlation(self, job: dict[str, Any]) -> dict[str, str]:
        values = {
            "job_id": job.get("job_id"),
            "execution_id": job.get("execution_id"),
            "message_id": job.get("message_id"),
            "file": self.match.file_name if self.match else None,
            "sha256": job.get("sha256"),
            "route": self.match.route.name if self.match else None,
            "legal_entity": self.match.legal_entity if self.match else None,
            "drop_id": self.drop.drop_id,
            "duplicate_of": job.get("duplicate_of"),
        }
        return {k: str(v) for k, v in values.items() if v}

    def report(self, outcome: str, message: str, **fields: Any) -> ImportReport:
        route = self.match.route.name if self.match else None
        return ImportReport(self.subject, outcome, message, route=route, **fields)


def status_of(record: dict[str, Any]) -> StatusRecord:
    """The status record embedded in a job record."""
    return StatusRecord.from_dict(record["status"])
