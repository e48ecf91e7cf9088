"""Staging -> target: write staged rows through the entity's own OData write path (insert or update by key).

Every row goes through ``ODataService.handle`` as a POST (new key) or PATCH (existing key), so the same
validateWrite rules (mandatory fields, foreign keys, lengths, company) and whatever hooks the write path
grows apply to DMF imports too. Rows are written in chunks inside one store transaction each: a failed row
rolls back only its own savepoint, like a DMF set-based insert falling back to row-by-row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emulator.dmf.definitions import DmfEntity
from emulator.dmf.staging import StagedRow
from emulator.odata.messages import ODataRequest
from emulator.odata.serialize import key_segment
from emulator.odata.service import ODataService
from emulator.odata.store import ODataStore

CHUNK_ROWS = 500
_FIELD = re.compile(r"(?:[Ff]ield|property|key field) '([A-Za-z0-9_]+)'")


@dataclass
class RowOutcome:
    row: StagedRow
    action: str  # "created", "updated" or "failed"
    problems: list[tuple[str, str]]  # (field, message) when failed


class TargetWriter:
    """Writes rows of one entity in one company through the OData service."""

    def __init__(self, store: ODataStore, service: ODataService, base_url: str) -> None:
        self.store = store
        self.service = service
        self.base_url = base_url

    def write(
        self, entity: DmfEntity, rows: list[StagedRow], company: str, stop: Callable[[], bool] = lambda: False
    ) -> list[RowOutcome]:
        """Outcomes of the rows written; ``stop()`` (a cancellation) ends the work before the next row."""
        outcomes: list[RowOutcome] = []
        for start in range(0, len(rows), CHUNK_ROWS):
            with self.store.transaction():
                for row in rows[start : start + CHUNK_ROWS]:
                    if stop():
                        return outcomes
                    outcomes.append(self._write_one(entity, row, company))
        return outcomes

    def _write_one(self, entity: DmfEntity, row: StagedRow, company: str) -> RowOutcome:
        etype = entity.entity
        values = dict(row.values)
        exists = False
        if all(values.get(k) not in (None, "") for k in etype.keys):
            key = {k: values[k] for k in etype.keys}
            exists = self.store.fetch(self.store.connection(), etype, key) is not None
        if exists:
            path = key_segment(etype, values)
            method = "PATCH"
        else:
            path, method = etype.set_name, "POST"
        request = ODataRequest(
            method=method,
            path=path,
            query=[],
            headers={"content-type": "application/json", "prefer": "return=minimal"},
            body=json.dumps(values).encode("utf-8"),
            base_url=self.base_url,
            company=company,
        )
        response = self.service.handle(request)
        if response.status < 300:
            return RowOutcome(row, "updated" if exists else "created", [])
        return RowOutcome(row, "failed", split_problems(_inner_message(response.body)))


def _inner_message(body: bytes) -> str:
    try:
        error: Any = json.loads(body).get("error", {})
        inner = error.get("innererror") or {}
        return str(inner.get("message") or error.get("message") or "The record could not be written.")
    except (ValueError, AttributeError):
        return body.decode("utf-8", errors="replace") or "The record could not be written."


def split_problems(message: str) -> list[tuple[str, str]]:
    """One (field, text) per Infolog line of a failed write; the field is '' when none is named."""
    head, marker, infolog = message.partition("Infolog: ")
    parts = [p.strip() for p in infolog.split("Warning: ") if p.strip()] if marker else [message.strip()]
    problems: list[tuple[str, str]] = []
    for part in parts:
        match = _FIELD.search(part)
        text = f"{part}\n{head.strip()}" if marker else part
        problems.append((match.group(1) if match else "", text))
    return problems


def error_message(entity: DmfEntity, row: StagedRow, text: str) -> str:
    """The ErrorMessage of GetExecutionErrors: the Infolog text, then the record and its source line.

    Real messages contain quotes and line breaks (ref §3.2); these do too, so clients meet both.
    """
    keys = ", ".join(f'{k}="{row.values.get(k, "")}"' for k in entity.entity.keys if k != "dataAreaId")
    return f"{text}\nRecord: {entity.aot_name} {keys} (source line {row.line})"
