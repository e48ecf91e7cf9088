"""The one HTTP core for every D365 call: pooled session, auth, request id, retry policy, typed errors.

Per logical call the order is: request id → bearer token → send → (401: one token refresh) → retry policy
(429 Retry-After, backoff on 5xx/network errors, deadline) → typed error from ``errors.error_for_status``.
Decisions live in ``retry.RetryPolicy`` (pure); this module only does the I/O and the waiting, through an
injectable ``sleep`` and ``clock`` so tests assert waits without waiting.

Thread safety: one transport may serve many threads at once. The pooled ``requests.Session`` is only read
after construction (cookies are refused, so no shared state changes per call), the policy is immutable,
per-call state lives on the stack, and ``stats`` and the throttle window take a lock. The token provider
must be thread-safe itself.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import HTTPError as Urllib3Error

from shared.d365.errors import (
    D365ConnectionError,
    D365Error,
    D365TimeoutError,
    error_for_status,
)
from shared.d365.network_errors import NETWORK_ERRORS, BodyReadError, classify_network_error, safe_cause
from shared.d365.request_body import PreparedBody, RequestBody
from shared.d365.retry import (
    Decision,
    ErrorKind,
    RetryPolicy,
    RetrySettings,
    is_idempotent,
    parse_retry_after,
)
from shared.d365.throttle_window import DEFAULT_ALERT_COUNT, DEFAULT_ALERT_SECONDS, ThrottleWindow
from shared.d365.tokens import TokenProvider
from shared.d365.transport_stats import TransportStats
from shared.logs import log_event
from shared.redact import redact_text, redact_url

__all__ = ["SERVER_REQUEST_ID_HEADERS", "D365Transport", "TransportSettings"]

logger = logging.getLogger(__name__)

#: Response headers that carry D365's (or Azure's) own id for the request, checked in this order.
SERVER_REQUEST_ID_HEADERS = ("ms-dyn-aid", "x-ms-request-id", "request-id", "x-ms-activity-id")

_ERROR_BODY_LIMIT = 1 << 20

#: A call that waited this many times for throttling (429 Retry-After or the shared gate) logs D365_THROTTLED.
THROTTLE_EVENT_AFTER = 3


class TransportSettings(RetrySettings, Protocol):
    """What ``shared.settings.HttpSettings`` gives the transport: retry fields and per-attempt timeouts."""

    @property
    def connect_timeout(self) -> float: ...
    @property
    def read_timeout(self) -> float: ...


class _RedactingFilter(logging.Filter):
    """Masks SAS signatures and other secrets in urllib3's own DEBUG lines (they print the full URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = redact_text(message)
        if safe != message:
            record.msg, record.args = safe, ()
        return True


def _guard_urllib3_logging() -> None:
    """Idempotently attach the redacting filter to the logger urllib3 writes request lines to."""
    pool_logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactingFilter) for f in pool_logger.filters):
        pool_logger.addFilter(_RedactingFilter())


