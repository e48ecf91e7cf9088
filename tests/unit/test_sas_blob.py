"""SAS blob transfers (shared/d365/sas_blob.py) against a small local blob server over real HTTP.

The server stands in for Azure Blob storage only where Azurite cannot help: it drops connections mid-body,
ignores Range on demand and fails chosen requests, so resumption and retries can be observed. The happy
paths against real Azurite live in tests/integration/test_sas_blob_azurite.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.d365.errors import D365ConnectionError
from shared.d365.retry import RetryPolicy
from shared.d365.sas_blob import (
    MiB,
    block_id,
    download_to,
    max_block_size,
    sas_version,
    single_put_limit,
    upload_blob,
)
from shared.d365.transport import D365Transport
from tests.support.scripted_server import QuietHTTPServer

SIGNATURE = "s3cr3tSignatureValue%3D"


@dataclass
class BlobServer:
    """In-memory block blobs with failure knobs; every request is recorded."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    blocks: dict[str, dict[str, bytes]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_block_once: set[str] = field(default_factory=set)  # block ids answered 503 the first time
    drop_after: list[int] = field(default_factory=list)  # per GET, bytes sent before the connection drops
    honour_range: bool = True
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, blob: str = "c/package.zip", sv: str = "2019-02-02") -> str:
        return f"http://127.0.0.1:{self.port}/{blob}?sv={sv}&sr=b&sp=rcw&sig={SIGNATURE}"


