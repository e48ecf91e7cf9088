"""Readiness through the real stack: the operations blueprint, the pipeline, the emulator and Azurite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest

from shared.context import AppContext, reset_context
from shared.pipelines.health import check_readiness
from shared.settings import Settings
from tests.support.app_env import stack_env
from tests.support.app_functions import deployed_functions
from tests.support.stack import AzuriteInfo, EmulatorInfo, free_port


def functions() -> dict[str, Any]:
    return deployed_functions()


@pytest.fixture(scope="module")
def app_functions() -> dict[str, Any]:
    return functions()


@pytest.fixture
def isolated_context() -> Iterator[None]:
    reset_context()
    yield
    reset_context()


def request(url: str) -> func.HttpRequest:
    return func.HttpRequest(method="GET", url=url, headers={}, params={}, route_params={}, body=b"")


def test_readiness_is_ok_on_the_local_stack(emulator: EmulatorInfo, azurite: AzuriteInfo) -> None:
    context = AppContext.from_settings(Settings.from_env(stack_env(emulator, azurite)))
    try:
        report = check_readiness(context)
    finally:
        context.close()
    assert report.ok, report.to_dict()
    assert [c.name for c in report.checks] == ["d365-token", "d365-odata", "blob-storage"]


def test_unreachable_d365_fails_only_the_d365_checks(emulator: EmulatorInfo, azurite: AzuriteInfo) -> None:
    env = stack_env(
        emulator, azurite, D365_BASE_URL=f"http://127.0.0.1:{free_port()}", D365_RETRY_MAX_ATTEMPTS="2"
    )
    context = AppContext.from_settings(Settings.from_env(env))
    try:
        report = check_readiness(context)
    finally:
        context.close()
    states = {c.name: c.ok for c in report.checks}
    assert states == {"d365-token": True, "d365-odata": False, "blob-storage": True}
    assert not report.ok
    odata = next(c for c in report.checks if c.name == "d365-odata")
    assert "D365ConnectionError" in odata.detail
    assert emulator.client_secret not in json.dumps(report.to_dict())


def test_ready_function_answers_200_with_every_check(
    emulator: EmulatorInfo,
    azurite: AzuriteInfo,
    app_functions: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    isolated_context: None,
) -> None:
    for name, value in stack_env(emulator, azurite).items():
        monkeypatch.setenv(name, value)
    response = app_functions["health_ready"](request("http://localhost/api/health/ready"))
    body = json.loads(response.get_body())
    assert response.status_code == 200, body
    assert body["status"] == "ok"


def test_ready_function_names_every_bad_setting(
    app_functions: dict[str, Any], monkeypatch: pytest.MonkeyPatch, isolated_context: None
) -> None:
    for name in ("D365_BASE_URL", "AzureWebJobsStorage", "D365_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("D365_RETRY_MAX_ATTEMPTS", "many")
    response = app_functions["health_ready"](request("http://localhost/api/health/ready"))
    body = json.loads(response.get_body())
    assert response.status_code == 503
    named = " ".join(body["problems"])
    for setting in ("D365_BASE_URL", "AzureWebJobsStorage", "D365_RETRY_MAX_ATTEMPTS"):
        assert setting in named


def test_live_function_needs_no_configuration(app_functions: dict[str, Any]) -> None:
    response = app_functions["health_live"](request("http://localhost/api/health"))
    assert response.status_code == 200
    assert json.loads(response.get_body()) == {"status": "alive"}


def test_key_vault_is_probed_when_configured(emulator: EmulatorInfo, azurite: AzuriteInfo) -> None:
    env = stack_env(emulator, azurite, KEY_VAULT_URL=emulator.keyvault_url)
    context = AppContext.from_settings(Settings.from_env(env))
    try:
        report = check_readiness(context)
    finally:
        context.close()
    assert report.ok, report.to_dict()
    vault = next(c for c in report.checks if c.name == "key-vault")
    assert "answers" in vault.detail


def test_unreachable_key_vault_fails_only_its_check(emulator: EmulatorInfo, azurite: AzuriteInfo) -> None:
    env = stack_env(emulator, azurite, KEY_VAULT_URL=f"https://127.0.0.1:{free_port()}/")
    context = AppContext.from_settings(Settings.from_env(env))
    try:
        report = check_readiness(context)
    finally:
        context.close()
    states = {c.name: c.ok for c in report.checks}
    assert states == {"d365-token": True, "d365-odata": True, "blob-storage": True, "key-vault": False}
    assert "KeyVaultUnreachableError" in next(c for c in report.checks if c.name == "key-vault").detail


@pytest.mark.timeout(30)  # a hang guard: with the storage SDK's default retries this took ~85 s
def test_unreachable_storage_fails_only_its_check_at_once(
    emulator: EmulatorInfo, azurite: AzuriteInfo
) -> None:
    dead = azurite.connection_string.replace(
        azurite.blob_endpoint, f"http://127.0.0.1:{free_port()}/devstoreaccount1"
    )
    assert dead != azurite.connection_string
    context = AppContext.from_settings(
        Settings.from_env(stack_env(emulator, azurite, AzureWebJobsStorage=dead))
    )
    try:
        report = check_readiness(context)
    finally:
        context.close()
    states = {c.name: c.ok for c in report.checks}
    assert states == {"d365-token": True, "d365-odata": True, "blob-storage": False}
    storage = next(c for c in report.checks if c.name == "blob-storage")
    assert "AccountKey" not in storage.detail
    assert "Connection refused" in storage.detail
