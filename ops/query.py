"""``python -m ops query``: rows of one OData entity set, streamed page by page to stdout or a file.

JSON output is JSON Lines (one object per line, as D365 returned it, ``@odata.etag`` included): it streams
in constant memory and each line parses on its own (``jq``, ``pandas.read_json(lines=True)``). CSV output
has a header row: the ``--select`` fields, else the first row's fields (annotations such as ``@odata.etag``
left out); a later row's extra fields are dropped and missing ones left empty. ``--output`` writes
``FILE.partial`` and renames it to ``FILE`` only once every row is written, so a failed run never leaves a
file that looks complete.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ops.common import load_settings, open_context
from shared.context import AppContext

FORMATS = ("json", "csv")


@dataclass(frozen=True)
class QueryRequest:
    entity_set: str
    filter: str | None = None
    select: tuple[str, ...] = ()
    top: int | None = None
    cross_company: bool = False
    format: str = "json"


def write_json_lines(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    count = 0
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        count += 1
    return count


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def write_csv(rows: Iterable[dict[str, Any]], out: TextIO, columns: Sequence[str] = ()) -> int:
    writer: csv.DictWriter[str] | None = None
    count = 0
    for row in rows:
        if writer is None:
            fields = list(columns) or [name for name in row if "@" not in name]
            writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", restval="")
            writer.writeheader()
        writer.writerow({name: _cell(value) for name, value in row.items()})
        count += 1
    if writer is None and columns:  # no rows: still a header when the columns are known
        csv.DictWriter(out, fieldnames=list(columns)).writeheader()
    return count


def stream_rows(context: AppContext, request: QueryRequest, out: TextIO) -> int:
    """Write the rows of ``request`` to ``out``; the number of rows written."""
    rows = context.odata.list(
        request.entity_set,
        filter=request.filter,
        select=list(request.select) or None,
        top=request.top,
        cross_company=request.cross_company or None,
    )
    if request.format == "csv":
        return write_csv(rows, out, request.select)
    return write_json_lines(rows, out)


def query(settings_path: str | None, request: QueryRequest, output: str | None, stdout: TextIO) -> int:
    """Run the query against the settings' D365; returns the exit status (errors propagate to the caller)."""
    context = open_context(load_settings(settings_path))
    try:
        if output is None:
            stream_rows(context, request, stdout)
            stdout.flush()
            return 0
        target = Path(output)
        partial = target.with_name(target.name + ".partial")
        try:
            with partial.open("w", encoding="utf-8", newline="") as out:
                stream_rows(context, request, out)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return 0
    finally:
        context.close()
