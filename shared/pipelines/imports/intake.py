"""``import_blob``: one dropped file, from the inbound container to D365, exactly once.

Steps: lease the input (another instance working on it: skip) → route it → check sizes → prepare what D365
receives while hashing the input (``preparing``) → claim the ledger entry for target + content → send
(``send``; the input's lease is renewed right before, and a lapsed lease sends nothing) → record
(``intake_records``): ledger ``sent`` with the job, the job record the monitor follows, the input moved to
``state/inflight/{job}/``. Bad input ends in the errors location with a status record and nothing is sent.
A file left in inbound (deferred) is counted (``deferrals``) and goes to the errors location after
``IMPORT_MAX_DEFERRAL_HOURS`` (and at least ``IMPORT_MAX_DEFERRALS`` attempts).

A repeated trigger of the same blob version finds the input gone, or leased, or its ledger entry via the
drop marker (no re-read of the content); a crash between sending and recording is recovered from the
ledger (``recover``). See ``ledger.decide`` for the re-drop rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.context import AppContext
from shared.d365.connector import ConnectorClient
from shared.d365.errors import D365Error
from shared.logs import annotate, log_context, log_crash, log_event
from shared.packages.errors import PackageRejected
from shared.pipelines.imports import layout
from shared.pipelines.imports.intake_records import ImportReport, IntakeRecords
from shared.pipelines.imports.lease import InputGone, input_lease
from shared.pipelines.imports.ledger import Decision, InputRef, LedgerState, decide
from shared.pipelines.imports.preparing import Prepared, prepare
from shared.pipelines.imports.routing import RoutingError, resolve
from shared.pipelines.imports.send import (
    Deferred,
    LeaseLost,
    SendError,
    Uncertain,
    execution_known,
    import_under_lock,
)
from shared.pipelines.imports.send import enqueue as send_enqueue
from shared.pipelines.imports.settings import ImportSettings
from shared.status import Outcome, StatusRecord, status_name
from shared.storage import LeaseUnavailableError

__all__ = ["ImportReport", "import_blob"]

log = logging.getLogger(__name__)


def import_blob(
    context: AppContext,
    blob_name: str,
    *,
    settings: ImportSettings | None = None,
    sleep: Callable[[float], None] = time.sleep,
    now: datetime | None = None,
) -> ImportReport:
    """Import ``blob_name`` (a name inside the inbound container) once; see the module docstring. ``now``:
    the time of this attempt (the monitor's run passes its own)."""
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
                intake = _Intake(context, settings, drop, lease, sleep, now or datetime.now(UTC))
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


RENEW_ATTEMPTS = 3  # renewals of the input's lease right before sending (transient errors retried)


def _transient(exc: AzureError) -> bool:
    """A storage error that says nothing about the lease: no answer, or a 5xx (409/412 = lease gone)."""
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return True
    return isinstance(exc, HttpResponseError) and (exc.status_code or 0) >= 500


class _Intake(IntakeRecords):
    """The flow of one drop (see the module docstring)."""

    # -- the flow

    def run(self) -> ImportReport:
        """``process``, then account for a deferral (DMF routes; populate routes keep their own rules)."""
        report = self.process()
        if self.match is None or self.match.route.populate is not None:
            return report
        if report.outcome != "deferred":
            self.deferrals.clear(self.drop)  # the input left inbound: no longer waiting
            return report
        if report.reason_code == "input_lease_lost":  # another instance has the file now
            return report
        correlation = self.correlation({"job_id": report.job_id})
        waiting = self.deferrals.count(self.drop, report.message, report.reason_code, correlation, self.when)
        if waiting.attempts < self.settings.max_deferrals or waiting.hours < self.settings.max_deferral_hours:
            return report
        return self.give_up(report, waiting.attempts, waiting.hours)

    def process(self) -> ImportReport:
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
        if entry.get("input", {}).get("drop_id") != self.drop.drop_id:
            taken_over = self.taken_over(name, entry)
            if taken_over is not None:
                return taken_over
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

    def taken_over(self, name: str, entry: dict[str, Any]) -> ImportReport | None:
        """This drop claimed the entry and sent its job, then stopped before its input left inbound; another
        drop re-imported the content meanwhile (a newer generation). This drop must never be sent again:
        with its job record, the input joins its job in ``inflight/`` (the ledger stays the newer one's);
        without one (gone before it was written), an operator checks. None: this drop never sent."""
        own = self.ledger.drop_job(self.drop)
        if own is None or own == str(entry.get("job_id")):
            return None
        found = self.jobs.read(own)
        if found is not None and found.value.get("drop_id") == self.drop.drop_id:
            return self.record_sent(name, entry, dict(found.value), ledger=False)
        states = {str(h.get("job_id")): str(h.get("state")) for h in entry.get("history", [])}
        if states.get(own, str(LedgerState.NOT_SENT)) == str(LedgerState.NOT_SENT):
            return None  # nothing of this drop reached D365: a re-drop like any other
        assert self.match is not None
        return self.finish_input(
            Outcome.FAILED,
            f"this file was sent as job {own} (state {states[own]}) but the app stopped before it was "
            f"recorded, and job {entry.get('job_id')} re-imported the same content meanwhile; not sent "
            "again. Check D365's import history for the job; re-submit only if it is not there",
            "needs_operator_check",
            folder=own,
        )

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
            job_for=lambda generation: layout.job_id(
                route.name, prepared.sha256, generation, legal_entity=legal_entity
            ),
            job=self.job_draft("", prepared),
        )
        draft = self.job_draft(claim.job_id, prepared)
        annotate(job_id=claim.job_id)
        if claim.decision is Decision.DUPLICATE:
            return self.duplicate(claim.entry, prepared)
        if claim.decision is Decision.BUSY:  # the job is the other drop's: not this one's (its errors folder)
            return self.report("deferred", f"the same content is being imported from another drop right now "
                               f"(job {claim.job_id}); this re-import is tried again later")  # fmt: skip
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
            self.confirm_lease()
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
            self.store,
            self.settings,
            self.dmf,
            route,
            legal_entity,
            package_url,
            job,
            sleep=self.sleep,
            before_send=self.confirm_lease,
        )
        return {"execution_id": execution_id}

    def confirm_lease(self) -> None:
        """Right before the irreversible send: renew the input's lease now. Preparing a big file can outlast
        a lease whose background renewals failed; then another instance may be processing the file, and
        this one must not send it too (:class:`LeaseLost`: nothing sent, the entry back to ``not_sent``).
        A transient storage error (connection blip, 5xx) is retried a few times first: it says nothing
        about the lease."""
        for attempt in range(RENEW_ATTEMPTS):
            try:
                self.lease.renew()
                return
            except AzureError as exc:
                if attempt + 1 < RENEW_ATTEMPTS and _transient(exc):
                    self.sleep(0.5 * (attempt + 1))
                    continue
                raise LeaseLost(
                    "input_lease_lost",
                    "the lease on the input lapsed before it was sent (another instance may be processing "
                    f"it); not sent by this attempt ({type(exc).__name__})",
                ) from exc

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
            return self.unconfirmed_again(name, entry)
        log_event(
            log, "IMPORT_RECOVERED", logging.WARNING, "sent before a crash; re-attached to it", job_id=job
        )
        return self.record_sent(name, entry, {**draft, "execution_id": job})

    def unconfirmed_again(self, name: str, entry: dict[str, Any]) -> ImportReport | None:
        """D365 does not know the job. After a crash that means it was never started: send it (None). After an
        unconfirmed ImportFromPackage (``unconfirmed`` on the entry) D365 may just not show it yet (its status
        row appears late, ref §1.7): ask again on the next ``IMPORT_UNKNOWN_STATUS_POLLS`` attempts (each at
        least one retry interval apart) before sending again. Sending again is safe even then: it uses the
        same execution id, and D365 refuses a second job with a used id (``send._id_already_used``)."""
        unconfirmed = entry.get("unconfirmed")
        if not isinstance(unconfirmed, dict):
            return None
        checks = int(unconfirmed.get("checks", 0)) + 1
        if checks > self.settings.unknown_status_polls:
            return None
        job = str(entry["job_id"])
        self.ledger.set_state(name, LedgerState.SENDING, unconfirmed={**unconfirmed, "checks": checks})
        return self.report(
            "deferred",
            f"D365 does not know job {job} yet after an unconfirmed ImportFromPackage (check {checks} of "
            f"{self.settings.unknown_status_polls}); asked again on the next attempt before sending again",
            job_id=job,
            reason_code="import_unconfirmed",
        )


def status_of(record: dict[str, Any]) -> StatusRecord:
    """The status record embedded in a job record."""
    return StatusRecord.from_dict(record["status"])
