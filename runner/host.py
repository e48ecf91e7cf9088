"""The ``Runner``: the function app served on the local stack the way one Functions host instance serves it.

``start()`` does the fallible set-up in the caller's thread (discovery, storage, keys, the listening
socket), so errors surface there; then one event loop thread runs the HTTP server (uvicorn), a
listener per timer function and a watcher per blob function. Several runners (threads or processes)
against one storage account behave like several host instances: they share keys, receipts, schedule
status and singleton locks.

``stop(timeout)`` is the host's drain: new HTTP requests get 503 and the listener closes, timers and
blob polling start nothing new, in-flight invocations get up to ``timeout`` seconds to finish and record
their results; whatever is still running then is abandoned without recording anything (its blob is
retried, its timer occurrence runs past due later), and every lease is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from azure.core.exceptions import AzureError
from azure.functions.timer import TimerRequest

from runner.blobs import BlobWatcher
from runner.discovery import discover, load_app
from runner.http import HttpFrontend, listen
from runner.info import StartedInfo, started_info
from runner.invocation import Invoker, default_thread_count
from runner.keys import load_or_create_keys
from runner.plan import Plan, make_plan
from runner.receipts import ReceiptStore
from runner.routes import RouteTable
from runner.settings import apply_to_environment, default_host_id, read_host_json, route_prefix
from runner.singleton import LeaseRegistry
from runner.storage import (
    DEFAULT_CONNECTION,
    HOSTS_CONTAINER,
    ensure_container,
    service_for_connection,
    service_from_connection_string,
)
from runner.timers import TimerListener, schedule_zone

__all__ = ["Runner", "RunnerError"]

log = logging.getLogger("runner")


class RunnerError(Exception):
    """The runner cannot start: storage unreachable, port taken, bad host.json... (the message says which)."""


class Runner:
    """One local host instance for ``app`` (a ``func.FunctionApp``). Also a context manager."""

    def __init__(
        self,
        app: Any,
        *,
        settings: Mapping[str, str] | None = None,
        storage_connection_string: str | None = None,
        host: str = "127.0.0.1",
        port: int = 7071,
        instance_id: str | None = None,
        host_id: str | None = None,
        app_root: Path | None = None,
        route_prefix: str | None = None,
        blob_poll_interval: float = 2.0,
        standby_interval: float = 5.0,
        timer_lease_seconds: int = 15,
        receipt_lease_seconds: int = 30,
        max_blob_attempts: int = 5,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.app = app
        self.settings = dict(os.environ if settings is None else settings)
        self.root = (app_root or Path.cwd()).resolve()
        self.host, self.port = host, port
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self.host_id = host_id or default_host_id(self.settings, self.root)
        self._connection_string = storage_connection_string
        self._route_prefix = route_prefix
        self.blob_poll_interval, self.standby_interval = blob_poll_interval, standby_interval
        self.timer_lease_seconds, self.receipt_lease_seconds = timer_lease_seconds, receipt_lease_seconds
        self.max_blob_attempts, self.shutdown_timeout = max_blob_attempts, shutdown_timeout
        self.started: StartedInfo | None = None
        self.clean_shutdown = True
        self._registry = LeaseRegistry()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._stop_timeout = shutdown_timeout
        self._ready = threading.Event()
        self._finished = threading.Event()
        self._signal_stop = threading.Event()
        self._failure: BaseException | None = None
        self._began = time.monotonic()
        self._listeners: list[TimerListener] = []

    @classmethod
    def from_values(
        cls,
        values: Mapping[str, str],
        *,
        app: str = "function_app:app",
        root: Path | None = None,
        **options: Any,
    ) -> Runner:
        """Export ``values`` to the environment (variables already set win), import the app, wrap it.

        The one-call form for launchers such as ``python -m localstack``; ``options`` are ``Runner``'s.
        """
        root = (root or Path.cwd()).resolve()
        apply_to_environment(values)
        return cls(load_app(app, root=root), settings=dict(os.environ), app_root=root, **options)

    def describe(self) -> str:
        """The start-up listing (functions, URLs, keys, skipped functions) once started."""
        return self.started.describe() if self.started else "functions: the runner is not started"

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> StartedInfo:
        if self._thread is not None:
            raise RunnerError("this runner was already started; make a new Runner to start again")
        discovery = discover(self.app)
        plan = make_plan(discovery, self.settings, zone=schedule_zone(self.settings))
        for skipped in plan.skipped:
            log.warning("Function %s is not served: %s", skipped.name, skipped.reason)
        prefix = self._route_prefix
        if prefix is None:
            prefix = route_prefix(read_host_json(self.root))
        try:
            service = (
                service_from_connection_string(self._connection_string)
                if self._connection_string
                else service_for_connection(DEFAULT_CONNECTION, self.settings)
            )
            ensure_container(service, HOSTS_CONTAINER)
            keys = load_or_create_keys(service, self.host_id, [spec.name for spec, _ in plan.http])
            for blob in plan.blobs:
                ensure_container(blob.service, blob.path.container)
        except AzureError as exc:
            raise RunnerError(
                f"storage is not reachable ({exc.__class__.__name__}: {exc}); "
                "is Azurite running and AzureWebJobsStorage pointing at it?"
            ) from exc
        try:
            sock = listen(self.host, self.port)
        except OSError as exc:
            raise RunnerError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror} "
                "(is another runner or `func start` using it? choose --port)"
            ) from exc
        port = sock.getsockname()[1]
        base_url = f"http://{self.host}:{port}"
        self._service, self._plan, self._socket = service, plan, sock
        self._invoker = Invoker(threads=default_thread_count(self.settings), directory=str(self.root))
        self._frontend = HttpFrontend(
            functions=plan.functions,
            table=RouteTable([r for _, r in plan.http]),
            keys=keys,
            invoker=self._invoker,
            prefix=prefix,
            host_status=self._host_status,
            manual_triggers={},
        )
        self.started = started_info(
            plan, keys, base_url=base_url, prefix=prefix, host_id=self.host_id, instance_id=self.instance_id
        )
        self._thread = threading.Thread(
            target=self._thread_main, name=f"runner-{self.instance_id}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(30) or self._failure is not None:
            self._signal_stop.set()
            raise RunnerError(f"the runner did not start: {self._failure!r}") from self._failure
        log.info(
            "Runner %s started on %s (host id %s, %d functions)",
            self.instance_id,
            base_url,
            self.host_id,
            len(plan.functions),
        )
        return self.started

    def request_stop(self) -> None:
        """Ask ``serve_forever`` to stop (safe from signal handlers and other threads)."""
        self._signal_stop.set()

    def serve_forever(self) -> None:
        """Start if needed, run until SIGINT/SIGTERM (or ``request_stop``), then stop gracefully."""
        if self._thread is None:
            self.start()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            while not self._signal_stop.wait(0.5):
                if self._finished.is_set():
                    break
        finally:
            log.info("Stopping: waiting up to %.0fs for in-flight invocations", self.shutdown_timeout)
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signal_stop.is_set():
            # Like uvicorn's second Ctrl-C: quit now. Every record is one atomic write, so nothing is
            # half-recorded; held leases expire on their own (15-60 s).
            log.warning("Second %s: exiting without waiting", signal.Signals(signum).name)
            logging.shutdown()
            os._exit(130)
        self._signal_stop.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Drain and stop; True when every in-flight invocation finished and recorded its result."""
        thread = self._thread
        if thread is None:
            return True
        self._stop_timeout = self.shutdown_timeout if timeout is None else timeout
        self._request_loop_stop()
        thread.join(self._stop_timeout + 30)
        return self.clean_shutdown

    def _request_loop_stop(self) -> None:
        loop, event = self._loop, self._stop_requested
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    def leading_timers(self) -> list[str]:
        """Timer functions this runner currently schedules (it holds their singleton lock)."""
        return sorted(listener.spec.name for listener in self._listeners if listener.leading)

    def __enter__(self) -> Runner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop thread -------------------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._failure = self._failure or exc
            log.exception("the runner's event loop failed")
        finally:
            self._ready.set()
            self._finished.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        stopping = asyncio.Event()
        config = uvicorn.Config(
            self._frontend,
            log_config=None,
            access_log=False,
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=int(self.shutdown_timeout),
        )
        server = uvicorn.Server(config)
        server_task = asyncio.ensure_future(server.serve(sockets=[self._socket]))
        listeners, watchers = self._background(self._plan, stopping)
        tasks = [asyncio.ensure_future(x.run()) for x in listeners]
        tasks += [asyncio.ensure_future(x.run()) for x in watchers]
        while not server.started and not server_task.done():
            await asyncio.sleep(0.02)
        if server_task.done():
            self._failure = server_task.exception() or RunnerError("the HTTP server stopped at start-up")
            stopping.set()
            return
        self._ready.set()
        await self._stop_requested.wait()
        await self._drain(server, server_task, tasks, watchers, stopping)

    def _background(
        self, plan: Plan, stopping: asyncio.Event
    ) -> tuple[list[TimerListener], list[BlobWatcher]]:
        listeners = [
            TimerListener(
                t.spec,
                schedule=t.schedule,
                service=self._service,
                host_id=self.host_id,
                instance_id=self.instance_id,
                invoker=self._invoker,
                registry=self._registry,
                stopping=stopping,
                standby_interval=self.standby_interval,
                lease_seconds=self.timer_lease_seconds,
            )
            for t in plan.timers
        ]
        receipts = ReceiptStore(
            self._service,
            self.host_id,
            instance_id=self.instance_id,
            registry=self._registry,
            lease_seconds=self.receipt_lease_seconds,
            max_attempts=self.max_blob_attempts,
        )
        watchers = [
            BlobWatcher(
                b.spec,
                path=b.path,
                service=b.service,
                receipts=receipts,
                invoker=self._invoker,
                poll_interval=self.blob_poll_interval,
                stopping=stopping,
            )
            for b in plan.blobs
        ]
        self._listeners = listeners
        manual: dict[str, Any] = {w.spec.name: w.process_now for w in watchers}
        for listener in listeners:
            manual[listener.spec.name] = self._manual_timer(listener)
        self._frontend.manual_triggers = {name.lower(): hook for name, hook in manual.items()}
        return listeners, watchers

    def _manual_timer(self, listener: TimerListener) -> Any:
        async def run(_input: str) -> None:
            request = TimerRequest(past_due=False)
            await self._invoker.invoke(listener.spec, {listener.spec.trigger_arg: request}, detail="(manual)")

        return run

    async def _drain(
        self,
        server: uvicorn.Server,
        server_task: asyncio.Future[None],
        tasks: Sequence[asyncio.Future[None]],
        watchers: list[BlobWatcher],
        stopping: asyncio.Event,
    ) -> None:
        timeout = max(self._stop_timeout, 0)
        self._frontend.stopping = True
        server.config.timeout_graceful_shutdown = math.ceil(timeout)  # the wait below bounds it too
        server.should_exit = True
        stopping.set()
        work: set[asyncio.Future[Any]] = {server_task, *tasks, *self._invoker.jobs()}
        for watcher in watchers:
            work.update(watcher.tasks)
        _, pending = await asyncio.wait(work, timeout=timeout) if work else (set(), set())
        abandoned = self._invoker.in_flight
        pending |= set(self._invoker.jobs())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        released = await asyncio.to_thread(self._registry.release_all)
        self.clean_shutdown = abandoned == 0
        if abandoned:
            log.warning(
                "Stopped with %d invocation(s) abandoned after %.1fs: their results were not "
                "recorded (blobs will be retried; timers run past due)",
                abandoned,
                timeout,
            )
        leftover = f", released {released} leftover lease(s)" if released else ""
        log.info("Runner %s stopped%s", self.instance_id, leftover)

    # -- helpers ---------------------------------------------------------------------------------------

    def _host_status(self) -> dict[str, Any]:
        stopping = self._frontend.stopping
        return {
            "id": self.host_id,
            "instanceId": self.instance_id,
            "version": "local-runner",
            "state": "Stopping" if stopping else "Running",
            "processUptime": int((time.monotonic() - self._began) * 1000),
        }
