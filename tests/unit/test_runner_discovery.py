"""Discovery from ``app.get_functions()`` and the plan built from it with the settings."""

from __future__ import annotations

from datetime import UTC

import azure.functions as func
import pytest

from runner.discovery import discover
from runner.plan import make_plan
from tests.runner_apps.sample_app import build_app

CONNECTION = "UseDevelopmentStorage=true"
SETTINGS = {
    "AzureWebJobsStorage": CONNECTION,
    "TICK_SCHEDULE": "*/5 * * * * *",
    "SLOW_TICK_SCHEDULE": "00:00:10",
    "INBOUND_CONTAINER": "inbound",
    "CSV_CONTAINER": "csvs",
    "POISON_CONTAINER": "poison",
    "SLOW_CONTAINER": "slow",
}


def test_every_function_is_found_with_its_trigger() -> None:
    found = discover(build_app())
    kinds = {spec.name: spec.kind for spec in found.functions}
    assert kinds["items"] == kinds["async_echo"] == kinds["out_param"] == "http"
    assert kinds["tick"] == kinds["startup_tick"] == "timer"
    assert kinds["on_inbound"] == kinds["on_csv"] == "blob"
    by_name = {spec.name: spec for spec in found.functions}
    assert by_name["async_echo"].is_async
    assert not by_name["items"].is_async
    assert by_name["with_context"].wants_context
    assert by_name["out_param"].http_output == "res"
    assert by_name["items"].http_output == "$return"
    assert by_name["flaky_tick"].retry_policy is not None


def test_unsupported_functions_are_reported_not_dropped() -> None:
    reasons = {s.name: s.reason for s in discover(build_app()).skipped}
    assert "queueTrigger" in reasons["on_queue"]
    assert "blob output binding 'out'" in reasons["with_blob_output"]


def test_get_functions_is_called_once_per_app_object() -> None:
    app = build_app()
    first, second = discover(app), discover(app)  # a second get_functions() call would raise
    assert [s.name for s in first.functions] == [s.name for s in second.functions]


def test_parameters_without_bindings_are_reported() -> None:
    app = func.FunctionApp()

    @app.route(route="x")
    def needs_more(req: func.HttpRequest, extra: str) -> str:
        return extra

    found = discover(app)
    assert found.functions == ()
    assert "extra" in found.skipped[0].reason


def test_plan_resolves_settings_and_reports_functions_in_error() -> None:
    settings = {**SETTINGS, "AzureWebJobs.slow_tick.Disabled": "true"}
    del settings["POISON_CONTAINER"]
    settings["TICK_SCHEDULE"] = "not a schedule"
    plan = make_plan(discover(build_app()), settings, zone=UTC)
    reasons = {s.name: s.reason for s in plan.skipped}
    assert "disabled" in reasons["slow_tick"]
    assert "POISON_CONTAINER" in reasons["on_poison"]
    assert "schedule" in reasons["tick"] or "NCRONTAB" in reasons["tick"]
    blobs = {b.spec.name: b for b in plan.blobs}
    assert str(blobs["on_csv"].path) == "csvs/{name}.csv"
    assert blobs["on_csv"].source == "EventGrid"
    assert blobs["on_inbound"].source == "LogsAndContainerScan"
    assert {t.spec.name for t in plan.timers} == {"startup_tick", "flaky_tick"}
    routes = {spec.name: route for spec, route in plan.http}
    assert routes["items"].methods == {"GET", "POST"}
    assert routes["secure"].methods == frozenset()


@pytest.mark.parametrize("connection", ["Missing", "AzureWebJobsStorage"])
def test_blob_connections_resolve_like_the_host(connection: str) -> None:
    app = func.FunctionApp()

    @app.blob_trigger(arg_name="blob", path="box/{name}", connection=connection)
    def watch(blob: func.InputStream) -> None:
        pass

    plan = make_plan(discover(app), {"AzureWebJobsStorage": CONNECTION}, zone=UTC)
    if connection == "Missing":
        assert "Missing" in plan.skipped[0].reason
    else:
        assert plan.blobs[0].service.account_name == "devstoreaccount1"


def test_identity_based_connection_form() -> None:
    app = func.FunctionApp()

    @app.blob_trigger(arg_name="blob", path="box/{name}", connection="Lake")
    def watch(blob: func.InputStream) -> None:
        pass

    settings = {"Lake__accountName": "mylake", "Lake__credential": "managedidentity"}
    plan = make_plan(discover(app), settings, zone=UTC)
    assert plan.blobs[0].service.url == "https://mylake.blob.core.windows.net/"
