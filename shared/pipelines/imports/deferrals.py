"""Inputs left in inbound to be tried again (``deferred``): counted, explained, and not retried forever.

Each deferral of a dropped blob version updates ``state/deferred/{inbound container}/{name}.status.json``
(ETag-guarded): a status record (outcome ``received``: nothing final yet) saying why the file is still in
inbound, with ``details.attempts``, ``details.first_deferred``, ``details.reason_code`` and
``details.drop_id`` (a new drop under the same name starts counting again). When the input leaves inbound
the record is deleted. After ``IMPORT_MAX_DEFERRALS`` attempts the intake moves the input to the errors
location instead (``deferred_too_often``), from where an operator re-submits it once the cause is fixed.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.pipelines.imports.ledger import InputRef
from shared.pipelines.imports.outcome import import_record
from shared.status import Outcome, status_name, utc_now
from shared.storage import BlobStore

__all__ = ["Deferrals", "deferral_name"]

PREFIX = "deferred/"


def deferral_name(drop: InputRef) -> str:
    """The deferral record of the inbound blob ``drop`` is a version of."""
    return status_name(f"{PREFIX}{drop.container}/{drop.name}")


class Deferrals:
    def __init__(self, store: BlobStore, container: str) -> None:
        self.store = store
        self.container = container

    def count(
        self, drop: InputRef, message: str, reason_code: str | None, correlation: dict[str, str]
    ) -> int:
        """Record one more deferral of ``drop``; how many there were (this one included)."""

        def change(current: dict[str, Any] | None) -> dict[str, Any]:
            details = dict((current or {}).get("details") or {})
            if details.get("drop_id") != drop.drop_id:
                details = {"drop_id": drop.drop_id, "first_deferred": utc_now(), "attempts": 0}
            details.update(attempts=int(details.get("attempts", 0)) + 1, reason_code=reason_code)
            record = import_record(
                f"{drop.container}/{drop.name}",
                Outcome.RECEIVED,
                f"not sent yet, tried again later: {message}",
                correlation,
                **details,
            )
            return record.to_dict()

        updated: dict[str, Any] = self.store.update_json(self.container, deferral_name(drop), change)
        return int(updated["details"]["attempts"])

    def clear(self, drop: InputRef) -> None:
        with suppress(ResourceNotFoundError):
            self.store.blob(self.container, deferral_name(drop)).delete_blob()
