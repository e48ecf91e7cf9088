"""A dropped file for an ``odata`` or ``service`` import route: written to D365 record by record,
synchronously, inside the intake (no monitor needed), with the intake's exactly-once machinery:

lease on the input (held by ``import_blob``) → size and record-count checks (a file over the limit is refused
with a pointer to the DMF routes; the blob is read in ranges and hashed as it is parsed, never whole in
memory) → ledger claim for target + content (``ledger.py``: a repeated trigger or a
crash meets the same entry) → write → status record listing every record's key, outcome and D365's message →
the input moved to ``archive`` (every record written) or ``errors`` (partial or total failure, bad input).

Re-running after a crash is safe for OData targets: every record is read by key before it is written, so a
record an earlier attempt created is found (``unchanged``), never created twice. A custom service operation
cannot be asked what it did, so a service route that stopped mid-way is not called again: its file ends in
``errors`` as ``needs_operator_check`` with the ledger entry ``uncertain`` (the same rule as an interrupted
recurring-integration enqueue); ``python -m ops resubmit`` sends it again, once.

D365 unavailable (``$metadata``, or every write: connection, 5xx, throttled past the re-sends, token) or
the file's time limit (POPULATE_FILE_TIME_LIMIT_SECONDS) spent before anything was written: the run is
``deferred``: the ledger entry goes back to ``not_sent`` and the file stays in inbound for the monitor's
sweep to try again (safe: records are read by key first). A custom-service call without an answer is
never repeated: its file ends in ``errors`` with the ledger entry ``uncertain``.

Finishing is status record → ledger state → move of the input, so a crash between two steps is completed by
the next trigger: before the ledger state, the run is recovered as above (a service run whose record was
written is finished from it: ``_recorded_before``); after it, the trigger finds the entry finished and
completes the move beside the record already written (``_leftover``). The ledger is never left ``sending``
for an input that has already moved on (a re-drop of the same content would be deferred for ever).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.storage.blob import BlobLeaseClient

from shared.context import AppContext
from shared.d365.errors import D365Error
from shared.logs import log_event
from shared.pipelines.imports import layout
from shared.pipelines.imports.ledger import Decision, InputRef, Ledger, LedgerState
from shared.pipelines.imports.outcome import Location, Outcomes, import_record
from shared.pipelines.imports.routing import RouteMatch
from shared.populate.blob_input import HashedBlob
from shared.populate.config import PopulateRoute
from shared.populate.deadline import Deadline
from shared.populate.metadata import EntityModel, UnknownEntitySet
from shared.populate.records import InputError, RecordLimitExceeded, read_records
from shared.populate.results import PopulateResult
from shared.populate.run import entity_model, write_route
from shared.populate.settings import PopulateSettings
from shared.status import Outcome, status_name

__all__ = ["DEFAULT_MAX_FILE_BYTES", "DropResult", "populate_drop"]

log = logging.getLogger(__name__)
DEFAULT_MAX_FILE_BYTES = 32 * 1024 * 1024  # max_file_mb of odata/service routes: 32 by default, 64 at most


@dataclass
class DropResult:
    """What became of the drop: ``outcome`` for ``ImportReport`` and its extra fields."""

    outcome: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Drop:
    context: AppContext
    match: RouteMatch
    drop: InputRef
    lease: BlobLeaseClient
    ledger: Ledger
    outcomes: Outcomes
    when: datetime
    subject: str

    @property
    def populate(self) -> PopulateRoute:
        found = self.match.route.populate
        assert found is not None
        return found

    def correlation(self, job: str | None, sha256: str | None) -> dict[str, str]:
        values = {
            "job_id": job,
            "file": self.match.file_name,
            "sha256": sha256,
            "route": self.match.route.name,
            "legal_entity": self.match.legal_entity,
            "drop_id": self.drop.drop_id,
        }
        return {k: v for k, v in values.items() if v}

    def finish(
        self,
        outcome: Outcome,
        message: str,
        reason_code: str,
        *,
        folder: str,
        job: str | None = None,
        sha256: str | None = None,
        details: dict[str, Any] | None = None,
        ledger: tuple[str, LedgerState, dict[str, Any]] | None = None,
    ) -> DropResult:
        """Status record, then the ledger entry's final state (``ledger``: name, state, fields), then the
        input moved beside its record (see the module docstring for why in this order)."""
        target = self.outcomes.final_location(
            outcome, self.match.route.name, self.when, folder, self.match.file_name
        )
        record = import_record(
            self.subject,
            outcome,
            message,
            self.correlation(job, sha256),
            reason_code=reason_code,
            stored_as=str(target),
            **(details or {}),
        )
        self.outcomes.write_record(target, record)
        if ledger is not None:
            name, state, fields = ledger
            self.ledger.set_state(name, state, stored_as=str(target), **fields)
        self.outcomes.move(Location(self.drop.container, self.drop.name), target, lease=self.lease)
        log.info("populate %s: %s -> %s (%s)", job or "-", self.subject, target, outcome)
        kind = {Outcome.REJECTED: "rejected", Outcome.DUPLICATE: "duplicate"}.get(outcome, str(outcome))
        return DropResult(
            kind,
            message,
            {"job_id": job, "sha256": sha256, "stored_as": str(target), "reason_code": reason_code},
        )

    def reject(self, message: str, reason_code: str, sha256: str | None = None) -> DropResult:
        return self.finish(
            Outcome.REJECTED, message, reason_code, folder=f"drop-{self.drop.drop_id[:12]}", sha256=sha256
        )


def populate_drop(
    context: AppContext,
    match: RouteMatch,
    drop: InputRef,
    *,
    lease: BlobLeaseClient,
    ledger: Ledger,
    outcomes: Outcomes,
    when: datetime,
    subject: str,
    sleep: Callable[[float], None] = time.sleep,
) -> DropResult:
    """Write the drop's records and finish it (see the module docstring)."""
    job = _Drop(context, match, drop, lease, ledger, outcomes, when, subject)
    route, populate = match.route, job.populate
    limit = route.max_file_bytes or DEFAULT_MAX_FILE_BYTES
    if drop.size > limit:
        return job.reject(
            f"{match.file_name!r} is {drop.size} bytes, more than route {route.name!r} takes "
            f"({limit} bytes); an OData or custom-service route is for small files: send large files through "
            "a DMF route (target 'package' or 'recurring')",
            "file_too_large",
        )
    stream = HashedBlob(context, drop)
    try:
        records = read_records(stream, match.file_name, populate.records, limit=populate.max_records)
    except RecordLimitExceeded:
        sha256 = stream.sha256()
        return job.reject(
            f"{match.file_name!r} holds more than {populate.max_records} records, the limit of route "
            f"{route.name!r} ('max_records'); writing record by record suits small files only: send large "
            "files through a DMF route (target 'package' or 'recurring'), which imports them in bulk",
            "too_many_records",
            sha256,
        )
    except InputError as exc:
        return job.reject(
            f"{match.file_name!r} cannot be read as records: {exc}", "unreadable_records", stream.sha256()
        )
    sha256 = stream.sha256()
    if not records:
        return job.reject(f"{match.file_name!r} holds no records", "no_records", sha256)
    model: EntityModel | None = None
    if populate.entity is not None:
        try:
            model = entity_model(context, populate.entity.entity_set)
        except UnknownEntitySet as exc:
            return job.reject(f"route {route.name!r}: {exc}", "unknown_entity_set", sha256)
        except D365Error as exc:
            return DropResult(
                "deferred",
                f"could not read the D365 $metadata, tried again later: {exc}",
                {"reason_code": "metadata_unavailable"},
            )
    claim = ledger.claim(
        target=populate.target_key(match.legal_entity),
        sha256=sha256,
        route=route.name,
        on_redrop=route.on_redrop,
        drop=drop,
        job_for=lambda generation: layout.job_id(
            route.name, sha256, generation, legal_entity=match.legal_entity
        ),
        job={
            "route": route.name,
            "target": route.target,
            "file_name": match.file_name,
            "sha256": sha256,
            "records": len(records),
            "original": subject,
            "drop_id": drop.drop_id,
        },
    )
    job_id = claim.job_id
    if claim.decision is Decision.DUPLICATE:
        earlier = claim.entry.get("job_id")
        message = (
            f"identical content was already written to this target as job {earlier} (state "
            f"{claim.entry.get('state')}); skipped (route {route.name!r} has on_redrop 'skip')"
        )
        return job.finish(
            Outcome.DUPLICATE,
            message,
            "duplicate",
            folder=f"dup-{drop.drop_id[:12]}",
            job=str(earlier),
            sha256=sha256,
        )
    if claim.decision is Decision.BUSY:
        return DropResult(
            "deferred",
            "the same content is being written from another drop right now; tried again later",
            {"job_id": job_id, "reason_code": "busy"},
        )
    if claim.decision is Decision.FINISHED:
        return _leftover(job, claim.entry, sha256)
    recovered = claim.decision in (Decision.RECOVER, Decision.RESUME)
    if recovered and populate.service is not None:
        return _recorded_before(job, claim.name, job_id) or _needs_operator_check(
            job, claim.name, job_id, sha256
        )
    if recovered:
        log_event(
            log,
            "POPULATE_RECOVERED",
            logging.WARNING,
            "writing again after an interrupted run (every record is read by key first)",
            file=subject,
            job_id=job_id,
        )
    seconds = context.settings.section(PopulateSettings).file_time_limit_seconds
    written = write_route(
        context,
        populate,
        records,
        legal_entity=match.legal_entity,
        model=model,
        sleep=sleep,
        deadline=Deadline(seconds),
    )
    if written.retry_later:
        # nothing written, nothing uncertain: as if never sent; the monitor's sweep brings the file back
        ledger.set_state(claim.name, LedgerState.NOT_SENT, note=written.unavailable)
        return DropResult(
            "deferred",
            f"nothing written, tried again later: {written.unavailable}",
            {"job_id": job_id, "sha256": sha256, "reason_code": "d365_unavailable"},
        )
    return _finished(job, claim.name, job_id, sha256, written, recovered=recovered)


