"""Recurring integrations (``/api/connector/...``, ref §4): enqueue, dequeue, download, ack and jobstatus of
recurring data jobs ("activities"), with imports processed by the DMF engine (``emulator/dmf``) and export
packages built from the entity store on demand or when data changes.

- model.py: activities, the message journal, the export queue (visibility timeout, pop receipts);
  settings.py: the run-time knobs (pace, visibility timeout, enqueue size limit)
- worker.py: the background state machine (Enqueued -> Preprocessing -> Processing -> Processed...)
- processing.py: the adapter to the DMF engine; service.py: ``state.connector`` (``Connector``)
- routes.py: the HTTP API; admin.py: ``/_emulator/connector/...``; seed.py: the seeded jobs

The OData actions ``GetMessageStatus`` and ``GetExecutionIdByMessageId`` are registered by the DMF package
(with the other ``DataManagementDefinitionGroups`` actions); they read this journal through
``state.connector.message_status(message_id)`` and ``state.connector.execution_id_for_message(message_id)``.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

from emulator.connector import admin as _admin
from emulator.connector import routes as _routes
from emulator.connector.model import Activity, ConnectorModel, Direction, JobType, Message, MessageStatus
from emulator.connector.seed import CUSTOMER_GROUPS_FILE_IMPORT_ID, CUSTOMERS_EXPORT_ID, PACKAGE_IMPORT_ID
from emulator.connector.service import Connector

__all__ = [
    "CUSTOMERS_EXPORT_ID",
    "CUSTOMER_GROUPS_FILE_IMPORT_ID",
    "PACKAGE_IMPORT_ID",
    "Activity",
    "Connector",
    "ConnectorModel",
    "Direction",
    "JobType",
    "Message",
    "MessageStatus",
    "build_connector",
    "routes",
]


def build_connector(state: Any) -> Connector:
    """The family's model for ``state.connector``; blobs live in ``{data_dir}/connector``."""
    return Connector(state, blob_dir=state.data_dir / "connector")


def routes(state: Any) -> list[BaseRoute]:
    """The ``/api/connector`` API and its ``/_emulator/connector`` admin routes."""
    return [*_routes.routes(state), *_admin.routes(state)]
