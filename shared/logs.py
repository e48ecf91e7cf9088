"""Log lines that Application Insights can query: correlation ids on every line, named events to alert on.

Two ways a Python function's log record reaches Application Insights, and why lines look the way they do:

- the classic worker (default): its root handler sends only the *formatted message* (``traces.message``),
  the level and the logger name to the host; ``extra=`` attributes are dropped, so anything a query must
  find has to be **in the message text**;
- OpenTelemetry (``azure-monitor-opentelemetry`` / ``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY``): record
  attributes outside the standard set become ``customDimensions``.

So every value is written both ways: appended to the message as ``key=value`` pairs after ``" | "`` (values
with spaces, quotes, ``|`` or ``=`` are JSON-quoted) and set as a record attribute prefixed ``app_``
(``customDimensions.app_execution_id``) — the prefix keeps them clear of ``LogRecord``'s own names. Every
value passes through ``shared.redact`` first. The fields start at the message's **first** ``|``: a ``|`` in
the text before them (D365's error strings hold `` | url=… | request_id=…``) is written as ``¦``, so a
parser never takes the text's ``url=`` or ``request_id=`` for a field (the last ``|`` would not do: a
quoted value may hold one).

- :func:`log_context` — a correlation scope (a ``ContextVar``): a pipeline opens one per unit of work
  (``event_id``, ``message_id``, ``execution_id``, ``job_id``, ``file``, ``route``, ...); :func:`annotate`
  adds ids learnt on the way. Every record created inside — by our code, the Azure SDK or urllib3 — gets
  them. Thread pools do not inherit a scope: wrap the submitted function with :func:`carry_log_context`.
- :func:`log_event` — a named event, ``NAME: human text | key=value ...`` (the scope's ids included), that
  alert rules key on; every name is documented in docs/observability.md (a test checks).
- :func:`log_crash` — an exception escaping a pipeline, logged as ``PIPELINE_CRASHED`` inside the scope (so
  with its ids) before it goes on to the host, which logs it without them.

Where the ids are added: a ``LogRecord`` factory (installed once, chained to the previous one, when the
first scope opens), not a filter. A filter on a logger only sees records created at that very logger, and
a handler filter only the handlers it was added to — under the Functions host those are the worker's own
gRPC handler (and OpenTelemetry's, added later by ``configure_azure_monitor``), which this app neither
creates nor can rely on finding at import. The factory runs for every record of the process whatever its
logger or handlers, so the host, the local runner's console, ``pytest``'s ``caplog`` and OpenTelemetry all
see the same text. Outside a scope it adds nothing.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

from shared.redact import redact_text, redact_url

__all__ = [
    "ATTRIBUTE_PREFIX",
    "EVENT_ATTRIBUTE",
    "FIELD_SEPARATOR",
    "TEXT_BAR",
    "annotate",
    "carry_log_context",
    "current_log_context",
    "format_fields",
    "install",
    "log_context",
    "log_crash",
    "log_event",
]

#: Prefix of the record attributes (``customDimensions`` under OpenTelemetry) holding the ids and fields.
ATTRIBUTE_PREFIX = "app_"
#: The record attribute naming a :func:`log_event` (``customDimensions.app_event``).
EVENT_ATTRIBUTE = "app_event"
#: Between the message and its ``key=value`` fields: the first ``|`` of a line (the text's own are ``¦``).
FIELD_SEPARATOR = " | "
#: What a ``|`` in the text before the fields is written as.
TEXT_BAR = "¦"

_MAX_VALUE = 300
_BARE = re.compile(r'[^\s"|=\\]+')
_NOT_KEY = re.compile(r"[^a-z0-9_]+")

P = ParamSpec("P")
R = TypeVar("R")

# The ids of the current unit of work; None outside any scope (then annotate() has nowhere to write).
_SCOPE: ContextVar[Mapping[str, str] | None] = ContextVar("log_correlation", default=None)
# Set while log_event creates its record: that message already carries the ids.
_EMITTING: ContextVar[bool] = ContextVar("log_event_emitting", default=False)

_install_lock = threading.Lock()
_installed = False


def _key(name: str) -> str:
    return _NOT_KEY.sub("_", name.lower()).strip("_") or "field"


def _value(value: object) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    stripped = text.strip()
    text = redact_url(text) if "://" in stripped and " " not in stripped else redact_text(text)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


def _text(text: str) -> str:
    """The human part of a line: redacted, and without a ``|`` (the first one starts the fields)."""
    return redact_text(text).replace("|", TEXT_BAR)


def _clean(fields: Mapping[str, object]) -> dict[str, str]:
    """Keys made query-safe, ``None`` dropped, values as redacted, bounded text."""
    return {_key(key): _value(value) for key, value in fields.items() if value is not None}


def _render(clean: Mapping[str, str]) -> str:
    return " ".join(f"{key}={text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)}"
                    for key, text in clean.items())  # fmt: skip


def format_fields(fields: Mapping[str, object]) -> str:
    """``key=value key="two words"``: what follows :data:`FIELD_SEPARATOR` in a line (``None`` omitted)."""
    return _render(_clean(fields))


def current_log_context() -> dict[str, str]:
    """The ids of the current scope (empty outside one)."""
    return dict(_SCOPE.get() or {})


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """A correlation scope: every record created inside carries ``fields`` (and the enclosing scopes'
    ids; an inner value wins). Per thread and per asyncio task, restored on exit."""
    install()
    token = _SCOPE.set({**(_SCOPE.get() or {}), **_clean(fields)})
    try:
        yield
    finally:
        _SCOPE.reset(token)


def annotate(**fields: object) -> None:
    """Add ids learnt during the work (a route, an execution id) to the innermost scope, until it ends;
    does nothing outside a scope."""
    current = _SCOPE.get()
    if current is not None:
        _SCOPE.set({**current, **_clean(fields)})


def carry_log_context(function: Callable[P, R]) -> Callable[P, R]:
    """``function`` running in the caller's scope, for a thread pool (threads start without one)."""
    fields = current_log_context()

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with log_context(**fields):
            return function(*args, **kwargs)

    return run


