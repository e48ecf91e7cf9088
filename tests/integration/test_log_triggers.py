"""The triggers' own lines carry the ids of the input they summarise, and a crash is logged with them: the
blueprints' functions called like the host calls them, on the real stack (Azurite + the emulator).

docs/observability.md promises that "everything about one file or event" is one query on ``file=`` /
``event_id=`` / ``activity=`` ...: the trigger's summary line, written after the pipeline's scope closed,
must be part of it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobClient

from blueprints.business_events import bp as events_bp
from blueprints.exports import bp as exports_bp
from blueprints.imports import bp as imports_bp
from emulator.connector import CUSTOMERS_EXPORT_ID
from shared.context import get_context, reset_context
from shared.events.layout import raw_path
from shared.events.model import parse_event
from shared.logs import EVENT_ATTRIBUTE
from shared.pipelines.business_events import receive_events
from shared.pipelines.imports import intake
from tests.integration.test_imports_stack import PACKAGE_ROUTE, customer_groups_csv
from tests.integration.test_imports_stack import stack_env as imports_env
from tests.integration.test_log_events import field
from tests.support.business_events import body_of, events_env, make_event, unique
from tests.support.stack import AzuriteInfo, EmulatorInfo


def functions(blueprint: func.Blueprint) -> dict[str, Callable[..., Any]]:
    """The blueprint's functions as the host gets them (an app per call: get_functions runs once per app)."""
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.register_functions(blueprint)
    return {str(f.get_function_name()): f.get_user_function() for f in app.get_functions()}


@pytest.fixture
def use_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, str]], None]]:
    """Make ``env`` the app settings the process-wide context (``get_context``) is built from."""

    def use(env: dict[str, str]) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        reset_context()

    yield use
    reset_context()


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


@pytest.fixture
def imports_app(
    clean_emulator: EmulatorInfo, azurite: AzuriteInfo, use_env: Callable[[dict[str, str]], None]
) -> dict[str, str]:
    clean_emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.02})
    env = imports_env(clean_emulator, azurite, IMPORT_ROUTES=json.dumps([PACKAGE_ROUTE]))
    use_env(env)
    return env


def drop(env: dict[str, str], azurite: AzuriteInfo, name: str, data: bytes) -> BlobClient:
    """The file in the inbound container, and the client the SDK-type binding hands the function."""
    container = get_context().store.container(env["IMPORT_INBOUND_CONTAINER"])  # created when missing
    container.get_blob_client(name).upload_blob(data, overwrite=True)
    return BlobClient.from_connection_string(azurite.connection_string, env["IMPORT_INBOUND_CONTAINER"], name)


def test_the_import_triggers_summary_carries_the_files_ids(
    imports_app: dict[str, str], azurite: AzuriteInfo, caplog: pytest.LogCaptureFixture
) -> None:
    blob = drop(imports_app, azurite, "groups/summary.csv", customer_groups_csv("1", prefix="LS"))
    with caplog.at_level(logging.INFO):
        functions(imports_bp)["import_inbound_file"](blob)
    file = f"{imports_app['IMPORT_INBOUND_CONTAINER']}/groups/summary.csv"
    [summary] = lines(caplog, "blueprints.imports")
    assert summary.startswith(f"import of {file}: ")
    report = json.loads(summary.split(": ", 1)[1].split(" | ", 1)[0])
    assert report["outcome"] == "sent"
    assert (field(summary, "file"), field(summary, "route")) == (file, "groups")
    assert (field(summary, "job_id"), field(summary, "execution_id")) == (
        report["job_id"],
        report["execution_id"],
    )
    [sent] = [r for r in caplog.records if getattr(r, EVENT_ATTRIBUTE, None) == "IMPORT_SENT"]
    assert field(sent.getMessage(), "legal_entity") == "usmf"  # logged inside the scope now: all its ids


