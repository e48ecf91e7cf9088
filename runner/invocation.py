"""Calling user functions the way the Python worker does, and logging one line per invocation.

``async def`` functions run on the runner's event loop; plain functions run on worker threads, at most
``PYTHON_THREADPOOL_THREAD_COUNT`` at once (the worker's setting; default ``min(32, cpus + 4)``). The
threads are daemon threads so an invocation abandoned at shutdown cannot keep the process alive.
A ``context`` parameter receives a :class:`func.Context`. Every invocation is tracked until it ends, so
shutdown can wait for in-flight work (:meth:`Invoker.drain`), and logged as one readable line:

    Executed 'Functions.orders' (Succeeded, Id=..., Duration=12ms) http GET /api/orders/7
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from azure.functions import _abc as functions_abc  # TraceContext/RetryContext are not re-exported

from runner.discovery import FunctionSpec

__all__ = ["CURRENT_INVOCATION", "InvocationContext", "Invoker", "Outcome"]

log = logging.getLogger("runner.invocations")
_RUNNER_DIR = os.path.dirname(os.path.abspath(__file__))
CURRENT_INVOCATION: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "runner_invocation", default=None
)


class _TraceContext(functions_abc.TraceContext):
    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return ""

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(functions_abc.RetryContext):
    def __init__(self, retry_count: int, max_retry_count: int) -> None:
        self._count, self._max = retry_count, max_retry_count

    @property
    def retry_count(self) -> int:
        return self._count

    @property
    def max_retry_count(self) -> int:
        return self._max

    @property
    def exception(self) -> Any:
        return None


class InvocationContext(func.Context):
    """The ``context`` argument: invocation id, function name and directory, trace and retry context."""

    def __init__(
        self, invocation_id: str, function_name: str, directory: str, retry: tuple[int, int]
    ) -> None:
        self._id, self._name, self._dir = invocation_id, function_name, directory
        self._retry = _RetryContext(*retry)
        self._local = threading.local()
        self._local.invocation_id = invocation_id

    @property
    def invocation_id(self) -> str:
        return self._id

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def function_name(self) -> str:
        return self._name

    @property
    def function_directory(self) -> str:
        return self._dir

    @property
    def trace_context(self) -> functions_abc.TraceContext:
        return _TraceContext()

    @property
    def retry_context(self) -> functions_abc.RetryContext:
        return self._retry


@dataclass(frozen=True)
class Outcome:
    invocation_id: str
    succeeded: bool
    value: Any
    error: BaseException | None
    duration_ms: float

    @property
    def summary(self) -> str:
        if self.error is None:
            return ""
        return f"{type(self.error).__name__}: {self.error}".splitlines()[0][:300]


def default_thread_count(settings: Mapping[str, str]) -> int:
    configured = settings.get("PYTHON_THREADPOOL_THREAD_COUNT", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return min(32, (os.cpu_count() or 1) + 4)


class Invoker:
    """Runs invocations, tracks the ones in flight, and logs each outcome."""

    def __init__(self, *, threads: int, directory: str) -> None:
        self._threads = threads
        self._directory = directory
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Future[Any]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def jobs(self) -> list[asyncio.Future[Any]]:
        """The in-flight invocations (shutdown waits for them, then cancels what is left)."""
        return list(self._running)

    async def invoke(
        self,
        spec: FunctionSpec,
        arguments: dict[str, Any],
        *,
        detail: str,
        retry: tuple[int, int] = (0, 0),
        finish: Callable[[Outcome], Any] | None = None,
    ) -> Outcome:
        """Call the function; never raises for the function's own errors (they are in the outcome).

        ``finish`` runs on the loop right after the call, before the invocation counts as done, so
        whatever records the result is part of the work shutdown waits for.
        """
        invocation_id = str(uuid.uuid4())
        if spec.wants_context:
            arguments = {
                **arguments,
                "context": InvocationContext(invocation_id, spec.name, self._directory, retry),
            }
        job = asyncio.ensure_future(self._run(spec, invocation_id, arguments, detail, finish))
        self._running.add(job)
        job.add_done_callback(self._running.discard)
        return await asyncio.shield(job)

    async def _run(
        self,
        spec: FunctionSpec,
        invocation_id: str,
        arguments: dict[str, Any],
        detail: str,
        finish: Callable[[Outcome], Any] | None,
    ) -> Outcome:
        token = CURRENT_INVOCATION.set((spec.name, invocation_id))
        started = time.perf_counter()
        try:
            try:
                if spec.is_async:
                    value = await spec.user_function(**arguments)
                else:
                    value = await self._in_thread(spec.user_function, arguments)
                outcome = Outcome(invocation_id, True, value, None, _ms(started))
            except Exception as exc:
                outcome = Outcome(invocation_id, False, None, exc, _ms(started))
            if finish is not None:
                try:
                    result = finish(outcome)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception as exc:
                    outcome = Outcome(invocation_id, False, outcome.value, exc, outcome.duration_ms)
            _log(spec, outcome, detail)
            return outcome
        finally:
            CURRENT_INVOCATION.reset(token)

    async def _in_thread(self, function: Callable[..., Any], arguments: dict[str, Any]) -> Any:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._threads)
        loop = asyncio.get_running_loop()
        async with self._slots:
            future: asyncio.Future[Any] = loop.create_future()
            context = contextvars.copy_context()

            def deliver(setter: Callable[[Any], None], value: Any) -> None:
                if not future.done():
                    setter(value)

            def work() -> None:
                invocation = arguments.get("context")
                if isinstance(invocation, InvocationContext):  # the worker sets it in the calling thread
                    invocation.thread_local_storage.invocation_id = invocation.invocation_id
                try:
                    value = context.run(function, **arguments)
                except BaseException as exc:
                    _post(loop, deliver, future.set_exception, exc)
                else:
                    _post(loop, deliver, future.set_result, value)

            threading.Thread(target=work, name=f"invocation-{function.__name__}", daemon=True).start()
            return await future

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for in-flight invocations; answer how many are still running."""
        pending = set(self._running)
        if pending:
            _, still = await asyncio.wait(pending, timeout=max(timeout, 0))
            return len(still)
        return 0


def _post(loop: asyncio.AbstractEventLoop, deliver: Callable[..., None], *args: Any) -> None:
    # a closed loop means the invocation was abandoned at shutdown: nobody waits for the result
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(deliver, *args)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _log(spec: FunctionSpec, outcome: Outcome, detail: str) -> None:
    status = "Succeeded" if outcome.succeeded else "Failed"
    line = "Executed 'Functions.%s' (%s, Id=%s, Duration=%dms) %s %s"
    args = (spec.name, status, outcome.invocation_id, round(outcome.duration_ms), spec.kind, detail)
    if outcome.succeeded:
        log.info(line, *args)
        return
    log.error(line + " -> %s", *args, outcome.summary, exc_info=_user_frames(outcome.error))


def _user_frames(error: BaseException | None) -> Any:
    """The exception with the runner's own frames cut from the top of its traceback."""
    if error is None:
        return None
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_RUNNER_DIR):
        tb = tb.tb_next
    return (type(error), error, tb)
