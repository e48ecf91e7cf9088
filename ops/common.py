"""What every operator command shares: settings from the checkout's settings file plus the environment, a
context whose storage calls give up in seconds, one logging set-up, and errors reported as one redacted line
(``ops: <message>``) instead of a traceback."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from localstack.processes import ROOT
from runner import SettingsError, apply_to_environment, load_local_settings
from shared.context import AppContext
from shared.redact import redact_text
from shared.settings import ConfigurationError, Settings, SettingsSection
from shared.storage import BlobStore

__all__ = [
    "CLI_STORAGE_OPTIONS",
    "SETTINGS_HELP",
    "ConfigurationError",
    "OpsError",
    "SettingsError",
    "configure_logging",
    "error_line",
    "load_settings",
    "open_context",
    "report_error",
    "run_guarded",
]

#: The storage client's retries for a command someone waits for: two retries ~2 s and ~3 s apart and a 10 s
#: connect timeout, so unreachable storage is reported in seconds (the SDK default, 15 s + 3^n backoff and
#: 20 s connects, made the operator wait over a minute for the same answer). The app keeps the default.
CLI_STORAGE_OPTIONS: dict[str, Any] = {
    "retry_total": 2,
    "initial_backoff": 0.5,
    "increment_base": 1.5,
    "random_jitter_range": 0.5,
    "connection_timeout": 10,
}

#: ``--settings``' help: the file :func:`load_settings` reads when the option is not given.
SETTINGS_HELP = "settings file (default: local.settings.json, else local.settings.sample.json)"

_VERBOSE_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"


class OpsError(Exception):
    """A refusal of an operator command, said in one line (``ops: <message>``)."""


def load_settings(settings_path: str | None, sections: Iterable[type[SettingsSection]] = ()) -> Settings:
    """``Values`` of ``settings_path`` (default: local.settings.json, else the sample) with the environment
    winning, as with Core Tools; raises ``SettingsError`` or ``ConfigurationError``.

    The values are also put into this process's environment (where unset), as the runner and Core Tools do:
    libraries read some of them from there and nowhere else — azure-identity's managed identity credential
    takes ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER`` only from ``os.environ``.
    """
    local = load_local_settings(Path(settings_path) if settings_path else None, root=ROOT)
    apply_to_environment(local.values)
    return Settings.from_env(dict(os.environ), sections=sections)


def open_context(settings: Settings) -> AppContext:
    """The app's context for a command: as the app builds it, but with :data:`CLI_STORAGE_OPTIONS`."""
    context = AppContext.from_settings(settings)
    context.blob_service.close()
    blob_service = settings.storage.blob_service_client(**CLI_STORAGE_OPTIONS)
    return replace(context, blob_service=blob_service, store=BlobStore(blob_service))


class _NamedEvents(logging.Filter):
    """Only the named events (``shared.logs.log_event``: the lines alerts key on) at WARNING and above."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and hasattr(record, "app_event")


def configure_logging(verbose: bool = False) -> None:
    """The one logging set-up of every command, on stderr.

    By default only named events at WARNING and above are shown (``WARNING IMPORT_JOB_STUCK: ... | ...``):
    work an operator runs here is logged here, not in Application Insights, so the lines an alert would
    have fired on must reach the operator. Everything else (retries, the SDK's warnings, INFO progress) is
    the command's own business, reported in its output or its one ``ops:`` error line. ``verbose``: every
    record at INFO and above (the Azure SDK's from WARNING), with time and logger.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "ops_handler", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.ops_handler = True  # type: ignore[attr-defined]  # found again by a second call
    if verbose:
        handler.setFormatter(logging.Formatter(_VERBOSE_FORMAT, datefmt="%H:%M:%S"))
        root.setLevel(logging.INFO)
        logging.getLogger("azure").setLevel(logging.WARNING)
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler.addFilter(_NamedEvents())
        root.setLevel(logging.WARNING)
        # azure-identity/azure-core log a warning for each failure they raise; the ops: line says it.
        logging.getLogger("azure").setLevel(logging.ERROR)
    # A handler on the root logger also keeps logging's last resort (every WARNING, unformatted) quiet.
    root.addHandler(handler)


def error_line(exc: BaseException) -> str:
    """``exc`` as one redacted line: a configuration error names every problem, ``;``-separated."""
    if isinstance(exc, ConfigurationError):
        text = "invalid configuration: " + "; ".join(exc.problems)
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    elif isinstance(exc, HttpResponseError) and not isinstance(exc, ClientAuthenticationError):
        # storage: the first line of its message and the error code, not the XML body
        lines = str(exc.message or exc).strip().splitlines()
        first = lines[0] if lines else "no message"
        error_code = getattr(exc, "error_code", None)  # set by the storage SDK
        code = f" ({error_code})" if error_code and str(error_code) not in first else ""
        text = f"{type(exc).__name__}: {first}{code}"
    else:
        text = str(exc) or type(exc).__name__
        if type(exc).__module__.split(".")[0] not in ("shared", "runner", "ops"):  # e.g. azure-core
            text = f"{type(exc).__name__}: {text}"
    return " ".join(redact_text(text).split())


def report_error(exc: BaseException) -> int:
    """Print ``ops: <one line>`` to stderr; the exit status: 2 for bad settings, else 1."""
    print(f"ops: {error_line(exc)}", file=sys.stderr)
    return 2 if isinstance(exc, (ConfigurationError, SettingsError)) else 1


def run_guarded(command: Callable[[], int], *, verbose: bool = False) -> int:
    """Run one command with the logging set-up; every failure is one ``ops:`` line, never a traceback
    (exit 1, 2 for bad settings, 130 when interrupted, 0 when the reader of stdout went away)."""
    configure_logging(verbose)
    try:
        return command()
    except KeyboardInterrupt:
        print("ops: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `| head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # every failure is one line for the operator, never a traceback
        return report_error(exc)
