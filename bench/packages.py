"""Data packages and SAS transfers: building a package from a big CSV, and uploading it in blocks.

Measures (see docs/benchmarks.md for how to read them):

* ``packages.build_throughput`` — input MB/s of ``build_package`` (UTF-8 CSV → CSV-Unicode: decode, CRLF,
  UTF-16 LE, deflate at its default level, streamed into a write-only sink) ÷ MB/s of the bare minimum:
  ``zipfile`` deflating the already-encoded UTF-16 bytes at the same level. Target ≥ 0.6 (transcoding
  must stay cheap next to the compression every package needs anyway).
* ``packages.build_memory`` — peak memory traced while building ÷ a 32 MiB bound, whatever the file size.
* ``packages.sas_upload`` — MB/s of ``sas_blob.upload_blob`` (Put Block + Put Block List through the
  D365 transport, 4 MiB blocks, 2 in flight) ÷ MB/s of the Azure SDK's own ``upload_blob`` with the same
  block size and concurrency, both to the same Azurite. Target ≥ 0.8.
"""

from __future__ import annotations

import io
import tempfile
import time
import tracemalloc
import uuid
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from bench.common import Result, fmt_rate, rate
from localstack.processes import run_azurite
from shared.d365.sas_blob import MiB, upload_blob
from shared.d365.transport import D365Transport
from shared.packages.build import DEFAULT_COMPRESSLEVEL, EntityFile, build_package

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
MEMORY_BOUND_MIB = 32.0


class _Discard:
    def __init__(self) -> None:
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def _csv_block() -> bytes:
    rows = "".join(f"C{n:09d},Customer number {n},Zürich,{n * 3.25:.2f}\n" for n in range(20_000))
    return rows.encode()


class _GeneratedCsv(io.RawIOBase):
    """``size`` bytes of CSV made from one repeated block (never held whole)."""

    def __init__(self, size: int) -> None:
        self.block = _csv_block()
        self.left = size
        self.pending = memoryview(b"ACCOUNT,NAME,CITY,AMOUNT\n")

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self.pending and self.left > 0:
            self.pending = memoryview(self.block)[: self.left]
            self.left -= len(self.pending)
        count = min(len(target), len(self.pending))
        target[:count] = self.pending[:count]
        self.pending = self.pending[count:]
        return count


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _build(size: int) -> int:
    result = build_package(
        _Discard(),
        [
            EntityFile(
                "Customers V3", "customers.csv", io.BufferedReader(_GeneratedCsv(size), 1 << 20), size=size
            )
        ],
        definition_group="Bench",
    )
    return result.entities[0].input_bytes


def _baseline(size: int) -> None:
    encoded = b"\xff\xfe" + _csv_block().replace(b"\n", b"\r\n").decode().encode("utf-16-le")
    with (
        zipfile.ZipFile(
            _Discard(), "w", zipfile.ZIP_DEFLATED, compresslevel=DEFAULT_COMPRESSLEVEL
        ) as archive,  # type: ignore[call-overload]
        archive.open("customers.csv", "w", force_zip64=True) as out,
    ):
        written = 0
        while written < size:
            out.write(encoded)
            written += len(encoded) // 2  # input-equivalent bytes (UTF-16 doubles them)


def _build_results(size: int, log: Callable[[str], None]) -> list[Result]:
    log(f"packages: building from {size / MiB:.0f} MiB of CSV")
    ours = min(_timed(lambda: _build(size)) for _ in range(2))
    base = min(_timed(lambda: _baseline(size)) for _ in range(2))
    ours_rate, base_rate = rate(size / MiB, ours), rate(size / MiB, base)
    tracemalloc.start()
    try:
        _build(min(size, 64 * MiB))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    peak_mib = peak / MiB
    return [
        Result(
            "packages.build_throughput",
            "input MB/s ours ÷ bare zipfile deflate of pre-encoded UTF-16",
            fmt_rate(ours_rate, "MiB/s"),
            fmt_rate(base_rate, "MiB/s"),
            ours_rate / base_rate,
            0.6,
        ),
        Result(
            "packages.build_memory",
            f"peak traced memory ÷ {MEMORY_BOUND_MIB:g} MiB bound",
            f"{peak_mib:.1f} MiB",
            f"{MEMORY_BOUND_MIB:g} MiB",
            peak_mib / MEMORY_BOUND_MIB,
            1.0,
            higher_is_better=False,
        ),
    ]


def _sas(blob_endpoint: str, container: str, blob: str) -> str:
    sas = generate_blob_sas(
        ACCOUNT,
        container,
        blob,
        account_key=KEY,
        permission=BlobSasPermissions(read=True, create=True, write=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    return f"{blob_endpoint}/{container}/{blob}?{sas}"


def _upload_results(size: int, log: Callable[[str], None]) -> list[Result]:
    log(f"packages: uploading {size / MiB:.0f} MiB to Azurite")
    with run_azurite() as azurite, tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "package.bin"
        with path.open("wb") as out:
            chunk = uuid.uuid4().bytes * (MiB // 16)
            for _ in range(size // MiB):
                out.write(chunk)
        service = BlobServiceClient.from_connection_string(
            azurite.connection_string, max_block_size=4 * MiB, max_single_put_size=8 * MiB
        )
        service.create_container("bench")

        def ours() -> None:
            with D365Transport("http://d365.invalid", None) as transport, path.open("rb") as source:
                url = _sas(azurite.blob_endpoint, "bench", f"ours-{uuid.uuid4()}")
                upload_blob(transport, url, source, length=size, block_size=4 * MiB, max_concurrency=2)

        def sdk() -> None:
            with path.open("rb") as source:
                blob = service.get_blob_client("bench", f"sdk-{uuid.uuid4()}")
                blob.upload_blob(source, length=size, max_concurrency=2)

        ours_times: list[float] = []
        sdk_times: list[float] = []
        for _ in range(3):  # interleaved, best of three: Azurite shares the machine's two cores
            ours_times.append(_timed(ours))
            sdk_times.append(_timed(sdk))
        ours_s, sdk_s = min(ours_times), min(sdk_times)
        service.close()
    ours_rate, sdk_rate = rate(size / MiB, ours_s), rate(size / MiB, sdk_s)
    return [
        Result(
            "packages.sas_upload",
            "MB/s ours (transport, blocks) ÷ azure-storage-blob upload_blob",
            fmt_rate(ours_rate, "MiB/s"),
            fmt_rate(sdk_rate, "MiB/s"),
            ours_rate / sdk_rate,
            0.8,
        )
    ]


def run(quick: bool, log: Callable[[str], None] = print, smoke: bool = False) -> list[Result]:
    mib = 2 if smoke else 32 if quick else 256  # smoke (--smoke): it runs; the figures mean nothing
    build_size = upload_size = mib * MiB
    return [*_build_results(build_size, log), *_upload_results(upload_size, log)]


if __name__ == "__main__":
    for item in run(quick=True):
        print(item.name, item.ours, item.baseline, f"{item.ratio:.3f}", "PASS" if item.passed else "FAIL")
