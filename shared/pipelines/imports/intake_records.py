"""What the intake records: the ledger state, the job record the monitor follows, status records and the
moves of the input (``intake.py`` runs the flow; this is the recording half of the same ``_Intake``).

Order matters for "nothing is lost" and "sent once": ``record_sent`` writes the ledger ``sent`` (with the
job), then the job record, then moves the input to ``inflight/`` (the monitor waits while the drop is
still in inbound, so a job is never finished without its input); a failed send records only what is
certain (``send_failed``: nothing started → ``not_sent``, unless an earlier attempt's import is unconfirmed;
may have started → stays ``sending`` or becomes ``uncertain``, never ``not_sent``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from shared.context import AppContext
from shared.d365.dmf import DmfClient
from shared.pipelines.imports import layout
from shared.pipelines.imports.deferrals import Deferrals
from shared.pipelines.imports.ledger import InputRef, JobRecords, Ledger, LedgerState, StaleGeneration
from shared.pipelines.imports.outcome import Location, Outcomes, import_record
from shared.pipelines.imports.preparing import Prepared
from shared.pipelines.imports.routing import RouteMatch
from shared.pipelines.imports.send import Deferred, LeaseLost, Refused, SendError
from shared.pipelines.imports.settings import ImportSettings
from shared.status import Outcome, status_name, utc_now

__all__ = ["ImportReport", "IntakeRecords"]


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


class IntakeRecords:
    """The recording half of the intake of one drop (see the module docstring)."""

    def __init__(
        self,
        context: AppContext,
        settings: ImportSettings,
        drop: InputRef,
        lease: Any,
        sleep: Callable[[float], None],
        now: datetime,
    ) -> None:
        self.context, self.settings, self.drop, self.lease, self.sleep = context, settings, drop, lease, sleep
        self.store = context.store
        self.ledger = Ledger(self.store, settings.state_container)
        self.jobs = JobRecords(self.store, settings.state_container)
        self.outcomes = Outcomes(self.store, settings)
        self.deferrals = Deferrals(self.store, settings.state_container)
        self.dmf = DmfClient(context.odata, context.transport)
        self.subject = f"{drop.container}/{drop.name}"
        self.when = now
        self.match: RouteMatch | None = None

    def give_up(self, report: ImportReport, attempts: int, hours: float) -> ImportReport:
        """Deferred for ``IMPORT_MAX_DEFERRAL_HOURS`` (and ``IMPORT_MAX_DEFERRALS`` attempts): to the errors
        location, for an operator to re-submit. An entry still ``sending`` (an unconfirmed import) becomes
        ``uncertain``: D365 may have the job."""
        assert self.match is not None
        claimed = self.ledger.for_drop(self.drop)
        entry = (
            claimed[1]
            if claimed and claimed[1].get("input", {}).get("drop_id") == self.drop.drop_id
            else None
        )
        # the job's folder only when the entry is this drop's: another drop's job would share its folder
        folder = report.job_id if entry is not None and report.job_id else f"drop-{self.drop.drop_id[:12]}"
        stored = self.outcomes.final_location(
            Outcome.FAILED, self.match.route.name, self.when, folder, self.match.file_name
        )
        sending = entry is not None and entry.get("state") == str(LedgerState.SENDING)
        check = (
            f"D365 may have job {report.job_id} after all: check its import history, and if it is not there "
        )
        message = (
            f"not sent after {attempts} attempts over {hours:.1f} hours (IMPORT_MAX_DEFERRAL_HOURS); "
            f"the last one: {report.message}. "
            f"{check if sending else 'Fix the cause, then '}send it again with: "
            f"python -m ops resubmit {status_name(str(stored))}"
        )
        job = dict(entry.get("job") or {}) if entry else None
        done = self.finish_input(Outcome.FAILED, message, "deferred_too_often", folder=folder, job=job)
        if claimed is not None and entry is not None:
            state = LedgerState.UNCERTAIN if sending else LedgerState(str(entry.get("state")))
            with suppress(StaleGeneration):
                self.ledger.set_state(
                    claimed[0], state, expect_job=str(entry["job_id"]), note=message, stored_as=done.stored_as
                )
        self.deferrals.clear(self.drop)
        return done

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

    def record_sent(
        self, ledger_name: str, entry: dict[str, Any], job: dict[str, Any], *, ledger: bool = True
    ) -> ImportReport:
        """Ledger ``sent`` → job record → input to ``inflight/``; each step safe to repeat. ``ledger=False``:
        the entry belongs to a newer generation now (``taken_over``); only this drop's job is completed."""
        job_id = str(job.get("job_id") or entry["job_id"])
        if ledger:
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
        created = self.jobs.create(
            job_id,
            {**job, "input": {"container": inflight.container, "name": inflight.name}, "ledger": ledger_name,
             "sent_at": utc_now(), "polls": 0, "unknown_polls": 0, "status": record.to_dict()},
        )  # fmt: skip
        if not created:  # a repeated trigger of this drop finds its own record; anything else is a clash
            existing = self.jobs.read(job_id)
            theirs = existing.value if existing is not None else {}
            if existing is not None and (theirs.get("ledger"), theirs.get("drop_id")) != (
                ledger_name,
                self.drop.drop_id,
            ):
                raise RuntimeError(
                    f"job {job_id} is already followed for {theirs.get('original')!r}; this file is left in "
                    "the inbound container (not merged into that job)"
                )
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
        if isinstance(exc, LeaseLost | Deferred):  # nothing left this process: any drop may send it
            self.nothing_sent(ledger_name, job, exc.message)
            return self.report("deferred", exc.message, job_id=job, reason_code=exc.reason_code)
        if exc.reason_code == "import_unconfirmed":  # may have started: stays ``sending`` (see recover)
            unconfirmed = {"since": utc_now(), "checks": 0}
            self.ledger.set_state(ledger_name, LedgerState.SENDING, note=exc.message, unconfirmed=unconfirmed)
            return self.report("deferred", exc.message, job_id=job, reason_code=exc.reason_code)
        state = LedgerState.NOT_SENT if isinstance(exc, Refused) else LedgerState.UNCERTAIN
        report = self.finish_input(Outcome.FAILED, exc.message, exc.reason_code, folder=job, job=draft)
        self.ledger.set_state(ledger_name, state, note=exc.message, stored_as=report.stored_as)
        return report

    def nothing_sent(self, ledger_name: str, job: str, note: str) -> None:
        """This attempt started nothing in D365: the entry goes back to ``not_sent`` (any drop of the content
        may send it), unless an earlier attempt's ImportFromPackage is unconfirmed (``unconfirmed`` on the
        entry): D365 may still have that job, so the entry stays ``sending`` (no other drop takes it over as
        a new generation with a new execution id) and the next attempt asks D365 again or re-sends with the
        same id. A re-import that took the entry over meanwhile is left alone."""
        found = self.ledger.read(ledger_name)
        unconfirmed = found is not None and isinstance(found.value.get("unconfirmed"), dict)
        state = LedgerState.SENDING if unconfirmed else LedgerState.NOT_SENT
        with suppress(StaleGeneration):
            self.ledger.set_state(ledger_name, state, expect_job=job or None, note=note)

    def duplicate(self, entry: dict[str, Any], prepared: Prepared) -> ImportReport:
        earlier = str(entry.get("job_id"))
        assert self.match is not None
        message = (
            f"identical content was already sent to this target as job {earlier} "
            f"(from {entry.get('input', {}).get('name')!r}, state {entry.get('state')}); skipped "
            f"(route {self.match.route.name!r} has on_redrop 'skip')"
        )
        if entry.get("state") in (LedgerState.FAILED, LedgerState.UNCERTAIN, LedgerState.NOT_SENT):
            stored = str(entry.get("stored_as") or "")
            again = f"python -m ops resubmit {status_name(stored)}" if stored else "python -m ops resubmit"
            message += f". That import did not succeed: to import this content again, re-submit it: {again}"
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
