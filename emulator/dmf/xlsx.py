"""Just enough SpreadsheetML for DMF ``EXCEL`` data files: read one sheet as rows of text, write one sheet.

Reading follows the workbook's relationships to the sheet, resolves shared strings, inline strings (what
Microsoft's sample uses, ref §7.1), booleans and numbers, and places cells by their ``r`` reference.
Writing produces inline strings only, like the sample, and a workbook Excel opens.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator, Sequence
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from emulator.dmf.packages import PackageError, local, parse_xml

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_CT = "application/vnd.openxmlformats-"
_XML_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
_CELL_REF = re.compile(r"^([A-Z]+)(\d+)$")
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _column_index(ref: str) -> int | None:
    match = _CELL_REF.match(ref.upper())
    if match is None:
        return None
    index = 0
    for letter in match.group(1):
        index = index * 26 + (ord(letter) - 64)
    return index - 1


def column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _all_text(element: ET.Element) -> str:
    """The text of a string item: ``<t>`` directly or the ``<r><t>`` runs of rich text."""
    return "".join(node.text or "" for node in element.iter() if local(node.tag) == "t")


def _sheet_path(archive: zipfile.ZipFile, sheet_name: str) -> str:
    workbook = parse_xml(archive.read("xl/workbook.xml"), "the workbook")
    sheets = [s for s in workbook.iter() if local(s.tag) == "sheet"]
    if not sheets:
        raise PackageError("The Excel file has no sheet.")
    chosen = sheets[0]
    if sheet_name:
        named = [s for s in sheets if (s.get("name") or "").lower() == sheet_name.strip().lower()]
        if not named:
            raise PackageError(f"The sheet '{sheet_name}' does not exist in the Excel file.")
        chosen = named[0]
    rel_id = chosen.get(f"{{{_REL}}}id")
    try:
        rels = parse_xml(archive.read("xl/_rels/workbook.xml.rels"), "the workbook relationships")
    except KeyError:
        return "xl/worksheets/sheet1.xml"
    for rel in rels:
        if rel.get("Id") == rel_id:
            target = (rel.get("Target") or "").lstrip("/")
            return target if target.startswith("xl/") else f"xl/{target}"
    raise PackageError("The Excel file's sheet could not be found.")


def read_sheet(data: bytes, sheet_name: str = "") -> Iterator[list[str]]:
    """Rows of the sheet as lists of cell text (empty rows skipped); PackageError when it is not xlsx."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise PackageError("The Excel file is not a valid .xlsx workbook.") from None
    with archive:
        try:
            shared: list[str] = []
            if "xl/sharedStrings.xml" in archive.namelist():
                table = parse_xml(archive.read("xl/sharedStrings.xml"), "the shared strings")
                shared = [_all_text(si) for si in table if local(si.tag) == "si"]
            sheet = parse_xml(archive.read(_sheet_path(archive, sheet_name)), "the worksheet")
        except KeyError as exc:
            raise PackageError(f"The Excel file is incomplete: {exc}.") from None
    for row in (r for r in sheet.iter() if local(r.tag) == "row"):
        values: list[str] = []
        for position, cell in enumerate(c for c in row if local(c.tag) == "c"):
            index = _column_index(cell.get("r") or "")
            index = position if index is None else index
            while len(values) < index:
                values.append("")
            values.append(_cell_text(cell, shared))
        if any(v.strip() for v in values):
            yield values


def _cell_text(cell: ET.Element, shared: Sequence[str]) -> str:
    kind = cell.get("t") or "n"
    if kind == "inlineStr":
        inline = next((c for c in cell if local(c.tag) == "is"), None)
        return _all_text(inline) if inline is not None else ""
    value = next((c.text or "" for c in cell if local(c.tag) == "v"), "")
    if kind == "s":
        try:
            return shared[int(value)]
        except (ValueError, IndexError):
            return ""
    if kind == "b":
        return "Yes" if value == "1" else "No"
    if kind == "n" and value.endswith(".0"):
        return value[:-2]
    return value


def write_workbook(sheet_name: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    """An .xlsx with one sheet of inline strings (first row = header)."""
    sheet_name = re.sub(r"[\[\]:*?/\\]", "_", sheet_name)[:31] or "Sheet1"
    lines = [f'<worksheet xmlns="{_MAIN}" xmlns:r="{_REL}"><sheetData>']
    for number, values in enumerate([header, *rows], start=1):
        cells = "".join(
            f'<c r="{column_letter(i)}{number}" t="inlineStr"><is><t xml:space="preserve">'
            f"{escape(_ILLEGAL_XML.sub('', v), {chr(13): '&#13;'})}</t></is></c>"
            for i, v in enumerate(values)
        )
        lines.append(f'<row r="{number}">{cells}</row>')
    lines.append("</sheetData></worksheet>")
    parts = {
        "[Content_Types].xml": (
            f'{_XML_HEAD}<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            f'<Default Extension="rels" ContentType="{_CT}package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" '
            f'ContentType="{_CT}officedocument.spreadsheetml.sheet.main+xml"/>'
            f'<Override PartName="/xl/worksheets/sheet1.xml" '
            f'ContentType="{_CT}officedocument.spreadsheetml.worksheet+xml"/></Types>'
        ),
        "_rels/.rels": (
            f'{_XML_HEAD}<Relationships xmlns="{_PKG_REL}">'
            f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<workbook xmlns="{_MAIN}" xmlns:r="{_REL}"><sheets>'
            f'<sheet sheetId="1" r:id="rId1" name={quoteattr(sheet_name)}/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'{_XML_HEAD}<Relationships xmlns="{_PKG_REL}"><Relationship Id="rId1" '
            f'Type="{_REL}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
        ),
        "xl/worksheets/sheet1.xml": "".join(lines),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in parts.items():
            archive.writestr(name, text.encode("utf-8"))
    return buffer.getvalue()
