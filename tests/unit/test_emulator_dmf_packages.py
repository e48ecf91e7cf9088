"""DMF package reading and writing: Microsoft's sample, the source data formats, safe XML, the manifest."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from emulator.dmf import datafiles, xlsx
from emulator.dmf.definitions import DefinitionGroup, DmfEntity, GroupEntity
from emulator.dmf.exports import export_text, header_xml, manifest_xml
from emulator.dmf.packages import Package, PackageError, decode_text, local, parse_manifest, parse_xml
from emulator.odata.catalog import CUSTOMERS
from emulator.odata.schema import EDM_DECIMAL, Property


def test_microsofts_sample_package_reads(samples_dir: Path):
    with Package(samples_dir / "packages" / "usmf_asset-major-types-01.zip") as package:
        manifest, header = package.manifest, package.header
        (entity,) = manifest.entities
        rows = datafiles.read_data_file(package.data_file(entity), entity.source_format, entity_name="x")
    assert manifest.definition_group == "Asset-Major-Types"
    assert (header.package_type, header.package_version) == ("DefinitionGroup", "1")
    assert (entity.entity_name, entity.source_format, entity.input_file_path) == (
        "Fixed asset major type",
        "EXCEL",
        "Fixed asset major type.xlsx",
    )
    assert [(m.xml_field, m.entity_field) for m in entity.field_map] == [
        ("DESCRIPTION", "DESCRIPTION"),
        ("MAJORTYPEID", "MAJORTYPEID"),
    ]
    assert rows.columns == ["MAJORTYPEID", "DESCRIPTION"]
    assert len(rows.rows) == 11
    assert rows.rows[0] == (2, {"MAJORTYPEID": "COMP", "DESCRIPTION": "Computer hardware"})


def test_utf8_manifest_with_declaration_and_no_namespace_reads():
    text = (
        '<?xml version="1.0" encoding="utf-8"?><DataManagementPackageManifest><DefinitionGroupName>G'
        "</DefinitionGroupName><PackageEntityList><DataManagementPackageEntityData>"
        "<EntityName>Customer groups</EntityName><SourceFormat>CSV-Unicode</SourceFormat>"
        "<InputFilePath>g.csv</InputFilePath>"
        "</DataManagementPackageEntityData></PackageEntityList></DataManagementPackageManifest>"
    )
    manifest = parse_manifest(b"\xef\xbb\xbf" + text.encode())
    assert manifest.definition_group == "G"
    assert manifest.entities[0].field_map == []
    assert manifest.entities[0].order == (1, 1, 1)


def test_xml_with_a_dtd_is_refused():
    laughs = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><a>&lol;</a>'
    with pytest.raises(PackageError, match="DTD"):
        parse_xml(laughs.encode("utf-16"), "Manifest.xml")


def test_not_a_zip_and_no_manifest(tmp_path: Path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"plain text")
    with pytest.raises(PackageError, match="not a valid zip"):
        Package(bad)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("data.csv", "x")
    with pytest.raises(PackageError, match=r"does not contain Manifest\.xml"):
        Package(empty)


def test_decode_text_by_bom():
    assert decode_text(b"\xff\xfe" + "é".encode("utf-16-le")) == "é"
    assert decode_text(b"\xfe\xff" + "é".encode("utf-16-be")) == "é"
    assert decode_text("<a/>".encode("utf-16-le")) == "<a/>"
    assert decode_text("é".encode()) == "é"


ROWS = [["A-1", 'Say "hi"', "line\r\nbreak"], ["A-2", "Å ø ü", ""]]
COLUMNS = ["ACCOUNT", "NAME", "NOTE"]


@pytest.mark.parametrize("fmt", datafiles.FORMATS)
def test_every_format_round_trips(fmt: str):
    data = datafiles.write_data_file(fmt, "CustCustomerV3Entity", "Customers V3", COLUMNS, ROWS)
    read = datafiles.read_data_file(data, fmt, entity_name="Customers V3")
    assert read.columns == COLUMNS
    assert [values for _, values in read.rows] == [dict(zip(COLUMNS, row, strict=True)) for row in ROWS]


def test_csv_unicode_is_utf16_le_with_bom_and_crlf():
    data = datafiles.write_data_file(datafiles.CSV_UNICODE, "", "", COLUMNS, ROWS)
    assert data.startswith(b"\xff\xfe")
    assert data[2:].decode("utf-16-le").startswith("ACCOUNT,NAME,NOTE\r\n")


def test_csv_unicode_refuses_other_encodings_like_d365():
    with pytest.raises(PackageError, match="Selected file is not Unicode"):
        datafiles.read_data_file(b"A,B\r\n1,2\r\n", "csv-unicode", entity_name="Customer groups")
    lf_only = b"\xff\xfe" + "A,B\n1,2\n".encode("utf-16-le")
    with pytest.raises(PackageError, match="mapping is incorrect for entity Customer groups and field"):
        datafiles.read_data_file(lf_only, "CSV-Unicode", entity_name="Customer groups")


def test_plain_csv_falls_back_to_windows_1252_and_unknown_formats_are_named():
    read = datafiles.read_data_file("A\r\ncafé\r\n".encode("cp1252"), "CSV", entity_name="x")
    assert read.rows == [(2, {"A": "café"})]
    with pytest.raises(PackageError, match="source data format 'JSON' does not exist"):
        datafiles.canonical_format("JSON")


def test_sniffing_a_single_file():
    assert datafiles.sniff_format(xlsx.write_workbook("s", ["A"], [])) == datafiles.EXCEL
    assert datafiles.sniff_format(b"\xff\xfeA\x00") == datafiles.CSV_UNICODE
    assert datafiles.sniff_format(b"\xef\xbb\xbf <Document/>") == datafiles.XML_ELEMENT
    assert datafiles.sniff_format(b"A,B") == datafiles.CSV


def test_xlsx_shared_strings_sparse_cells_and_named_sheets():
    sheet = (
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        '<row r="1"><c r="A1" t="s"><v>0</v></c><c r="C1" t="s"><v>1</v></c></row>'
        '<row r="2"><c r="A2"><v>42.0</v></c><c r="C2" t="b"><v>1</v></c></row></sheetData></worksheet>'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "xl/workbook.xml",
            '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://'
            'schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Data" '
            'sheetId="1" r:id="rId7"/></sheets></workbook>',
        )
        archive.writestr(
            "xl/_rels/workbook.xml.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId7" Type="worksheet" Target="worksheets/data.xml"/></Relationships>',
        )
        archive.writestr("xl/worksheets/data.xml", sheet)
        archive.writestr(
            "xl/sharedStrings.xml",
            '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><si><t>ID</t></si>'
            "<si><r><t>FL</t></r><r><t>AG</t></r></si></sst>",
        )
    data = buffer.getvalue()
    assert list(xlsx.read_sheet(data, "data")) == [["ID", "", "FLAG"], ["42", "", "Yes"]]
    with pytest.raises(PackageError, match="sheet 'Other' does not exist"):
        list(xlsx.read_sheet(data, "Other"))
    assert xlsx.column_letter(27) == "AB"


def test_written_manifest_is_microsofts_format_and_reads_back():
    entity = DmfEntity("Customers V3", "CustCustomerV3Entity", CUSTOMERS)
    columns = entity.export_properties()[:2]
    group = DefinitionGroup(
        "Export-1", "Customers", "Export", [GroupEntity("Customers V3", "CSV-Unicode", 1, 2, 3)]
    )
    text = manifest_xml(group, [(group.entities[0], entity, "Customers V3.csv", columns)])
    root = ET.fromstring(text)
    data_element = root.find(".//{*}DataManagementPackageEntityData")
    assert data_element is not None
    names = [local(child.tag) for child in data_element]
    assert names == sorted(names)  # DataContractSerializer order (ref §7.3)
    map_names = [local(child.tag) for child in data_element.find("{*}EntityMapList")[0]]  # type: ignore[index]
    assert map_names == sorted(map_names)
    manifest = parse_manifest(b"\xff\xfe" + text.encode("utf-16-le"))
    assert manifest.definition_group == "Export-1"
    assert [(m.xml_field, m.entity_field) for m in manifest.entities[0].field_map] == [
        ("CUSTOMERACCOUNT", "CUSTOMERACCOUNT"),
        ("ORGANIZATIONNAME", "ORGANIZATIONNAME"),
    ]
    assert manifest.entities[0].order == (1, 2, 3)
    assert "<PackageVersion>2</PackageVersion>" in header_xml("Customers")


def test_export_values():
    assert export_text(Property("X", EDM_DECIMAL), 1000.0) == "1000"
    assert export_text(Property("X", EDM_DECIMAL), 12.345) == "12.345"
    assert export_text(Property("X", "Edm.DateTimeOffset"), "1900-01-01T00:00:00Z") == ""
    assert export_text(Property("X", "Edm.Boolean"), 1) == "Yes"
