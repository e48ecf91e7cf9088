"""``resubmit_import``: put a failed import's input back through the normal intake, once.

A failed, partially succeeded or rejected import sits in the errors container as
``{route}/{yyyy}/{mm}/{dd}/{job}/{file}`` beside ``{file}.status.json``. Re-submitting copies it (the old
input and record stay where they are: history) back to the inbound blob it was dropped as, where the blob
trigger, the monitor's sweep or ``import_blob`` pick it up like any drop. Steps, each safe to repeat:

1. **Marker** ``state/resubmissions/{id}.json`` (``id`` from the errors path), created with If-None-Match:
   a marker that says ``placed`` means this failure was re-submitted already, so a second run does nothing.
2. **Permit**: when the content has a ledger entry (it was sent, or refused by D365), the ledger would call
   the re-drop a duplicate; ``Ledger.permit_resubmission`` puts a permit naming the inbound blob on the
   entry (only from ``failed``/``uncertain``/``not_sent``), and the drop that uses it becomes the next
   generation, with a new job and DMF execution id (``ledger.decide``).
3. **Copy** errors → inbound, create-only, with metadata ``resubmission`` (this marker's id) and
   ``resubmission_attempt``; the copy keeps them when the input moves on, so attempts count across failures.
4. **Annotate** the old status record (``details.resubmitted``) and mark the marker ``placed``.

A crash between the steps is finished by the next run: a permit already used by the re-submitted drop
(``resubmission_of`` on the entry) or a copy already in inbound count as done.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.context import AppContext
from shared.pipelines.imports import layout
from shared.pipelines.imports.ledger import Ledger, ResubmissionRefused
from shared.pipelines.imports.routing import RoutingError, resolve
from shared.pipelines.imports.settings import ImportSettings
from shared.status import STATUS_SUFFIX, Outcome, status_name, utc_now

__all__ = [
    "RESUBMITTABLE_OUTCOMES",
    "Failure",
    "ResubmitError",
    "ResubmitReport",
    "find_failures",
    "list_failures",
    "resubmit_import",
]

RESUBMITTABLE_OUTCOMES = (Outcome.FAILED, Outcome.PARTIALLY_SUCCEEDED, Outcome.REJECTED)
MARKERS_PREFIX = "resubmissions/"


class ResubmitError(Exception):
    """The failure cannot be re-submitted (not found, not a failure, its content is in flight...)."""


@dataclass(frozen=True)
class Failure:
    """One failed import in the errors container."""

    path: str  # "{errors container}/{route}/.../{file}": the stored input
    route: str
    file_name: str
    outcome: str
    reason_code: str
    message: str
    updated: str
    original: str  # the inbound blob it was dropped as ("{container}/{name}")
    resubmitted: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class ResubmitReport:
    """``resubmitted`` (placed now) or ``already_resubmitted`` (an earlier run placed it)."""

    outcome: str
    source: str  # the failed input in the errors container
    inbound: str  # "{container}/{name}" it was put back as
    attempt: int
    message: str
    ledger: dict[str, Any] = field(default_factory=dict)  # entry name, state, job id when there is one

    @property
    def inbound_name(self) -> str:
        return self.inbound.split("/", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _marker_name(source: str) -> str:
    return f"{MARKERS_PREFIX}{hashlib.sha256(source.encode('utf-8')).hexdigest()[:32]}.json"


def _normalise(settings: ImportSettings, path: str) -> str:
    """The blob name inside the errors container for a path given with or without the container or the
    status-record suffix."""
    name = path.strip().lstrip("/").removesuffix(STATUS_SUFFIX)
    container_prefix = f"{settings.errors_container}/"
    return name[len(container_prefix) :] if name.startswith(container_prefix) else name


def _failure(settings: ImportSettings, name: str, record: dict[str, Any]) -> Failure:
    details = record.get("details") or {}
    correlation = record.get("correlation") or {}
    file_name = name.rsplit("/", 1)[-1]
    return Failure(
        path=f"{settings.errors_container}/{name}",
        route=str(correlation.get("route") or name.split("/", 1)[0]),
        file_name=file_name,
        outcome=str(record.get("outcome")),
        reason_code=str(details.get("reason_code") or ""),
        message=str(record.get("message") or ""),
        updated=str(record.get("updated") or ""),
        original=str(record.get("subject") or ""),
        resubmitted=details.get("resubmitted") if isinstance(details.get("resubmitted"), dict) else None,
    )


def list_failures(
    context: AppContext, *, route: str | None = None, settings: ImportSettings | None = None
) -> Iterator[Failure]:
    """Every re-submittable failure in the errors container (of ``route`` only, when given), by name."""
    settings = settings or context.settings.section(ImportSettings)
    container = context.store.container(settings.errors_container)
    for blob in container.list_blobs(name_starts_with=f"{route}/" if route else None):
        name = str(blob.name)
        if not name.endswith(STATUS_SUFFIX):
            continue
        found = context.store.read_json(settings.errors_container, name)
        if found is None or not isinstance(found.value, dict):
            continue
        if found.value.get("kind") == "import" and found.value.get("outcome") in RESUBMITTABLE_OUTCOMES:
            yield _failure(settings, name.removesuffix(STATUS_SUFFIX), found.value)


def find_failures(
    context: AppContext, route: str, file_name: str, *, settings: ImportSettings | None = None
) -> list[Failure]:
    """The failures of ``file_name`` (the last path segment) in ``route``'s errors folder, oldest first."""
    return [f for f in list_failures(context, route=route, settings=settings) if f.file_name == file_name]


