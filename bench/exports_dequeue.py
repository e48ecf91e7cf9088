"""Recurring export dequeue of a 1 GiB package: wall time ÷ a plain streamed copy of the same bytes from the
emulator to Azurite (target ≤ 1.2), and the peak RSS of the dequeue (target < 150 MiB).

Setup: Azurite (on disk) and the emulator (its connector family) on free loopback ports; one package of
random bytes (incompressible, so nothing is cheaper than it should be) is queued on the emulator's export
activity for every measured run. The emulator builds its packages from entity data, so this benchmark
starts it through a thin wrapper (``--serve-emulator``) that adds one admin route,
``POST /_emulator/bench/queue-export``, queueing a file as an export message (the connector model's
``add_export``); everything else is the emulator as ``python -m emulator`` runs it.

Each run is a fresh child process (``--child``), alternating baseline and ours, after one unmeasured
warm-up of each; the medians are compared. Both children build the app context and fetch a token first
(setup, not timed), then:

- **baseline**: dequeue (untimed), then timed: ``requests`` GET of the DownloadLocation with the bearer
  token, ``stream=True``, piped into ``BlobClient.upload_blob(response.iter_content(4 MiB))`` (the SDK's
  chunked upload of an iterator); then the ack (untimed);
- **ours**: timed: ``dequeue_exports`` for the activity: lease, dequeue, state record, download into
  staged blocks with SHA-256, conditional commit, ack, status records, and the final 204 dequeue.

Peak RSS is the child's ``VmHWM`` after the run; the setup level (after imports, context, token) is shown.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import Result, app_env, median, peak_rss_mib
from localstack.processes import READY_PREFIX, ROOT, AzuriteInfo, EmulatorInfo, free_port, run_azurite

MiB = 1024 * 1024
FULL_MIB = 1024
QUICK_MIB = 256
SMOKE_MIB = 1  # python -m bench --smoke (one round): it runs; the figures mean nothing
ROUNDS = 3
QUICK_ROUNDS = 2
RSS_BOUND_MIB = 150.0
ACTIVITY_ID = "0a1b2c3d-d365-4e11-8f00-00000000d101"  # the emulator's seeded export job
BENCH_ENV = "BENCH_EXPORTS"


# ------------------------------------------------------------------------------------------ emulator


def serve_emulator(argv: list[str]) -> int:
    """``--serve-emulator``: ``python -m emulator`` plus ``POST /_emulator/bench/queue-export``."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    import emulator.__main__ as entry

    original: Callable[[Any], Any] = entry.create_app  # type: ignore[attr-defined]

    def create_app(state: Any) -> Any:
        app = original(state)

        async def queue_export(request: Request) -> JSONResponse:
            body = await request.json()
            activity = state.connector.model.activity(body["activity_id"])
            model = state.connector.model
            message = await run_in_threadpool(
                model.add_export, activity, Path(body["path"]), execution_id=None
            )
            return JSONResponse({"message_id": message.message_id, "size": message.size})

        route = Route("/_emulator/bench/queue-export", queue_export, methods=["POST"])
        app.app.router.routes.insert(0, route)  # the Starlette app behind the gate (admin: no auth)
        return app

    entry.create_app = create_app  # type: ignore[attr-defined]
    return int(entry.main(argv))


