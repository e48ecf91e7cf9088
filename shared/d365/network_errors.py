"""Where a failed HTTP attempt broke (connect, read, truncated body, TLS), and a cause that is safe to chain.

The kind decides whether D365 may have acted on the request (``retry.ErrorKind``); the safe cause keeps
tokens and SAS signatures out of printed tracebacks.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

from shared.d365.retry import ErrorKind
from shared.redact import redact_text

__all__ = ["NETWORK_ERRORS", "BodyReadError", "classify_network_error", "safe_cause"]

NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class BodyReadError(Exception):
    """A network error while reading the body of an answer that had already started (classified apart)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(type(error).__name__)
        self.error = error


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes/contexts, the exceptions in its args and urllib3's ``reason``."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        linked = [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
        todo.extend(x for x in linked if isinstance(x, BaseException))


def classify_network_error(exc: Exception) -> ErrorKind:
    """Map requests/urllib3 failures onto where they happened (decides whether D365 may have acted)."""
    if isinstance(exc, BodyReadError):
        timed_out = any(isinstance(e, ReadTimeoutError | requests.Timeout) for e in _chain(exc.error))
        return ErrorKind.READ_TIMEOUT if timed_out else ErrorKind.TRUNCATED
    chain = list(_chain(exc))
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        return ErrorKind.FATAL
    if isinstance(exc, requests.ConnectTimeout) or any(
        isinstance(e, NewConnectionError | ConnectTimeoutError) for e in chain
    ):
        return ErrorKind.CONNECT
    if isinstance(exc, requests.ReadTimeout) or any(isinstance(e, ReadTimeoutError) for e in chain):
        return ErrorKind.READ_TIMEOUT
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return ErrorKind.TRUNCATED
    return ErrorKind.DROPPED


class _RedactedCause(Exception):
    """Stands in for a low-level error whose text (or whose chain's text) held a secret-bearing URL."""


def safe_cause(exc: BaseException) -> BaseException:
    """The original exception, unless printing its chain would show a token or signature."""
    if all(redact_text(str(e)) == str(e) for e in _chain(exc)):
        return exc
    return _RedactedCause(f"{type(exc).__name__}: {redact_text(str(exc))}")
