"""``make run``: start Azurite, the D365 F&O emulator and the function app on the local stack, then serve.

Ports follow the settings file (local.settings.json, else local.settings.sample.json): Azurite on the port
of AzureWebJobsStorage's ``BlobEndpoint`` when it names one on this machine, else its default 10000 (as
``UseDevelopmentStorage=true`` means), the emulator on D365_BASE_URL's port and the Key Vault's port, and
the functions on 7071 as with ``func start`` (``--functions-port``). State lives in ``.local/``
(``--state-dir``) so a restart keeps data and keys. Once up, the demo (``demo.run_demo``, docs/demo.md)
runs every flow once and prints where each result landed; ``--no-demo`` skips it, and so does a settings
file (or environment) whose D365 or storage is not the stack started here: the demo writes records, so it
never runs against a real environment. Serving goes on until Ctrl-C; the demo, if still running, stops and
cleans up in the emulator before the stack goes down.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

from demo import DemoTarget, run_demo
from localstack.processes import ROOT, run_azurite, run_emulator
from runner import Runner, SettingsError, configure_logging, load_local_settings
from shared.redact import redact_url

AZURITE_DEFAULT_PORT = 10000  # what ``UseDevelopmentStorage=true`` points at
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: How long the stop waits for the demo to end its flows and switch its emulator faults off.
DEMO_STOP_SECONDS = 30.0


def _port(url: str, default: int) -> int:
    return urlsplit(url).port or default


def _local_blob_port(connection: str) -> int | None:
    """The Azurite port a storage connection string names: 10000 for ``UseDevelopmentStorage=true``, the
    port of a loopback ``BlobEndpoint``; None for anything else (a real account, a Key Vault reference)."""
    parts = {
        key.strip().lower(): value.strip()
        for key, _, value in (item.partition("=") for item in connection.split(";"))
        if key.strip()
    }
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        return AZURITE_DEFAULT_PORT
    try:
        endpoint = urlsplit(parts.get("blobendpoint", ""))
        port = endpoint.port
    except ValueError:  # not a URL with a valid port
        return None
    return port if endpoint.hostname in _LOOPBACK and port else None


def azurite_port(connection: str) -> int:
    """The blob port Azurite must listen on for the app's ``AzureWebJobsStorage`` to reach it: the port of
    an explicit loopback ``BlobEndpoint`` (e.g. ``http://127.0.0.1:10010/devstoreaccount1``), else 10000.
    A connection to a real account leaves Azurite on 10000, where the emulator's DMF package API uses it."""
    return _local_blob_port(connection) or AZURITE_DEFAULT_PORT


def not_this_stack(settings: Mapping[str, str], *, emulator_url: str, blob_port: int) -> list[str]:
    """Why the demo must not run with ``settings`` (the values the functions run with, environment
    included): each of D365 and storage that is not the emulator and Azurite started here. Empty: safe.

    The demo imports customers, dequeues and acknowledges exports and writes blobs; against a real D365 or
    storage account (docs/configuration.md describes pointing local.settings.json at one) it must not run.
    """
    reasons: list[str] = []
    d365 = settings.get("D365_BASE_URL", "").strip()
    emulator = urlsplit(emulator_url)
    try:
        target = urlsplit(d365)
        same = (target.scheme, target.hostname in _LOOPBACK, target.port) == ("http", True, emulator.port)
    except ValueError:  # an invalid port
        same = False
    if not same:
        shown = redact_url(d365) if d365 else "not set"
        reasons.append(f"D365_BASE_URL is {shown}, not the emulator started here ({emulator_url})")
    if _local_blob_port(settings.get("AzureWebJobsStorage", "")) != blob_port:
        # never the value itself: a connection string carries the account key
        reasons.append(f"AzureWebJobsStorage is not the Azurite started here (127.0.0.1:{blob_port})")
    return reasons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localstack", description=__doc__)
    parser.add_argument("--state-dir", default=str(ROOT / ".local"), help="where local state is kept")
    parser.add_argument("--functions-port", type=int, default=7071)
    parser.add_argument("--settings", default=None, help="settings file (default: local.settings.json)")
    parser.add_argument("--no-demo", action="store_true", help="serve without running the demo flows first")
    args = parser.parse_args(argv)

    try:
        local = load_local_settings(Path(args.settings) if args.settings else None, root=ROOT)
    except SettingsError as exc:
        raise SystemExit(str(exc)) from exc
    values = local.values
    state = Path(args.state_dir)
    (state / "azurite").mkdir(parents=True, exist_ok=True)
    (state / "emulator").mkdir(parents=True, exist_ok=True)

    configure_logging()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    with ExitStack() as stack:
        print(f"settings: {local.path}", flush=True)
        storage = values.get("AzureWebJobsStorage", "")
        azurite = stack.enter_context(run_azurite(state / "azurite", port=azurite_port(storage)))
        emulator = stack.enter_context(
            run_emulator(
                state / "emulator",
                "--identity-header",
                values.get("IDENTITY_HEADER") or "local-development-identity-header",
                port=_port(values.get("D365_BASE_URL", ""), 8765),
                tls_port=_port(values.get("KEY_VAULT_URL", ""), 8766),
                echo=True,
                blob_connection_string=azurite.connection_string,
            )
        )
        runner = _start_functions(stack, values, args.functions_port)
        # the account key of a full connection string stays out of the output
        connection = storage if storage.startswith("UseDevelopmentStorage") else "AzureWebJobsStorage"
        print(_summary(azurite.blob_endpoint, connection, emulator.raw, runner.describe()), flush=True)
        demo = None
        if not args.no_demo and runner.started is not None:
            demo = _start_demo(runner, str(emulator.base_url), azurite.blob_port, stop)
        stop.wait()
        if demo is not None:  # its cleanup (the duplicate-delivery fault off) needs the emulator still up
            demo.join(DEMO_STOP_SECONDS)
        print("stopping...", flush=True)
    return 0


def _start_functions(stack: ExitStack, values: dict[str, str], port: int) -> Runner:
    """Serve the function app's triggers through the local runner, as `func start` would."""
    runner = Runner.from_values(values, port=port)
    stack.callback(runner.stop)
    runner.start()
    return runner


def _start_demo(
    runner: Runner, emulator_url: str, blob_port: int, stop: threading.Event
) -> threading.Thread | None:
    """Every flow once in the background, then serving goes on (docs/demo.md); None when skipped."""
    reasons = not_this_stack(runner.settings, emulator_url=emulator_url, blob_port=blob_port)
    if reasons:
        print(
            f"demo skipped: settings point at a real environment ({'; '.join(reasons)}); "
            "`make demo` runs it on a stack of its own",
            flush=True,
        )
        return None
    assert runner.started is not None
    target = DemoTarget(runner.settings, emulator_url, runner.started)
    demo = threading.Thread(target=run_demo, args=(target,), kwargs={"stop": stop}, name="demo", daemon=True)
    demo.start()
    return demo


def _summary(blob_endpoint: str, connection: str, info: dict[str, object], functions: str) -> str:
    lines = [
        "",
        "Local stack is up (Ctrl-C to stop):",
        f"  blob storage (Azurite) {blob_endpoint}  connection: {connection}",
        f"  D365 F&O emulator      {info['base_url']}/data   (OData), /api/services (custom services)",
        f"  emulator admin API     {info['admin_url']}   (docs/emulator.md)",
        f"  Entra authority        {info['authority_host']}",
        f"  managed identity       {info['identity_endpoint']}",
        f"  Key Vault              {info['keyvault_url']}",
        f"  CA certificate         {info['ca_file']}",
        f"  app registration       client_id={info['client_id']} (secret in the admin API: GET /_emulator/)",
        "",
        functions,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:  # a child could not start (port in use, missing Azurite...): one clear line
        sys.exit(f"make run: {exc}".strip())
