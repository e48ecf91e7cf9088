"""Streaming CSV text: the header row, and re-encoding to what ``CSV-Unicode`` needs (ref §7.3)."""

from __future__ import annotations

import codecs
import csv

from shared.packages.errors import PackageRejected, RejectReason

__all__ = ["MAX_HEADER_CHARS", "HeaderRow", "Transcoder"]

MAX_HEADER_CHARS = 1024 * 1024  # a header row longer than this is not a header row


class HeaderRow:
    """Collects decoded text up to the first line break; then parses it as the CSV header row."""

    def __init__(self, name: str, delimiter: str) -> None:
        self.name = name
        self.delimiter = delimiter
        self.columns: tuple[str, ...] | None = None
        self.has_data = False
        self._text: list[str] = []
        self._length = 0

    def feed(self, text: str) -> None:
        if self.columns is not None:
            if not self.has_data and text.strip():
                self.has_data = True
            return
        cut = text.find("\n")
        if cut < 0:
            self._text.append(text)
            self._length += len(text)
            if self._length > MAX_HEADER_CHARS:
                raise PackageRejected(
                    RejectReason.HEADER_ROW_INVALID,
                    f"{self.name!r}: no line break in the first {MAX_HEADER_CHARS} characters; "
                    "the first line must be the header row",
                    entry=self.name,
                )
            return
        self._text.append(text[:cut])
        self._parse("".join(self._text))
        self.feed(text[cut + 1 :])

    def finish(self) -> None:
        if self.columns is None:
            self._parse("".join(self._text))

    def _parse(self, line: str) -> None:
        row = next(csv.reader([line.rstrip("\r").lstrip("\ufeff")], delimiter=self.delimiter), [])
        columns = tuple(c.strip() for c in row)
        if not columns or not all(columns):
            raise PackageRejected(
                RejectReason.HEADER_ROW_INVALID,
                f"{self.name!r}: the header row has an empty column name ({len(columns)} columns)",
                entry=self.name,
            )
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            raise PackageRejected(
                RejectReason.HEADER_ROW_INVALID,
                f"{self.name!r}: the header row repeats column(s) {', '.join(duplicates)}",
                entry=self.name,
            )
        self.columns = columns


class Transcoder:
    """Incremental decode → LF to CRLF → UTF-16 LE (what ``CSV-Unicode`` needs, ref §7.3)."""

    def __init__(self, encoding: str, name: str, *, strict: bool = True) -> None:
        self._decoder = codecs.getincrementaldecoder(encoding)("strict" if strict else "replace")
        self._encoding = encoding
        self._name = name
        self._carry = ""  # a trailing CR waiting for its LF
        self._offset = 0

    def text(self, data: bytes, *, final: bool = False) -> str:
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise PackageRejected(
                RejectReason.WRONG_ENCODING,
                f"{self._name!r} is not valid {self._encoding.upper()} text near byte "
                f"{self._offset + exc.start}; save it as UTF-8 or UTF-16 with a BOM, or configure the "
                "file's encoding",
                entry=self._name,
            ) from None
        self._offset += len(data)
        return text

    def crlf(self, text: str, *, final: bool = False) -> str:
        text = self._carry + text
        self._carry = ""
        if not final and text.endswith("\r"):
            text, self._carry = text[:-1], "\r"
        if "\r" not in text:  # the usual LF-only (or CR-free) text: one pass, no counting
            return text.replace("\n", "\r\n")
        lf = text.count("\n")
        crlf = text.count("\r\n") if lf else 0
        if lf == crlf:  # no line break, or all already CRLF
            return text
        if crlf == 0:
            return text.replace("\n", "\r\n")
        return text.replace("\r\n", "\n").replace("\n", "\r\n")
