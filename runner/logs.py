"""Console logging for ``python -m runner`` and ``make run``: readable lines, the function's own logs tagged.

The library never configures logging on import; callers that want the runner's look call
:func:`configure_logging` once. Records emitted while an invocation runs (by the function's own
``logging`` calls, in its thread or coroutine) are tagged ``[Functions.<name>]`` like the host's console.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from runner.invocation import CURRENT_INVOCATION

__all__ = ["InvocationTagFilter", "configure_logging"]

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(function_tag)s%(message)s"


class InvocationTagFilter(logging.Filter):
    """Adds ``function_tag`` ("[Functions.name] " during an invocation, else "") to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = CURRENT_INVOCATION.get()
        tag = ""
        if current is not None and not record.name.startswith("runner"):
            tag = f"[Functions.{current[0]}] "
        record.function_tag = tag
        return True


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record (the runner's and the functions') to ``stream`` in the runner's format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%H:%M:%S"))
    handler.addFilter(InvocationTagFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("azure", "uvicorn", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return handler
