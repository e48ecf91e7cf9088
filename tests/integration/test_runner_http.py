"""HTTP triggers through the runner over real HTTP: routes, methods, mapping, auth levels and keys."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests

from localstack.processes import AzuriteInfo
from runner import Runner, StartedInfo
from tests.runner_apps.recorder import Recorder
from tests.runner_apps.support import APP_ROOT, sample_runner, sample_settings, unique


@dataclass
class Served:
    runner: Runner
    info: StartedInfo
    settings: dict[str, str]

    def url(self, path: str) -> str:
        return f"{self.info.base_url}/api/{path.lstrip('/')}"


@pytest.fixture(scope="module")
def served(azurite: AzuriteInfo) -> Iterator[Served]:
    settings = sample_settings(azurite)
    runner = sample_runner(settings, Recorder(), host_id=unique("http"))
    info = runner.start()
    yield Served(runner, info, settings)
    runner.stop(5)


def test_typed_and_optional_route_parameters(served: Served) -> None:
    first = requests.get(served.url("items/12"), timeout=10)
    assert first.status_code == 200
    assert first.json()["route"] == {"id": "12"}
    second = requests.get(served.url("items/12/bob"), timeout=10).json()
    assert second["route"] == {"id": "12", "name": "bob"}


def test_a_failed_constraint_falls_through_to_the_next_route_or_404(served: Served) -> None:
    assert requests.get(served.url("items/abc"), timeout=10).text == "alpha:abc"
    assert requests.get(served.url("items/1.5"), timeout=10).status_code == 404
    assert requests.get(served.url("nowhere"), timeout=10).status_code == 404
    assert requests.get(f"{served.info.base_url}/not-api/items/1", timeout=10).status_code == 404


def test_catch_all_route(served: Served) -> None:
    assert requests.get(served.url("files/a/b/c.txt"), timeout=10).text == "path=a/b/c.txt"
    assert requests.get(served.url("files"), timeout=10).text == "path="


def test_an_undeclared_method_is_404_as_in_the_host(served: Served) -> None:
    assert requests.delete(served.url("items/12"), timeout=10).status_code == 404
    assert requests.head(served.url("items/12"), timeout=10).status_code == 404
    assert requests.get(served.url("async/x"), timeout=10).status_code == 404


def test_request_mapping(served: Served) -> None:
    response = requests.post(
        served.url("items/7/widget?x=1&x=2&empty="),
        data=b'{"qty": 3}',
        headers={"X-Test-Header": "yes", "Content-Type": "application/json"},
        timeout=10,
    )
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["url"] == served.url("items/7/widget?x=1&x=2&empty=")
    assert seen["params"] == {"x": "1,2", "empty": ""}
    assert seen["body"] == '{"qty": 3}'
    assert (seen["header"], seen["content_type"]) == ("yes", "application/json")


def test_async_function_and_response_mapping(served: Served) -> None:
    response = requests.put(served.url("async/v1"), data=b"\x00binary", timeout=10)
    assert response.status_code == 201
    assert response.headers["X-Echo"] == "v1"
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.content == b"\x00binary"


def test_str_return_out_parameter_and_context(served: Served) -> None:
    plain = requests.get(served.url("items/abc"), timeout=10)
    assert plain.headers["Content-Type"] == "text/plain; charset=utf-8"
    out = requests.get(served.url("out"), timeout=10)
    assert (out.status_code, out.text) == (202, "via Out")
    context = requests.get(served.url("context"), timeout=10).json()
    assert context["name"] == "with_context"
    assert len(context["id"]) == 36
    assert context["thread_local"] == context["id"]


@pytest.mark.parametrize("path", ["none", "dict", "boom"])
def test_failures_and_unencodable_results_are_500(served: Served, path: str) -> None:
    response = requests.get(served.url(path), timeout=10)
    assert (response.status_code, response.content) == (500, b"")


def test_function_level_keys(served: Served) -> None:
    url = served.url("secure")
    function_key = served.info.key_for("secure")
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"x-functions-key": "wrong"}, timeout=10).status_code == 401
    assert (
        requests.get(url, headers={"x-functions-key": function_key}, timeout=10).text == "function-level ok"
    )
    assert requests.get(url, params={"code": function_key}, timeout=10).status_code == 200
    assert requests.get(url, params={"code": served.info.host_keys["default"]}, timeout=10).status_code == 200
    assert requests.get(url, params={"code": served.info.master_key}, timeout=10).status_code == 200


def test_admin_level_takes_only_the_master_key(served: Served) -> None:
    url = served.url("operator")
    for key in (served.info.key_for("operator_only"), served.info.host_keys["default"]):
        assert requests.get(url, params={"code": key}, timeout=10).status_code == 401
    assert requests.get(url, params={"code": served.info.master_key}, timeout=10).text == "admin-level ok"


def test_host_endpoints(served: Served) -> None:
    home = requests.get(served.info.base_url + "/", timeout=10)
    assert home.status_code == 200
    assert "up and running" in home.text
    status_url = served.info.base_url + "/admin/host/status"
    assert requests.get(status_url, timeout=10).status_code == 401
    status = requests.get(status_url, headers={"x-functions-key": served.info.master_key}, timeout=10)
    assert status.json()["state"] == "Running"
    assert status.json()["id"] == served.info.host_id


def test_concurrent_requests_run_in_parallel(served: Served) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: requests.get(served.url("slow?s=0.7"), timeout=10), range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert time.monotonic() - started < 3  # six 0.7 s sync functions, not run one after another


def test_started_info_lists_routes_keys_and_skipped_functions(served: Served) -> None:
    routes = {h.function: h for h in served.info.http}
    assert routes["items"].url == served.url("items/{id:int}/{name?}")
    assert routes["items"].methods == ("GET", "POST")
    assert routes["operator_only"].auth_level == "admin"
    assert {s.name for s in served.info.skipped} >= {"on_queue", "with_blob_output"}
    text = served.info.describe()
    assert "items: [GET,POST]" in text
    assert served.info.master_key in text


def test_keys_survive_a_restart_and_are_shared_by_runners(azurite: AzuriteInfo) -> None:
    host_id = unique("keys")
    settings = sample_settings(azurite)
    with sample_runner(settings, Recorder(), host_id=host_id) as first:
        assert first.started is not None
        before = first.started
    with sample_runner(settings, Recorder(), host_id=host_id) as second:
        assert second.started is not None
        after = second.started
        assert (after.master_key, after.key_for("secure")) == (before.master_key, before.key_for("secure"))
        answer = requests.get(
            f"{after.base_url}/api/secure", params={"code": before.key_for("secure")}, timeout=10
        )
        assert answer.status_code == 200
    with sample_runner(settings, Recorder(), host_id=unique("other")) as other:
        assert other.started is not None
        assert other.started.master_key != before.master_key


def test_each_invocation_is_logged_once_with_outcome_and_duration(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="runner.invocations"):
        requests.get(served.url("items/5"), timeout=10)
        requests.get(served.url("boom"), timeout=10)
    lines = [r.getMessage() for r in caplog.records if r.name == "runner.invocations"]
    assert len(lines) == 2
    assert re.match(
        r"Executed 'Functions\.items' \(Succeeded, Id=[0-9a-f-]{36}, Duration=\d+ms\) http GET "
        r"/api/items/5$",
        lines[0],
    )
    assert re.match(
        r"Executed 'Functions\.boom' \(Failed, .*\) http GET /api/boom -> RuntimeError: boom on "
        r"purpose$",
        lines[1],
    )


def test_the_one_call_form_for_launchers(azurite: AzuriteInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", dict(os.environ))  # from_values exports the settings
    values = sample_settings(azurite)
    runner = Runner.from_values(
        values, app="tests.runner_apps.sample_app:app", root=APP_ROOT, port=0, host_id=unique("launcher")
    )
    assert runner.describe() == "functions: the runner is not started"
    runner.start()
    try:
        assert os.environ["INBOUND_CONTAINER"] == values["INBOUND_CONTAINER"]
        assert "items: [GET,POST]" in runner.describe()
        assert runner.started is not None
        assert requests.get(f"{runner.started.base_url}/api/items/1", timeout=10).status_code == 200
    finally:
        assert runner.stop(5)
