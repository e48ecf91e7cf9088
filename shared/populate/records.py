"""Records from a small file: CSV (header row, or configured columns, optionally mapped), a JSON array of
objects, or NDJSON (one object a line).

The input is read as a stream (``read_records`` takes bytes or a binary stream, e.g. a blob downloaded in
ranges) and decoded incrementally: CSV row by row, NDJSON line by line (``\n`` only: U+2028 and the like
are text inside a value), a JSON array element by element; reading stops at the route's record limit + 1,
so an oversized file is refused after reading just past the limit. JSON numbers are read as exact
``Decimal`` values (``plain`` turns them back into JSON-ready floats for values sent as read).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any, Protocol

__all__ = [
    "InputError",
    "RecordFormat",
    "RecordLimitExceeded",
    "SourceRecord",
    "format_for",
    "parse_json",
    "plain",
    "read_records",
    "records_from_json",
]

FORMATS = ("auto", "csv", "json", "ndjson")
_BY_EXTENSION = {".csv": "csv", ".txt": "csv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson"}
_READ_CHARS = 64 * 1024
_DECODER = json.JSONDecoder(parse_float=Decimal)


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


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


def parse_json(text: str) -> Any:
    """``json.loads`` with exact decimals (``1.005`` stays 1.005, not the nearest binary fraction)."""
    return json.loads(text, parse_float=Decimal)


def plain(value: Any) -> Any:
    """``value`` with every ``Decimal`` as the float a plain JSON reader would have made (JSON-ready)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def format_for(file_name: str, configured: str = "auto") -> str:
    if configured != "auto":
        return configured
    lowered = file_name.lower()
    for extension, kind in _BY_EXTENSION.items():
        if lowered.endswith(extension):
            return kind
    raise InputError(f"{file_name!r}: records are read from .csv, .txt, .json, .ndjson or .jsonl files")


class _Bytes(io.RawIOBase):
    """A readable raw stream over anything with ``read(size)``, for ``io.BufferedReader``."""

    def __init__(self, source: Readable) -> None:
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _text(source: bytes | Readable, encoding: str | None, newline: str) -> IO[str]:
    binary = io.BufferedReader(_Bytes(io.BytesIO(source) if isinstance(source, bytes) else source))
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise InputError(f"the file is not {encoding} text: {exc}") from None
    else:
        start = binary.peek(2)[:2]
        encoding = "utf-16" if start in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"
    return io.TextIOWrapper(binary, encoding=encoding, newline=newline)


def read_records(
    source: bytes | Readable, file_name: str, fmt: RecordFormat, *, limit: int
) -> list[SourceRecord]:
    """Every record of the input; raises InputError (unreadable) or RecordLimitExceeded (over ``limit``).
    A stream is read up to the end of its records (or just past the limit)."""
    kind = format_for(file_name, fmt.input_format)
    text = _text(source, fmt.encoding, "" if kind == "csv" else "\n")
    try:
        if kind == "csv":
            return _bounded(_csv_records(text, fmt), limit)
        if kind == "ndjson":
            return _bounded(_ndjson_records(text, fmt), limit)
        return _json_records(text, fmt, limit)
    except UnicodeDecodeError as exc:
        raise InputError(f"the file is not {fmt.encoding or 'UTF-8'} text: {exc}") from None


def _json_records(text: IO[str], fmt: RecordFormat, limit: int) -> list[SourceRecord]:
    """A JSON array read element by element; any other JSON document is read whole (the file is small)."""
    reader = _JsonArrayReader(text)
    if not reader.starts_array():
        try:
            parsed = parse_json(reader.rest())
        except ValueError as exc:
            raise InputError(f"the file is not valid JSON: {exc}") from None
        return records_from_json(parsed, fmt.field_map, limit=limit)

    def objects() -> Iterator[SourceRecord]:
        for number, item in enumerate(reader.elements(), start=1):
            yield SourceRecord(number, _object(item, f"record {number}", fmt.field_map), from_text=False)

    return _bounded(objects(), limit)


class _JsonArrayReader:
    def __init__(self, text: IO[str]) -> None:
        self.text, self.buffer, self.pos, self.eof = text, "", 0, False

    def _fill(self, at_least: int = _READ_CHARS) -> None:
        chunk = self.text.read(max(at_least, _READ_CHARS))
        self.eof = not chunk
        self.buffer, self.pos = self.buffer[self.pos :] + chunk, 0

    def _skip_space(self) -> str:
        """The next character that is not white space ('' at the end of the input)."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer) or self.eof:
                return self.buffer[self.pos : self.pos + 1]
            self._fill()

    def starts_array(self) -> bool:
        if self._skip_space() == "[":
            self.pos += 1
            return True
        return False

    def rest(self) -> str:
        return self.buffer[self.pos :] + self.text.read()

    def _value(self) -> Any:
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                if self.eof:
                    raise InputError(f"the file is not valid JSON: {exc}") from None
                self._fill(2 * (len(self.buffer) - self.pos))  # a longer element: read more at once
                continue
            if end == len(self.buffer) and not self.eof:  # a number may go on in the next chunk
                self._fill(2 * (len(self.buffer) - self.pos))
                continue
            self.pos = end
            return value

    def elements(self) -> Iterator[Any]:
        if self._skip_space() == "]":
            self.pos += 1
        else:
            while True:
                yield self._value()
                after = self._skip_space()
                self.pos += 1
                if after == "]":
                    break
                if after != ",":
                    raise InputError(
                        f"the file is not valid JSON: expected ',' or ']' after element, found {after!r}"
                    )
                self._skip_space()
        if self._skip_space():
            raise InputError("the file is not valid JSON: extra data after the array")


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


def _csv_records(text: IO[str], fmt: RecordFormat) -> Iterator[SourceRecord]:
    reader = csv.reader(text, delimiter=fmt.delimiter)
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
        if len(row) != len(header):
            raise InputError(
                f"line {reader.line_num}: {len(row)} cells, but the header has {len(header)} columns"
            )
        values = {name: cell for name, cell in zip(names, row, strict=False) if name}
        yield SourceRecord(number, values, from_text=True, line=reader.line_num)


def _ndjson_records(text: IO[str], fmt: RecordFormat) -> Iterator[SourceRecord]:
    number = 0
    for line_number, line in enumerate(text, start=1):  # newline="\n": split on LF only
        if not line.strip():
            continue
        number += 1
        try:
            item = parse_json(line)
        except ValueError as exc:
            raise InputError(f"line {line_number} is not valid JSON: {exc}") from None
        yield SourceRecord(number, _object(item, f"line {line_number}", fmt.field_map), False, line_number)
