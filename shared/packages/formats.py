"""What each DMF source format needs from a data file's bytes, checked while streaming."""

from __future__ import annotations

import codecs

from shared.packages.errors import PackageRejected, RejectReason

__all__ = ["FormatCheck", "is_unicode_csv", "sniff_encoding"]

_FORMAT_HINT = {
    "csv-unicode": "UTF-16 LE with a byte-order mark (FF FE) and CRLF line endings",
}


def is_unicode_csv(source_format: str) -> bool:
    """Whether DMF reads the format as UTF-16 text (the standard ``CSV-Unicode`` format, ref §7.3)."""
    return source_format.strip().lower() == "csv-unicode"


class FormatCheck:
    """Streaming check that a data file's bytes fit its declared DMF source format."""

    def __init__(self, name: str, source_format: str) -> None:
        self.name = name
        self.format = source_format.strip().lower()
        self.size = 0
        self.head = b""
        self.encoding = "binary"
        self._decoder: codecs.IncrementalDecoder | None = None

    def feed(self, chunk: bytes) -> None:
        seen = self.size
        if len(self.head) < 4:
            self.head += chunk[: 4 - len(self.head)]
        self.size += len(chunk)
        if self._decoder is None and is_unicode_csv(self.format):
            if self.size < 2:
                return
            if not self.head.startswith(b"\xff\xfe"):
                raise self._wrong("does not start with the UTF-16 LE byte-order mark FF FE")
            self.encoding = "utf-16-le"
            self._decoder = codecs.getincrementaldecoder("utf-16-le")("strict")
            chunk = self.head[:seen] + chunk  # the byte(s) before the decoder existed
        if self._decoder is not None:
            try:
                self._decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                at = self.size - len(chunk) + exc.start
                raise self._wrong(f"is not valid UTF-16 LE near byte {at}") from None

    def finish(self) -> None:
        bom_only = self.head in (b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")
        if self.size == 0 or (bom_only and self.size <= 3):
            raise PackageRejected(RejectReason.EMPTY_FILE, f"{self.name!r} is empty", entry=self.name)
        if is_unicode_csv(self.format):
            if self.size < 2 or not self.head.startswith(b"\xff\xfe"):
                raise self._wrong("does not start with the UTF-16 LE byte-order mark FF FE")
            assert self._decoder is not None
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                raise self._wrong("ends in the middle of a UTF-16 character (odd byte count)") from None
        elif self.format == "excel":
            if not self.head.startswith(b"PK\x03\x04"):
                raise self._wrong("is not an Excel .xlsx workbook (no zip signature)")
        else:
            self.encoding = sniff_encoding(self.head)

    def _wrong(self, detail: str) -> PackageRejected:
        need = _FORMAT_HINT.get(self.format, f"what the {self.format!r} source format needs")
        return PackageRejected(
            RejectReason.WRONG_ENCODING,
            f"{self.name!r} {detail}; source format {self.format.upper()!r} needs {need}",
            entry=self.name,
        )


def sniff_encoding(head: bytes) -> str:
    if head.startswith(b"\xff\xfe"):
        return "utf-16-le"
    if head.startswith(b"\xfe\xff"):
        return "utf-16-be"
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if head.startswith(b"PK\x03\x04"):
        return "binary"
    return "utf-8"