def _recorded_before(job: _Drop, ledger_name: str, job_id: str) -> DropResult | None:
    """A service run that stopped after writing its status record (today's, for this drop) and before the
    ledger state: finished from that record instead of asking an operator about calls it accounts for."""
    route, file_name = job.match.route.name, job.match.file_name
    for outcome in (Outcome.SUCCEEDED, Outcome.FAILED):  # the archive, then the errors container
        where = job.outcomes.final_location(outcome, route, job.when, job_id, file_name)
        found = job.context.store.read_json(where.container, status_name(where.name))
        record = found.value if found is not None and isinstance(found.value, dict) else {}
        if (record.get("correlation") or {}).get("drop_id") != job.drop.drop_id:
            continue
        reason = str((record.get("details") or {}).get("reason_code") or "")
        state = {"written": LedgerState.SUCCEEDED, "needs_operator_check": LedgerState.UNCERTAIN}
        job.ledger.set_state(ledger_name, state.get(reason, LedgerState.FAILED), stored_as=str(where))
        job.outcomes.move(Location(job.drop.container, job.drop.name), where, lease=job.lease)
        message = f"{record.get('message')} (recorded before the app stopped; the move to {where} completed)"
        fields = {"job_id": job_id, "stored_as": str(where), "reason_code": reason or None}
        return DropResult(str(record.get("outcome")), message, fields)
    return None


