"""The export pipelines' storage pieces on real Azurite: the once-only block writer and package unpacking."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from shared.pipelines.exports.blob_writer import BlockBlobWriter
from shared.pipelines.exports.unpack import UnpackLimits, describe_package
from shared.storage import BlobStore
from tests.support.stack import AzuriteInfo

KiB = 1024


@pytest.fixture
def store(azurite: AzuriteInfo) -> Iterator[BlobStore]:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    yield BlobStore(service)
    service.close()


@pytest.fixture
def container() -> str:
    return f"x{uuid.uuid4().hex[:12]}"


def write_blocks(writer: BlockBlobWriter, data: bytes, piece: int = 700) -> None:
    for start in range(0, len(data), piece):
        writer.write(data[start : start + piece])


# ------------------------------------------------------------------------------------------ writer


def test_staged_blocks_stay_invisible_until_the_conditional_commit(store: BlobStore, container: str) -> None:
    data = os.urandom(10 * KiB + 17)
    blob = store.blob(container, "pkg.zip")
    writer = BlockBlobWriter(blob, block_size=KiB, max_in_flight=3, content_type="application/zip")
    write_blocks(writer, data)
    assert not blob.exists()  # ten blocks staged, nothing visible
    assert [b.name for b in store.container(container).list_blobs()] == []
    assert writer.commit(metadata={"sha256": writer.sha256})
    assert blob.download_blob().readall() == data
    properties = blob.get_blob_properties()
    assert properties.metadata["sha256"] == hashlib.sha256(data).hexdigest() == writer.sha256
    assert properties.content_settings.content_type == "application/zip"
    assert writer.size == len(data)


def test_a_second_writer_cannot_replace_a_committed_blob(store: BlobStore, container: str) -> None:
    blob = store.blob(container, "pkg.zip")
    first, second = BlockBlobWriter(blob, block_size=KiB), BlockBlobWriter(blob, block_size=KiB)
    write_blocks(first, b"A" * 5000)
    write_blocks(second, b"B" * 6000)  # both staged at once, interleaved: ids unique per attempt
    assert first.commit()
    assert not second.commit()
    assert blob.download_blob().readall() == b"A" * 5000
    small = BlockBlobWriter(blob)
    small.write(b"tiny")
    assert not small.commit()  # single Put Blob path, same rule
    overwrite = BlockBlobWriter(blob)
    overwrite.write(b"new")
    assert overwrite.commit(if_absent=False)
    assert blob.download_blob().readall() == b"new"


def test_an_aborted_attempt_leaves_nothing_and_does_not_disturb_the_retry(
    store: BlobStore, container: str
) -> None:
    blob = store.blob(container, "pkg.zip")
    with BlockBlobWriter(blob, block_size=KiB) as broken:
        write_blocks(broken, b"X" * 4000)  # the download broke here: leaving the block aborts
    assert not blob.exists()
    retry = BlockBlobWriter(blob, block_size=KiB)
    write_blocks(retry, b"Y" * 3000)
    assert retry.commit()
    assert blob.download_blob().readall() == b"Y" * 3000


def test_racing_writers_store_exactly_one_copy(store: BlobStore, container: str) -> None:
    blob = store.blob(container, "race.zip")
    wins: list[bool] = []

    def attempt(i: int) -> None:
        writer = BlockBlobWriter(blob, block_size=KiB)
        write_blocks(writer, bytes([i]) * 3000)
        wins.append(writer.commit())

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]
    content = blob.download_blob().readall()
    assert (len(content), len(set(content))) == (3000, 1)  # one writer's bytes, never a mix


# ------------------------------------------------------------------------------------------ unpack


def zip_bytes(entries: list[tuple[str, bytes]], *, encrypted: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries:
            archive.writestr(name, content)
    data = bytearray(buffer.getvalue())
    if encrypted is not None:  # zipfile cannot write encrypted entries: set the flag in the central directory
        at = 0
        while True:
            at = data.index(b"PK\x01\x02", at)
            name_length = int.from_bytes(data[at + 28 : at + 30], "little")
            if data[at + 46 : at + 46 + name_length] == encrypted.encode():
                data[at + 8] |= 0x01
                break
            at += 4
    return bytes(data)


def put(store: BlobStore, container: str, name: str, data: bytes) -> None:
    store.blob(container, name).upload_blob(data, metadata={"sha256": hashlib.sha256(data).hexdigest()})


def test_the_sample_package_is_unpacked_and_described(
    store: BlobStore, container: str, samples_dir: Path
) -> None:
    data = (samples_dir / "packages" / "usmf_asset-major-types-01.zip").read_bytes()
    put(store, container, "a/pkg.zip", data)
    result = describe_package(
        store,
        container,
        "a/pkg.zip",
        unpack_to="a/pkg/",
        limits=UnpackLimits(),
        about={"correlation_id": "c"},
    )
    assert result.ok, result.record
    record = result.record
    assert record["definition_group"] == "Asset-Major-Types"
    assert record["package_sha256"] == hashlib.sha256(data).hexdigest()
    assert record["correlation_id"] == "c"
    [entity] = record["entities"]
    assert entity["entity"] == "Fixed asset major type"
    assert entity["source_format"] == "EXCEL"
    assert entity["bytes"] == 8863
    names = sorted(f["name"] for f in record["files"])
    assert names == ["Fixed asset major type.xlsx", "Manifest.xml", "PackageHeader.xml"]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for item in record["files"]:
            stored = store.blob(container, f"a/pkg/{item['name']}").download_blob().readall()
            assert stored == archive.read(item["name"])
            assert item["sha256"] == hashlib.sha256(stored).hexdigest()
            assert item["blob"] == f"{container}/a/pkg/{item['name']}"


def test_rows_are_counted_and_only_described_without_unpacking(store: BlobStore, container: str) -> None:
    csv = b"\xff\xfe" + "ID,NAME\n1,a\n2,b\n3,c\n".encode("utf-16-le")
    xml = b"<Document><R/><R/></Document>"
    put(store, container, "p.zip", zip_bytes([("Customers.csv", csv), ("Groups.xml", xml)]))
    result = describe_package(store, container, "p.zip", unpack_to=None, limits=UnpackLimits())
    by_name = {f["name"]: f for f in result.record["files"]}
    assert by_name["Customers.csv"]["rows"] == 3
    assert by_name["Groups.xml"]["rows"] == 2
    assert "blob" not in by_name["Customers.csv"]
    assert [b.name for b in store.container(container).list_blobs()] == ["p.zip"]  # nothing written
    assert result.record["notes"] == ["no Manifest.xml: entity names unknown"]


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_unsafe_and_oversized_entries_are_refused_and_the_rest_unpacked(
    store: BlobStore, container: str
) -> None:
    package = zip_bytes(
        [
            ("ok.csv", b"A\n1\n"),
            ("../escape.csv", b"x"),
            ("/abs.csv", b"x"),
            ("dir\\win.csv", b"x"),
            ("secret.csv", b"x"),
            ("big.csv", b"0" * 200 * KiB),
            ("ok.csv", b"again"),
        ],
        encrypted="secret.csv",
    )
    put(store, container, "p.zip", package)
    limits = UnpackLimits(max_files=100, max_file_bytes=100 * KiB, max_total_bytes=1024 * KiB)
    result = describe_package(store, container, "p.zip", unpack_to="p/", limits=limits)
    reasons = {r["entry"]: r["reason_code"] for r in result.rejected}
    assert reasons == {
        "../escape.csv": "unsafe_path",
        "/abs.csv": "unsafe_path",
        "dir\\win.csv": "unsafe_path",
        "secret.csv": "encrypted_entry",
        "big.csv": "file_too_large",
        "ok.csv": "duplicate_entry",
    }
    assert not result.ok
    names = sorted(b.name for b in store.container(container).list_blobs())
    assert names == ["p.zip", "p/ok.csv"]  # nothing written outside the folder
    assert store.blob(container, "p/ok.csv").download_blob().readall() == b"A\n1\n"


def test_limits_on_entry_count_and_corrupt_data(store: BlobStore, container: str) -> None:
    package = bytearray(zip_bytes([("a.csv", os.urandom(4000)), ("b.csv", b"b"), ("c.csv", b"c")]))
    offset = package.index(b"a.csv") + len("a.csv") + 100
    package[offset : offset + 20] = bytes(20)  # corrupt a's compressed data
    put(store, container, "p.zip", bytes(package))
    result = describe_package(store, container, "p.zip", unpack_to="p/", limits=UnpackLimits(max_files=2))
    reasons = sorted((r["entry"], r["reason_code"]) for r in result.rejected)
    assert reasons == [("*", "too_many_entries"), ("a.csv", "unreadable_file")]
    assert [f["name"] for f in result.record["files"]] == ["b.csv"]


def test_a_file_that_is_not_a_zip_is_reported(store: BlobStore, container: str) -> None:
    put(store, container, "p.zip", b"ACCOUNT,NAME\n")
    result = describe_package(store, container, "p.zip", unpack_to="p/", limits=UnpackLimits())
    assert result.error == "not_a_zip: the package is not a zip file"
    assert result.record["files"] == []
