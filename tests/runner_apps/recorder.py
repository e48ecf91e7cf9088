"""Where the test apps' functions report what they saw: in memory (in-process runners) or a JSONL file."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Recorder:
    """Thread-safe list of events with a blocking ``wait_for``."""

    def __init__(self, path: Path | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self._path = path
        self._changed = threading.Condition()

    def record(self, kind: str, **data: Any) -> None:
        event = {"kind": kind, "at": time.time(), **data}
        with self._changed:
            self.events.append(event)
            if self._path is not None:
                with self._path.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(event) + "\n")
            self._changed.notify_all()

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self.events if e["kind"] == kind]

    def wait_for(self, predicate: Callable[[Recorder], bool], timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.2))
        return True


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
