"""The import ledger (one entry per D365 target + content hash) and the in-flight job records.

"Sent exactly once" is decided here, in storage, never in memory: an entry is created with If-None-Match
*before* anything is sent (state ``sending``), and every later change is an If-Match update, so two
instances racing on the same content, a repeated trigger or a crash between sending and recording all meet
the same entry. :func:`decide` is the pure rule table; :class:`Ledger` does the conditional I/O.

States: ``sending`` (claimed; the send may or may not have reached D365; also after an ImportFromPackage
whose answer was lost, marked ``unconfirmed``, until D365 shows the job or the grace checks run out),
``sent`` (D365 accepted it; the monitor follows the job), ``succeeded`` / ``failed`` (D365's verdict),
``not_sent`` (nothing was imported: deferred or refused before any import started; may be sent again),
``uncertain`` (may or may not have been imported; an operator must check before sending it again). A
``sending`` entry is never taken over by another drop (``skip``: duplicate; ``reimport``: busy), so an
import that may have started is never started again from another drop; only the drop that claimed it
sends again, with the same execution id, which D365 refuses to run twice.

The monitor records a job's verdict only while the entry still belongs to that job
(``set_state(expect_job=)``): a re-import's newer generation is never overwritten by an older one. A
drop's marker (``ledger/drops/{drop}.json``) keeps the job it claimed the entry for (``drop_job``): a drop
that sent its job and stopped before its input left inbound, and whose entry a re-import took over
meanwhile, finds its own job there and is never sent again as yet another generation.

Re-submitting (``resubmit.py``) is the one deliberate way past the duplicate rule: an operator's
``resubmission`` permit on a ``failed``/``uncertain`` entry names the inbound blob the input is put back
as; a drop of that blob takes the entry over as a new generation (a new job and execution id), which
drops the permit, so the permit is used exactly once. ``resubmissions`` counts them per entry.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError

from shared.pipelines.imports import layout
from shared.status import utc_now
from shared.storage import BlobStore, JsonBlob

__all__ = [
    "RESUBMITTABLE",
    "Claim",
    "Decision",
    "InputRef",
    "JobRecords",
    "Ledger",
    "LedgerState",
    "ResubmissionRefused",
    "StaleGeneration",
    "decide",
]


class LedgerState(enum.StrEnum):
    SENDING = "sending"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NOT_SENT = "not_sent"
    UNCERTAIN = "uncertain"


#: States an operator may re-submit from: D365 failed it, or nobody knows and the operator checked.
RESUBMITTABLE = (LedgerState.FAILED, LedgerState.UNCERTAIN, LedgerState.NOT_SENT)


class StaleGeneration(Exception):
    """The ledger entry was taken over by another generation (job) than the one being recorded."""


class ResubmissionRefused(Exception):
    """The entry moved to a state that may not be re-submitted (e.g. another drop is being sent)."""


class Decision(enum.StrEnum):
    SEND = "send"  # this drop owns the entry now: send it
    RECOVER = "recover"  # this drop was being sent when its instance died: find out whether D365 has it
    RESUME = "resume"  # this drop was sent; finish recording it
    FINISHED = "finished"  # this drop was already finalised; what is left in inbound is a leftover copy
    DUPLICATE = "duplicate"  # the same content went (or is going) to this target from another drop
    BUSY = "busy"  # re-import wanted while another drop of the content is being sent: try later


@dataclass(frozen=True)
class InputRef:
    """The dropped blob version being processed."""

    container: str
    name: str
    etag: str
    drop_id: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "name": self.name,
            "etag": self.etag,
            "drop_id": self.drop_id,
            "size": self.size,
        }


@dataclass(frozen=True)
class Claim:
    decision: Decision
    name: str  # the ledger entry's blob name
    entry: dict[str, Any]  # the entry as this claim left it

    @property
    def job_id(self) -> str:
        return str(self.entry["job_id"])


def _new_entry(
    target: str,
    sha256: str,
    route: str,
    drop: InputRef,
    generation: int,
    job: str,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    now = utc_now()
    history = list(previous.get("history", [])) if previous else []
    if previous:
        history.append(
            {"at": now, "state": str(previous.get("state")), "job_id": str(previous.get("job_id"))}
        )
    return {
        "target": target,
        "sha256": sha256,
        "route": route,
        "state": str(LedgerState.SENDING),
        "generation": generation,
        "job_id": job,
        "input": drop.to_dict(),
        "created": previous.get("created", now) if previous else now,
        "updated": now,
        "history": history[-20:],
    }


def decide(entry: dict[str, Any], drop: InputRef, on_redrop: str) -> tuple[Decision, int]:
    """What to do with ``drop`` given the existing ledger ``entry``; returns (decision, generation to use).

    The same drop (a repeated trigger, or a retry after a crash) continues where its entry stands. Another
    drop of the same content is a re-drop: skipped or imported again (a new generation, so a new execution
    id) by the route's ``on_redrop``; a ``not_sent`` entry is simply taken over.
    """
    state = LedgerState(entry.get("state", LedgerState.NOT_SENT))
    generation = int(entry.get("generation", 1))
    same = entry.get("input", {}).get("drop_id") == drop.drop_id
    if same:
        return {
            LedgerState.SENDING: Decision.RECOVER,
            LedgerState.SENT: Decision.RESUME,
            LedgerState.NOT_SENT: Decision.SEND,
        }.get(state, Decision.FINISHED), generation
    if state is LedgerState.NOT_SENT:
        return Decision.SEND, generation + 1
    if state in (LedgerState.FAILED, LedgerState.UNCERTAIN) and _permitted(entry, drop):
        return Decision.SEND, generation + 1  # an operator re-submitted this input (resubmit.py)
    if on_redrop != "reimport":
        return Decision.DUPLICATE, generation
    if state is LedgerState.SENDING:
        return Decision.BUSY, generation
    return Decision.SEND, generation + 1


def _permitted(entry: dict[str, Any], drop: InputRef) -> bool:
    """Whether ``entry`` carries an operator's re-submission permit for the blob ``drop`` is a version of."""
    permit = entry.get("resubmission")
    return (
        isinstance(permit, dict)
        and permit.get("container") == drop.container
        and permit.get("name") == drop.name
    )


