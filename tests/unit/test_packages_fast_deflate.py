"""The package builder's deflate engines: ISA-L (``isal``) for levels 1-3, the stdlib zlib otherwise and
whenever ``isal`` cannot be imported; both write standard DEFLATE that ``zipfile`` and the validator read."""

from __future__ import annotations

import io
import random
import subprocess
import sys
import textwrap
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.packages.build import EntityFile, build_package
from shared.packages.parallel_deflate import (
    ISAL,
    ZLIB,
    DeflateEngine,
    ParallelDeflater,
    deflate_engine,
    fast_deflate_available,
)
from shared.packages.validate import validate_package

ROOT = Path(__file__).resolve().parents[2]
needs_isal = pytest.mark.skipif(ISAL is None, reason="isal (requirements.txt) is not installed")


def sample(rows: int = 40_000, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    return b"".join(
        f"G{rng.randrange(10**6):07d},Group {rng.randrange(999)} {'x' * rng.randrange(30)}\r\n".encode()
        for _ in range(rows)
    )


def deflate_in_pieces(engine: DeflateEngine, data: bytes, level: int, pool_size: int) -> tuple[bytes, int]:
    out: list[bytes] = []
    pool = ThreadPoolExecutor(pool_size) if pool_size else None
    deflater = ParallelDeflater(
        out.append, level, pool, chunk_size=64 * 1024, depth=pool_size + 1, engine=engine
    )
    for start in range(0, len(data), 10_000):
        deflater.write(data[start : start + 10_000])
    deflater.finish()
    if pool:
        pool.shutdown()
    assert len(out) > 10  # really cut into pieces
    assert deflater.crc == zlib.crc32(data)
    assert (deflater.size, deflater.compressed_size) == (len(data), sum(map(len, out)))
    return b"".join(out), len(out)


def test_levels_1_to_3_use_isal_when_installed_and_the_rest_zlib() -> None:
    assert fast_deflate_available() is (ISAL is not None)
    for level in (0, 4, 6, 9):
        assert deflate_engine(level) is ZLIB
    for level in (1, 2, 3):
        assert deflate_engine(level, fast=False) is ZLIB
        assert deflate_engine(level) is (ISAL or ZLIB)


@needs_isal
@pytest.mark.parametrize(("level", "pool_size"), [(1, 0), (1, 2), (2, 2), (3, 3)])
def test_isal_pieces_make_one_standard_deflate_stream(level: int, pool_size: int) -> None:
    assert ISAL is not None
    data = sample()
    compressed, _ = deflate_in_pieces(ISAL, data, level, pool_size)
    assert zlib.decompress(compressed, -15) == data  # the stdlib inflater reads ISA-L's output
    # primed with the previous piece's window: about the size of one unbroken ISA-L stream
    from isal import isal_zlib

    assert len(compressed) < len(isal_zlib.compress(data, level, -15)) * 1.05


@needs_isal
def test_isal_dictionary_priming_reaches_back_across_pieces() -> None:
    assert ISAL is not None
    block = sample(rows=1_000, seed=3)  # ~40 KB, repeated: every piece after the first matches its window
    data = block * 8
    primed = ISAL.deflate(data[len(block) :], data[: len(block)][-32 * 1024 :], 1, True)
    alone = ISAL.deflate(data[len(block) :], b"", 1, True)
    assert len(primed) < len(alone)
    inflater = zlib.decompressobj(-15, zdict=data[: len(block)][-32 * 1024 :])
    assert inflater.decompress(primed) == data[len(block) :]


@pytest.mark.parametrize("fast", [True, False])
def test_packages_from_either_engine_read_back_identically_with_zipfile(fast: bool) -> None:
    if fast and ISAL is None:
        pytest.skip("isal is not installed")
    csv = b"CUSTOMERGROUPID,DESCRIPTION\n" + sample(rows=60_000).replace(b"\r\n", b"\n")  # ~2.6 MB
    sink = io.BytesIO()
    built = build_package(
        sink,
        [EntityFile("Customer groups", "groups.csv", io.BytesIO(csv))],
        definition_group="G",
        fast_deflate=fast,
    )
    assert built.deflate == ("isal" if fast else "zlib")
    archive = zipfile.ZipFile(io.BytesIO(sink.getvalue()))
    assert archive.testzip() is None
    data = archive.read("groups.csv")
    assert len(data) > 4 * 1024 * 1024  # UTF-16: several 2 MiB deflate pieces
    assert data == b"\xff\xfe" + csv.decode().replace("\n", "\r\n").encode("utf-16-le")
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in archive.infolist())
    sink.seek(0)
    assert validate_package(sink).manifest.entities[0].entity_name == "Customer groups"


def test_without_isal_the_builder_falls_back_to_zlib() -> None:
    script = textwrap.dedent(
        """
        import io, sys, zipfile
        sys.modules["isal"] = None  # import isal now raises ImportError, as where no wheel exists
        from shared.packages.build import EntityFile, build_package
        from shared.packages.parallel_deflate import ISAL, deflate_engine, fast_deflate_available
        assert ISAL is None and not fast_deflate_available() and deflate_engine(1).name == "zlib"
        sink = io.BytesIO()
        csv = b"CODE,NAME\\n" + b"".join(b"C%06d,name %d\\n" % (n, n) for n in range(200_000))
        files = [EntityFile("Currencies", "c.csv", io.BytesIO(csv))]
        built = build_package(sink, files, definition_group="G")
        data = zipfile.ZipFile(io.BytesIO(sink.getvalue())).read("c.csv")
        assert data == b"\\xff\\xfe" + csv.decode().replace("\\n", "\\r\\n").encode("utf-16-le")
        print(built.deflate)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "zlib"
