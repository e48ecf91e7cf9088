"""What every operator command shares: settings from the checkout's settings file plus the environment, and
errors reported as one redacted line (``ops: <message>``) instead of a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

from localstack.processes import ROOT
from runner import SettingsError, load_local_settings
from shared.redact import redact_text
from shared.settings import ConfigurationError, Settings, SettingsSection

__all__ = ["ConfigurationError", "SettingsError", "error_line", "load_settings", "report_error"]


def load_settings(settings_path: str | None, sections: Iterable[type[SettingsSection]] = ()) -> Settings:
    """``Values`` of ``settings_path`` (default: local.settings.json, else the sample) with the environment
    winning, as with Core Tools; raises ``SettingsError`` or ``ConfigurationError``."""
    local = load_local_settings(Path(settings_path) if settings_path else None, root=ROOT)
    return Settings.from_env({**local.values, **os.environ}, sections=sections)


def error_line(exc: BaseException) -> str:
    """``exc`` as one redacted line: a configuration error names every problem, ``;``-separated."""
    if isinstance(exc, ConfigurationError):
        text = "invalid configuration: " + "; ".join(exc.problems)
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
        if type(exc).__module__.split(".")[0] not in ("shared", "runner"):  # e.g. azure-core: say which
            text = f"{type(exc).__name__}: {text}"
    return " ".join(redact_text(text).split())


def report_error(exc: BaseException) -> int:
    """Print ``ops: <one line>`` to stderr; the exit status: 2 for bad settings, else 1."""
    print(f"ops: {error_line(exc)}", file=sys.stderr)
    return 2 if isinstance(exc, (ConfigurationError, SettingsError)) else 1