class Ledger:
    """Conditional reads and writes of ledger entries in the state container."""

    def __init__(self, store: BlobStore, container: str) -> None:
        self.store = store
        self.container = container

    def read(self, name: str) -> JsonBlob | None:
        return self.store.read_json(self.container, name)

    def for_drop(self, drop: InputRef) -> tuple[str, dict[str, Any]] | None:
        """The ledger entry a previous trigger of this very blob version claimed, if any."""
        marker = self.store.read_json(self.container, layout.drop_name(drop.drop_id))
        if marker is None:
            return None
        found = self.read(str(marker.value["entry"]))
        return None if found is None else (str(marker.value["entry"]), found.value)

    def claim(
        self,
        *,
        target: str,
        sha256: str,
        route: str,
        on_redrop: str,
        drop: InputRef,
        job_for: Callable[[int], str],
        job: dict[str, Any] | None = None,
        attempts: int = 10,
    ) -> Claim:
        """Create or take over the entry for (target, content) for ``drop``; see :func:`decide`."""
        name = layout.ledger_name(target, sha256)
        for _ in range(attempts):
            fresh = _new_entry(target, sha256, route, drop, 1, job_for(1), None)
            fresh["job"] = {**(job or {}), "job_id": fresh["job_id"]}
            if self.store.create_json(self.container, name, fresh):
                self._mark_drop(drop, name, str(fresh["job_id"]))
                return Claim(Decision.SEND, name, fresh)
            current = self.read(name)
            if current is None:
                continue  # deleted in between (an operator reset it): create again
            decision, generation = decide(current.value, drop, on_redrop)
            if decision is not Decision.SEND:
                return Claim(decision, name, current.value)
            same = current.value.get("input", {}).get("drop_id") == drop.drop_id
            job_id = str(current.value["job_id"]) if same else job_for(generation)
            previous = None if same else current.value
            taken = _new_entry(target, sha256, route, drop, generation, job_id, previous)
            if same:
                taken["history"] = current.value.get("history", [])
                taken["created"] = current.value.get("created", taken["created"])
            taken["job"] = {**(job or {}), "job_id": taken["job_id"]}
            taken["resubmissions"] = int(current.value.get("resubmissions", 0))
            if not same and _permitted(current.value, drop):  # the permit is used up by this takeover
                taken["resubmission_of"] = current.value["resubmission"]
                taken["resubmissions"] += 1
            if self._replace(name, taken, current.etag):
                self._mark_drop(drop, name, str(taken["job_id"]))
                return Claim(Decision.SEND, name, taken)
        raise RuntimeError(f"ledger entry {name} kept changing under {attempts} attempts to claim it")

    def _replace(self, name: str, value: dict[str, Any], etag: str) -> bool:
        try:
            self.store.write_json(self.container, name, value, etag=etag)
        except ResourceModifiedError:
            return False
        except HttpResponseError as exc:
            if exc.status_code != 412:
                raise
            return False
        return True

    def _mark_drop(self, drop: InputRef, name: str, job: str) -> None:
        """The drop's marker: the entry it claimed and its own job (the first claim's; kept thereafter)."""
        self.store.create_json(self.container, layout.drop_name(drop.drop_id), {"entry": name, "job_id": job})

    def drop_job(self, drop: InputRef) -> str | None:
        """The job this very drop claimed the entry for (None: no marker, or one written before it said)."""
        marker = self.store.read_json(self.container, layout.drop_name(drop.drop_id))
        job = marker.value.get("job_id") if marker is not None else None
        return str(job) if job else None

    def permit_resubmission(self, name: str, permit: dict[str, Any]) -> dict[str, Any]:
        """Put an operator's re-submission ``permit`` (``container``, ``name`` of the inbound blob, ...) on
        the entry, ETag-guarded; :class:`ResubmissionRefused` unless its state is :data:`RESUBMITTABLE`."""

        def change(current: dict[str, Any] | None) -> dict[str, Any]:
            if current is None:
                raise ResubmissionRefused(f"ledger entry {name} is gone")
            state = str(current.get("state"))
            if state not in RESUBMITTABLE:
                raise ResubmissionRefused(
                    f"the ledger entry for this content is {state} (job {current.get('job_id')})"
                )
            return {**current, "resubmission": permit, "updated": utc_now()}

        result: dict[str, Any] = self.store.update_json(self.container, name, change)
        return result

    def set_state(
        self, name: str, state: LedgerState, *, expect_job: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Move the entry to ``state`` (ETag-guarded read-modify-write), recording extra ``fields``.

        ``expect_job``: only if the entry still belongs to that job (generation); otherwise
        :class:`StaleGeneration` and nothing is written. The monitor finishing generation 1 must not
        overwrite generation 2 (a re-import) that took the entry over meanwhile."""

        def change(current: dict[str, Any] | None) -> dict[str, Any]:
            entry = dict(current or {})
            if expect_job is not None and str(entry.get("job_id")) != expect_job:
                raise StaleGeneration(
                    f"ledger entry {name} belongs to job {entry.get('job_id')}, not {expect_job}"
                )
            if entry.get("state") != str(state):
                history = list(entry.get("history", []))
                history.append(
                    {"at": utc_now(), "state": str(entry.get("state")), "job_id": entry.get("job_id")}
                )
                entry["history"] = history[-20:]
            entry.update({k: v for k, v in fields.items() if v is not None})
            entry["state"], entry["updated"] = str(state), utc_now()
            return entry

        result: dict[str, Any] = self.store.update_json(self.container, name, change)
        return result


class JobRecords:
    """``state/jobs/{job}.json``: what the monitor follows; every update is guarded by the blob's ETag."""

    def __init__(self, store: BlobStore, container: str) -> None:
        self.store = store
        self.container = container

    def create(self, job: str, record: dict[str, Any]) -> bool:
        return self.store.create_json(self.container, layout.job_name(job), record)

    def read(self, job: str) -> JsonBlob | None:
        return self.store.read_json(self.container, layout.job_name(job))

    def update(self, job: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        def guarded(current: dict[str, Any] | None) -> dict[str, Any]:
            if current is None:
                raise ResourceNotFoundError(f"job record {job} is gone")
            return change(dict(current))

        result: dict[str, Any] = self.store.update_json(self.container, layout.job_name(job), guarded)
        return result

    def delete(self, job: str) -> None:
        with suppress(ResourceNotFoundError):
            self.store.blob(self.container, layout.job_name(job)).delete_blob()

    def ids(self) -> Iterator[str]:
        """Ids of every job record, oldest name first is not guaranteed (blob listing order)."""
        container = self.store.container(self.container)
        for blob in container.list_blobs(name_starts_with=layout.JOBS_PREFIX):
            name = str(blob.name)
            if name.endswith(".json"):
                yield name[len(layout.JOBS_PREFIX) : -len(".json")]