def _needs_operator_check(job: _Drop, ledger_name: str, job_id: str, sha256: str) -> DropResult:
    """An interrupted service route: not called again; the operator checks D365 and re-submits."""
    stored = job.outcomes.final_location(
        Outcome.FAILED, job.match.route.name, job.when, job_id, job.match.file_name
    )
    message = (
        "the app stopped while calling the custom service for this file, so some of its records may have "
        "been processed; a custom service cannot be asked which, so the file is not sent again "
        "automatically. Check in D365 which records arrived; to send the whole file again (every record) "
        f"run: python -m ops resubmit {status_name(str(stored))} (a file dropped again with the same "
        "content may be skipped as a duplicate); to send only the missing records, drop a file holding "
        "just those"
    )
    return job.finish(
        Outcome.FAILED,
        message,
        "needs_operator_check",
        folder=job_id,
        job=job_id,
        sha256=sha256,
        ledger=(ledger_name, LedgerState.UNCERTAIN, {"note": message}),
    )


def _finished(
    job: _Drop, ledger_name: str, job_id: str, sha256: str, written: PopulateResult, *, recovered: bool
) -> DropResult:
    outcome = written.outcome
    reasons = {Outcome.SUCCEEDED: "written", Outcome.PARTIALLY_SUCCEEDED: "partially_written"}
    reason = reasons.get(outcome, "not_written")
    details: dict[str, Any] = {"populate": written.to_dict()}
    message = written.message()
    state = LedgerState.SUCCEEDED if outcome is Outcome.SUCCEEDED else LedgerState.FAILED
    if written.uncertain:
        # a custom service call without an answer may have run: like an interrupted run, an operator checks
        state, reason = LedgerState.UNCERTAIN, "needs_operator_check"
        message += (
            f"; {written.uncertain} call(s) got no usable answer and may have been processed: check in D365, "
            "then send what is missing (python -m ops resubmit sends the whole file again)"
        )
    if recovered:
        # what the interrupted attempt wrote is read back by key: it shows as "unchanged" here
        details["recovered"] = (
            "written again after an interrupted attempt: records that attempt wrote show as 'unchanged'"
        )
    return job.finish(
        outcome,
        message,
        reason,
        folder=job_id,
        job=job_id,
        sha256=sha256,
        details=details,
        ledger=(ledger_name, state, {"counts": written.counts}),
    )


