"""``make run`` as a user runs it: the Makefile's recipe (``python -m localstack``) with a settings file whose
addresses are free ports, state in a temporary directory and ``--no-demo``; it comes up, the function app
answers ``/api/health/ready`` through the local runner, and Ctrl-C (SIGINT) stops everything cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import requests

from localstack.__main__ import AZURITE_DEFAULT_PORT, azurite_port
from localstack.processes import ROOT, AzuriteInfo, free_port

SAMPLE_SETTINGS = ROOT / "local.settings.sample.json"
UP_LINE = "Local stack is up"
# `make run` depends on `deps` (pip and npm installs): the test runs the recipe on the installed checkout.
NO_INSTALL = ("-o", ".venv/.installed", "-o", "node_modules/.installed")


def test_azurite_follows_the_settings_blob_endpoint() -> None:
    assert azurite_port("UseDevelopmentStorage=true") == AZURITE_DEFAULT_PORT
    assert azurite_port(AzuriteInfo(10123).connection_string) == 10123
    assert azurite_port("BlobEndpoint=http://localhost:10234/devstoreaccount1;AccountName=x") == 10234
    real = "DefaultEndpointsProtocol=https;AccountName=prod;AccountKey=k==;EndpointSuffix=core.windows.net"
    assert azurite_port(real) == AZURITE_DEFAULT_PORT
    assert azurite_port("BlobEndpoint=https://prod.blob.core.windows.net:8443;AccountKey=k==") == 10000


def _settings(tmp_path: Path, state: Path) -> tuple[Path, int]:
    """The sample settings with every address on a free port; the functions port for ``--functions-port``."""
    values = json.loads(SAMPLE_SETTINGS.read_text(encoding="utf-8"))["Values"]
    blob, http, tls, functions = free_port(), free_port(), free_port(), free_port()
    values.update(
        AzureWebJobsStorage=AzuriteInfo(blob).connection_string,
        D365_BASE_URL=f"http://127.0.0.1:{http}",
        IDENTITY_ENDPOINT=f"http://127.0.0.1:{http}/metadata/identity/oauth2/token",
        KEY_VAULT_URL=f"https://127.0.0.1:{tls}/",
        TLS_CA_BUNDLE=str(state / "emulator" / "emulator-ca.pem"),
    )
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}), encoding="utf-8")
    return path, functions


def test_make_run_serves_the_app_on_the_settings_ports_until_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings, functions_port = _settings(tmp_path, state)
    run_args = f"--state-dir {state} --settings {settings} --functions-port {functions_port} --no-demo"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    make = subprocess.Popen(
        ["make", "--no-print-directory", *NO_INSTALL, "run", f"PY={sys.executable}", f"RUN_ARGS={run_args}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    output: list[str] = []
    up = threading.Event()

    def drain() -> None:
        assert make.stdout is not None
        for line in make.stdout:
            output.append(line)
            if line.startswith(UP_LINE):
                up.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert up.wait(90), "".join(output)
        time.sleep(0.5)  # the rest of the summary (functions and keys) follows the line
        text = "".join(output)
        values = json.loads(settings.read_text())["Values"]
        blob_port = azurite_port(values["AzureWebJobsStorage"])
        assert f"blob storage (Azurite) http://127.0.0.1:{blob_port}/devstoreaccount1" in text
        assert f"D365 F&O emulator      {values['D365_BASE_URL']}/data" in text
        assert f"Key Vault              {values['KEY_VAULT_URL'].rstrip('/')}" in text
        assert "AccountKey" not in text
        master = re.search(r"master (\S+)", text)
        assert master, text
        ready = requests.get(
            f"http://127.0.0.1:{functions_port}/api/health/ready",
            headers={"x-functions-key": master[1]},
            timeout=60,
        )
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ok", ready.text
        assert (
            requests.get(f"http://127.0.0.1:{functions_port}/api/health/ready", timeout=30).status_code == 401
        )

        children = psutil.Process(make.pid).children(recursive=True)
        [launcher] = [p for p in children if "localstack" in p.cmdline()]
        launcher.send_signal(signal.SIGINT)  # what Ctrl-C delivers to it
        assert make.wait(60) == 0, "".join(output)
        reader.join(10)
        assert "stopping..." in "".join(output)
        assert "Traceback" not in "".join(output)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], f"left running: {[p.cmdline()[:3] for p in alive]}"
    finally:
        if make.poll() is None:
            for child in psutil.Process(make.pid).children(recursive=True):
                child.kill()
            make.kill()
            make.wait(10)