def make_handler(server: BlobServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _record(self, body: bytes) -> dict[str, Any]:
            parts = urlsplit(self.path)
            entry = {
                "method": self.command,
                "path": parts.path,
                "query": {k: v[0] for k, v in parse_qs(parts.query).items()},
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
            with server.lock:
                server.requests.append(entry)
            return entry

        def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            entry = self._record(body)
            query, path = entry["query"], entry["path"]
            if "content-md5" in entry["headers"]:
                assert (
                    entry["headers"]["content-md5"] == base64.b64encode(hashlib.md5(body).digest()).decode()
                )
            if query.get("comp") == "block":
                ident = query["blockid"]
                with server.lock:
                    if ident in server.fail_block_once:
                        server.fail_block_once.discard(ident)
                        self._answer(503, b"ServerBusy")
                        return
                    server.blocks.setdefault(path, {})[ident] = body
            elif query.get("comp") == "blocklist":
                ids = [e.text or "" for e in ET.fromstring(body)]
                with server.lock:
                    staged = server.blocks.pop(path, {})
                    server.blobs[path] = b"".join(staged[i] for i in ids)
            else:
                assert entry["headers"]["x-ms-blob-type"] == "BlockBlob"
                with server.lock:
                    server.blobs[path] = body
            self._answer(201, headers={"ETag": '"0x1"'})

        def do_GET(self) -> None:
            entry = self._record(b"")
            data = server.blobs[entry["path"]]
            start = 0
            status = 200
            headers = {"ETag": '"0xETAG"', "Accept-Ranges": "bytes"}
            wanted = entry["headers"].get("range")
            if wanted and server.honour_range:
                start = int(wanted.split("=")[1].rstrip("-"))
                if start >= len(data):
                    self._answer(416)
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            with server.lock:
                drop = server.drop_after.pop(0) if server.drop_after else None
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if drop is None:
                self.wfile.write(body)
                return
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True

    return Handler


@pytest.fixture
def blob_server() -> Iterator[BlobServer]:
    state = BlobServer()
    httpd = QuietHTTPServer(("127.0.0.1", 0), make_handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def transport() -> Iterator[D365Transport]:
    policy = RetryPolicy(backoff_base=0.01, backoff_max=0.02, total_timeout=20, max_attempts=4)
    with D365Transport("https://contoso.operations.dynamics.com", None, policy=policy) as t:
        yield t


def test_sas_version_decides_the_limits() -> None:
    assert sas_version("https://a.blob.core.windows.net/dmf/x?sv=2014-02-14&sig=abc") == "2014-02-14"
    assert sas_version("https://a/dmf/x?sig=abc") is None
    assert sas_version("https://a/dmf/x?sv=yesterday") is None
    assert (single_put_limit("2014-02-14"), max_block_size("2014-02-14")) == (64 * MiB, 4 * MiB)
    assert (single_put_limit("2016-05-31"), max_block_size("2016-05-31")) == (256 * MiB, 100 * MiB)
    assert (single_put_limit("2019-12-12"), max_block_size("2025-11-05")) == (5000 * MiB, 4000 * MiB)
    assert (single_put_limit(None), max_block_size(None)) == (64 * MiB, 4 * MiB)


def test_block_ids_are_deterministic_fixed_length_base64() -> None:
    ids = [block_id(i) for i in (0, 1, 49_999)]
    assert ids[0] == block_id(0)
    assert len(set(ids)) == 3
    assert {len(i) for i in ids} == {len(ids[0])}
    assert base64.b64decode(ids[2]) == b"block-049999"


def test_small_payload_is_one_put_blob_without_any_token(blob_server: BlobServer, transport) -> None:
    url = blob_server.url(sv="2014-02-14")
    result = upload_blob(transport, url, b"PK small", content_type="application/zip")
    assert (result.bytes, result.blocks) == (8, 0)
    (request,) = blob_server.requests
    assert request["query"] == {"sv": "2014-02-14", "sr": "b", "sp": "rcw", "sig": "s3cr3tSignatureValue="}
    assert request["headers"]["x-ms-version"] == "2014-02-14"
    assert request["headers"]["content-type"] == "application/zip"
    assert "authorization" not in request["headers"]
    assert blob_server.blobs["/c/package.zip"] == b"PK small"


def test_known_length_above_the_single_put_size_goes_in_blocks(blob_server: BlobServer, transport) -> None:
    payload = os.urandom(5 * MiB + 3)
    chunks = (payload[i : i + 777_777] for i in range(0, len(payload), 777_777))
    result = upload_blob(
        transport, blob_server.url(), chunks, length=len(payload), block_size=MiB, max_single_put=MiB
    )
    assert (result.bytes, result.blocks) == (len(payload), 6)
    puts = [r for r in blob_server.requests if r["query"].get("comp") == "block"]
    assert sorted(r["query"]["blockid"] for r in puts) == sorted(block_id(i) for i in range(6))
    assert all(len(r["body"]) == MiB for r in puts if r["query"]["blockid"] != block_id(5))
    commit = blob_server.requests[-1]
    assert commit["query"]["comp"] == "blocklist"
    assert commit["headers"]["x-ms-blob-content-type"] == "application/octet-stream"
    assert [e.text for e in ET.fromstring(commit["body"])] == [block_id(i) for i in range(6)]
    assert blob_server.blobs["/c/package.zip"] == payload


def test_read_ahead_is_cut_into_exact_blocks_and_length_caps_the_source(
    blob_server: BlobServer, transport
) -> None:
    payload = os.urandom(3 * MiB + 10)
    result = upload_blob(
        transport,
        blob_server.url(),
        io.BytesIO(payload + b"not part of it"),
        length=len(payload),
        block_size=MiB // 2,
        max_single_put=3 * MiB + 100,
    )
    assert (result.bytes, result.blocks) == (len(payload), 0)  # one Put Blob, cut at `length`
    assert blob_server.blobs["/c/package.zip"] == payload
    result = upload_blob(
        transport, blob_server.url(), io.BytesIO(payload), block_size=MiB // 2, max_single_put=MiB
    )
    sizes = [len(r["body"]) for r in blob_server.requests if r["query"].get("comp") == "block"]
    assert sorted(sizes) == [10] + [MiB // 2] * 6
    assert blob_server.blobs["/c/package.zip"] == payload


def test_an_old_sas_version_caps_the_block_size(blob_server: BlobServer, transport) -> None:
    with pytest.raises(ValueError, match="2014-02-14"):
        upload_blob(
            transport, blob_server.url(sv="2014-02-14"), b"x" * 100, block_size=8 * MiB, max_single_put=10
        )


def test_a_failed_block_put_is_retried_by_the_shared_policy(blob_server: BlobServer, transport) -> None:
    payload = os.urandom(3 * MiB)
    blob_server.fail_block_once.add(block_id(1))
    upload_blob(transport, blob_server.url(), payload, block_size=MiB, max_single_put=0, max_concurrency=2)
    assert blob_server.blobs["/c/package.zip"] == payload
    assert transport.stats.snapshot()["retries"] == {"status_503": 1}


def test_download_resumes_with_range_and_if_match_after_a_drop(blob_server: BlobServer, transport) -> None:
    payload = os.urandom(3 * MiB)
    blob_server.blobs["/c/package.zip"] = payload
    blob_server.drop_after = [100_000, 1_500_000]
    sink = _Sink()
    slept: list[float] = []
    chunk = 64 * 1024  # progress is kept per complete chunk: a partial chunk is read again
    assert download_to(transport, blob_server.url(), sink, chunk_size=chunk, sleep=slept.append) == len(
        payload
    )
    assert sink.data == payload
    gets = [r for r in blob_server.requests if r["method"] == "GET"]
    first = 100_000 // chunk * chunk
    second = first + 1_500_000 // chunk * chunk
    assert [g["headers"].get("range") for g in gets] == [None, f"bytes={first}-", f"bytes={second}-"]
    assert [g["headers"].get("if-match") for g in gets] == [None, '"0xETAG"', '"0xETAG"']
    assert all("authorization" not in g["headers"] for g in gets)
    assert len(slept) == 2
    assert transport.stats.snapshot()["retries"]["download_resume"] == 2


def test_download_from_a_server_that_ignores_range_skips_what_it_has(
    blob_server: BlobServer, transport
) -> None:
    payload = os.urandom(2 * MiB + 5)
    blob_server.blobs["/c/package.zip"] = payload
    blob_server.honour_range = False
    blob_server.drop_after = [1_000_001]
    sink = _Sink()
    assert download_to(transport, blob_server.url(), sink, chunk_size=64 * 1024, sleep=lambda s: None) == len(
        payload
    )
    assert sink.data == payload


def test_a_download_that_keeps_breaking_gives_up_without_leaking_the_signature(
    blob_server: BlobServer, transport
) -> None:
    blob_server.blobs["/c/package.zip"] = b"x" * 100_000
    blob_server.honour_range = False
    blob_server.drop_after = [10] * 20
    with pytest.raises(D365ConnectionError) as caught:
        download_to(transport, blob_server.url(), _Sink(), sleep=lambda s: None)
    assert "attempts_exhausted" in str(caught.value)
    assert SIGNATURE not in str(caught.value)
    assert "s3cr3t" not in repr(caught.value.__cause__)


class _Sink:
    """Write-only sink (no seek): resuming must not depend on rewinding it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)
