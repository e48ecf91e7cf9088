"""The app factory works in-process (no sockets): build_state + create_app behind httpx's ASGI transport."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from emulator.app import build_state, create_app
from emulator.middleware import ConnectionDroppedError
from emulator.state import EmulatorConfig, EmulatorState

T = TypeVar("T")


@pytest.fixture
def state(tmp_path: Path) -> EmulatorState:
    return build_state(EmulatorConfig(data_dir=tmp_path, seed=False), identity_header="local-secret")


def run(state: EmulatorState, scenario: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    async def main() -> T:
        transport = httpx.ASGITransport(app=create_app(state))
        async with httpx.AsyncClient(transport=transport, base_url=state.config.base_url) as client:
            return await scenario(client)

    return asyncio.run(main())


def test_build_state_writes_key_material(state: EmulatorState, tmp_path: Path) -> None:
    info = state.info()
    assert info["ca_file"] == str(tmp_path / "emulator-ca.pem")
    assert Path(info["certificate_path"]).exists()
    assert info["identity_header"] == "local-secret"
    assert (tmp_path / "token-signing-key.pem").exists()


def test_gate_and_admin_in_process(state: EmulatorState) -> None:
    async def scenario(client: httpx.AsyncClient) -> list[int]:
        assert (await client.get("/_emulator/")).json()["base_url"] == state.config.base_url
        unauthenticated = await client.get("/data/")
        token = (await client.post("/_emulator/tokens/issue", json={})).json()["access_token"]
        authenticated = await client.get("/data/", headers={"Authorization": f"Bearer {token}"})
        logged = (await client.get("/_emulator/requests")).json()["requests"]
        return [unauthenticated.status_code, authenticated.status_code, logged[0]["status"]]

    unauthenticated, authenticated, logged = run(state, scenario)
    assert unauthenticated == 401
    assert authenticated != 401
    assert logged == 401


def test_managed_identity_in_process(state: EmulatorState) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get(
            "/metadata/identity/oauth2/token",
            params={"api-version": "2019-08-01", "resource": state.config.base_url},
            headers={"X-IDENTITY-HEADER": "local-secret"},
        )

    response = run(state, scenario)
    assert response.status_code == 200
    claims = state.tokens.validate(response.json()["access_token"], state.config.base_url)
    assert claims["oid"] == state.info()["system_identity_object_id"]


def test_drops_raise_in_process(state: EmulatorState) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        await client.post("/_emulator/faults", json={"family": "token", "drop_rate": 1, "count": 1})
        return await client.get("/t/v2.0/.well-known/openid-configuration")

    with pytest.raises(ConnectionDroppedError):
        run(state, scenario)
