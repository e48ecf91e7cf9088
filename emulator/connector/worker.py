"""The connector's background worker: moves enqueued messages through their asynchronous states and builds
change-triggered exports. One daemon thread per emulator, woken by the model's condition variable.

Import messages go Enqueued --(pickup delay)--> Preprocessing --(step)--> Processing (the DMF engine
imports the content) --(done, and at least one step)--> Processed | ProcessedWithErrors |
PreProcessingError (ref §4.4). "Process messages in order" (ref §4.1) holds a message back until every
earlier message of its job has finished. Without the option D365 promises no order; when several messages
of such a job are waiting at once, the emulator starts the most recent first, so a client that relies on
the order of its uploads notices here rather than in production.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from emulator.connector.model import (
    IMPORT_TERMINAL,
    Activity,
    ConnectorModel,
    Direction,
    Message,
    MessageStatus,
)

log = logging.getLogger("emulator.connector")

POLL_SECONDS = 0.05  # how often running imports are checked for completion


class RunningImport(Protocol):
    """What the worker needs of a DMF execution (``emulator.dmf.Execution`` satisfies it)."""

    @property
    def id(self) -> str: ...

    @property
    def done(self) -> bool: ...


@dataclass(frozen=True)
class ImportOutcome:
    status: MessageStatus
    log: str
    detail: list[dict[str, object]]


class Engine(Protocol):
    """The processing behind the connector (processing.py adapts the DMF engine to it)."""

    def start_import(self, activity: Activity, message: Message, execution_id: str) -> RunningImport: ...

    def outcome(self, running: RunningImport) -> ImportOutcome: ...

    def build_export(self, activity: Activity, execution_id: str) -> Path: ...


class ConnectorWorker:
    def __init__(
        self, model: ConnectorModel, engine: Engine, *, execution_ids: Callable[[Activity], str]
    ) -> None:
        self.model = model
        self.engine = engine
        self.execution_ids = execution_ids
        self._running: dict[str, RunningImport] = {}  # message id -> its DMF execution
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        with self.model.lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._loop, name="connector-worker", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self.model.lock:
            self._stopping = True
            self.model.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- the loop ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        model = self.model
        while True:
            with model.lock:
                if self._stopping:
                    return
                task, wait = self._next_task()
                if task is None:
                    model.changed.wait(wait)
                    continue
            try:
                task()
            except Exception:  # a bug in one step must not stop the worker
                log.exception("connector worker step failed")

    def _next_task(self) -> tuple[Callable[[], None] | None, float | None]:
        """Under the model lock: the next step to run now, else how long to sleep (None = until woken)."""
        model = self.model
        now = model.clock()
        if model.settings.paused:
            return None, None
        next_due: float | None = None

        def later(at: float) -> None:
            nonlocal next_due
            next_due = at if next_due is None else min(next_due, at)

        for message_id in list(self._running):
            message = model.messages.get(message_id)
            if message is None:  # the journal was reset
                del self._running[message_id]
            elif self._running[message_id].done:
                return (lambda m=message: self._finish_import(m)), None
            else:
                later(now + POLL_SECONDS)

        startable: list[Message] = []
        blocked: set[str] = set()  # in-order jobs with an unfinished earlier message
        for message in model.messages.values():
            if message.direction is not Direction.IMPORT or message.status in IMPORT_TERMINAL:
                continue
            activity = model.activities.get(message.activity_id)
            in_order = activity is not None and activity.process_in_order
            if message.status is MessageStatus.ENQUEUED:
                if in_order and message.activity_id in blocked:
                    continue
                if message.due_at <= now:
                    startable.append(message)
                else:
                    later(message.due_at)
            elif message.status is MessageStatus.PREPROCESSING:
                if message.due_at <= now:
                    return (lambda m=message: self._start_import(m)), None
                later(message.due_at)
            elif message.status is MessageStatus.PROCESSING and message.final_status is not None:
                if message.due_at <= now:
                    return (lambda m=message: self._complete(m)), None
                later(message.due_at)
            if in_order:
                blocked.add(message.activity_id)
        if startable:
            self._begin(self._pick(startable))
            return (lambda: None), None

        for activity_id, due in list(model.export_due.items()):
            if due <= now:
                del model.export_due[activity_id]
                activity = model.activities.get(activity_id)
                if activity is not None:
                    return (lambda a=activity: self._export(a)), None
            else:
                later(due)
        return None, (None if next_due is None else max(0.0, next_due - now))

    def _pick(self, startable: list[Message]) -> Message:
        """In-order jobs' messages in enqueue order; other jobs' newest first (no order is promised)."""
        activities = self.model.activities
        ordered = [m for m in startable if (a := activities.get(m.activity_id)) and a.process_in_order]
        if ordered:
            return ordered[0]
        return max(startable, key=lambda m: m.created_at)

    # --- steps (each called once per message state; the model lock is taken where state changes) --

    def _begin(self, message: Message) -> None:
        """Enqueued -> Preprocessing (under the lock)."""
        model = self.model
        message.status = MessageStatus.PREPROCESSING
        model.pickups += 1
        message.pickup_order = model.pickups
        message.started_at = model.clock()
        message.due_at = message.started_at + model.settings.step_seconds

    def _start_import(self, message: Message) -> None:
        """Preprocessing -> Processing: hand the content to the DMF engine."""
        model = self.model
        with model.lock:
            activity = model.activities.get(message.activity_id)
            generation = model.generation
            if message.status is not MessageStatus.PREPROCESSING:
                return
            message.status = MessageStatus.PROCESSING
            message.due_at = model.clock() + model.settings.step_seconds
            if activity is None:
                self._fail(message, "The recurring data job was deleted before the message was processed.")
                return
            message.execution_id = self.execution_ids(activity)
            execution_id = message.execution_id
        try:
            running = self.engine.start_import(activity, message, execution_id)
        except Exception as exc:
            log.exception("connector import could not start")
            with model.lock:
                if generation == model.generation:
                    self._fail(message, f"The message could not be processed: {exc}")
            return
        with model.lock:
            if generation == model.generation:
                self._running[message.message_id] = running

    def _finish_import(self, message: Message) -> None:
        running = self._running.pop(message.message_id)
        outcome = self.engine.outcome(running)
        with self.model.lock:
            message.final_status = outcome.status
            message.execution_log = outcome.log
            message.execution_detail = outcome.detail

    def _complete(self, message: Message) -> None:
        with self.model.lock:
            if message.final_status is not None:
                message.status = message.final_status
                message.completed_at = self.model.clock()
        # The content has been read; keeping every enqueued file (up to GBs each) would fill the disk.
        if message.content_path is not None:
            message.content_path.unlink(missing_ok=True)

    def _fail(self, message: Message, reason: str) -> None:
        message.final_status = MessageStatus.PREPROCESSING_ERROR
        message.execution_log = reason

    def _export(self, activity: Activity) -> None:
        model = self.model
        with model.lock:
            generation = model.generation
        try:
            export_change(model, self.engine, activity, self.execution_ids(activity), generation)
        except Exception:
            log.exception("change-triggered export of activity %s failed", activity.activity_id)


def export_change(
    model: ConnectorModel, engine: Engine, activity: Activity, execution_id: str, generation: int
) -> Message | None:
    """Build an export package and queue it, unless the model was reset meanwhile."""
    package = engine.build_export(activity, execution_id)
    with model.lock:
        if generation != model.generation or model.activities.get(activity.activity_id) is None:
            package.unlink(missing_ok=True)
            return None
        return model.add_export(activity, package, execution_id=execution_id)
