"""``make run`` as a user runs it: the Makefile's recipe (``python -m localstack``) with a settings file whose
addresses are free ports and state in a temporary directory; it comes up, the function app answers
``/api/health/ready`` through the local runner, the demo starts, and Ctrl-C (SIGINT) stops the demo (which
switches its emulator fault off while the emulator still runs) and then everything else cleanly. With
settings whose D365 is not the emulator it started, the demo is skipped."""

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

from localstack.__main__ import AZURITE_DEFAULT_PORT, azurite_port, not_this_stack
from localstack.processes import ROOT, AzuriteInfo, free_port

SAMPLE_SETTINGS = ROOT / "local.settings.sample.json"
UP_LINE = "Local stack is up"
DEMO_STARTED = "  business events endpoint in the emulator: "  # the duplicate-delivery fault is on
# `make run` depends on `deps` (pip and npm installs): the test runs the recipe on the installed checkout.
NO_INSTALL = ("-o", ".venv/.installed", "-o", "node_modules/.installed")


def test_azurite_follows_the_settings_blob_endpoint() -> None:
    assert azurite_port("UseDevelopmentStorage=true") == AZURITE_DEFAULT_PORT
    assert azurite_port(AzuriteInfo(10123).connection_string) == 10123
    assert azurite_port("BlobEndpoint=http://localhost:10234/devstoreaccount1;AccountName=x") == 10234
    real = "DefaultEndpointsProtocol=https;AccountName=prod;AccountKey=k==;EndpointSuffix=core.windows.net"
    assert azurite_port(real) == AZURITE_DEFAULT_PORT
    assert azurite_port("BlobEndpoint=https://prod.blob.core.windows.net:8443;AccountKey=k==") == 10000


def test_the_demo_runs_only_against_the_stack_make_run_started() -> None:
    emulator, blob_port = "http://127.0.0.1:8765", 10010
    local = {"D365_BASE_URL": emulator, "AzureWebJobsStorage": AzuriteInfo(blob_port).connection_string}

    def reasons(**changed: str) -> list[str]:
        return not_this_stack({**local, **changed}, emulator_url=emulator, blob_port=blob_port)

    assert reasons() == []
    assert reasons(D365_BASE_URL="http://localhost:8765/") == []
    assert (
        not_this_stack(
            {**local, "AzureWebJobsStorage": "UseDevelopmentStorage=true"},
            emulator_url=emulator,
            blob_port=10000,
        )
        == []
    )
    [d365] = reasons(D365_BASE_URL="https://contoso.operations.dynamics.com")
    assert d365 == (
        "D365_BASE_URL is https://contoso.operations.dynamics.com, not the emulator started here "
        "(http://127.0.0.1:8765)"
    )
    assert reasons(D365_BASE_URL="http://127.0.0.1:8766") != []  # another local service, not this emulator
    assert reasons(D365_BASE_URL="https://127.0.0.1:8765") != []
    assert reasons(D365_BASE_URL="http://127.0.0.1:99999") != []  # not a valid port
    assert reasons(D365_BASE_URL="")[0].startswith("D365_BASE_URL is not set")
    real = "DefaultEndpointsProtocol=https;AccountName=prod;AccountKey=k==;EndpointSuffix=core.windows.net"
    assert reasons(AzureWebJobsStorage=real) == [
        "AzureWebJobsStorage is not the Azurite started here (127.0.0.1:10010)"  # never the account key
    ]
    assert reasons(AzureWebJobsStorage="UseDevelopmentStorage=true") != []  # Azurite on 10000, not 10010
    assert reasons(AzureWebJobsStorage="@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/s)")
    assert reasons(AzureWebJobsStorage="") != []  # an identity-based connection: a real account


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


class MakeRun:
    """``make run`` with ``RUN_ARGS``, its output collected line by line."""

    def __init__(self, tmp_path: Path, run_args: str, **env: str) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process = subprocess.Popen(
            [
                "make",
                "--no-print-directory",
                *NO_INSTALL,
                "run",
                f"PY={sys.executable}",
                f"RUN_ARGS={run_args}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, start: str, timeout: float) -> str:
        """The first output line that starts with ``start``; fails after ``timeout`` seconds."""
        with self._seen:
            found = self._seen.wait_for(
                lambda: next((line for line in self.lines if line.startswith(start)), None), timeout
            )
        assert found, f"no line starting {start!r} within {timeout} s:\n{self.text}"
        return found

    def ctrl_c(self) -> list[psutil.Process]:
        """SIGINT to the launcher (what Ctrl-C delivers to it); waits for a clean exit; its children."""
        children: list[psutil.Process] = psutil.Process(self.process.pid).children(recursive=True)
        [launcher] = [p for p in children if "localstack" in p.cmdline()]
        launcher.send_signal(signal.SIGINT)
        assert self.process.wait(60) == 0, self.text
        self._reader.join(10)
        return children

    def kill(self) -> None:
        if self.process.poll() is None:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                child.kill()
            self.process.kill()
            self.process.wait(10)


def test_make_run_serves_the_app_on_the_settings_ports_until_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings, functions_port = _settings(tmp_path, state)
    run_args = f"--state-dir {state} --settings {settings} --functions-port {functions_port}"
    # the demo's DMF export polls D365 every second, so the stop need not wait out a 15 s poll
    make = MakeRun(tmp_path, run_args, DMF_EXPORT_POLL_SECONDS="1")
    try:
        make.wait_for(UP_LINE, 90)
        time.sleep(0.5)  # the rest of the summary (functions and keys) follows the line
        text = make.text
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

        make.wait_for(DEMO_STARTED, 60)  # the demo runs against the stack it started
        children = make.ctrl_c()  # while the demo's flows still wait
        text = make.text
        # the demo ended (its duplicate-delivery fault switched off) before the stack went down
        assert "could not switch the emulator's duplicate delivery off" not in text, text
        demo_stopped = text.index("Demo stopped before its flows ended.")
        runner_stopped = re.search(r"Runner \w+ stopped", text)
        assert runner_stopped, text
        stopping = text.index("stopping...")  # printed when the stack begins to go down
        assert demo_stopped < stopping < runner_stopped.start() < text.index("emulator: signal SIGTERM"), text
        assert "Traceback" not in text
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], f"left running: {[p.cmdline()[:3] for p in alive]}"
    finally:
        make.kill()


def test_make_run_skips_the_demo_when_d365_is_not_its_emulator(tmp_path: Path) -> None:
    state = tmp_path / "state"
    settings, functions_port = _settings(tmp_path, state)
    elsewhere = f"http://127.0.0.1:{free_port()}"  # stands for a real D365; the environment wins, as in func
    run_args = f"--state-dir {state} --settings {settings} --functions-port {functions_port}"
    make = MakeRun(tmp_path, run_args, D365_BASE_URL=elsewhere)
    try:
        skipped = make.wait_for("demo skipped", 90)
        assert skipped.startswith(
            f"demo skipped: settings point at a real environment (D365_BASE_URL is {elsewhere}, not the "
            "emulator started here"
        ), skipped
        make.ctrl_c()
        assert "Demo run" not in make.text
        assert "registered in the emulator" not in make.text
    finally:
        make.kill()