class _Resubmission:
    def __init__(self, context: AppContext, settings: ImportSettings, name: str) -> None:
        self.context, self.settings, self.name = context, settings, name
        self.store = context.store
        self.source = f"{settings.errors_container}/{name}"
        self.marker = _marker_name(self.source)
        self.ledger = Ledger(self.store, settings.state_container)

    def record(self) -> dict[str, Any]:
        found = self.store.read_json(self.settings.errors_container, status_name(self.name))
        if found is None or not isinstance(found.value, dict):
            raise ResubmitError(
                f"no failed import at {self.source}: no status record beside it (--list shows them)"
            )
        record: dict[str, Any] = found.value
        if record.get("kind") != "import" or record.get("outcome") not in RESUBMITTABLE_OUTCOMES:
            raise ResubmitError(
                f"{self.source} is a {record.get('kind')} record with outcome {record.get('outcome')!r}; "
                f"only {', '.join(RESUBMITTABLE_OUTCOMES)} imports are re-submitted"
            )
        return record

    def inbound_name(self, record: dict[str, Any]) -> str:
        """The name the input was dropped as (from the record's subject), checked against today's routes."""
        subject = str(record.get("subject") or "")
        _, _, name = subject.partition("/")
        if not name:
            raise ResubmitError(f"the status record of {self.source} does not say where the file came from")
        try:
            resolve(self.settings.routes, name)
        except RoutingError as exc:
            raise ResubmitError(f"not re-submitted, it would be rejected again: {exc.message}") from None
        return name

    def ledger_entry(self, record: dict[str, Any]) -> str | None:
        """The ledger entry's name for this content and target, when the record identifies both."""
        correlation = record.get("correlation") or {}
        sha256, route_name = correlation.get("sha256"), correlation.get("route")
        if not sha256 or not route_name:
            return None  # rejected before its content was hashed: no entry
        try:
            route = self.settings.route(str(route_name))
        except KeyError:
            return None  # the route was renamed: the re-drop is routed (and keyed) afresh
        target = route.target_key(str(correlation.get("legal_entity") or route.legal_entity))
        return layout.ledger_name(target, str(sha256))

    def run(self) -> ResubmitReport:
        record = self.record()
        blob = self.store.blob(self.settings.errors_container, self.name)
        try:
            metadata = dict(blob.get_blob_properties().metadata or {})
        except ResourceNotFoundError:
            raise ResubmitError(
                f"the input {self.source} is missing (only its status record is there): nothing to re-submit"
            ) from None
        name = self.inbound_name(record)
        inbound = f"{self.settings.inbound_container}/{name}"
        fresh = {"source": self.source, "inbound": inbound, "phase": "requested", "requested": utc_now(),
                 "attempt": int(metadata.get("resubmission_attempt", "0") or 0) + 1}  # fmt: skip
        if not self.store.create_json(self.settings.state_container, self.marker, fresh):
            current = self.store.read_json(self.settings.state_container, self.marker)
            if current is not None and current.value.get("phase") == "placed":
                return self.report("already_resubmitted", current.value, record, None)
            fresh = dict(current.value) if current is not None else fresh  # an interrupted run: finish it
        entry_name = self.ledger_entry(record)
        entry = self.permit(entry_name, fresh) if entry_name else None
        used = entry is not None and (entry.get("resubmission_of") or {}).get("source") == self.source
        if not used:
            self.place(blob, name, fresh, metadata)
        self.annotate(fresh)

        def placed(current: dict[str, Any] | None) -> dict[str, Any]:
            return {**(current or fresh), "phase": "placed", "placed": utc_now()}

        done = self.store.update_json(self.settings.state_container, self.marker, placed)
        return self.report("resubmitted", done, record, entry_name)

    def permit(self, entry_name: str, marker: dict[str, Any]) -> dict[str, Any] | None:
        found = self.ledger.read(entry_name)
        if found is None:
            return None  # never claimed (or reset by an operator): the re-drop creates it
        entry: dict[str, Any] = found.value
        if (entry.get("resubmission_of") or {}).get("source") == self.source:
            return entry  # this re-submission's drop has taken the entry over already
        permit = entry.get("resubmission")
        if isinstance(permit, dict) and permit.get("source") == self.source:
            return entry
        _, _, inbound_name = str(marker["inbound"]).partition("/")
        try:
            return self.ledger.permit_resubmission(
                entry_name,
                {"container": self.settings.inbound_container, "name": inbound_name, "source": self.source,
                 "attempt": marker["attempt"], "requested": marker["requested"]},
            )  # fmt: skip
        except ResubmissionRefused as exc:
            state = str(entry.get("state"))
            why = {
                "sending": "it is being sent to D365 right now",
                "sent": "D365 is importing it right now",
                "succeeded": f"it was imported successfully since (stored as {entry.get('stored_as')})",
            }.get(state, str(exc))
            raise ResubmitError(
                f"not re-submitted: the same content went to the same target again as job "
                f"{entry.get('job_id')} and {why}"
            ) from None

    def place(self, blob: Any, name: str, marker: dict[str, Any], metadata: dict[str, str]) -> None:
        """Copy the input back to inbound (create-only); a copy from an earlier attempt counts as done."""
        tag = self.marker.removeprefix(MARKERS_PREFIX).removesuffix(".json")
        stamped = {**metadata, "resubmission": tag, "resubmission_attempt": str(marker["attempt"])}
        if self.store.copy_stream(blob, self.settings.inbound_container, name, metadata=stamped):
            return
        existing = self.store.blob(self.settings.inbound_container, name)
        try:
            there = existing.get_blob_properties().metadata or {}
        except ResourceNotFoundError:  # taken by an intake in between: copy again
            if self.store.copy_stream(blob, self.settings.inbound_container, name, metadata=stamped):
                return
            there = {}
        if there.get("resubmission") != tag:
            raise ResubmitError(
                f"{self.settings.inbound_container}/{name} already holds another file waiting to be "
                "imported; re-submit again once it has been handled"
            )

    def annotate(self, marker: dict[str, Any]) -> None:
        note = {"at": marker["requested"], "to": marker["inbound"], "attempt": marker["attempt"]}

        def change(current: dict[str, Any] | None) -> dict[str, Any]:
            if current is None:
                raise ResubmitError(f"the status record of {self.source} vanished")
            details = dict(current.get("details") or {})
            details["resubmitted"] = note
            return {**current, "details": details}

        self.store.update_json(self.settings.errors_container, status_name(self.name), change)

    def report(
        self, outcome: str, marker: dict[str, Any], record: dict[str, Any], entry_name: str | None
    ) -> ResubmitReport:
        ledger: dict[str, Any] = {}
        entry_name = entry_name or self.ledger_entry(record)
        if entry_name:
            found = self.ledger.read(entry_name)
            if found is not None:
                ledger = {"entry": entry_name, "state": found.value.get("state"),
                          "job_id": found.value.get("job_id"),
                          "resubmissions": found.value.get("resubmissions", 0)}  # fmt: skip
        if outcome == "already_resubmitted":
            message = (f"already re-submitted at {marker.get('placed') or marker.get('requested')} "
                       f"(attempt {marker.get('attempt')}); nothing done")  # fmt: skip
        else:
            message = (
                f"put back as {marker['inbound']}; the normal intake imports it (attempt {marker['attempt']})"
            )
        return ResubmitReport(
            outcome, self.source, str(marker["inbound"]), int(marker["attempt"]), message, ledger
        )


def resubmit_import(
    context: AppContext, path: str, *, settings: ImportSettings | None = None
) -> ResubmitReport:
    """Re-submit the failed import stored at ``path`` (the input or its status record, with or without the
    errors container); safe to run twice. Raises :class:`ResubmitError` with a one-line reason."""
    settings = settings or context.settings.section(ImportSettings)
    name = _normalise(settings, path)
    if not name or name.endswith("/"):
        raise ResubmitError(f"{path!r} is not the path of a failed import (--list shows them)")
    return _Resubmission(context, settings, name).run()
