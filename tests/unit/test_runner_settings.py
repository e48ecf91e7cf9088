"""Settings files, their precedence over the environment, and ``%NAME%`` expressions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.settings import (
    SettingsError,
    apply_to_environment,
    is_disabled,
    load_local_settings,
    read_host_json,
    resolve_expression,
    route_prefix,
)


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_local_file_wins_over_the_sample(tmp_path: Path) -> None:
    write(tmp_path / "local.settings.sample.json", {"Values": {"A": "sample"}})
    assert load_local_settings(root=tmp_path).values == {"A": "sample"}
    write(tmp_path / "local.settings.json", {"Values": {"A": "local"}, "Host": {"LocalHttpPort": 7200}})
    local = load_local_settings(root=tmp_path)
    assert local.values == {"A": "local"}
    assert local.local_http_port == 7200
    assert local.path == tmp_path / "local.settings.json"


def test_no_file_means_no_settings(tmp_path: Path) -> None:
    local = load_local_settings(root=tmp_path)
    assert local.path is None
    assert local.values == {}
    assert local.local_http_port is None


def test_an_explicit_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_local_settings(tmp_path / "missing.json", root=tmp_path)


def test_encrypted_files_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "s.json", {"IsEncrypted": True, "Values": {"A": "x"}})
    with pytest.raises(SettingsError, match="IsEncrypted"):
        load_local_settings(path, root=tmp_path)


@pytest.mark.parametrize(
    "document",
    [{"Values": {"A": 1, "B": True}}, {"Values": []}, ["not", "an", "object"], {"Values": {}, "Host": 3}],
)
def test_malformed_files_are_refused(tmp_path: Path, document: object) -> None:
    with pytest.raises(SettingsError):
        load_local_settings(write(tmp_path / "s.json", document), root=tmp_path)


def test_invalid_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("{nope", encoding="utf-8")
    with pytest.raises(SettingsError, match="not valid JSON"):
        load_local_settings(path, root=tmp_path)


def test_the_environment_wins_over_the_file() -> None:
    environ = {"KEEP": "from-env"}
    applied = apply_to_environment({"KEEP": "from-file", "NEW": "v"}, environ)
    assert environ == {"KEEP": "from-env", "NEW": "v"}
    assert applied.applied == ("NEW",)
    assert applied.kept_from_environment == ("KEEP",)


def test_expressions() -> None:
    settings = {"SCHEDULE": "0 */5 * * * *", "CONTAINER": "inbound"}
    assert resolve_expression("%SCHEDULE%", settings) == "0 */5 * * * *"
    assert resolve_expression("%CONTAINER%/{name}", settings) == "inbound/{name}"
    assert resolve_expression("plain/{name}", settings) == "plain/{name}"
    with pytest.raises(SettingsError, match="MISSING"):
        resolve_expression("%MISSING%", settings, what="schedule")


def test_disabled_functions() -> None:
    assert is_disabled("tick", {"AzureWebJobs.tick.Disabled": "true"})
    assert is_disabled("tick", {"AzureWebJobs_tick_Disabled": "1"})
    assert not is_disabled("tick", {"AzureWebJobs.tick.Disabled": "false"})
    assert not is_disabled("tick", {})


def test_route_prefix(tmp_path: Path) -> None:
    assert route_prefix(read_host_json(tmp_path)) == "api"
    write(tmp_path / "host.json", {"version": "2.0", "extensions": {"http": {"routePrefix": "/v1/"}}})
    assert route_prefix(read_host_json(tmp_path)) == "v1"
    write(tmp_path / "host.json", {"version": "2.0", "extensions": {"http": {"routePrefix": ""}}})
    assert route_prefix(read_host_json(tmp_path)) == ""


def test_the_projects_host_json_is_readable() -> None:
    root = Path(__file__).resolve().parents[2]
    assert route_prefix(read_host_json(root)) == "api"
