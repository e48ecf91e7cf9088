"""The export timers end to end: the blueprint's functions on their app-setting schedules, run by the local
runner against the real emulator and Azurite, and the report → log line mapping."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from blueprints.exports import bp
from emulator.connector import CUSTOMERS_EXPORT_ID
from runner import Runner
from shared.context import get_context, reset_context
from tests.runner_apps.support import eventually
from tests.support.app_env import stack_env
from tests.support.stack import AzuriteInfo, EmulatorInfo

ROOT = Path(__file__).resolve().parents[2]


def exports_app() -> func.FunctionApp:
    """The app composed like function_app.py, with only this blueprint (get_functions runs once per app)."""
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    app.register_functions(bp)
    return app


@pytest.fixture
def app_env(
    clean_emulator: EmulatorInfo, azurite: AzuriteInfo, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The app settings in os.environ (what the host gives the app), a fresh process-wide context."""
    suffix = uuid.uuid4().hex[:10]
    env = stack_env(
        clean_emulator,
        azurite,
        EXPORTS_CONTAINER=f"exports-{suffix}",
        EXPORTS_STATE_CONTAINER=f"state-{suffix}",
        EXPORT_ACTIVITIES=json.dumps([{"name": "customers", "activity_id": CUSTOMERS_EXPORT_ID}]),
        DMF_EXPORTS=json.dumps([{"name": "customers", "definition_group": "Customers-Export"}]),
        DMF_EXPORT_POLL_SECONDS="0.05",
        EXPORT_DEQUEUE_SCHEDULE="*/1 * * * * *",
        DMF_EXPORT_SCHEDULE="0 0 0 1 1 *",
    )
    clean_emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.05})
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_context()
    yield env
    reset_context()


def zips(env: dict[str, str]) -> list[str]:
    container = get_context().store.container(env["EXPORTS_CONTAINER"])
    return sorted(b.name for b in container.list_blobs() if b.name.endswith(".zip"))


def test_the_runner_drains_the_queue_on_the_setting_schedule(
    app_env: dict[str, str], clean_emulator: EmulatorInfo
) -> None:
    queued = [
        clean_emulator.admin("POST", f"connector/activities/{CUSTOMERS_EXPORT_ID}/export") for _ in "ab"
    ]
    host_id = f"exports-{uuid.uuid4().hex[:8]}"
    with Runner(exports_app(), settings=app_env, port=0, app_root=ROOT, host_id=host_id) as run:
        assert run.started is not None
        schedules = {t.function: t.schedule for t in run.started.timers}
        assert schedules == {"exports_dequeue": "*/1 * * * * *", "dmf_exports": "0 0 0 1 1 *"}
        assert eventually(lambda: len(zips(app_env)) == 2, timeout=20)
    assert [z.rsplit("/", 1)[1] for z in zips(app_env)] == sorted(f"{q['message_id']}.zip" for q in queued)


def _call(name: str, **timer: Any) -> None:
    functions = {f.get_function_name(): f.get_user_function() for f in exports_app().get_functions()}
    functions[name](TimerRequest(**timer))


def test_each_run_is_one_log_line_per_activity_and_a_total(
    app_env: dict[str, str], clean_emulator: EmulatorInfo, caplog: pytest.LogCaptureFixture
) -> None:
    clean_emulator.admin("POST", f"connector/activities/{CUSTOMERS_EXPORT_ID}/export")
    with caplog.at_level(logging.INFO, logger="blueprints.exports"):
        _call("exports_dequeue", past_due=True)
        _call("dmf_exports")
    lines = [r.getMessage() for r in caplog.records if r.name == "blueprints.exports"]
    assert lines[0].startswith("export dequeue (past due): dequeue customers: 1 stored;")
    assert lines[1].startswith("export dequeue (past due) finished: 1 configured,")
    assert lines[1].endswith("all ok")
    assert lines[2].startswith("DMF export: dmf_export customers: 1 stored;")
    assert lines[3].endswith("all ok")
    assert len(zips(app_env)) == 2  # the dequeued package and the DMF export


def test_a_failing_activity_is_logged_as_an_error(
    app_env: dict[str, str], clean_emulator: EmulatorInfo, caplog: pytest.LogCaptureFixture
) -> None:
    rule = {
        "family": "connector",
        "path_prefix": "/api/connector/dequeue",
        "error_rate": 1,
        "error_status": 403,
    }
    clean_emulator.admin("PUT", "faults", json={"rules": [rule]})
    with caplog.at_level(logging.INFO, logger="blueprints.exports"):
        _call("exports_dequeue")
    mine = [r for r in caplog.records if r.name == "blueprints.exports"]
    errors = [r.getMessage() for r in mine if r.levelno == logging.ERROR]
    assert "dequeue failed: HTTP 403" in errors[0]
    assert errors[1].endswith("problems in customers")
