"""The connector's processing engine: the emulator's DMF engine (``emulator.dmf``) reads the enqueued
packages and files into the entity store and builds the export packages. This module only adapts it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emulator.connector.model import Activity, JobType, Message, MessageStatus
from emulator.connector.worker import ImportOutcome, RunningImport


def new_execution_id(activity: Activity) -> str:
    """Like the job ids F&O shows: ``{data project}-{timestamp}-{GUID}``. Deliberately not the message id
    (RIS assumes they are equal, ref §4.5; ``GetExecutionIdByMessageId`` exists because they are not)."""
    import uuid

    stamp = datetime.now(UTC).strftime("%Y-%m-%d_%H-%M-%S")
    return f"{activity.data_project}-{stamp}-{str(uuid.uuid4()).upper()}"


class DmfEngine:
    def __init__(self, state: Any) -> None:
        self.state = state

    def start_import(self, activity: Activity, message: Message, execution_id: str) -> RunningImport:
        from emulator import dmf

        assert message.content_path is not None
        company = message.company or activity.legal_entity
        if activity.job_type is JobType.FILE:
            return dmf.import_file(
                self.state,
                message.content_path,
                entity_name=message.entity or activity.entity or "",
                legal_entity=company,
                execution_id=execution_id,
                source_format=activity.source_format,
                definition_group=activity.data_project,
                message_id=message.message_id,
                source="connector",
            )
        return dmf.import_package(
            self.state,
            message.content_path,
            definition_group=activity.data_project,
            legal_entity=company,
            execute=True,
            overwrite=True,
            execution_id=execution_id,
            source="connector",
            message_id=message.message_id,
        )

    def outcome(self, running: RunningImport) -> ImportOutcome:
        execution: Any = running
        try:
            status = MessageStatus(execution.message_status())
        except ValueError:
            status = MessageStatus.PREPROCESSING_ERROR
        if status not in (
            MessageStatus.PROCESSED,
            MessageStatus.PROCESSED_WITH_ERRORS,
            MessageStatus.PREPROCESSING_ERROR,
            MessageStatus.POSTPROCESSING_FAILED,
        ):
            status = MessageStatus.PREPROCESSING_ERROR
        return ImportOutcome(status, str(execution.log or ""), list(execution.execution_detail()))

    def build_export(self, activity: Activity, execution_id: str) -> Path:
        from emulator import dmf

        return dmf.build_export_package(
            self.state,
            definition_group=activity.data_project,
            legal_entity=activity.legal_entity,
            execution_id=execution_id,
            source="connector",
        )
