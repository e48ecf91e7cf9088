"""``state.connector``: the recurring-integrations family of one emulator — its model, its worker, the
export triggers on data changes, and what the DMF actions ask of the message journal.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from emulator.connector.model import (
    EMPTY_GUID,
    Activity,
    ConnectorModel,
    Direction,
    Message,
    MessageStatus,
)
from emulator.connector.processing import DmfEngine, new_execution_id
from emulator.connector.seed import seeded_activities
from emulator.connector.worker import ConnectorWorker, Engine, export_change

log = logging.getLogger("emulator.connector")


class Connector:
    def __init__(self, state: Any, *, blob_dir: Path, engine: Engine | None = None) -> None:
        self.state = state
        company = str(state.config.default_company).lower()
        self.model = ConnectorModel(blob_dir, seed=lambda: seeded_activities(company))
        self.engine: Engine = engine or DmfEngine(state)
        self.worker = ConnectorWorker(self.model, self.engine, execution_ids=new_execution_id)
        self._unsubscribe: Any = None
        self._watched: frozenset[str] = frozenset()
        self._triggers: dict[str, frozenset[str]] = {}
        self.refresh_triggers()

    # --- lifecycle ----------------------------------------------------------------------------------

    def ensure_running(self) -> None:
        self.worker.start()

    def reset(self) -> None:
        """Admin reset: seeded activities only, empty journal and queue, default settings."""
        self.model.reset()
        self.refresh_triggers()

    def close(self) -> None:
        self.worker.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # --- activities --------------------------------------------------------------------------------

    def put_activity(self, activity: Activity) -> Activity:
        self.model.put_activity(activity)
        self.refresh_triggers()
        return activity

    def remove_activity(self, activity_id: str) -> bool:
        removed = self.model.remove_activity(activity_id)
        self.refresh_triggers()
        return removed

    def export_now(self, activity: Activity) -> Message:
        """Build and queue an export package of the activity now (blocking: call it from a thread)."""
        with self.model.lock:
            generation = self.model.generation
        message = export_change(self.model, self.engine, activity, new_execution_id(activity), generation)
        if message is None:
            raise RuntimeError("the emulator was reset while the export was being built")
        return message

    # --- export on data change ----------------------------------------------------------------------

    def entity_set_of(self, entity: str | None) -> str | None:
        """The OData entity set behind a DMF entity name ("Customers V3" -> CustomersV3)."""
        if not entity:
            return None
        wanted = entity.strip().lower()
        catalog = self.state.odata.catalog
        for set_name, info in getattr(catalog, "infos", {}).items():
            names = (set_name, info.label, info.aot_name, info.entity.name)
            if wanted in (n.lower() for n in names):
                return str(set_name)
        return None

    def trigger_sets(self, activity: Activity) -> frozenset[str]:
        """The entity sets whose changes queue an export of ``activity``: its ``entity``, else every
        entity of its data project."""
        if activity.direction is not Direction.EXPORT or not activity.export_on_change:
            return frozenset()
        names: list[str] = [activity.entity] if activity.entity else []
        if not names:
            try:
                from emulator.dmf.definitions import load_group

                group = load_group(self.state.odata, activity.data_project)
            except Exception:  # no DMF sets (yet): nothing to watch
                group = None
            names = [e.entity_name for e in group.entities] if group is not None else []
        return frozenset(s for n in names if (s := self.entity_set_of(n)) is not None)

    def refresh_triggers(self) -> None:
        """Listen to changes of exactly the sets that change-triggered exports watch (others cost nothing)."""
        with self.model.lock:
            self._triggers = {
                a.activity_id: sets for a in self.model.activities.values() if (sets := self.trigger_sets(a))
            }
            watched = frozenset().union(*self._triggers.values())
            if watched == self._watched:
                return
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            self._watched = watched
            if watched:
                self._unsubscribe = self.state.odata.on_change(self._on_change, entity_sets=watched)
                self.ensure_running()

    def _on_change(self, entity_set: str, operation: str, before: Any, after: Any) -> None:
        row = after or before or {}
        company = str(row.get("dataAreaId") or "").lower()
        model = self.model
        with model.lock:
            now = model.clock()
            for activity_id, sets in self._triggers.items():
                activity = model.activities.get(activity_id)
                if activity is None or entity_set not in sets:
                    continue
                if company and company != activity.legal_entity.lower():
                    continue
                # changes arriving before the export runs join it (no export per row)
                model.export_due.setdefault(activity_id, now + model.settings.export_delay_seconds)
            model.changed.notify_all()

    # --- what the DMF's GetMessageStatus / GetExecutionIdByMessageId ask (see emulator/dmf) -----------

    def message_status(self, message_id: str) -> str | None:
        message = self.model.message(message_id)
        return None if message is None else message.status.value

    def execution_id_for_message(self, message_id: str) -> str | None:
        """The DMF execution of an import; the empty GUID while it has not been picked up (ref §3.2)."""
        message = self.model.message(message_id)
        if message is None:
            return None
        if message.execution_id is None or message.status in (
            MessageStatus.ENQUEUED,
            MessageStatus.PREPROCESSING,
        ):
            return EMPTY_GUID
        return message.execution_id
