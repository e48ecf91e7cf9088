"""The named log events and correlation ids, from real pipeline runs on the stack (Azurite + the emulator):
a stuck import job, a poisoned business event, a throttled import, a failed export ack. Fields are read
back with the regular expressions docs/observability.md gives for KQL, and every event name seen in these
runs must be documented there."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from emulator.connector import CUSTOMERS_EXPORT_ID
from shared.context import AppContext
from shared.events.handler_api import HandlerContext, HandlerResult, PermanentHandlerError
from shared.events.handlers import HandlerRegistry
from shared.events.layout import raw_path
from shared.events.model import BusinessEvent, parse_event
from shared.logs import EVENT_ATTRIBUTE
from shared.pipelines.business_events import (
    ProcessOutcome,
    process_stored_event,
    receive_events,
    replay_poisoned,
)
from tests.integration.test_exports_dequeue import make_stack as make_export_stack
from tests.integration.test_imports_stack import PACKAGE_ROUTE, ImportStack, customer_groups_csv, make_stack
from tests.support.business_events import body_of, events_context, events_env, make_event
from tests.support.d365 import faults
from tests.support.stack import AzuriteInfo, EmulatorInfo
from tests.unit.test_logs_documented import documented

__all__ = ["make_stack"]

DMF_ACTIONS = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."
log = logging.getLogger("tests.handlers")


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="tests.handlers")
    caplog.set_level(logging.DEBUG, logger="shared")  # last: it also sets the capturing handler's level
    yield caplog
    seen = {getattr(r, EVENT_ATTRIBUTE) for r in caplog.records if hasattr(r, EVENT_ATTRIBUTE)}
    assert not seen - set(documented()), "log events missing from docs/observability.md"


def field(message: str, key: str) -> str | None:
    """What the docs' KQL finds: ``fields = extract(@"\\| (.*)", 1, message)`` (after the first ``|``), then
    ``extract(@"\\bkey=(\\S+)", 1, fields)`` (quoted values unquoted)."""
    fields = re.search(r"\| (.*)", message)
    found = re.search(rf'\b{key}=("(?:[^"\\]|\\.)*"|\S+)', fields.group(1) if fields else "")
    return None if found is None else found.group(1).strip('"')


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, EVENT_ATTRIBUTE, None) == name]


def lines_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_a_stuck_import_job_is_an_event_with_its_ids_and_every_call_is_tagged(
    make_stack: Any, logs: pytest.LogCaptureFixture
) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE], IMPORT_STUCK_AFTER_MINUTES="30")
    stack.emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 30})
    report = stack.run(stack.drop("groups/slow.csv", customer_groups_csv("1", prefix="LG")))
    assert report.outcome == "sent"
    file = f"{stack.settings.inbound_container}/groups/slow.csv"

    [sent] = events(logs, "IMPORT_SENT")
    message = sent.getMessage()
    assert message.startswith("IMPORT_SENT: sent to D365 as job ")
    assert (field(message, "file"), field(message, "route")) == (file, "groups")
    assert field(message, "job_id") == report.job_id
    assert field(message, "execution_id") == report.execution_id
    calls = lines_of(logs, "shared.d365.transport")
    assert calls, "no D365 call was logged"
    assert all(field(line, "file") == file for line in calls), calls  # the SAS upload threads too
    assert any(field(line, "job_id") == report.job_id for line in calls)  # ImportFromPackage, after the claim

    logs.clear()
    later = stack.monitor(now=stack.later(45))
    assert later.stuck == [report.job_id]
    [stuck] = events(logs, "IMPORT_JOB_STUCK")
    assert stuck.levelno == logging.WARNING
    message = stuck.getMessage()
    assert re.match(r"IMPORT_JOB_STUCK: D365 has not finished after 4\d minutes \(status \w+\) \| ", message)
    assert field(message, "job_id") == report.job_id
    assert field(message, "route") == "groups"
    assert int(field(message, "minutes") or 0) >= 44
    assert field(message, "file") == file
    assert field(message, "execution_id") == report.execution_id
    assert message.count("job_id=") == 1  # the event's own field is not repeated from the scope
    assert stuck.app_job_id == report.job_id  # type: ignore[attr-defined]  # customDimensions with OTel
    polls = lines_of(logs, "shared.d365.transport")
    assert polls
    assert all(field(line, "job_id") == report.job_id for line in polls)


class Failing:
    """A handler that logs like a real one, then fails for good (with a secret in its error)."""

    def __init__(self) -> None:
        self.fail = True

    def __call__(self, event: BusinessEvent, context: HandlerContext) -> HandlerResult:
        log.info("sending to the downstream system")
        if self.fail:
            raise PermanentHandlerError("downstream refused it (Authorization: Bearer s3cr3t-t0ken)")
        return HandlerResult("sent")


@pytest.fixture
def events_app(emulator: EmulatorInfo, azurite: AzuriteInfo) -> Iterator[tuple[AppContext, dict[str, str]]]:
    env = events_env(emulator, azurite, BUSINESS_EVENTS_MAX_ATTEMPTS="3")
    with events_context(env) as context:
        yield context, env


def test_a_poisoned_event_is_an_error_event_with_its_ids_and_no_secret(
    events_app: tuple[AppContext, dict[str, str]], logs: pytest.LogCaptureFixture
) -> None:
    context, env = events_app
    handler = Failing()
    registry = HandlerRegistry()
    registry.register("*", handler, name="downstream")
    event = make_event()
    answer = receive_events(context, body_of(event), {"Content-Type": "application/json"})
    assert answer.body["status"] == "stored"
    [received] = events(logs, "EVENT_RECEIVED")
    assert field(received.getMessage(), "event_id") == event["EventId"]
    assert field(received.getMessage(), "status") == "stored"

    blob = f"{env['BUSINESS_EVENTS_CONTAINER']}/{raw_path(parse_event(event, b''))}"
    result = process_stored_event(context, blob, registry=registry)
    assert result.outcome is ProcessOutcome.POISONED
    [poisoned] = events(logs, "EVENT_POISONED")
    assert poisoned.levelno == logging.ERROR
    message = poisoned.getMessage()
    assert message.startswith("EVENT_POISONED: poisoned after a permanent error: PermanentHandlerError: ")
    assert field(message, "event_id") == event["EventId"]
    assert field(message, "business_event") == "SalesInvoicePostedBusinessEvent"
    assert (field(message, "permanent"), field(message, "mode")) == ("true", "trigger")
    assert field(message, "blob") == blob
    assert field(message, "poison") == f"{env['BUSINESS_EVENTS_POISON_CONTAINER']}/{event['EventId']}.json"
    [handler_line] = lines_of(logs, "tests.handlers")
    assert field(handler_line, "event_id") == event["EventId"]  # the handler's own line, untouched code
    everything = "\n".join(r.getMessage() for r in logs.records) + str([vars(r) for r in logs.records])
    assert "s3cr3t-t0ken" not in everything

    logs.clear()
    handler.fail = False
    replayed = replay_poisoned(context, event["EventId"], registry=registry)
    assert [r.outcome for r in replayed.results] == [ProcessOutcome.PROCESSED]
    [processed] = events(logs, "EVENT_PROCESSED")
    assert field(processed.getMessage(), "mode") == "replay"
    assert field(processed.getMessage(), "event_id") == event["EventId"]


def test_repeated_throttling_is_a_warning_event_on_the_file_it_slowed(
    make_stack: Any, logs: pytest.LogCaptureFixture
) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    rule = {"family": "odata", "path_prefix": DMF_ACTIONS + "GetAzureWriteUrl", "error_rate": 1}
    faults(stack.emulator, {**rule, "error_status": 429, "retry_after": 0, "count": 3})
    report = stack.run(stack.drop("groups/busy.csv", customer_groups_csv("1", prefix="TH")))
    assert report.outcome == "sent", report
    [throttled] = events(logs, "D365_THROTTLED")
    assert throttled.levelno == logging.WARNING
    message = throttled.getMessage()
    assert message.startswith("D365_THROTTLED: POST waited 3 time(s)")
    assert (field(message, "throttled"), field(message, "waits"), field(message, "outcome")) == (
        "3",
        "3",
        "succeeded",
    )
    assert (field(message, "path") or "").endswith("GetAzureWriteUrl")
    assert field(message, "file") == f"{stack.settings.inbound_container}/groups/busy.csv"
    assert field(message, "route") == "groups"


def test_throttling_that_outlasts_the_deadline_is_an_error_event(
    make_stack: Any, logs: pytest.LogCaptureFixture
) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE], D365_RETRY_MAX_SECONDS="3")
    rule = {"family": "odata", "path_prefix": DMF_ACTIONS + "ImportFromPackage", "error_rate": 1}
    faults(stack.emulator, {**rule, "error_status": 429, "retry_after": 30, "count": 1})
    report = stack.run(stack.drop("groups/late.csv", customer_groups_csv("1", prefix="TL")))
    assert report.outcome in ("deferred", "failed"), report
    [throttled] = events(logs, "D365_THROTTLED")
    assert throttled.levelno == logging.ERROR
    message = throttled.getMessage()
    assert (field(message, "outcome"), field(message, "throttled")) == ("failed", "1")
    assert "gave up: D365ThrottledError" in message
    assert field(message, "job_id") == report.job_id
    [outcome] = events(logs, f"IMPORT_{report.outcome.upper()}")
    assert field(outcome.getMessage(), "reason") == report.reason_code


def test_a_failed_ack_is_an_error_event_with_the_message_id(
    clean_emulator: EmulatorInfo, azurite: AzuriteInfo, logs: pytest.LogCaptureFixture
) -> None:
    stack = make_export_stack(clean_emulator, azurite)
    try:
        correlation_id = str(
            clean_emulator.admin("POST", f"connector/activities/{CUSTOMERS_EXPORT_ID}/export")["message_id"]
        )
        rule = {"family": "connector", "path_prefix": "/api/connector/ack", "error_rate": 1}
        faults(clean_emulator, {**rule, "error_status": 403, "count": 1})
        report = stack.run()
    finally:
        stack.context.close()
    [item] = report.items
    assert (item.id, item.acked) == (correlation_id, False)
    [failed] = events(logs, "EXPORT_ACK_FAILED")
    assert failed.levelno == logging.ERROR
    message = failed.getMessage()
    assert message.startswith("EXPORT_ACK_FAILED: stored but not acknowledged: ")
    # D365's error text ends in " | url=… | request_id=…": text, shown with "¦", never read as fields
    assert " ¦ request_id=" in message
    assert (field(message, "url"), field(message, "request_id")) == (None, None)
    assert field(message, "message_id") == correlation_id
    assert (field(message, "activity"), field(message, "activity_id")) == ("customers", CUSTOMERS_EXPORT_ID)
    assert field(message, "path") == item.path
    [stored] = events(logs, "EXPORT_STORED")
    assert (field(stored.getMessage(), "acked"), field(stored.getMessage(), "message_id")) == (
        "false",
        correlation_id,
    )
