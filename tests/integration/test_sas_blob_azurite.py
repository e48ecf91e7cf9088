"""SAS blob upload/download (shared/d365/sas_blob.py) against real Azurite with real SDK-made SAS URLs."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from shared.d365.errors import D365AuthError
from shared.d365.sas_blob import MiB, block_id, download_to, sas_version, upload_blob
from shared.d365.transport import D365Transport
from tests.support.d365 import FAST_RETRIES
from tests.support.stack import AzuriteInfo

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="module")
def service(azurite: AzuriteInfo) -> Iterator[BlobServiceClient]:
    client = BlobServiceClient.from_connection_string(azurite.connection_string)
    yield client
    client.close()


@pytest.fixture
def container(service: BlobServiceClient) -> str:
    name = f"dmf{uuid.uuid4().hex[:10]}"
    service.create_container(name)
    return name


@pytest.fixture
def transport() -> Iterator[D365Transport]:
    # the D365 base URL is never called: SAS requests are absolute and unauthenticated
    with D365Transport("http://d365.invalid", None, policy=FAST_RETRIES) as t:
        yield t


def sas_url(azurite: AzuriteInfo, container: str, blob: str, permission: str = "rcw") -> str:
    sas = generate_blob_sas(
        ACCOUNT,
        container,
        blob,
        account_key=KEY,
        permission=BlobSasPermissions.from_string(permission),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    return f"{azurite.blob_endpoint}/{container}/{blob}?{sas}"


def test_small_payload_goes_as_one_put_blob(azurite, service, container, transport) -> None:
    url = sas_url(azurite, container, "small.zip")
    assert sas_version(url)  # the SDK's SAS carries sv
    result = upload_blob(transport, url, b"PK\x03\x04 tiny package", content_type="application/zip")
    assert (result.blocks, result.bytes) == (0, 17)
    blob = service.get_blob_client(container, "small.zip")
    assert blob.download_blob().readall() == b"PK\x03\x04 tiny package"
    assert blob.get_blob_properties().content_settings.content_type == "application/zip"
    assert transport.stats.snapshot()["calls"] == 1


def test_twenty_megabytes_go_as_deterministic_blocks_and_download_back(
    azurite, service, container, transport
) -> None:
    payload = os.urandom(20 * MiB + 12345)
    url = sas_url(azurite, container, "big.zip")
    result = upload_blob(
        transport, url, io.BytesIO(payload), block_size=1 * MiB, max_single_put=1 * MiB, max_concurrency=3
    )
    assert result.bytes == len(payload)
    assert result.blocks == 21
    blob = service.get_blob_client(container, "big.zip")
    committed, uncommitted = blob.get_block_list("all")
    assert {b.size for b in committed[:-1]} == {MiB}  # the read-ahead is cut into whole blocks too
    # the SDK shows ids base64-decoded; on the wire they are block_id(i)
    assert [b.id for b in committed] == [f"block-{i:06d}" for i in range(21)]
    assert block_id(20) == base64.b64encode(b"block-000020").decode()
    assert not uncommitted

    sink = io.BytesIO()
    assert download_to(transport, url, sink, chunk_size=256 * 1024) == len(payload)
    assert hashlib.sha256(sink.getvalue()).digest() == hashlib.sha256(payload).digest()


def test_an_iterator_of_odd_chunks_of_unknown_length_is_regrouped_into_blocks(
    azurite, service, container, transport
) -> None:
    pieces = [os.urandom(n) for n in (700_000, 1, 1_500_000, 333_333, 2_000_000)]
    url = sas_url(azurite, container, "stream.bin")
    result = upload_blob(transport, url, iter(pieces), block_size=1 * MiB, max_single_put=512 * 1024)
    assert result.blocks == 5  # 4_533_334 bytes in 1 MiB blocks
    assert service.get_blob_client(container, "stream.bin").download_blob().readall() == b"".join(pieces)


def test_uploading_again_replaces_the_blob(azurite, service, container, transport) -> None:
    url = sas_url(azurite, container, "again.bin")
    upload_blob(transport, url, io.BytesIO(b"a" * (3 * MiB)), block_size=MiB, max_single_put=MiB)
    upload_blob(transport, url, io.BytesIO(b"b" * (2 * MiB)), block_size=MiB, max_single_put=MiB)
    data = service.get_blob_client(container, "again.bin").download_blob().readall()
    assert data == b"b" * (2 * MiB)


def test_a_refused_sas_raises_without_showing_the_signature(azurite, container, transport) -> None:
    url = sas_url(azurite, container, "readonly.bin", permission="r")
    signature = url.split("sig=")[1].split("&")[0]
    with pytest.raises(D365AuthError) as caught:
        upload_blob(transport, url, b"data")
    assert caught.value.status_code == 403
    assert signature not in str(caught.value)
    assert "sig=***" in str(caught.value)