def test_an_import_that_crashes_is_logged_with_its_ids_before_the_host_gets_the_exception(
    imports_app: dict[str, str],
    azurite: AzuriteInfo,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unexpected(self: Any, prepared: Any, job_id: str) -> dict[str, str]:
        raise ZeroDivisionError("a bug in the send step | url=https://d365.example/x")

    monkeypatch.setattr(intake._Intake, "send", unexpected)  # fault injection: a bug nothing handles
    blob = drop(imports_app, azurite, "groups/crash.csv", customer_groups_csv("1", prefix="LC"))
    with caplog.at_level(logging.INFO), pytest.raises(ZeroDivisionError):
        functions(imports_bp)["import_inbound_file"](blob)
    [crash] = [r for r in caplog.records if getattr(r, EVENT_ATTRIBUTE, None) == "PIPELINE_CRASHED"]
    assert crash.levelno == logging.ERROR
    message = crash.getMessage()
    assert message.startswith("PIPELINE_CRASHED: import stopped on an unexpected ZeroDivisionError: a bug ")
    assert (field(message, "pipeline"), field(message, "error")) == ("import", "ZeroDivisionError")
    assert field(message, "file") == f"{imports_app['IMPORT_INBOUND_CONTAINER']}/groups/crash.csv"
    assert field(message, "route") == "groups"
    assert (field(message, "job_id") or "").startswith("groups-")
    assert field(message, "url") is None  # the exception's own " | url=" is text, not a field


def test_the_business_event_triggers_summary_carries_the_event_id(
    emulator: EmulatorInfo,
    azurite: AzuriteInfo,
    use_env: Callable[[dict[str, str]], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = events_env(emulator, azurite)
    use_env(env)
    event = make_event()
    assert receive_events(get_context(), body_of(event), {"Content-Type": "application/json"}).status < 300
    blob = f"{env['BUSINESS_EVENTS_CONTAINER']}/{raw_path(parse_event(event, b''))}"
    with caplog.at_level(logging.INFO):
        functions(events_bp)["business_events_process"](func.blob.InputStream(data=b"", name=blob))
    [summary] = lines(caplog, "blueprints.business_events")
    assert summary.startswith(f"business event {event['EventId']}: ")
    assert (field(summary, "event_id"), field(summary, "blob")) == (event["EventId"], blob)


def test_the_export_timers_summaries_carry_the_activity_and_the_execution(
    clean_emulator: EmulatorInfo,
    azurite: AzuriteInfo,
    use_env: Callable[[dict[str, str]], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clean_emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.05})
    use_env(
        events_env(
            clean_emulator,
            azurite,
            EXPORTS_CONTAINER=unique("exports"),
            EXPORTS_STATE_CONTAINER=unique("state"),
            EXPORT_ACTIVITIES=json.dumps([{"name": "customers", "activity_id": CUSTOMERS_EXPORT_ID}]),
            DMF_EXPORTS=json.dumps([{"name": "customers-dmf", "definition_group": "Customers-Export"}]),
            DMF_EXPORT_POLL_SECONDS="0.05",
        )
    )
    clean_emulator.admin("POST", f"connector/activities/{CUSTOMERS_EXPORT_ID}/export")
    timers = functions(exports_bp)
    with caplog.at_level(logging.INFO):
        timers["exports_dequeue"](TimerRequest(past_due=False))
        timers["dmf_exports"](TimerRequest(past_due=False))
    pipeline = lines(caplog, "shared.pipelines.exports.dequeue") + lines(
        caplog, "shared.pipelines.exports.dmf_export"
    )
    trigger = lines(caplog, "blueprints.exports")
    dequeued = [line for line in pipeline + trigger if "dequeue customers: " in line]
    exported = [line for line in pipeline + trigger if "dmf_export customers-dmf: " in line]
    assert len(dequeued) == len(exported) == 2, (pipeline, trigger)  # the pipeline's line and the trigger's
    for line in dequeued:
        assert (field(line, "activity"), field(line, "activity_id")) == ("customers", CUSTOMERS_EXPORT_ID)
    stored = [r for r in caplog.records if getattr(r, EVENT_ATTRIBUTE, None) == "DMF_EXPORT_SUCCEEDED"]
    [execution_id] = {field(r.getMessage(), "execution_id") for r in stored}
    assert (execution_id or "").startswith("customers-dmf-")
    for line in exported:
        assert (field(line, "dmf_job"), field(line, "definition_group")) == (
            "customers-dmf",
            "Customers-Export",
        )
        assert field(line, "execution_id") == execution_id
    assert all(" | " not in line for line in trigger if " finished: " in line)  # totals: many inputs, no ids
