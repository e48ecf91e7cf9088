"""Records from a small file: CSV (header row, or configured columns, optionally mapped), a JSON array of
objects, or NDJSON (one object a line). The whole point of this path is small inputs, so the text is decoded
in memory, but counting stops at the route's record limit + 1 so an oversized file is refused early.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "InputError",
    "RecordFormat",
    "RecordLimitExceeded",
    "SourceRecord",
    "format_for",
    "read_records",
    "records_from_json",
]

FORMATS = ("auto", "csv", "json", "ndjson")
_BY_EXTENSION = {".csv": "csv", ".txt": "csv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson"}


class InputError(ValueError):
    """The input cannot be read as records; the message says where and why."""


class RecordLimitExceeded(InputError):
    """More records than the route or request allows."""


@dataclass(frozen=True)
class SourceRecord:
    number: int  # 1-based position in the input
    values: dict[str, Any]  # field name -> value (text for CSV)
    from_text: bool  # True for CSV cells (empty cells mean "leave out" for non-text fields)
    line: int | None = None  # CSV line of the record


@dataclass(frozen=True)
class RecordFormat:
    """How a route reads its files."""

    input_format: str = "auto"  # auto = by extension
    field_map: Mapping[str, str] | None = None  # file column/key -> entity field; other columns ignored
    columns: Sequence[str] | None = None  # CSV without a header row: these field names, in order
    delimiter: str = ","
    encoding: str | None = None  # None = UTF-8 (BOM tolerated) or UTF-16 with a BOM


def format_for(file_name: str, configured: str = "auto") -> str:
    if configured != "auto":
        return configured
    lowered = file_name.lower()
    for extension, kind in _BY_EXTENSION.items():
        if lowered.endswith(extension):
            return kind
    raise InputError(f"{file_name!r}: records are read from .csv, .txt, .json, .ndjson or .jsonl files")


def _decode(data: bytes, encoding: str | None) -> str:
    try:
        if encoding:
            return data.decode(encoding)
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except (UnicodeDecodeError, LookupError) as exc:
        raise InputError(f"the file is not {encoding or 'UTF-8'} text: {exc}") from None


def read_records(data: bytes, file_name: str, fmt: RecordFormat, *, limit: int) -> list[SourceRecord]:
    """Every record of the input; raises InputError (unreadable) or RecordLimitExceeded (over ``limit``)."""
    kind = format_for(file_name, fmt.input_format)
    text = _decode(data, fmt.encoding)
    if kind == "csv":
        return _bounded(_csv_records(text, fmt), limit)
    if kind == "ndjson":
        return _bounded(_ndjson_records(text, fmt), limit)
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise InputError(f"the file is not valid JSON: {exc}") from None
    return records_from_json(parsed, fmt.field_map, limit=limit)


def records_from_json(
    parsed: Any, field_map: Mapping[str, str] | None = None, *, limit: int
) -> list[SourceRecord]:
    """Records from a decoded JSON array of objects (or ``{"records": [...]}``)."""
    if isinstance(parsed, dict) and isinstance(parsed.get("records"), list):
        parsed = parsed["records"]
    if not isinstance(parsed, list):
        raise InputError('expected a JSON array of objects (or {"records": [...]})')

    def objects() -> Iterator[SourceRecord]:
        for number, item in enumerate(parsed, start=1):
            yield SourceRecord(number, _object(item, f"record {number}", field_map), from_text=False)

    return _bounded(objects(), limit)


def _object(item: Any, where: str, field_map: Mapping[str, str] | None) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InputError(f"{where} is not a JSON object")
    if field_map is None:
        return dict(item)
    return {field_map[k]: v for k, v in item.items() if k in field_map}


def _bounded(records: Iterator[SourceRecord], limit: int) -> list[SourceRecord]:
    out: list[SourceRecord] = []
    for record in records:
        if len(out) >= limit:
            raise RecordLimitExceeded(f"more than {limit} records")
        out.append(record)
    return out


def _csv_records(text: str, fmt: RecordFormat) -> Iterator[SourceRecord]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=fmt.delimiter)
    if fmt.columns is not None:
        header = list(fmt.columns)
    else:
        first = next(reader, None)
        if first is None:
            return
        header = [name.strip() for name in first]
        if not any(header):
            raise InputError("the CSV header row (line 1) is empty")
    if fmt.field_map is not None:
        missing = sorted(set(fmt.field_map) - set(header))
        if missing:
            raise InputError(
                f"the CSV header has no column(s) {', '.join(map(repr, missing))} of the field map"
            )
        names: list[str | None] = [fmt.field_map.get(column) for column in header]
    else:
        names = [column or None for column in header]
        duplicates = sorted({n for n in names if n and names.count(n) > 1})
        if duplicates:
            raise InputError(f"the CSV header names column(s) {', '.join(map(repr, duplicates))} twice")
    number = 0
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue  # blank line
        number += 1
        if len(row) > len(header):
            raise InputError(
                f"line {reader.line_num}: {len(row)} cells, but the header has {len(header)} columns"
            )
        values = {name: cell for name, cell in zip(names, row, strict=False) if name}
        yield SourceRecord(number, values, from_text=True, line=reader.line_num)


def _ndjson_records(text: str, fmt: RecordFormat) -> Iterator[SourceRecord]:
    number = 0
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        number += 1
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise InputError(f"line {line_number} is not valid JSON: {exc}") from None
        yield SourceRecord(number, _object(item, f"line {line_number}", fmt.field_map), False, line_number)
