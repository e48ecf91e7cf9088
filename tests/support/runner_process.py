"""``python -m runner`` as a real process for end-to-end tests: its command line, its settings file, and
the process started and waited on until it prints its READY line."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from localstack.processes import ROOT
from runner.__main__ import READY_PREFIX


def write_local_settings(path: Path, values: Mapping[str, str]) -> Path:
    """A local.settings.json holding ``values``."""
    path.write_text(json.dumps({"IsEncrypted": False, "Values": dict(values)}), encoding="utf-8")
    return path


def runner_command(app: str, root: Path, settings_file: Path, *args: str) -> list[str]:
    """``python -m runner`` serving ``app`` (``module:attribute`` under ``root``) on a free port."""
    return [
        sys.executable, "-m", "runner", "--app", app, "--root", str(root), "--settings", str(settings_file),
        "--port", "0", *args,
    ]  # fmt: skip


@contextmanager
def runner_process(
    command: list[str], env: Mapping[str, str], *, ready_timeout: float = 30
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any], list[str]]]:
    """Start ``command`` in the repository root; yield the process, its READY info and its output lines (still
    growing while it runs). Stopped on the way out: SIGTERM (the runner's orderly shutdown), killed when it
    has not ended 30 s later."""
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    output: list[str] = []
    ready: Future[dict[str, Any]] = Future()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if line.startswith(READY_PREFIX) and not ready.done():
                ready.set_result(json.loads(line[len(READY_PREFIX) :]))
        if not ready.done():
            ready.set_exception(RuntimeError("runner exited before it was ready:\n" + "".join(output)))

    threading.Thread(target=drain, daemon=True).start()
    try:
        yield process, ready.result(timeout=ready_timeout), output
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
