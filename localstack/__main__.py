"""``make run``: start Azurite, the D365 F&O emulator and the function app on the local stack, then serve.

Ports follow the settings file (local.settings.json, else local.settings.sample.json): Azurite on the port
of AzureWebJobsStorage's ``BlobEndpoint`` when it names one on this machine, else its default 10000 (as
``UseDevelopmentStorage=true`` means), the emulator on D365_BASE_URL's port and the Key Vault's port, and
the functions on 7071 as with ``func start`` (``--functions-port``). State lives in ``.local/``
(``--state-dir``) so a restart keeps data and keys. Once up, the demo (``demo.run_demo``, docs/demo.md)
runs every flow once and prints where each result landed; ``--no-demo`` skips it. Serving goes on until
Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

from demo import DemoTarget, run_demo
from localstack.processes import ROOT, run_azurite, run_emulator
from runner import Runner, SettingsError, configure_logging, load_local_settings

AZURITE_DEFAULT_PORT = 10000  # what ``UseDevelopmentStorage=true`` points at
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _port(url: str, default: int) -> int:
    return urlsplit(url).port or default


def azurite_port(connection: str) -> int:
    """The blob port Azurite must listen on for the app's ``AzureWebJobsStorage`` to reach it: the port of
    an explicit loopback ``BlobEndpoint`` (e.g. ``http://127.0.0.1:10010/devstoreaccount1``), else 10000.
    A connection to a real account leaves Azurite on 10000, where the emulator's DMF package API uses it."""
    parts = {
        key.strip().lower(): value.strip()
        for key, _, value in (item.partition("=") for item in connection.split(";"))
        if key.strip()
    }
    endpoint = urlsplit(parts.get("blobendpoint", ""))
    if endpoint.hostname in _LOOPBACK and endpoint.port:
        return endpoint.port
    return AZURITE_DEFAULT_PORT


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
        if (
            not args.no_demo and runner.started is not None
        ):  # every flow once, then keep serving (docs/demo.md)
            target = DemoTarget(runner.settings, str(emulator.base_url), runner.started)
            demo = threading.Thread(target=run_demo, args=(target,), kwargs={"stop": stop}, daemon=True)
            demo.start()
        stop.wait()
        print("stopping...", flush=True)
    return 0


def _start_functions(stack: ExitStack, values: dict[str, str], port: int) -> Runner:
    """Serve the function app's triggers through the local runner, as `func start` would."""
    runner = Runner.from_values(values, port=port)
    stack.callback(runner.stop)
    runner.start()
    return runner


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