class D365Transport:
    """Session-based HTTP core for D365 F&O (OData, custom services, DMF, connector) and SAS blob URLs."""

    def __init__(
        self,
        base_url: str,
        token_provider: TokenProvider | None,
        *,
        policy: RetryPolicy | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        session: requests.Session | None = None,
        user_agent: str = "d365fo-functions/0.1",
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        pool_maxsize: int = 32,
        throttle_alert_count: int = DEFAULT_ALERT_COUNT,
        throttle_alert_seconds: float = DEFAULT_ALERT_SECONDS,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("base_url must be an absolute http(s) URL")
        self.base_url = base_url.rstrip("/")
        self._origin = (parts.scheme, parts.netloc.lower())
        self._odata_root = parts.path.rstrip("/") + "/data"
        self.token_provider = token_provider
        self.policy = policy or RetryPolicy()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.user_agent = user_agent
        self._sleep = sleep
        self._clock = clock
        self.stats = TransportStats()
        # One throttle gate per transport (= per D365 caller identity): after a 429, every call on this
        # transport waits for the announced moment instead of each thread collecting its own 429, which
        # D365 counts against the caller ("continued demanding requests extend the interval", ref §2.3).
        self._gate_lock = threading.Lock()
        self._throttled_until = 0.0
        # 429s across all calls of this transport: throttling spread thin is D365_THROTTLING_SUSTAINED
        self._throttle_window = ThrottleWindow(throttle_alert_count, throttle_alert_seconds)
        _guard_urllib3_logging()
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            # max_retries=0: urllib3 must not retry behind the policy's back
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # stateless, thread-safe
        self.session = session

    @classmethod
    def from_settings(
        cls, base_url: str, token_provider: TokenProvider | None, settings: TransportSettings, **kwargs: Any
    ) -> D365Transport:
        """Build from the app's HTTP settings; ``kwargs`` pass any other constructor option."""
        return cls(
            base_url,
            token_provider,
            policy=RetryPolicy.from_settings(settings),
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            **kwargs,
        )

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> D365Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _gate_pause(self, already_waited_until: float) -> tuple[float, float]:
        """(seconds until the throttle gate opens, the moment it opens); 0 when open or already waited."""
        with self._gate_lock:
            until = self._throttled_until
        if until <= already_waited_until:
            return 0.0, until
        return max(0.0, until - self._clock()), until

    def _close_gate(self, seconds: float) -> float:
        """Close the gate for ``seconds`` from now; returns the moment it opens again."""
        with self._gate_lock:
            self._throttled_until = max(self._throttled_until, self._clock() + seconds)
            return self._throttled_until

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: RequestBody | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        stream: bool = False,
        authenticate: bool = True,
        ok_statuses: Collection[int] = (),
        timeout: float | None = None,
    ) -> requests.Response:
        """Send one logical call with retries; return the response for 2xx or ``ok_statuses``.

        ``url`` is relative to ``base_url`` or absolute (nextLinks; SAS URLs with ``authenticate=False``, so
        the bearer token never leaves the D365 host). ``idempotent`` overrides the method's default.
        ``timeout`` overrides the policy's total time budget for this call. With ``stream=False`` the body
        is read inside the retry loop, so a connection dropped mid-body is retried like any network error.
        Raises a ``D365Error`` subclass; ``ValueError`` for a bad URL or body before anything is sent.
        """
        method = method.upper()
        full_url = self._resolve(url, params, authenticate)
        safe_url = redact_url(full_url)
        if authenticate and self.token_provider is None:
            raise ValueError("this transport has no token provider: use authenticate=False")
        call = _Call(
            transport=self,
            method=method,
            url=full_url,
            safe_url=safe_url,
            body=PreparedBody(data, json),
            headers=headers or {},
            idempotent=is_idempotent(method, headers, idempotent),
            stream=stream,
            authenticate=authenticate,
            ok_statuses=frozenset(ok_statuses),
            policy=self.policy if timeout is None else replace(self.policy, total_timeout=timeout),
        )
        self.stats.add(calls=1)
        try:
            response = call.run()
        except D365Error as exc:
            self.stats.count("failures", type(exc).__name__)
            call.log_throttling(exc)
            raise
        call.log_throttling(None)
        return response

    def _resolve(self, url: str, params: Mapping[str, str] | None, authenticate: bool) -> str:
        parts = urlsplit(url)
        if parts.scheme:
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"unsupported URL: {redact_url(url)}")
            if authenticate and (parts.scheme, parts.netloc.lower()) != self._origin:
                # never hand the D365 bearer token to another host (SAS blob URLs need authenticate=False)
                raise ValueError(f"refusing to send the D365 token to {redact_url(url)}")
            full = url
        else:
            full = f"{self.base_url}/{url.lstrip('/')}"
        if params:
            prepared = requests.PreparedRequest()
            prepared.prepare_url(full, dict(params))
            full = str(prepared.url)
        return full

    def _headers(self, call: _Call) -> CaseInsensitiveDict[str]:
        merged: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        merged["User-Agent"] = self.user_agent
        merged["Accept"] = "application/json"
        merged["x-ms-client-request-id"] = call.request_id
        parts = urlsplit(call.url)
        if (parts.scheme, parts.netloc.lower()) == self._origin and parts.path.startswith(self._odata_root):
            merged["OData-Version"] = "4.0"
            merged["OData-MaxVersion"] = "4.0"
        if call.body.content_type:
            merged["Content-Type"] = call.body.content_type
        merged.update(call.headers)
        if call.authenticate:
            assert self.token_provider is not None
            merged["Authorization"] = f"Bearer {self.token_provider.get_token()}"
        return merged


