"""Streaming facts about one data file: size, SHA-256, and its row count, without holding it in memory.

Rows are counted by what the file is (``row_kind``):

- delimited text (CSV, TXT, TSV; D365's ``CSV-Unicode`` is UTF-16 LE with a BOM): lines are counted
  in the file's own encoding (a UTF-16 newline is the aligned code unit 0x000A, not any 0x0A byte), a last
  line without a newline counts, and ``rows`` is the lines minus the header line D365 writes first;
- XML (``XML-Element``/``XML-Attribute``): the elements directly under the root (one per record), read
  with expat event callbacks (no tree kept); a DOCTYPE or entity declaration stops counting (no
  entity expansion is ever attempted on data from outside);
- anything else (Excel, nested zips): size and hash only.
"""

from __future__ import annotations

import array
import hashlib
import sys
from typing import Any
from xml.parsers import expat

__all__ = ["ContentStats", "row_kind"]

_TEXT_EXTENSIONS = {"csv", "txt", "tsv", "psv", "dat"}
_UTF16_LE_BOM = b"\xff\xfe"
_UTF16_BE_BOM = b"\xfe\xff"


def row_kind(file_name: str, source_format: str | None = None) -> str | None:
    """``"lines"``, ``"xml"`` or None, from the manifest's source format if known, else the extension."""
    fmt = (source_format or "").strip().upper()
    if fmt.startswith("XML"):
        return "xml"
    if fmt.startswith(("CSV", "TXT", "TSV", "DELIMITED")):
        return "lines"
    if fmt:
        return None  # EXCEL, PACKAGE, ... : no row count from the bytes
    extension = file_name.rsplit(".", 1)[-1].lower() if "." in file_name else ""
    if extension in _TEXT_EXTENSIONS:
        return "lines"
    if extension == "xml":
        return "xml"
    return None


class _LineCounter:
    """Newlines in UTF-8/ASCII bytes or in UTF-16 code units (chosen by the BOM)."""

    def __init__(self) -> None:
        self.head = b""
        self.width = 0  # 0: undecided, 1: bytes, 2: UTF-16
        self.swap = False
        self.carry = b""
        self.newlines = 0
        self.last: int | None = None  # last byte / code unit seen after the BOM

    def feed(self, data: bytes) -> None:
        if not self.width:
            self.head += data
            if len(self.head) < 2:
                return
            data, self.head = self.head, b""
            if data.startswith((_UTF16_LE_BOM, _UTF16_BE_BOM)):
                self.width = 2
                self.swap = data.startswith(_UTF16_LE_BOM) != (sys.byteorder == "little")
                data = data[2:]
            else:
                self.width = 1
        if self.width == 1:
            if data:
                self.newlines += data.count(b"\n")
                self.last = data[-1]
            return
        data = self.carry + data
        cut = len(data) - len(data) % 2
        data, self.carry = data[:cut], data[cut:]
        if data:
            units = array.array("H")
            units.frombytes(data)
            if self.swap:
                units.byteswap()
            self.newlines += units.count(0x0A)
            self.last = units[-1]

    def lines(self) -> int:
        if not self.width and self.head:  # a one-byte file: plain bytes
            self.width, data, self.head = 1, self.head, b""
            self.feed(data)
        unfinished = self.last is not None and self.last != 0x0A
        return self.newlines + (1 if unfinished else 0)


class _XmlRowCounter:
    """Children of the root element, counted from expat start/end events."""

    def __init__(self) -> None:
        self.parser = expat.ParserCreate()
        self.depth = 0
        self.rows = 0
        self.problem: str | None = None
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end
        self.parser.StartDoctypeDeclHandler = self._refuse
        self.parser.EntityDeclHandler = self._refuse

    def _start(self, name: str, attributes: Any) -> None:
        self.depth += 1
        if self.depth == 2:
            self.rows += 1

    def _end(self, name: str) -> None:
        self.depth -= 1

    def _refuse(self, *args: Any) -> None:
        raise ValueError("the XML declares a DTD or entities: rows are not counted")

    def feed(self, data: bytes, final: bool = False) -> None:
        if self.problem is not None:
            return
        try:
            self.parser.Parse(data, final)
        except (expat.ExpatError, ValueError) as exc:
            self.problem = f"XML not countable: {exc}"


class ContentStats:
    """Feed the bytes of one file in order; read ``size``, ``sha256``, ``lines`` and ``rows`` at the end."""

    def __init__(self, kind: str | None) -> None:
        self.kind = kind
        self.size = 0
        self._hash = hashlib.sha256()
        self._lines = _LineCounter() if kind == "lines" else None
        self._xml = _XmlRowCounter() if kind == "xml" else None
        self._finished = False

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        self._hash.update(data)
        if self._lines is not None:
            self._lines.feed(data)
        if self._xml is not None:
            self._xml.feed(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def result(self) -> dict[str, Any]:
        """``{"bytes", "sha256"}`` plus ``lines``/``rows`` when countable (``rows_note`` says why not)."""
        facts: dict[str, Any] = {"bytes": self.size, "sha256": self.sha256}
        if self._lines is not None:
            lines = self._lines.lines() if self.size else 0
            facts["lines"] = lines
            facts["rows"] = max(lines - 1, 0)  # D365 writes a header line first
        elif self._xml is not None:
            if not self._finished:
                self._xml.feed(b"", final=True)
                self._finished = True
            if self._xml.problem is None:
                facts["rows"] = self._xml.rows
            else:
                facts["rows_note"] = self._xml.problem
        return facts