def log_event(logger: logging.Logger, name: str, level: int, text: str, /, **fields: object) -> None:
    """Log the named event ``NAME: text | key=value ...``: ``fields`` first, then the scope's other ids.

    ``name`` is an upper-case constant documented in docs/observability.md; the record also carries
    ``app_event`` and ``app_<key>`` attributes. ``text`` and every value are redacted; a ``|`` in ``text``
    becomes ``¦`` (the first ``|`` of the line is the field separator).
    """
    if not logger.isEnabledFor(level):
        return
    own = _clean(fields)
    merged = {**own, **{k: v for k, v in (_SCOPE.get() or {}).items() if k not in own}}
    message = f"{name}: {_text(text)}"
    if merged:
        message += FIELD_SEPARATOR + _render(merged)
    extra = {EVENT_ATTRIBUTE: name, **{ATTRIBUTE_PREFIX + key: value for key, value in merged.items()}}
    token = _EMITTING.set(True)
    try:
        # no args: a "%" in a file name is never taken for a format directive
        logger.log(level, message, extra=extra, stacklevel=2)
    finally:
        _EMITTING.reset(token)


@contextmanager
def log_crash(
    logger: logging.Logger, pipeline: str, *, expected: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """Log an exception escaping the block as ``PIPELINE_CRASHED`` — with the scope's ids, so use it inside
    :func:`log_context` — and re-raise it. The host logs it again, but only with the invocation's ids.
    ``expected`` exceptions (a held lease the caller turns into "busy") pass unlogged."""
    try:
        yield
    except expected:
        raise
    except Exception as exc:
        # the exception's one-line text only: a traceback would bypass redaction (the host has it anyway)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        text = f"{pipeline} stopped on an unexpected {type(exc).__name__}" + (f": {first}" if first else "")
        log_event(
            logger, "PIPELINE_CRASHED", logging.ERROR, text, pipeline=pipeline, error=type(exc).__name__
        )
        raise


def _with_correlation(record: logging.LogRecord, fields: Mapping[str, str]) -> None:
    for key, value in fields.items():
        setattr(record, ATTRIBUTE_PREFIX + key, value)
    suffix = FIELD_SEPARATOR + _render(fields)
    try:
        # formatted now, so a "|" in an argument (an error's text) cannot pass for the field separator
        text = record.getMessage()
    except Exception:  # a bad format/args pair: leave it to the handler to report, as logging does
        if record.args:  # the suffix goes through "msg % args" with the rest of the message
            suffix = suffix.replace("%", "%%")
        record.msg = str(record.msg).replace("|", TEXT_BAR) + suffix
        return
    record.msg, record.args = text.replace("|", TEXT_BAR) + suffix, ()


def install() -> None:
    """Chain the correlation ``LogRecord`` factory in front of the current one, once per process."""
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            fields = _SCOPE.get()
            if fields and not _EMITTING.get():
                _with_correlation(record, fields)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
