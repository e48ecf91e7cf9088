"""Follow one inbound file to its final status record: ``ops import --wait`` and ``ops resubmit --wait``.

The intake pipeline (``import_blob``) is run for the file right away: when the blob trigger (the Functions
host or the local runner) already took it, that call answers ``busy`` or ``gone`` and the file's own
ledger entry (found through its drop marker or its content hash) tells where it went. While D365 works on
it, only this file's job is followed: the import monitor's step for one job (one D365 status call; when
D365 finished, the status record, error detail and the move to archive/errors) runs under the monitor's own
lease, right away, ``poll_seconds`` later, then less often (x1.5, at most every :data:`MAX_POLL_SECONDS`).
When the timer's monitor holds the lease the step is skipped: the timer does the same. Other jobs and the
inbound sweep are left to the timer: their outcomes, and the alerts they log, belong in the app's log, not
on this terminal. Everything runs the pipelines' own code, safe next to the triggers (leases and the ledger
decide, never this process).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from azure.core.exceptions import ResourceNotFoundError

from shared.context import AppContext
from shared.logs import log_context
from shared.pipelines.imports import import_blob, layout
from shared.pipelines.imports.ledger import InputRef, JobRecords, Ledger, LedgerState

# The monitor's step for one job (no public entry point for a single job yet): used, like the timer does,
# only under the monitor's lease.
from shared.pipelines.imports.monitor import poll_import_job
from shared.pipelines.imports.routing import RouteMatch
from shared.pipelines.imports.settings import ImportSettings
from shared.status import status_name

__all__ = ["MAX_POLL_SECONDS", "FollowTimeout", "Followed", "follow_import"]

#: The longest pause between two status calls for the followed job (the monitor timer polls every minute).
MAX_POLL_SECONDS = 10.0

_FINAL_REPORTS = ("rejected", "failed", "duplicate")


class FollowTimeout(Exception):
    """The file did not reach a final status record in time (it goes on without this process)."""


@dataclass
class Followed:
    """Where the file ended: ``outcome`` and ``stored_as`` of its status ``record``."""

    outcome: str
    stored_as: str
    record: dict[str, Any]
    job_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("succeeded", "duplicate")


class _Follower:
    def __init__(
        self,
        context: AppContext,
        settings: ImportSettings,
        match: RouteMatch,
        name: str,
        sha256: str | None,
        log: TextIO,
        poll_seconds: float,
        deadline: float,
        sleep: Callable[[float], None],
    ) -> None:
        self.context, self.settings, self.match, self.name = context, settings, match, name
        self.sha256, self.log, self.poll_seconds, self.deadline = sha256, log, poll_seconds, deadline
        self.sleep = sleep
        self.store = context.store
        self.ledger = Ledger(self.store, settings.state_container)
        self.jobs = JobRecords(self.store, settings.state_container)
        self.drop: InputRef | None = None
        self.started = datetime.now(UTC)

    def say(self, text: str) -> None:
        self.log.write(f"{text}\n")
        self.log.flush()

    def wait(self, what: str, seconds: float | None = None) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise FollowTimeout(f"{what}; it goes on without this command (ops resubmit --list, ops status)")
        self.sleep(min(self.poll_seconds if seconds is None else seconds, left))

    def run(self) -> Followed:
        self.remember_drop()
        job_id: str | None = None
        while job_id is None:
            report = import_blob(self.context, self.name, settings=self.settings)
            self.say(f"intake: {report.outcome}: {report.message}")
            if report.outcome == "sent":
                job_id = report.job_id
            elif report.outcome in _FINAL_REPORTS and report.stored_as:
                return self.final(report.stored_as, report.job_id)
            elif report.outcome in ("busy", "gone"):
                found = self.locate()
                if isinstance(found, Followed):
                    return found
                job_id = found
                if job_id is None:
                    self.wait("the file's intake did not finish in time")
            else:  # deferred: still in inbound; the intake is tried again
                self.wait(f"the file is still waiting in inbound ({report.message})")
        return self.follow_job(job_id)

    def remember_drop(self) -> None:
        inbound = self.settings.inbound_container
        try:
            props = self.store.blob(inbound, self.name).get_blob_properties()
        except ResourceNotFoundError:
            return  # already taken by a trigger: found through the content hash instead
        etag = str(props.etag)
        self.drop = InputRef(inbound, self.name, etag, layout.drop_id(inbound, self.name, etag), props.size)

    def entry(self) -> tuple[str, dict[str, Any]] | None:
        if self.drop is not None:
            found = self.ledger.for_drop(self.drop)
            if found is not None:
                return found
        if self.sha256:
            name = layout.ledger_name(self.match.route.target_key(self.match.legal_entity), self.sha256)
            entry = self.ledger.read(name)
            if entry is not None and entry.value.get("input", {}).get("name") == self.name:
                return name, entry.value
        return None

    def locate(self) -> Followed | str | None:
        """After a trigger took the file: its job id while in flight, its final record, or None (yet)."""
        found = self.entry()
        if found is not None:
            _, entry = found
            state = LedgerState(entry.get("state", LedgerState.NOT_SENT))
            if state in (LedgerState.SENT, LedgerState.SENDING):
                return str(entry["job_id"])
            if entry.get("stored_as"):
                return self.final(str(entry["stored_as"]), str(entry.get("job_id")))
            return None
        return self.stored_without_entry()

    def stored_without_entry(self) -> Followed | None:
        """A rejected or duplicate drop has no ledger entry: its folder is ``drop-``/``dup-{drop id}``."""
        if self.drop is None:
            return None
        tag = self.drop.drop_id[:12]
        route = self.match.route.name
        for container in (self.settings.errors_container, self.settings.archive_container):
            for day in {self.started, self.started - timedelta(days=1), datetime.now(UTC)}:
                prefix = f"{route}/{day:%Y}/{day:%m}/{day:%d}/"
                for folder in (f"drop-{tag}", f"dup-{tag}"):
                    name = f"{prefix}{folder}/{self.match.file_name}"
                    if self.store.blob(container, status_name(name)).exists():
                        return self.final(f"{container}/{name}", None)
        return None

    def follow_job(self, job_id: str) -> Followed:
        last = ""
        pause = self.poll_seconds
        while True:
            finished = self.poll_job(job_id)
            job = None if finished else self.jobs.read(job_id)
            if job is None:
                found = self.entry()
                if found is not None and found[1].get("stored_as"):
                    return self.final(str(found[1]["stored_as"]), job_id)
            else:
                status = str(job.value.get("last_status") or "not asked yet")
                if status != last:
                    self.say(f"job {job_id}: D365 status {status}")
                    last = status
            self.wait(f"job {job_id} is still in flight (D365 status {last or 'unknown'})", pause)
            pause = min(pause * 1.5, max(self.poll_seconds, MAX_POLL_SECONDS))

    def poll_job(self, job_id: str) -> bool:
        """The monitor's step for this one job; True when it finished the job. Skipped (False) while the
        timer's monitor holds the lease: that run polls the job itself."""
        with log_context(job_id=job_id):
            report = poll_import_job(self.context, job_id, settings=self.settings, sleep=self.sleep)
        return job_id in report.finished

    def final(self, stored_as: str, job_id: str | None) -> Followed:
        container, _, name = stored_as.partition("/")
        found = self.store.read_json(container, status_name(name))
        record: dict[str, Any] = found.value if found is not None else {}
        return Followed(str(record.get("outcome", "unknown")), stored_as, record, job_id)


def follow_import(
    context: AppContext,
    settings: ImportSettings,
    match: RouteMatch,
    name: str,
    *,
    sha256: str | None,
    log: TextIO,
    timeout: float,
    poll_seconds: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Followed:
    """Run the intake for inbound blob ``name`` (routed as ``match``) and follow it to its status record;
    progress lines go to ``log``. :class:`FollowTimeout` after ``timeout`` seconds. D365 is asked about
    the job right away, ``poll_seconds`` later, then at growing intervals (at most every
    :data:`MAX_POLL_SECONDS`)."""
    follower = _Follower(
        context, settings, match, name, sha256, log, poll_seconds, time.monotonic() + timeout, sleep
    )
    return follower.run()
