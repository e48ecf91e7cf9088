"""DMF data files in the standard source data formats: read them into rows, write them for exports.

Formats (the names configured in DMF, ref §7.3): ``CSV`` (UTF-8, BOM optional; Windows-1252 accepted),
``CSV-Unicode`` (UTF-16 LE with BOM and CRLF, strictly: third-party measured that D365 refuses anything else
with "Selected file is not Unicode" / "the mapping is incorrect for entity <x> and field {GUID}", ref §7.3),
``EXCEL`` (.xlsx), ``XML-Element`` (``<Document><RECORD><FIELD>v</FIELD>...``) and ``XML-Attribute``
(``<Document><RECORD FIELD="v"/>``). CSV is written with minimal quoting (D365's exact quoting UNCONFIRMED).
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from emulator.dmf import xlsx
from emulator.dmf.packages import PackageError, local, parse_xml

CSV, CSV_UNICODE, EXCEL, XML_ELEMENT, XML_ATTRIBUTE = (
    "CSV",
    "CSV-Unicode",
    "EXCEL",
    "XML-Element",
    "XML-Attribute",
)
FORMATS = (CSV, CSV_UNICODE, EXCEL, XML_ELEMENT, XML_ATTRIBUTE)
EXTENSIONS = {CSV: "csv", CSV_UNICODE: "csv", EXCEL: "xlsx", XML_ELEMENT: "xml", XML_ATTRIBUTE: "xml"}
_CR = {"\r": "&#13;"}  # XML parsers turn a literal CR LF into LF; the reference keeps it
_ATTR = {**_CR, "\n": "&#10;", "\t": "&#9;"}
CONTENT_TYPES = {
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "xml": "application/xml",
}


def canonical_format(name: str) -> str:
    for known in FORMATS:
        if known.lower() == name.strip().lower():
            return known
    raise PackageError(
        f"The source data format '{name}' does not exist. Known formats: {', '.join(FORMATS)}."
    )


def sniff_format(data: bytes) -> str:
    """A file's likely format when the caller names none (recurring "File" jobs)."""
    if data.startswith(b"PK"):
        return EXCEL
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return CSV_UNICODE
    head = data[:200].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return XML_ELEMENT
    return CSV


@dataclass
class SourceRows:
    """A data file as rows: column names as written, and (line number, {column: text}) per record."""

    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]


def read_data_file(data: bytes, source_format: str, *, entity_name: str, sheet: str = "") -> SourceRows:
    """Rows of one data file; PackageError (the whole file fails) when it does not fit its format."""
    fmt = canonical_format(source_format)
    if fmt == EXCEL:
        return _table(list(xlsx.read_sheet(data, sheet)), first_line=1)
    if fmt in (XML_ELEMENT, XML_ATTRIBUTE):
        return _read_xml(data, attributes=fmt == XML_ATTRIBUTE, entity_name=entity_name)
    text = _unicode_text(data, entity_name) if fmt == CSV_UNICODE else _csv_text(data)
    return _table(list(csv.reader(io.StringIO(text, newline=""))), first_line=1)


def _unicode_text(data: bytes, entity_name: str) -> str:
    if not data.startswith(b"\xff\xfe"):
        raise PackageError(
            f"Selected file is not Unicode. Entity {entity_name} uses the source data format CSV-Unicode, "
            "which needs a UTF-16 LE file with a byte order mark."
        )
    try:
        text = data[2:].decode("utf-16-le")
    except UnicodeDecodeError:
        raise PackageError(f"Selected file is not Unicode (entity {entity_name}).") from None
    if "\n" in text and "\r\n" not in text:
        raise PackageError(
            f"The mapping is incorrect for entity {entity_name} and field {{{str(uuid.uuid4()).upper()}}}. "
            "(Emulator hint: CSV-Unicode files need CRLF line endings.)"
        )
    return text


def _csv_text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _table(lines: list[list[str]], *, first_line: int) -> SourceRows:
    numbered = [
        (n, cells) for n, cells in enumerate(lines, start=first_line) if any(c.strip() for c in cells)
    ]
    if not numbered:
        return SourceRows([], [])
    (_, header), body = numbered[0], numbered[1:]
    columns = [c.strip() for c in header]
    rows = [
        (line, {columns[i]: cells[i] if i < len(cells) else "" for i in range(len(columns)) if columns[i]})
        for line, cells in body
    ]
    return SourceRows(columns, rows)


def _read_xml(data: bytes, *, attributes: bool, entity_name: str) -> SourceRows:
    root = parse_xml(data, f"The XML data file of entity {entity_name}")
    columns: list[str] = []
    rows: list[tuple[int, dict[str, str]]] = []
    for number, record in enumerate(root, start=1):
        if attributes:
            values = {local(k): v for k, v in record.attrib.items()}
        else:
            values = {local(f.tag): (f.text or "") for f in record}
        for name in values:
            if name not in columns:
                columns.append(name)
        rows.append((number, values))
    return SourceRows(columns, rows)


# --- writing ----------------------------------------------------------------------------------------------


def write_data_file(
    source_format: str,
    record_name: str,
    sheet_name: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
) -> bytes:
    fmt = canonical_format(source_format)
    if fmt == EXCEL:
        return xlsx.write_workbook(sheet_name, columns, rows)
    if fmt in (XML_ELEMENT, XML_ATTRIBUTE):
        tag = record_name.upper()
        parts = ['<?xml version="1.0" encoding="utf-8"?>\r\n<Document>']
        for values in rows:
            if fmt == XML_ATTRIBUTE:
                attrs = "".join(f" {c}={quoteattr(v, _ATTR)}" for c, v in zip(columns, values, strict=True))
                parts.append(f"<{tag}{attrs} />")
            else:
                fields = "".join(f"<{c}>{escape(v, _CR)}</{c}>" for c, v in zip(columns, values, strict=True))
                parts.append(f"<{tag}>{fields}</{tag}>")
        parts.append("</Document>")
        return "\r\n".join(parts).encode("utf-8")
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(rows)
    if fmt == CSV_UNICODE:
        return b"\xff\xfe" + buffer.getvalue().encode("utf-16-le")
    return buffer.getvalue().encode("utf-8-sig")
