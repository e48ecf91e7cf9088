"""The one error type of the package library: a package or data file that must not be sent to D365."""

from __future__ import annotations

import enum

__all__ = ["PackageRejected", "RejectReason"]


class RejectReason(enum.StrEnum):
    """Machine-readable reason codes (stable: they go into status records)."""

    NOT_A_ZIP = "not_a_zip"
    PACKAGE_TOO_LARGE = "package_too_large"
    FILE_TOO_LARGE = "file_too_large"
    TOO_MANY_ENTRIES = "too_many_entries"
    UNSAFE_PATH = "unsafe_path"
    DUPLICATE_ENTRY = "duplicate_entry"
    ENCRYPTED_ENTRY = "encrypted_entry"
    UNSUPPORTED_COMPRESSION = "unsupported_compression"
    ZIP_BOMB = "zip_bomb"
    MANIFEST_MISSING = "manifest_missing"
    HEADER_MISSING = "header_missing"
    MANIFEST_INVALID = "manifest_invalid"
    MANIFEST_UNSAFE = "manifest_unsafe"
    MANIFEST_EMPTY = "manifest_empty"
    DATA_FILE_MISSING = "data_file_missing"
    EMPTY_FILE = "empty_file"
    UNREADABLE_FILE = "unreadable_file"
    WRONG_ENCODING = "wrong_encoding"
    HEADER_ROW_INVALID = "header_row_invalid"
    MAPPING_INVALID = "mapping_invalid"
    INVALID_FILE_NAME = "invalid_file_name"
    DUPLICATE_FILE_NAME = "duplicate_file_name"


class PackageRejected(Exception):
    """The input cannot become (or is not) a valid data package; ``reason_code`` says why, ``message`` how.

    ``entry`` names the zip entry or file concerned, when there is one. Messages never contain data rows.
    """

    def __init__(self, reason_code: RejectReason | str, message: str, *, entry: str | None = None) -> None:
        super().__init__(message)
        self.reason_code = RejectReason(reason_code)
        self.message = message
        self.entry = entry

    def __str__(self) -> str:
        return f"[{self.reason_code.value}] {self.message}"

    def to_dict(self) -> dict[str, str | None]:
        """For status records: ``{"reason_code", "message", "entry"}``."""
        return {"reason_code": self.reason_code.value, "message": self.message, "entry": self.entry}
