"""Hand a prepared input to D365: enqueue it to a recurring data job, or import an uploaded package.

Failures are sorted by what they mean for "exactly once" (the caller records the verdict in the ledger):

- :class:`Refused`: D365 answered that it will not import this (a 4xx such as an unknown data project, or
  413 from enqueue): nothing was imported; the input goes to the errors location with D365's message.
- :class:`Deferred`: nothing was sent, or D365 could not take it now (cannot connect, throttled, the
  import lock or a running package import): the input stays in inbound and is tried again later.
- :class:`Uncertain`: the request may have reached D365 and nobody can tell (a 5xx, a timeout or a dropped
  connection). The recurring API offers no lookup by external identifier (ref §4.2), so an enqueue is NOT
  sent again blindly: it goes to the errors location marked ``needs_operator_check``. A package import
  (``import_unconfirmed``) stays ``sending`` in the ledger and in inbound: later attempts look the
  deterministic execution id up (``intake.recover``) before sending again with that same id.

``ImportFromPackage`` runs with a deterministic execution id, so after any failure the import is looked up
by that id: if D365 knows it, it was imported (by us); D365 also refuses a second job with the same id.
Microsoft says ``ImportFromPackage`` must not run in parallel (ref §3.1): :func:`import_under_lock` holds
the app-wide blob lease ``state/locks/import-from-package`` and, with ``IMPORT_SERIALIZE=execution``,
also waits until the previous package import (recorded in the lock blob's metadata) has ended.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO

from azure.core.exceptions import HttpResponseError

from shared.d365.connector import ConnectorClient, EnqueueTooLargeError
from shared.d365.dmf import DmfClient, ExecutionStatus
from shared.d365.errors import (
    D365AuthError,
    D365ClientError,
    D365ConnectionError,
    D365Error,
    D365HTTPError,
    D365ServerError,
    D365ThrottledError,
)
from shared.d365.network_errors import classify_network_error
from shared.d365.retry import ErrorKind
from shared.logs import log_event
from shared.pipelines.imports import layout
from shared.pipelines.imports.settings import ImportSettings, Route
from shared.redact import redact_text
from shared.status import utc_now
from shared.storage import BlobStore, LeaseUnavailableError

__all__ = [
    "Deferred",
    "LeaseLost",
    "Refused",
    "SendError",
    "Uncertain",
    "enqueue",
    "execution_known",
    "import_under_lock",
]

log = logging.getLogger(__name__)


class SendError(Exception):
    """Base of the send verdicts; ``reason_code`` goes into the status record."""

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.message = redact_text(message)


class Refused(SendError):
    """D365 will not import it; nothing was imported."""


class Deferred(SendError):
    """Not sent now; try again later."""


class Uncertain(SendError):
    """It may or may not have reached D365."""


class LeaseLost(SendError):
    """The input's lease lapsed before the send (another instance may have the file now): nothing sent, and
    the ledger is left to whoever holds the input."""


def _describe(exc: D365Error) -> str:
    if isinstance(exc, D365HTTPError):
        return f"D365 answered HTTP {exc.status_code}: {exc.message}"
    return f"{type(exc).__name__}: {exc.message}"


def _nothing_sent(exc: D365Error) -> bool:
    """A connection error that happened before the request left (refused, DNS, connect timeout)."""
    cause = exc.__cause__
    return (
        isinstance(exc, D365ConnectionError)
        and isinstance(cause, Exception)
        and (classify_network_error(cause) is ErrorKind.CONNECT)
    )


def _transient(exc: D365Error) -> SendError | None:
    """Failures where D365 did nothing and a later attempt may succeed unchanged."""
    if _nothing_sent(exc):
        return Deferred("d365_unreachable", f"D365 could not be reached: {_describe(exc)}")
    if isinstance(exc, D365ThrottledError):
        return Deferred("throttled", f"D365 kept throttling: {_describe(exc)}")
    if isinstance(exc, D365AuthError):
        return Deferred(
            "not_authorized",
            f"D365 refused the app's credentials or rights ({_describe(exc)}); the file is retried once "
            "the app registration or the recurring job's authorization policy is fixed",
        )
    return None


def enqueue(
    connector: ConnectorClient,
    route: Route,
    legal_entity: str,
    body: IO[bytes],
    *,
    external_id: str,
    is_package: bool,
) -> str:
    """POST to ``/api/connector/enqueue/{activity}``; the message id, or a :class:`SendError`."""
    try:
        return connector.enqueue(
            route.activity_id,
            body,
            entity=None if is_package else route.entity,
            company=legal_entity or None,
            external_id=external_id,
            content_type="application/zip" if is_package else "application/octet-stream",
        )
    except EnqueueTooLargeError as exc:
        raise Refused(
            "payload_too_large",
            f"the recurring-integrations enqueue refused the file as too large (HTTP 413). Route files this "
            f'big through the DMF package API instead (a route with "target": "package"). {exc.message}',
        ) from exc
    except D365Error as exc:
        verdict = _transient(exc)
        if verdict is not None:
            raise verdict from exc
        if isinstance(exc, D365ClientError | D365HTTPError) and not isinstance(exc, D365ServerError):
            raise Refused("refused_by_d365", _describe(exc)) from exc
        raise Uncertain(
            "needs_operator_check",
            f"the enqueue may or may not have reached D365 ({_describe(exc)}). It is not sent again "
            f"automatically: check the recurring data job's history in D365 for the external identifier "
            f"{external_id!r}; if it is not there, re-submit the file with `python -m ops resubmit` and the "
            f"path of this status record",
        ) from exc


def execution_known(dmf: DmfClient, execution_id: str) -> bool:
    """Whether D365 has a job with this id (an unknown id answers ``Unknown`` or 400 "not found")."""
    try:
        return dmf.execution_status(execution_id) is not ExecutionStatus.UNKNOWN
    except D365ClientError as exc:
        if exc.status_code in (400, 404):
            return False
        raise


def _id_already_used(failure: D365Error, execution_id: str) -> bool:
    """D365 refused the import because our deterministic execution id exists (an earlier attempt of ours).

    The wording of that refusal is UNCONFIRMED (not in the reference; the emulator answers 400 "The execution
    ID '...' is already used by another job"): the id quoted with "already" or "exist" counts. The id is
    (route, company, content, generation), so only an earlier attempt of this very import can have used it.
    """
    text = f"{failure.message} {getattr(failure, 'inner_message', '') or ''}".lower()
    return execution_id.lower() in text and ("already" in text or "exist" in text)


def _import(dmf: DmfClient, route: Route, legal_entity: str, package_url: str, execution_id: str) -> str:
    try:
        return dmf.import_from_package(
            package_url,
            route.definition_group,
            execution_id,
            execute=route.execute,
            overwrite=route.overwrite,
            legal_entity_id=legal_entity,
        )
    except D365Error as exc:
        failure = exc
    if _nothing_sent(failure):  # the request never left: nothing can have started
        raise Deferred("d365_unreachable", f"D365 could not be reached: {_describe(failure)}") from failure
    # Whatever else went wrong, our deterministic execution id tells whether the import exists now.
    try:
        known = execution_known(dmf, execution_id)
    except D365Error as exc:
        raise Uncertain(
            "import_unconfirmed",
            f"ImportFromPackage failed ({_describe(failure)}) and D365 could not be asked whether job "
            f"{execution_id!r} exists ({_describe(exc)}); the next attempt asks again before sending",
        ) from failure
    if known or _id_already_used(failure, execution_id):
        log.warning("ImportFromPackage %s failed (%s) but D365 has the job: counted as sent",
                    execution_id, _describe(failure))  # fmt: skip
        return execution_id
    verdict = _transient(failure)  # throttled or not authorized: D365 answered and started nothing
    if verdict is not None:
        raise verdict from failure
    text = f"{failure.message} {getattr(failure, 'inner_message', '') or ''}".lower()
    if "parallel" in text:
        raise Deferred("d365_busy", f"D365 could not start the import now: {_describe(failure)}") from failure
    if isinstance(failure, D365HTTPError) and 400 <= failure.status_code < 500 and failure.status_code != 408:
        raise Refused("refused_by_d365", f"ImportFromPackage was refused: {_describe(failure)}") from failure
    # A 5xx (D365's 500s are often transient, and validation failures answer 500 too, ref §1.7), a 408, a
    # read timeout or a dropped/truncated answer: D365 may have started the job, and its status row may not
    # exist yet (GetExecutionSummaryStatus answers 400 "not found" for a while, ref §1.7). So this is NOT
    # "not sent": the ledger entry stays ``sending`` (another drop of the content cannot take it over) and the
    # next attempt of this drop asks D365 again before sending with the same execution id (intake.recover).
    raise Uncertain(
        "import_unconfirmed",
        f"ImportFromPackage may or may not have started job {execution_id!r} ({_describe(failure)}) and D365 "
        "does not know the job yet; the file stays in the inbound container and the next attempt asks D365 "
        "again before sending it (with the same execution id)",
    ) from failure


#: How long after ImportFromPackage a 400 "not found" for its status still means "the job is starting".
NOT_FOUND_GRACE_MINUTES = 5.0


def _previous_running(dmf: DmfClient, metadata: dict[str, str], settings: ImportSettings) -> str | None:
    """The execution id of the previous package import if it still runs (and is not stuck)."""
    previous = metadata.get("execution_id")
    if not previous:
        return None
    started = metadata.get("started", "")
    try:
        status = dmf.execution_status(previous)
    except D365ClientError as exc:
        # Right after ImportFromPackage, GetExecutionSummaryStatus answers 400 "...not found" until the
        # execution row exists (ref §1.7): for a while after ``started`` that means "still starting".
        young = bool(started) and _minutes_since(started) < NOT_FOUND_GRACE_MINUTES
        return previous if exc.status_code == 400 and young else None
    if status.final:
        return None
    if started and _minutes_since(started) > settings.stuck_after_minutes:
        log_event(
            log,
            "IMPORT_LOCK_OVERRIDE",
            logging.WARNING,
            f"previous package import still {status} after {settings.stuck_after_minutes:.0f} minutes: "
            "not waiting for it",
            previous_execution_id=previous,
            d365_status=status,
        )
        return None
    return previous


def _minutes_since(stamp: str) -> float:
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (datetime.now(UTC) - moment).total_seconds() / 60


def import_under_lock(
    store: BlobStore,
    settings: ImportSettings,
    dmf: DmfClient,
    route: Route,
    legal_entity: str,
    package_url: str,
    execution_id: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    before_send: Callable[[], None] | None = None,
) -> str:
    """``ImportFromPackage`` while holding the app-wide import lock; a :class:`SendError` on failure.

    ``before_send`` runs right before the call (after any wait for the lock): the caller confirms there that
    it still owns the input (raising :class:`LeaseLost` if not)."""
    deadline = clock() + settings.lock_wait_seconds
    waited_for: str | None = None
    while True:
        try:
            with store.lease(
                settings.state_container, layout.IMPORT_LOCK, seconds=settings.lease_seconds
            ) as lease:
                blob = store.blob(settings.state_container, layout.IMPORT_LOCK)
                metadata = dict(blob.get_blob_properties().metadata or {})
                serialize = settings.serialize == "execution"
                try:
                    running = _previous_running(dmf, metadata, settings) if serialize else None
                except D365Error as exc:
                    raise Deferred(
                        "d365_unreachable", f"could not ask D365 whether the previous import ended: {exc}"
                    ) from exc
                if running is None:
                    if before_send is not None:
                        before_send()
                    answered = _import(dmf, route, legal_entity, package_url, execution_id)
                    try:
                        blob.set_blob_metadata({"execution_id": answered, "started": utc_now()}, lease=lease)
                    except HttpResponseError as exc:  # imported: the next import then learns it from D365
                        log.warning("import lock: could not record %s: %s", answered, exc.reason)
                    return answered
                waited_for = running
        except LeaseUnavailableError:
            waited_for = waited_for or "another instance's ImportFromPackage call"
        if clock() >= deadline:
            raise Deferred(
                "import_lock_busy",
                f"another package import ({waited_for}) still held the import lock after "
                f"{settings.lock_wait_seconds:g}s (ImportFromPackage must not run in parallel); tried later",
            )
        sleep(min(2.0, max(0.1, deadline - clock())))
