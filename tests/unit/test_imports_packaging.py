"""Streaming pieces of the intake: the hashing reader, the build-to-upload pipe, the XML safety check."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from typing import IO

import pytest

from shared.packages.build import BuiltPackage, build_package
from shared.packages.errors import PackageRejected, RejectReason
from shared.packages.manifest import parse_manifest
from shared.pipelines.imports.packaging import check_xml, raw_entity
from shared.pipelines.imports.settings import EntityConfig, Route
from shared.pipelines.imports.streams import HashingReader, PackagePipe, stream_to_upload

ROUTE = Route(name="r", prefix="r/", target="package", definition_group="G",
              entities=(EntityConfig(entity="Customer groups"),))  # fmt: skip


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def test_the_reader_hashes_everything_whatever_the_read_sizes() -> None:
    data = bytes(range(256)) * 1000
    reader = HashingReader(chunks(data, 777), name="x")
    parts = [reader.read(5), reader.read(10_000), reader.read(1)]
    reader.drain()
    assert b"".join(parts) == data[:10_006]
    assert (reader.size, reader.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert reader.read(10) == b""


def test_the_reader_refuses_more_than_its_limit() -> None:
    reader = HashingReader(chunks(b"x" * 100, 30), name="big.csv", limit=50)
    with pytest.raises(PackageRejected) as caught:
        reader.drain()
    assert caught.value.reason_code is RejectReason.FILE_TOO_LARGE


def collect(pieces: Iterator[bytes]) -> bytes:
    return b"".join(pieces)


def test_a_package_is_built_on_one_thread_while_uploaded_from_another() -> None:
    rows = "CustomerGroupId,Description\n" + "".join(f"G{n},Group {n}\n" for n in range(50_000))
    reader = HashingReader(chunks(rows.encode(), 65536), name="groups.csv")
    threads: set[str] = set()

    def build(sink: IO[bytes]) -> BuiltPackage:
        threads.add(threading.current_thread().name)
        return build_package(sink, [raw_entity(ROUTE, "groups.csv", reader, None)], definition_group="G")

    built, uploaded = stream_to_upload(build, collect)
    assert threads == {"import-package-build"}
    with zipfile.ZipFile(io.BytesIO(uploaded)) as archive:
        assert archive.namelist() == ["groups.csv", "Manifest.xml", "PackageHeader.xml"]
        assert archive.read("groups.csv").startswith(b"\xff\xfe")  # CSV-Unicode: transcoded to UTF-16 LE
        manifest = parse_manifest(archive.read("Manifest.xml"))
    assert manifest.entities[0].input_file_path == "groups.csv"
    assert built.zip_bytes == len(uploaded)
    assert reader.sha256 == hashlib.sha256(rows.encode()).hexdigest()


def test_a_bad_file_stops_the_upload_before_it_completes() -> None:
    reader = HashingReader(chunks(b"Id,Name\nA,Caf\xe9\n" * 1000, 4096), name="bad.csv")
    finished: list[bool] = []

    def upload(pieces: Iterator[bytes]) -> bytes:
        data = b"".join(pieces)
        finished.append(True)  # committing the block list would happen here
        return data

    with pytest.raises(PackageRejected) as caught:
        stream_to_upload(
            lambda sink: build_package(
                sink, [raw_entity(ROUTE, "bad.csv", reader, None)], definition_group="G"
            ),
            upload,
        )
    assert caught.value.reason_code is RejectReason.WRONG_ENCODING
    assert finished == []


def test_a_failed_upload_stops_the_build() -> None:
    def rows() -> Iterator[bytes]:
        yield b"Id,Value\n"
        n = 0
        while True:  # never ends: only the failing upload can stop the build
            n += 1
            yield "".join(
                f"{i},{hashlib.md5(str(i).encode()).hexdigest()}\n" for i in range(n, n + 2000)
            ).encode()

    endless = HashingReader(rows(), name="endless.csv")

    def upload(pieces: Iterator[bytes]) -> bytes:
        next(pieces)
        raise ConnectionError("the SAS host went away")

    with pytest.raises(ConnectionError):
        stream_to_upload(
            lambda sink: build_package(
                sink, [raw_entity(ROUTE, "e.csv", endless, None)], definition_group="G"
            ),
            upload,
        )


def test_the_pipe_regroups_small_writes_into_chunks() -> None:
    pipe = PackagePipe(chunk=10, depth=100)
    for _ in range(7):
        pipe.write(b"abc")
    pipe.close()
    assert list(pipe) == [b"abcabcabca", b"bcabcabcab", b"c"]


def test_xml_data_must_be_well_formed_and_declare_no_entities() -> None:
    check_xml("ok.xml", io.BytesIO("<?xml version='1.0' encoding='utf-16'?><a>é</a>".encode("utf-16")))
    for name, data, reason in [
        ("dtd.xml", b"<!DOCTYPE a [<!ENTITY x 'y'>]><a>&x;</a>", RejectReason.MANIFEST_UNSAFE),
        ("ext.xml", b'<!DOCTYPE a SYSTEM "http://example.com/a.dtd"><a/>', RejectReason.MANIFEST_UNSAFE),
        ("broken.xml", b"<a><b></a>", RejectReason.UNREADABLE_FILE),
    ]:
        with pytest.raises(PackageRejected) as caught:
            check_xml(name, io.BytesIO(data))
        assert caught.value.reason_code is reason, name
