"""``python -m emulator``: serve the emulator on a plain HTTP port (D365, managed identity, admin API) and an
HTTPS port (Entra login authority, Key Vault) from one process, then print one ``EMULATOR READY {json}``
line on stdout. Human-readable logs go to stderr. SIGTERM / SIGINT shut it down cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Generator, Sequence
from pathlib import Path

import uvicorn

from emulator.app import build_state, create_app, server_tls_files
from emulator.state import EmulatorConfig

READY_PREFIX = "EMULATOR READY "
logger = logging.getLogger("emulator")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m emulator", description="Local D365 F&O + Entra + Key Vault emulator"
    )
    parser.add_argument("--host", default=defaults.host, help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=defaults.port, help="HTTP: D365, managed identity, admin")
    parser.add_argument("--tls-port", type=int, default=defaults.tls_port, help="HTTPS: Entra, Key Vault")
    parser.add_argument("--data-dir", default=None, help="SQLite db, certificates, keys (default: temp dir)")
    parser.add_argument(
        "--token-lifetime", type=int, default=defaults.token_lifetime_seconds, help="token lifetime, seconds"
    )
    parser.add_argument("--tenant-id", default=defaults.tenant_id)
    parser.add_argument("--default-company", default=defaults.default_company)
    parser.add_argument("--identity-header", default=None, help="managed-identity secret (default: random)")
    parser.add_argument("--no-seed", action="store_true", help="start with empty D365 data")
    parser.add_argument(
        "--blob-connection-string",
        default=os.environ.get("EMULATOR_BLOB_CONNECTION_STRING") or None,
        help="storage for the DMF package API's 'dmf' container (env EMULATOR_BLOB_CONNECTION_STRING; "
        "default UseDevelopmentStorage=true: Azurite on 127.0.0.1:10000)",
    )
    parser.add_argument(
        "--dmf-step-delay",
        type=float,
        default=defaults.dmf_step_delay_seconds,
        help="seconds each DMF execution step takes (default %(default)s)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="stderr log level"
    )
    return parser.parse_args(argv)


class _Server(uvicorn.Server):
    """One signal handler serves both servers (see ``serve``); uvicorn's own would re-raise the signal."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto is TCP, and
    # without it every small response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _abort_idle_connections(servers: Sequence[uvicorn.Server]) -> None:
    """Drop connections that are idle or already closing at shutdown. uvicorn closes them, but closing
    a TLS connection waits for the client's close_notify, which an idle pooled client never sends, so
    the shutdown would sit out the whole grace period. Requests in progress are left to finish."""
    for server in servers:
        for connection in list(getattr(server.server_state, "connections", ())):
            cycle = getattr(connection, "cycle", None)
            transport = getattr(connection, "transport", None)
            if transport is None:
                continue
            idle = cycle is None or getattr(cycle, "response_complete", False)
            if idle or transport.is_closing():  # closing: e.g. a connection cut by fault injection
                transport.abort()


async def serve(
    config: EmulatorConfig, *, identity_header: str | None, log_level: str, temp_dir: bool
) -> int:
    # Bind first: with port 0 the real port is known before the URLs (and token audience) are built.
    http_sock, tls_sock = _bind(config.host, config.port), _bind(config.host, config.tls_port)
    config.port, config.tls_port = http_sock.getsockname()[1], tls_sock.getsockname()[1]
    state = build_state(config, identity_header=identity_header)
    app = create_app(state)
    cert_file, key_file = server_tls_files(state)

    def make_server(certfile: str | None = None, keyfile: str | None = None) -> uvicorn.Server:
        return _Server(
            uvicorn.Config(
                app,
                log_config=None,
                log_level=log_level,
                access_log=False,  # the gate logs every request itself
                lifespan="off",
                ws="none",
                timeout_graceful_shutdown=3,
                ssl_certfile=certfile,
                ssl_keyfile=keyfile,
            )
        )

    servers = [make_server(), make_server(str(cert_file), str(key_file))]

    loop = asyncio.get_running_loop()

    def stop(signum: int) -> None:
        logger.info("signal %s: shutting down", signal.Signals(signum).name)
        for server in servers:
            if server.should_exit and signum == signal.SIGINT:
                server.force_exit = True
            server.should_exit = True
        # Before uvicorn's own shutdown closes them (a second close of a TLS transport drops its link to
        # the connection, after which it can no longer be aborted), and again for stragglers.
        _abort_idle_connections(servers)
        loop.call_later(0.3, _abort_idle_connections, servers)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)

    tasks = [
        asyncio.create_task(servers[0].serve(sockets=[http_sock])),
        asyncio.create_task(servers[1].serve(sockets=[tls_sock])),
    ]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.01)
    if all(s.started for s in servers):
        info = state.info()
        logger.info("emulator on %s (TLS %s), data in %s", info["base_url"], info["tls_url"], state.data_dir)
        sys.stdout.write(READY_PREFIX + json.dumps(info) + "\n")
        sys.stdout.flush()
    try:
        await asyncio.gather(*tasks)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        close = getattr(state.odata, "close", None)
        if callable(close):
            close()
        if temp_dir:
            shutil.rmtree(state.data_dir, ignore_errors=True)
    logger.info("emulator stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The DMF family talks to Azurite through the storage SDK, which logs every request at INFO.
    logging.getLogger("azure").setLevel(max(logging.WARNING, logging.getLogger().level))
    config = EmulatorConfig(
        host=args.host,
        port=args.port,
        tls_port=args.tls_port,
        data_dir=None,
        tenant_id=args.tenant_id,
        token_lifetime_seconds=args.token_lifetime,
        default_company=args.default_company,
        seed=not args.no_seed,
        blob_connection_string=args.blob_connection_string,
        dmf_step_delay_seconds=args.dmf_step_delay,
    )
    temp_dir = args.data_dir is None
    if args.data_dir is not None:
        config.data_dir = Path(args.data_dir)
    try:
        return asyncio.run(
            serve(config, identity_header=args.identity_header, log_level=args.log_level, temp_dir=temp_dir)
        )
    except OSError as exc:
        logger.error("cannot start the emulator: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
