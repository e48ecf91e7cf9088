"""File import of a 1 GiB raw CSV: packaged and uploaded to D365's SAS URL, wall time ÷ a plain
``upload_blob`` of the same file (target ≤ 1.5), and the peak RSS of the importing process (< 150 MiB).

Setup: Azurite (on disk) and the emulator (its DMF family stores packages in that Azurite) on free loopback
ports; a CSV of ``--mb`` MiB (default 1024; ``BENCH_IMPORTS_MB`` overrides it under ``python -m bench``)
generated once on local disk, with varied rows so it compresses like real data (~4-5x).

Rounds alternate, after one unmeasured warm-up of each, and the medians are compared:

- **baseline**: ``BlobClient.upload_blob(file)`` of the local CSV into the inbound container with the SDK's
  defaults (this is also the "drop": the file the next run imports);
- **ours**: a fresh child process (``--child``) builds the app context and fetches a token (setup, not
  timed), then times the intake's packaging stage for that blob exactly as ``import_blob`` runs it
  (``preparing.prepare``): ``GetAzureWriteUrl``, then one streamed read of the inbound blob (pinned to its
  ETag, SHA-256 on the way), ``build_package`` turning it into a CSV-Unicode package (UTF-8 → UTF-16 LE,
  CRLF, generated Manifest.xml/PackageHeader.xml, deflate level ``IMPORT_COMPRESSION_LEVEL`` with ISA-L
  when ``isal`` is installed) on one thread while the block upload to the SAS URL runs on others. The
  emulator's processing of the package (``ImportFromPackage``) is not part of it. The child's ``VmHWM``
  after the run is its peak RSS.

Before each timed side the page cache is flushed (``os.sync``), so neither pays for the other's writes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Result, app_env, median, peak_rss_mib
from localstack.processes import ROOT, EmulatorInfo, run_azurite, run_emulator

MiB = 1024 * 1024
FULL_MIB = 1024
QUICK_MIB = 256
SMOKE_MIB = 2  # python -m bench --smoke (one round): it runs; the figures mean nothing
ROUNDS = 2
RSS_BOUND_MIB = 150.0
RATIO_TARGET = 1.5
ENTITY = {"entity": "Customer groups", "file_pattern": "*.csv"}
ROUTE: dict[str, Any] = {
    "name": "bench",
    "target": "package",
    "definition_group": "Bench-Import",
    "overwrite": True,
    "legal_entity": "usmf",
    "entities": [ENTITY],
}
BENCH_ENV = "BENCH_IMPORTS"
BLOB_NAME = "bench/customer groups.csv"


def write_csv(path: Path, size: int) -> int:
    """A CSV of about ``size`` bytes (UTF-8), written in 4 MiB pieces; returns the exact size."""
    written = 0
    with path.open("wb") as out:
        header = b"CustomerGroupId,Description,PaymentTermId,TaxGroupId,CreditLimit,Created\n"
        out.write(header)
        written += len(header)
        row = 0
        while written < size:
            lines = []
            for n in range(row, row + 40_000):
                lines.append(
                    f"G{n:09d},Customer group {n} for region {n % 97},Net{n % 60:02d},"
                    f"TX{(n * 7919) % 1000:03d},{(n * 104729) % 1000003}.{n % 100:02d},"
                    f"2024-{n % 12 + 1:02d}-{n % 28 + 1:02d}\n"
                )
            piece = "".join(lines).encode()
            out.write(piece)
            written += len(piece)
            row += 40_000
    return written


def settings_env(emu: EmulatorInfo, connection_string: str, source_format: str) -> dict[str, str]:
    route = {**ROUTE, "entities": [{**ENTITY, "source_format": source_format}]}
    return app_env(
        emu,
        AzureWebJobsStorage=connection_string,
        IMPORT_ROUTES=json.dumps([route]),
        IMPORT_INBOUND_CONTAINER="bench-inbound",
        IMPORT_STATE_CONTAINER="bench-state",
        PACKAGE_MAX_ENTRY_BYTES=str(64 * 1024 * MiB),
        IMPORT_COMPRESSION_LEVEL=os.environ.get("BENCH_IMPORTS_LEVEL", "1"),
    )


def child_main() -> int:
    """``--child``: time the packaging + SAS upload of the inbound blob; print one JSON line."""
    from shared.context import AppContext
    from shared.d365.dmf import DmfClient
    from shared.packages.parallel_deflate import deflate_engine
    from shared.pipelines.imports import ImportSettings, layout
    from shared.pipelines.imports.ledger import InputRef
    from shared.pipelines.imports.preparing import prepare
    from shared.pipelines.imports.routing import resolve
    from shared.settings import Settings

    env = json.loads(os.environ[BENCH_ENV])
    context = AppContext.from_settings(Settings.from_env(env))
    try:
        settings = context.settings.section(ImportSettings)
        dmf = DmfClient(context.odata, context.transport)
        context.tokens.get_token()  # token acquisition (MSAL, TLS) is setup, not packaging
        blob = context.store.blob(settings.inbound_container, BLOB_NAME)
        props = blob.get_blob_properties()
        etag = str(props.etag)
        drop = InputRef(
            settings.inbound_container,
            BLOB_NAME,
            etag,
            layout.drop_id(settings.inbound_container, BLOB_NAME, etag),
            int(props.size),
        )
        match = resolve(settings.routes, BLOB_NAME)
        setup = peak_rss_mib()
        started, cpu = time.perf_counter(), time.process_time()
        prepared = prepare(context, settings, match, drop, dmf)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        peak = peak_rss_mib()
        stats = context.transport.stats.snapshot()
    finally:
        context.close()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu,
                "setup_mib": setup,
                "peak_mib": peak,
                "input_bytes": prepared.size,
                "sha256": prepared.sha256,
                "entities": list(prepared.entities),
                "uploaded": prepared.uploaded_url is not None,
                "retries": stats.get("retries"),
                "deflate": deflate_engine(settings.compression_level).name,
            }
        )
    )
    return 0


def builder_main(path: str, source_format: str, level: int) -> int:
    """``--builder``: ``build_package`` alone, local file to a null sink (where the CPU goes)."""
    from shared.packages.build import EntityFile, build_package

    class Null:
        def write(self, data: bytes) -> int:
            return len(data)

        def flush(self) -> None:
            return None

    started, cpu = time.perf_counter(), time.process_time()
    with open(path, "rb") as data:
        files = [EntityFile("Customer groups", "customer groups.csv", data, source_format=source_format)]
        built = build_package(Null(), files, definition_group="Bench", compresslevel=level)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        json.dumps(
            {"seconds": seconds, "cpu_seconds": cpu, "zip_bytes": built.zip_bytes, "deflate": built.deflate}
        )
    )
    return 0


def _child(env: dict[str, str], *args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.imports_1gb", "--child", *args]
    done = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, BENCH_ENV: json.dumps(env)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child failed:\n{done.stderr[-4000:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def _baseline(connection_string: str, container: str, path: Path) -> float:
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(connection_string) as service:
        client = service.get_container_client(container)
        if not client.exists():
            client.create_container()
        blob = client.get_blob_client(BLOB_NAME)
        started = time.perf_counter()
        with path.open("rb") as data:
            blob.upload_blob(data, overwrite=True)
        return time.perf_counter() - started


def run(
    quick: bool = False,
    log: Callable[[str], None] = print,
    mb: int | None = None,
    source_format: str | None = None,
    smoke: bool = False,
) -> list[Result]:
    mb = mb or int(
        os.environ.get("BENCH_IMPORTS_MB") or (SMOKE_MIB if smoke else QUICK_MIB if quick else FULL_MIB)
    )
    rounds = 1 if smoke else ROUNDS
    source_format = source_format or os.environ.get("BENCH_IMPORTS_FORMAT") or "CSV-Unicode"
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as work:
        root = Path(work)
        started = time.perf_counter()
        size = write_csv(root / "input.csv", mb * MiB)
        log(f"  generated a {size / MiB:,.0f} MiB CSV in {time.perf_counter() - started:.1f}s")
        (root / "azurite").mkdir()
        (root / "emulator").mkdir()
        with (
            run_azurite(root / "azurite") as azurite,
            run_emulator(
                root / "emulator", "--log-level", "warning", blob_connection_string=azurite.connection_string
            ) as emu,
        ):
            env = settings_env(emu, azurite.connection_string, source_format)
            inbound = env["IMPORT_INBOUND_CONTAINER"]
            base: list[float] = []
            ours: list[dict[str, Any]] = []
            for round_no in range(rounds + 1):
                # each side starts with the other's writes on disk, not in the page cache being flushed
                os.sync()
                seconds = _baseline(azurite.connection_string, inbound, root / "input.csv")
                os.sync()
                run_info = _child(env)
                label = "warm-up" if round_no == 0 else f"round {round_no}"
                log(
                    f"  {label:8} baseline upload_blob {seconds:.1f}s ({size / MiB / seconds:,.0f} MiB/s); "
                    f"ours {run_info['seconds']:.1f}s ({size / MiB / run_info['seconds']:,.0f} MiB/s, "
                    f"CPU {run_info['cpu_seconds']:.1f}s), "
                    f"peak RSS {run_info['peak_mib']:.0f} MiB (setup {run_info['setup_mib']:.0f})"
                )
                if run_info["input_bytes"] != size or not run_info["uploaded"]:
                    raise RuntimeError(f"the import read {run_info['input_bytes']} of {size} bytes")
                if round_no:
                    base.append(seconds)
                    ours.append(run_info)
            blobs = emu.admin("GET", "dmf/blobs")
        level = env["IMPORT_COMPRESSION_LEVEL"]
        builder = _child({}, "--builder", str(root / "input.csv"), source_format, level)
        log(
            f"  build_package alone (local file, null sink): {builder['seconds']:.1f}s, "
            f"CPU {builder['cpu_seconds']:.1f}s"
        )
    ours_median = median([o["seconds"] for o in ours])
    base_median = median(base)
    peak = max(o["peak_mib"] for o in ours)
    package_sizes = [b.get("size") for b in (blobs.get("blobs", []) if isinstance(blobs, dict) else blobs)]
    return [
        Result(
            name="imports_1gb.wall_time",
            measure=(
                f"packaging ({source_format}) + SAS upload of a {size / MiB:,.0f} MiB CSV ÷ plain "
                f"upload_blob (median of {rounds})"
            ),
            ours=f"{ours_median:.1f} s",
            baseline=f"{base_median:.1f} s",
            ratio=ours_median / base_median,
            target=RATIO_TARGET,
            higher_is_better=False,
            details=[
                "baseline runs (s): " + ", ".join(f"{s:.1f}" for s in base),
                "our runs (s):      " + ", ".join(f"{o['seconds']:.1f}" for o in ours),
                "our CPU (s):       "
                + ", ".join(f"{o['cpu_seconds']:.1f}" for o in ours)
                + f"; build_package alone on the local file: CPU {builder['cpu_seconds']:.1f}s "
                f"(wall {builder['seconds']:.1f}s)",
                f"packages in D365's dmf container (bytes): {package_sizes}",
                f"transport retries: {ours[-1]['retries'] or 'none'}",
                f"deflate engine: {ours[-1]['deflate']} (level {level})",
            ],
        ),
        Result(
            name="imports_1gb.peak_rss",
            measure="peak RSS of the importing process (fresh child), MiB ÷ the 150 MiB bound",
            ours=f"{peak:.0f} MiB",
            baseline=f"{RSS_BOUND_MIB:.0f} MiB bound",
            ratio=peak / RSS_BOUND_MIB,
            target=1.0,
            higher_is_better=False,
            details=[f"setup level (imports, context, token): {ours[-1]['setup_mib']:.0f} MiB"],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.imports_1gb", description=__doc__)
    parser.add_argument("--mb", type=int, default=None, help=f"CSV size in MiB (default {FULL_MIB})")
    parser.add_argument("--quick", action="store_true", help=f"smoke run ({QUICK_MIB} MiB)")
    parser.add_argument("--format", default=None, help="source format of the route (default CSV-Unicode)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--builder", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child and args.builder:
        path, source_format, level = args.builder
        return builder_main(path, source_format, int(level))
    if args.child:
        return child_main()
    for result in run(args.quick, mb=args.mb, source_format=args.format):
        print(json.dumps(result.to_json(), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