class _Call:
    """The state of one logical call across its attempts (kept off the shared transport)."""

    def __init__(
        self,
        *,
        transport: D365Transport,
        method: str,
        url: str,
        safe_url: str,
        body: PreparedBody,
        headers: Mapping[str, str],
        idempotent: bool,
        stream: bool,
        authenticate: bool,
        ok_statuses: frozenset[int],
        policy: RetryPolicy,
    ) -> None:
        self.t = transport
        self.method = method
        self.url = url
        self.safe_url = safe_url
        self.body = body
        self.headers = headers
        self.idempotent = idempotent
        self.stream = stream
        self.authenticate = authenticate
        self.ok_statuses = ok_statuses
        self.policy = policy
        self.request_id = str(uuid.uuid4())
        self.started = transport._clock()
        self.attempts = 0
        self.throttled = 0
        self.refreshed = False
        self.previous_delay = 0.0
        self.gate_waited = 0.0  # the throttle-gate moment this call has already slept until
        self.throttle_waits = 0  # sleeps for a 429's Retry-After or the throttle gate (D365_THROTTLED)
        self.throttle_seconds = 0.0

    def elapsed(self) -> float:
        return self.t._clock() - self.started

    def run(self) -> requests.Response:
        while True:
            remaining = self.policy.total_timeout - self.elapsed()
            if remaining <= 0:
                raise D365TimeoutError(
                    f"{self.method} gave up: total deadline of {self.policy.total_timeout:g}s ran out",
                    request_id=self.request_id,
                    url=self.safe_url,
                )
            pause, opens = self.t._gate_pause(self.gate_waited) if self.authenticate else (0.0, 0.0)
            if pause > 0:  # another call on this transport was told to back off: honour it too
                self.gate_waited = opens
                self.throttle_waits += 1
                self.throttle_seconds += min(pause, remaining)
                self.t.stats.count("retries", "throttle_gate")
                self.t.stats.add(slept_seconds=min(pause, remaining), throttled_seconds=min(pause, remaining))
                self.t._sleep(min(pause, remaining))
                continue
            if self.attempts:
                self.body.rewind()
            self.attempts += 1
            self.t.stats.add(attempts=1)
            begin = self.t._clock()
            try:
                response = self._send(remaining)
            except (*NETWORK_ERRORS, BodyReadError) as exc:
                self._on_network_error(exc, begin)
                continue
            status = response.status_code
            self._log_attempt(status, begin)
            if 200 <= status < 300 or status in self.ok_statuses:
                return response
            self._on_status(response)

    def _send(self, remaining: float) -> requests.Response:
        timeout = (min(self.t.connect_timeout, remaining), min(self.t.read_timeout, remaining))
        response = self.t.session.request(
            self.method,
            self.url,
            data=self.body.payload,
            headers=self.t._headers(self),
            timeout=timeout,
            stream=True,
            allow_redirects=False,
        )
        status = response.status_code
        if not self.stream or not (200 <= status < 300 or status in self.ok_statuses):
            try:
                if self.stream:  # an error answer on a streamed call: keep only what the error needs
                    response._content = response.raw.read(_ERROR_BODY_LIMIT, decode_content=True) or b""
                else:
                    _ = response.content
            except (*NETWORK_ERRORS, Urllib3Error) as exc:  # raw.read raises urllib3's own errors
                response.close()
                raise BodyReadError(exc) from exc
            finally:
                if self.stream and not (200 <= status < 300 or status in self.ok_statuses):
                    response.close()
        return response

    def _on_network_error(self, exc: Exception, begin: float) -> None:
        kind = classify_network_error(exc)
        cause = exc.error if isinstance(exc, BodyReadError) else exc
        logger.debug(
            "D365 %s %s -> %s after %.3fs (attempt %d, request_id=%s)",
            self.method,
            self.safe_url,
            kind.value,
            self.t._clock() - begin,
            self.attempts,
            self.request_id,
        )
        decision = self.policy.decide(
            attempts=self.attempts - int(self.refreshed),
            throttled=self.throttled,
            error=kind,
            idempotent=self.idempotent,
            elapsed=self.elapsed(),
            previous_delay=self.previous_delay,
        )
        if not self._wait(decision):
            timed_out = kind is ErrorKind.READ_TIMEOUT or isinstance(cause, requests.Timeout)
            timed_out = timed_out or decision.reason == "deadline"
            error_cls = D365TimeoutError if timed_out else D365ConnectionError
            message = (
                f"{self.method} failed ({kind.value}: {redact_text(str(cause))}) "
                f"after {self.attempts} attempt(s); stopped: {decision.reason}"
            )
            raise error_cls(message, request_id=self.request_id, url=self.safe_url) from safe_cause(cause)

    def _on_status(self, response: requests.Response) -> None:
        status = response.status_code
        response.close()
        if status == 401 and self.authenticate and not self.refreshed and self.body.replayable:
            assert self.t.token_provider is not None
            self.refreshed = True
            self.t.token_provider.invalidate()
            self.t.stats.add(token_refreshes=1)
            self.t.stats.count("retries", "auth_refresh")
            logger.info(
                "D365 %s %s answered 401: token refreshed, retrying once (request_id=%s)",
                self.method,
                self.safe_url,
                self.request_id,
            )
            return
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 429:
            self.throttled += 1
            if self.authenticate and self.t._throttle_window.record(self.t._clock()):
                self.log_sustained_throttling()
        decision = self.policy.decide(
            attempts=self.attempts - int(self.refreshed),
            throttled=self.throttled,
            status=status,
            retry_after=retry_after,
            idempotent=self.idempotent,
            elapsed=self.elapsed(),
            previous_delay=self.previous_delay,
        )
        if status == 429 and decision.retry and self.authenticate:
            self.gate_waited = self.t._close_gate(decision.delay)  # this call sleeps it out in _wait
        if not self._wait(decision, throttled=status == 429):
            raise error_for_status(
                status,
                redact_text(response.text) if response.content else None,
                request_id=self.request_id,
                url=self.safe_url,
                retry_after=retry_after,
                server_request_id=_server_request_id(response),
            )

    def _wait(self, decision: Decision, *, throttled: bool = False) -> bool:
        """Sleep for a retry the policy allows (and the body permits); False means give up."""
        if decision.retry and not self.body.replayable:
            decision = Decision(False, 0.0, "body_not_replayable")
        if not decision.retry:
            return False
        logger.warning(
            "D365 %s %s: retrying in %.2fs (%s, attempt %d, request_id=%s)",
            self.method,
            self.safe_url,
            decision.delay,
            decision.reason,
            self.attempts,
            self.request_id,
        )
        self.t.stats.count("retries", decision.reason)
        self.t.stats.add(slept_seconds=decision.delay, throttled_seconds=decision.delay if throttled else 0.0)
        if throttled:
            self.throttle_waits += 1
            self.throttle_seconds += decision.delay
        self.previous_delay = decision.delay
        if decision.delay > 0:
            self.t._sleep(decision.delay)
        return True

    def log_throttling(self, failure: D365Error | None) -> None:
        """D365_THROTTLED when this call waited often for throttling, or gave up while throttled."""
        gave_up = failure is not None and self.throttled > 0
        if self.throttle_waits < THROTTLE_EVENT_AFTER and not gave_up:
            return
        text = (
            f"{self.method} waited {self.throttle_waits} time(s), {self.throttle_seconds:.1f}s in all, "
            f"for D365 throttling ({self.throttled} answer(s) 429)"
        )
        log_event(
            logger,
            "D365_THROTTLED",
            logging.ERROR if failure is not None else logging.WARNING,
            text + (f"; gave up: {type(failure).__name__}" if failure is not None else "; then succeeded"),
            method=self.method,
            path=urlsplit(self.safe_url).path,
            throttled=self.throttled,
            waits=self.throttle_waits,
            waited_seconds=round(self.throttle_seconds, 1),
            attempts=self.attempts,
            outcome="failed" if failure is not None else "succeeded",
            request_id=self.request_id,
        )

    def log_sustained_throttling(self) -> None:
        """D365_THROTTLING_SUSTAINED: this 429 completed the transport's window (once per window)."""
        window = self.t._throttle_window
        log_event(
            logger,
            "D365_THROTTLING_SUSTAINED",
            logging.WARNING,
            f"{window.count} answers 429 from D365 within {window.seconds / 60:g} minutes on this instance; "
            f"the latest to {self.method} {urlsplit(self.safe_url).path}",
            throttled=window.count,
            window_minutes=round(window.seconds / 60, 2),
            host=self.t._origin[1],
            method=self.method,
            path=urlsplit(self.safe_url).path,
            request_id=self.request_id,
        )

    def _log_attempt(self, status: int, begin: float) -> None:
        logger.debug(
            "D365 %s %s -> %d in %.3fs (attempt %d, request_id=%s)",
            self.method,
            self.safe_url,
            status,
            self.t._clock() - begin,
            self.attempts,
            self.request_id,
        )


def _server_request_id(response: requests.Response) -> str | None:
    for name in SERVER_REQUEST_ID_HEADERS:
        value = response.headers.get(name)
        if value:
            return value
    return None
