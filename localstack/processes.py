"""Start the real local stack (the D365 emulator and Azurite) as child processes.

Used by `make run` (python -m localstack), by the test fixtures and by the benchmarks, so all three run
exactly the same stack.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
READY_PREFIX = "EMULATOR READY "


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmulatorInfo:
    """What ``python -m emulator`` prints on its ready line (``EMULATOR READY {json}``)."""

    raw: dict[str, Any]
    process: subprocess.Popen[str] | None = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.raw[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the admin API (``/_emulator/...``) and return the decoded JSON answer."""
        url = f"{self.raw['base_url']}/_emulator/{path.lstrip('/')}"
        response = requests.request(method, url, timeout=120, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None


@contextmanager
def run_emulator(
    data_dir: Path,
    *extra_args: str,
    port: int | None = None,
    tls_port: int | None = None,
    timeout: float = 60,
    echo: bool = False,
    blob_connection_string: str | None = None,
) -> Iterator[EmulatorInfo]:
    """Start `python -m emulator` and wait for its ready line; free ports are chosen when not given.

    ``blob_connection_string``: the storage of the DMF package API (Azurite); passed in the environment
    (EMULATOR_BLOB_CONNECTION_STRING), not on the command line, so the account key stays out of ``ps``.
    """
    port, tls_port = port or free_port(), tls_port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "emulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--tls-port",
        str(tls_port),
        "--data-dir",
        str(data_dir),
        *extra_args,
    ]
    env = {**os.environ}
    if blob_connection_string:
        env["EMULATOR_BLOB_CONNECTION_STRING"] = blob_connection_string
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env
    )
    lines: list[str] = []
    info: dict[str, Any] | None = None
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        if line.startswith(READY_PREFIX):
            info = json.loads(line[len(READY_PREFIX) :])
            break
    if info is None:
        proc.kill()
        raise RuntimeError("emulator did not start:\n" + "".join(lines[-50:]))

    # keep draining output so the emulator never blocks on a full pipe
    def drain() -> None:
        for text in proc.stdout or []:
            if echo:
                sys.stderr.write(text)

    threading.Thread(target=drain, daemon=True).start()
    try:
        yield EmulatorInfo(info, proc)
    finally:
        stop_process(proc, timeout=15)


def azurite_binary() -> str:
    local = ROOT / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    found = shutil.which("azurite-blob")
    if not found:
        raise RuntimeError("Azurite is not installed: run `make deps` (npm install) first")
    return found


@dataclass
class AzuriteInfo:
    blob_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.blob_port}/devstoreaccount1"

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
            f"BlobEndpoint={self.blob_endpoint};"
        )


@contextmanager
def run_azurite(
    location: Path | None = None, *, port: int | None = None, timeout: float = 30
) -> Iterator[AzuriteInfo]:
    """Start Azurite's blob service (in memory unless a location is given) with the API-version check off."""
    port = port or free_port()
    cmd = [
        azurite_binary(),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--skipApiVersionCheck",
        "--silent",
        "--disableTelemetry",
        "--loose",
    ]
    cmd += ["--location", str(location)] if location else ["--inMemoryPersistence"]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ}
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("Azurite exited at start-up") from None
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("Azurite did not start")
    try:
        yield AzuriteInfo(port, proc)
    finally:
        stop_process(proc, timeout=10)


def stop_process(proc: subprocess.Popen[Any], *, timeout: float) -> None:
    """Ask ``proc`` to end (SIGTERM); kill it if it has not ended within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