@contextmanager
def bench_emulator(data_dir: Path, azurite: AzuriteInfo) -> Iterator[EmulatorInfo]:
    """The wrapped emulator as a child process, like ``localstack.processes.run_emulator``."""
    cmd = [
        sys.executable, "-m", "bench.exports_dequeue", "--serve-emulator", "--host", "127.0.0.1",
        "--port", str(free_port()), "--tls-port", str(free_port()), "--data-dir", str(data_dir),
        "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "EMULATOR_BLOB_CONNECTION_STRING": azurite.connection_string}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    lines: list[str] = []
    info: dict[str, Any] | None = None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(READY_PREFIX):
            info = json.loads(line[len(READY_PREFIX) :])
            break
    if info is None:
        proc.kill()
        raise RuntimeError("emulator did not start:\n" + "".join(lines[-40:]))
    threading.Thread(target=lambda: [None for _ in proc.stdout or []], daemon=True).start()
    try:
        yield EmulatorInfo(info, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def queue_package(emu: EmulatorInfo, source: Path) -> str:
    """Queue a hard link of ``source`` (the emulator moves the file it is given) as one export message."""
    import requests

    link = source.with_name(f"queued-{uuid.uuid4().hex}.zip")
    os.link(source, link)
    answer = requests.post(
        f"{emu.base_url}/_emulator/bench/queue-export",
        json={"activity_id": ACTIVITY_ID, "path": str(link)},
        timeout=60,
    )
    answer.raise_for_status()
    return str(answer.json()["message_id"])


def make_package(path: Path, size: int) -> None:
    with path.open("wb") as out:
        for _ in range(size // MiB):
            out.write(os.urandom(MiB))


# ------------------------------------------------------------------------------------------ children


def child_main(impl: str) -> int:
    """``--child``: one measured run in this fresh process; prints one JSON line."""
    from shared.context import AppContext
    from shared.d365.connector import ConnectorClient
    from shared.pipelines.exports import ExportSettings, RunBudget, dequeue_exports
    from shared.settings import Settings

    spec = json.loads(os.environ[BENCH_ENV])
    emu = EmulatorInfo(spec["emulator"])
    suffix = uuid.uuid4().hex[:10]
    env = app_env(
        emu,
        AzureWebJobsStorage=spec["storage"],
        EXPORTS_CONTAINER=f"bench-{suffix}",
        EXPORTS_STATE_CONTAINER=f"bench-state-{suffix}",
        EXPORT_ACTIVITIES=json.dumps([{"name": "bench", "activity_id": ACTIVITY_ID}]),
    )
    context = AppContext.from_settings(Settings.from_env(env))
    try:
        token = context.tokens.get_token()
        context.store.container(f"bench-{suffix}")
        context.store.container(f"bench-state-{suffix}")
        setup = peak_rss_mib()
        cpu = time.process_time()
        if impl == "ours":
            activity = context.settings.section(ExportSettings).activities[0]
            started = time.perf_counter()
            report = dequeue_exports(context, activity, budget=RunBudget(max_seconds=3600))
            seconds = time.perf_counter() - started
            if [(i.action, i.acked) for i in report.items] != [("stored", True)]:
                raise RuntimeError(f"unexpected run: {report.summary()}")
            size = report.items[0].bytes
        else:
            seconds, size = _baseline(context, ConnectorClient(context.transport), token, f"bench-{suffix}")
        cpu = time.process_time() - cpu
        peak = peak_rss_mib()
    finally:
        context.close()
    facts = {
        "impl": impl,
        "seconds": seconds,
        "cpu": cpu,
        "bytes": size,
        "setup_mib": setup,
        "peak_mib": peak,
    }
    print(json.dumps(facts))
    return 0


def _baseline(context: Any, client: Any, token: str, container: str) -> tuple[float, int]:
    import requests

    message = client.dequeue(ACTIVITY_ID)
    if message is None:
        raise RuntimeError("nothing queued for the baseline")
    blob = context.blob_service.get_blob_client(container, f"{message.correlation_id}.zip")
    started = time.perf_counter()
    with requests.get(
        message.download_location,
        headers={"Authorization": f"Bearer {token}"},
        stream=True,
        timeout=(10, 120),
    ) as response:
        response.raise_for_status()
        blob.upload_blob(response.iter_content(4 * MiB), overwrite=True)
    seconds = time.perf_counter() - started
    client.ack(ACTIVITY_ID, message)
    return seconds, int(blob.get_blob_properties().size)


def _child(spec: dict[str, Any], impl: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.exports_dequeue", "--child", "--impl", impl]
    env = {**os.environ, BENCH_ENV: json.dumps(spec)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {impl} failed:\n{done.stderr[-4000:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


# ------------------------------------------------------------------------------------------ benchmark


def run(
    size_mib: int | None = None,
    quick: bool = False,
    log: Callable[[str], None] = print,
    smoke: bool = False,
) -> list[Result]:
    size = (size_mib or (SMOKE_MIB if smoke else QUICK_MIB if quick else FULL_MIB)) * MiB
    rounds = 1 if smoke else QUICK_ROUNDS if quick else ROUNDS
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "ours": []}
    with (
        tempfile.TemporaryDirectory(prefix="bench-exports-") as temp,
        run_azurite(Path(temp) / "azurite") as azurite,
        bench_emulator(Path(temp) / "emulator", azurite) as emu,
    ):
        source = Path(temp) / "emulator" / "bench-package.zip"
        started = time.perf_counter()
        make_package(source, size)
        log(f"  package: {size / MiB:,.0f} MiB of random bytes in {time.perf_counter() - started:.1f}s")
        spec = {"emulator": emu.raw, "storage": azurite.connection_string}
        for round_no in range(rounds + 1):  # round 0 is the unmeasured warm-up
            for impl in ("baseline", "ours"):
                queue_package(emu, source)
                result = _child(spec, impl)
                if result["bytes"] != size:
                    raise RuntimeError(f"{impl} stored {result['bytes']} bytes, expected {size}")
                label = "warm-up" if round_no == 0 else f"round {round_no}"
                log(
                    f"  {label:8} {impl:8} {result['seconds']:6.2f}s "
                    f"({size / MiB / result['seconds']:,.0f} MiB/s), peak RSS {result['peak_mib']:.1f} MiB "
                    f"(setup {result['setup_mib']:.1f})"
                )
                if round_no:
                    runs[impl].append(result)
    base = median([r["seconds"] for r in runs["baseline"]])
    ours = median([r["seconds"] for r in runs["ours"]])
    peak = max(r["peak_mib"] for r in runs["ours"])
    base_peak = max(r["peak_mib"] for r in runs["baseline"])
    setup = median([r["setup_mib"] for r in runs["ours"]])
    mib = size / MiB
    return [
        Result(
            name="exports_dequeue.wall_time",
            measure=f"seconds to dequeue + store {mib:,.0f} MiB ÷ a plain streamed copy (median of {rounds})",
            ours=f"{ours:.2f} s ({mib / ours:,.0f} MiB/s)",
            baseline=f"{base:.2f} s ({mib / base:,.0f} MiB/s)",
            ratio=ours / base,
            target=1.2,
            higher_is_better=False,
            details=[
                "baseline runs (s): " + ", ".join(f"{r['seconds']:.2f}" for r in runs["baseline"]),
                "our runs (s):      " + ", ".join(f"{r['seconds']:.2f}" for r in runs["ours"]),
                f"client CPU per run (median): ours {median([r['cpu'] for r in runs['ours']]):.2f} s, "
                f"plain copy {median([r['cpu'] for r in runs['baseline']]):.2f} s",
            ],
        ),
        Result(
            name="exports_dequeue.peak_rss",
            measure=f"peak RSS of the dequeue ({mib:,.0f} MiB package, fresh process) ÷ the 150 MiB bound",
            ours=f"{peak:.1f} MiB",
            baseline=f"{RSS_BOUND_MIB:.0f} MiB bound",
            ratio=peak / RSS_BOUND_MIB,
            target=1.0,
            higher_is_better=False,
            details=[
                f"setup level (imports, context, token) {setup:.1f} MiB; growth during the run "
                f"{peak - setup:.1f} MiB",
                f"plain streamed copy: peak {base_peak:.1f} MiB",
            ],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["--serve-emulator"]:
        return serve_emulator(args_in[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.exports_dequeue", description=__doc__)
    parser.add_argument("--mib", type=int, default=None, help=f"package size in MiB (default {FULL_MIB})")
    parser.add_argument("--quick", action="store_true", help=f"smoke run ({QUICK_MIB} MiB)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=["ours", "baseline"], default="ours", help=argparse.SUPPRESS)
    args = parser.parse_args(args_in)
    if args.child:
        return child_main(args.impl)
    for result in run(args.mib, args.quick):
        print(json.dumps(result.to_json(), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
