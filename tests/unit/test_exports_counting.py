"""Streaming file facts: line and row counts in the file's own encoding, XML records, hashes, safe names."""

from __future__ import annotations

import hashlib

import pytest

from shared.pipelines.exports.counting import ContentStats, row_kind
from shared.pipelines.exports.unpack import check_entry_name


def facts(data: bytes, kind: str | None, chunk: int = 3) -> dict[str, object]:
    stats = ContentStats(kind)
    for start in range(0, len(data), chunk):
        stats.feed(data[start : start + chunk])
    return stats.result()


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
def test_lines_of_utf8_and_utf16_text_in_any_chunking(chunk: int) -> None:
    text = "ACCOUNT,NAME\nUS-001,Contoso\nUS-002,Fabrikam\n"
    assert facts(text.encode(), "lines", chunk)["rows"] == 2
    assert facts(text.rstrip("\n").encode(), "lines", chunk)["lines"] == 3  # no final newline
    utf16 = b"\xff\xfe" + text.encode("utf-16-le")
    found = facts(utf16, "lines", chunk)
    assert (found["lines"], found["rows"], found["bytes"]) == (3, 2, len(utf16))
    assert found["sha256"] == hashlib.sha256(utf16).hexdigest()
    assert facts(b"\xfe\xff" + text.encode("utf-16-be"), "lines", chunk)["rows"] == 2


def test_utf16_counts_newline_code_units_not_newline_bytes() -> None:
    # U+0A0A and U+0D0A contain 0x0A bytes but are not newlines
    text = "H\u0a0a\n\u0d0a1\n"
    assert facts(b"\xff\xfe" + text.encode("utf-16-le"), "lines", 1)["lines"] == 2


def test_empty_and_tiny_files() -> None:
    assert facts(b"", "lines")["lines"] == 0
    assert facts(b"x", "lines")["lines"] == 1
    assert facts(b"\n", "lines")["lines"] == 1
    assert facts(b"\xff\xfe", "lines")["lines"] == 0


def test_xml_rows_are_the_root_children() -> None:
    xml = (
        '<?xml version="1.0" encoding="utf-16"?><Document>'
        "<CUSTCUSTOMERV3ENTITY><A>1</A></CUSTCUSTOMERV3ENTITY>"
        '<CUSTCUSTOMERV3ENTITY A="2"/><CUSTCUSTOMERV3ENTITY/></Document>'
    )
    assert facts(b"\xff\xfe" + xml.encode("utf-16-le"), "xml", 5)["rows"] == 3
    assert facts(xml.replace("utf-16", "utf-8").encode(), "xml")["rows"] == 3


def test_xml_with_a_dtd_is_not_expanded_or_counted() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        "<d><r>&b;</r></d>"
    )
    found = facts(bomb.encode(), "xml")
    assert "rows" not in found
    assert "DTD" in str(found["rows_note"])
    assert "rows_note" in facts(b"<d><r></d>", "xml")  # malformed


def test_row_kind_prefers_the_manifest_format() -> None:
    assert row_kind("Customers.csv") == "lines"
    assert row_kind("Customers.xml") == "xml"
    assert row_kind("Customers.xlsx") is None
    assert row_kind("Customers", "CSV-Unicode") == "lines"
    assert row_kind("Customers.txt", "XML-Element") == "xml"
    assert row_kind("Customers.csv", "EXCEL") is None
    assert facts(b"abc", None) == {"bytes": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("Customers V3.csv", None),
        ("sub/dir/file.xml", None),
        ("../evil.csv", "has an empty, '.' or '..' path segment"),
        ("a/../../b", "has an empty, '.' or '..' path segment"),
        ("a//b", "has an empty, '.' or '..' path segment"),
        ("./a", "has an empty, '.' or '..' path segment"),
        ("/etc/passwd", "is an absolute path"),
        ("C:/windows/x", "starts with a drive or scheme prefix"),
        ("a\\..\\b", "contains a backslash"),
        ("bad\x00name", "contains control characters"),
        ("", "empty or longer than 512 characters"),
        ("x" * 513, "empty or longer than 512 characters"),
    ],
)
def test_unsafe_entry_names_are_refused(name: str, problem: str | None) -> None:
    assert check_entry_name(name) == problem
