"""Inputs left in inbound to be tried again (``deferred``): counted, explained, and not retried forever.

Each deferral of a dropped blob version updates ``state/deferred/{inbound container}/{name}.status.json``
(ETag-guarded): a status record (outcome ``received``: nothing final yet) saying why the file is still in
inbound, with ``details.attempts``, ``details.first_deferred``, ``details.reason_code`` and
``details.last_attempt`` and ``details.drop_id`` (a new drop under the same name starts counting again).
When the input leaves inbound the record is deleted. The monitor's sweep tries a deferred file again only
``IMPORT_RETRY_AFTER_MINUTES`` after its last attempt (``tried_since``), not on every run. Escalation is by
time, not by runs: once the file has waited ``IMPORT_MAX_DEFERRAL_HOURS`` since its first deferral and was
tried at least ``IMPORT_MAX_DEFERRALS`` times (a floor, so a monitor that was itself down does not give up
on the first attempt after it), the intake moves the input to the errors location
(``deferred_too_often``), from where an operator re-submits it once the cause is fixed. A D365 outage or
servicing window, sustained throttling or a long import holding the lock shorter than that never sends a
waiting file to errors.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.pipelines.imports.ledger import InputRef
from shared.pipelines.imports.outcome import import_record
from shared.status import Outcome, status_name
from shared.storage import BlobStore

__all__ = ["Deferrals", "Waiting", "deferral_name"]

PREFIX = "deferred/"


def deferral_name(drop: InputRef) -> str:
    """The deferral record of the inbound blob ``drop`` is a version of."""
    return status_name(f"{PREFIX}{drop.container}/{drop.name}")


def _stamp(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse(stamp: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Waiting:
    """How long a drop has been deferred: ``attempts`` so far and the ``hours`` since the first one."""

    attempts: int
    hours: float


class Deferrals:
    def __init__(self, store: BlobStore, container: str) -> None:
        self.store = store
        self.container = container

    def count(
        self,
        drop: InputRef,
        message: str,
        reason_code: str | None,
        correlation: dict[str, str],
        now: datetime,
    ) -> Waiting:
        """Record one more deferral of ``drop`` (at ``now``); how long it has been waiting."""

        def change(current: dict[str, Any] | None) -> dict[str, Any]:
            details = dict((current or {}).get("details") or {})
            if details.get("drop_id") != drop.drop_id:
                details = {"drop_id": drop.drop_id, "first_deferred": _stamp(now), "attempts": 0}
            details.update(attempts=int(details.get("attempts", 0)) + 1, reason_code=reason_code,
                           last_attempt=_stamp(now))  # fmt: skip
            record = import_record(
                f"{drop.container}/{drop.name}",
                Outcome.RECEIVED,
                f"not sent yet, tried again later: {message}",
                correlation,
                **details,
            )
            return record.to_dict()

        updated: dict[str, Any] = self.store.update_json(self.container, deferral_name(drop), change)
        details = updated["details"]
        first = _parse(details.get("first_deferred")) or now
        return Waiting(int(details["attempts"]), max(0.0, (now - first).total_seconds() / 3600))

    def tried_since(self, drop: InputRef, cutoff: datetime) -> bool:
        """Whether ``drop`` (this very version) was last deferred after ``cutoff`` (the sweep waits)."""
        found = self.store.read_json(self.container, deferral_name(drop))
        details = (found.value.get("details") or {}) if found is not None else {}
        if details.get("drop_id") != drop.drop_id:
            return False
        last = _parse(details.get("last_attempt"))
        return last is not None and last > cutoff

    def clear(self, drop: InputRef) -> None:
        with suppress(ResourceNotFoundError):
            self.store.blob(self.container, deferral_name(drop)).delete_blob()