def _leftover(job: _Drop, entry: dict[str, Any], sha256: str) -> DropResult:
    """This very drop was finished before: what is still in inbound is a copy a cut move left behind, or
    the input of a run that stopped after recording its outcome and before moving it (moved now)."""
    stored = str(entry.get("stored_as") or "")
    container, _, name = stored.partition("/")
    fields = {"job_id": entry.get("job_id"), "sha256": sha256, "stored_as": stored}
    if stored and job.context.store.blob(container, name).exists():
        job.context.store.blob(job.drop.container, job.drop.name).delete_blob(lease=job.lease)
        return DropResult(
            "gone", f"already written and stored as {stored}; removed the leftover copy", fields
        )
    record = job.context.store.read_json(container, status_name(name)) if stored else None
    if record is not None and isinstance(record.value, dict):
        job.outcomes.move(
            Location(job.drop.container, job.drop.name), Location(container, name), lease=job.lease
        )
        outcome = str(record.value.get("outcome") or entry.get("state"))
        reason = str((record.value.get("details") or {}).get("reason_code") or "") or None
        message = f"{record.value.get('message')} (the interrupted move to {stored} was completed)"
        return DropResult(outcome, message, {**fields, "reason_code": reason})
    return job.finish(
        Outcome.DUPLICATE,
        f"this file was already handled as job {entry.get('job_id')} (state {entry.get('state')})",
        "duplicate",
        folder=f"dup-{job.drop.drop_id[:12]}",
        job=str(entry.get("job_id")),
        sha256=sha256,
    )
