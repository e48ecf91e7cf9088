"""Credentials and the D365 token provider.

The first part checks the provider's caching logic with a fake credential and clock (the provider is the
thing under test). The rest gets real tokens from the emulator's Entra authority and managed-identity
endpoints in every auth mode, with azure-identity doing the real work.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from shared.identity import (
    D365TokenProvider,
    TokenAcquisitionError,
    build_credential,
    credential_options,
    is_microsoft_authority,
)
from shared.settings import Settings
from shared.settings_sections import AuthMode, AuthSettings
from tests.support.app_env import client_secret_settings, use_emulator_managed_identity
from tests.support.stack import EmulatorInfo

# ================================================================================ provider, fake credential


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeCredential:
    """Issues tok-1, tok-2, ... valid for ``lifetime`` s on the shared clock; can fail or serve stale."""

    issued = 0

    def __init__(self, clock: Clock, lifetime: float = 3600, *, stale: AccessToken | None = None) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.stale = stale
        self.error: Exception | None = None
        self.closed = False
        self.calls = 0
        self.delay = 0.0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == ("https://contoso.operations.dynamics.com/.default",)
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        if self.stale is not None:
            return self.stale
        FakeCredential.issued += 1
        return AccessToken(f"tok-{FakeCredential.issued}", int(self.clock.now + self.lifetime))

    def close(self) -> None:
        self.closed = True


SCOPE = "https://contoso.operations.dynamics.com/.default"


@pytest.fixture
def clock() -> Clock:
    FakeCredential.issued = 0
    return Clock()


def provider_with(clock: Clock, *credentials: FakeCredential, margin: float = 300) -> D365TokenProvider:
    pending = list(credentials)
    return D365TokenProvider(lambda: pending.pop(0), SCOPE, refresh_margin_seconds=margin, clock=clock)


def test_token_is_cached_until_the_refresh_margin(clock: Clock) -> None:
    credential = FakeCredential(clock, lifetime=3600)
    provider = provider_with(clock, credential)
    assert provider.get_token() == "tok-1"
    clock.now += 3600 - 301
    assert provider.get_token() == "tok-1"
    clock.now += 2  # fewer than 300 s left
    assert provider.get_token() == "tok-2"
    assert credential.calls == 2


def test_short_lived_tokens_refresh_at_half_life_not_on_every_call(clock: Clock) -> None:
    credential = FakeCredential(clock, lifetime=60)
    provider = provider_with(clock, credential)  # margin 300 > lifetime
    assert provider.get_token() == "tok-1"
    clock.now += 29
    assert provider.get_token() == "tok-1"
    clock.now += 2
    assert provider.get_token() == "tok-2"


def test_an_expired_or_repeated_token_from_the_credential_cache_rebuilds_the_credential(clock: Clock) -> None:
    first = FakeCredential(clock, lifetime=600)
    provider = provider_with(clock, first, FakeCredential(clock, lifetime=600))
    assert provider.get_token() == "tok-1"
    first.stale = AccessToken("tok-1", int(clock.now + 600))  # the credential keeps serving its cached token
    clock.now += 400
    assert provider.get_token() == "tok-2"  # came from a fresh credential
    assert first.closed


def test_an_expired_token_twice_is_an_error(clock: Clock) -> None:
    stale = AccessToken("old", int(clock.now - 1))
    provider = provider_with(clock, FakeCredential(clock, stale=stale), FakeCredential(clock, stale=stale))
    with pytest.raises(TokenAcquisitionError, match="expired token"):
        provider.get_token()


def test_invalidate_drops_the_token_and_rebuilds_the_credential(clock: Clock) -> None:
    first, second = FakeCredential(clock), FakeCredential(clock)
    provider = provider_with(clock, first, second)
    assert provider.get_token() == "tok-1"
    provider.invalidate()
    assert first.closed
    assert provider.get_token() == "tok-2"
    assert second.calls == 1


def test_a_failed_refresh_keeps_using_a_still_valid_token(clock: Clock) -> None:
    credential = FakeCredential(clock, lifetime=3600)
    provider = provider_with(clock, credential)
    provider.get_token()
    credential.error = ClientAuthenticationError("authority down")
    clock.now += 3400
    assert provider.get_token() == "tok-1"
    calls = credential.calls
    clock.now += 1
    assert provider.get_token() == "tok-1"
    assert credential.calls == calls  # retried later, not on every call
    clock.now += 300  # now expired
    with pytest.raises(TokenAcquisitionError, match="authority down"):
        provider.get_token()


def test_errors_are_typed_and_redacted(clock: Clock) -> None:
    credential = FakeCredential(clock)
    credential.error = ClientAuthenticationError("bad request: client_secret=TOPSECRET was rejected")
    provider = provider_with(clock, credential)
    with pytest.raises(TokenAcquisitionError) as caught:
        provider.get_token()
    assert "TOPSECRET" not in str(caught.value)
    assert SCOPE in str(caught.value)
    assert isinstance(caught.value.__cause__, ClientAuthenticationError)


def test_concurrent_callers_share_one_fetch(clock: Clock) -> None:
    credential = FakeCredential(clock)
    credential.delay = 0.05
    provider = provider_with(clock, credential)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(provider.get_token())) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["tok-1"] * 16
    assert credential.calls == 1


def test_repr_never_shows_the_token(clock: Clock) -> None:
    provider = provider_with(clock, FakeCredential(clock))
    provider.get_token()
    assert "tok-1" not in repr(provider)
    assert SCOPE in repr(provider)


def test_credential_options_for_local_and_microsoft_authorities(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n")
    local = credential_options(
        AuthSettings(AuthMode.CLIENT_SECRET, authority_host="https://127.0.0.1:8766", ca_bundle=str(ca))
    )
    assert local["authority"] == "https://127.0.0.1:8766"
    assert local["disable_instance_discovery"] is True
    assert Path(local["connection_verify"]).read_text().endswith(ca.read_text())
    public = credential_options(
        AuthSettings(AuthMode.CLIENT_SECRET, authority_host="https://login.microsoftonline.us")
    )
    assert public == {"authority": "https://login.microsoftonline.us"}
    assert credential_options(AuthSettings(AuthMode.CLIENT_SECRET)) == {}
    assert is_microsoft_authority("login.microsoftonline.com")
    assert not is_microsoft_authority("https://localhost:8766")


# ================================================================================ real tokens, emulator


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@pytest.fixture
def identity_env(emulator: EmulatorInfo, monkeypatch: pytest.MonkeyPatch) -> EmulatorInfo:
    """App Service / Functions style managed identity pointing at the emulator; nothing else inherited."""
    use_emulator_managed_identity(emulator, monkeypatch)
    return emulator


@pytest.fixture
def token_lifetime(emulator: EmulatorInfo) -> Iterator[Any]:
    """Set the emulator's token lifetime for one test and put the default back afterwards."""
    before = emulator.admin("GET", "tokens")["lifetime_seconds"]

    def set_lifetime(seconds: int) -> None:
        emulator.admin("PUT", "tokens", json={"lifetime_seconds": seconds})

    yield set_lifetime
    set_lifetime(before)


def app_env(emu: EmulatorInfo, **extra: str) -> dict[str, str]:
    return {"D365_BASE_URL": emu.base_url, "AzureWebJobsStorage": "UseDevelopmentStorage=true", **extra}


def secret_env(emu: EmulatorInfo) -> dict[str, str]:
    return app_env(emu, **client_secret_settings(emu))


def cert_env(emu: EmulatorInfo) -> dict[str, str]:
    return app_env(
        emu,
        D365_AUTH_MODE="certificate",
        D365_CLIENT_ID=emu.certificate_client_id,
        D365_TENANT_ID=emu.tenant_id,
        D365_CLIENT_CERTIFICATE_PATH=emu.certificate_path,
        D365_AUTHORITY_HOST=emu.authority_host,
        TLS_CA_BUNDLE=emu.ca_file,
    )


def d365_accepts(emu: EmulatorInfo, token: str) -> bool:
    """Whether the emulated D365 accepts the bearer token (anything but 401)."""
    response = requests.get(f"{emu.base_url}/data/", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    return response.status_code != 401


def system_identity_client_id(emu: EmulatorInfo) -> str:
    return str(emu.system_identity_client_id)


def token_for(env: dict[str, str]) -> str:
    provider = D365TokenProvider.from_settings(Settings.from_env(env))
    try:
        return provider.get_token()
    finally:
        provider.close()


def test_system_assigned_managed_identity(identity_env: EmulatorInfo) -> None:
    token = token_for(app_env(identity_env))
    claims = claims_of(token)
    assert claims["aud"] == identity_env.base_url.lower()
    assert claims["appid"] == system_identity_client_id(identity_env)
    assert d365_accepts(identity_env, token)


def test_user_assigned_managed_identity(identity_env: EmulatorInfo) -> None:
    token = token_for(app_env(identity_env, D365_CLIENT_ID=identity_env.managed_identity_client_id))
    assert claims_of(token)["appid"] == identity_env.managed_identity_client_id
    assert d365_accepts(identity_env, token)


def test_managed_identity_imds_style(emulator: EmulatorInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IMDS_ENDPOINT", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    imds = str(emulator.imds_endpoint)
    authority = imds.split("/metadata/")[0].rstrip("/")  # the variable takes scheme://host:port only
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", authority)
    token = token_for(app_env(emulator, D365_CLIENT_ID=emulator.managed_identity_client_id))
    assert claims_of(token)["appid"] == emulator.managed_identity_client_id
    assert d365_accepts(emulator, token)


def test_client_secret_against_the_local_https_authority(emulator: EmulatorInfo) -> None:
    token = token_for(secret_env(emulator))
    claims = claims_of(token)
    assert claims["appid"] == emulator.client_id
    assert claims["aud"] == emulator.base_url.lower()
    assert d365_accepts(emulator, token)


@pytest.mark.parametrize("form", ["path", "pem_text"])
def test_certificate_against_the_local_https_authority(emulator: EmulatorInfo, form: str) -> None:
    env = cert_env(emulator)
    if form == "pem_text":
        env["D365_CLIENT_CERTIFICATE"] = Path(env.pop("D365_CLIENT_CERTIFICATE_PATH")).read_text()
    token = token_for(env)
    assert claims_of(token)["appid"] == emulator.certificate_client_id
    assert d365_accepts(emulator, token)


def test_a_wrong_secret_fails_clearly_without_echoing_it(emulator: EmulatorInfo) -> None:
    env = {**secret_env(emulator), "D365_CLIENT_SECRET": "TOPSECRET-wrong-value"}
    with pytest.raises(TokenAcquisitionError) as caught:
        token_for(env)
    assert "TOPSECRET" not in str(caught.value)
    assert "ClientAuthenticationError" in str(caught.value)


def test_without_the_local_ca_the_authority_is_not_trusted(emulator: EmulatorInfo) -> None:
    env = secret_env(emulator)
    del env["TLS_CA_BUNDLE"]
    with pytest.raises(TokenAcquisitionError, match="CERTIFICATE_VERIFY_FAILED"):
        token_for(env)


@pytest.mark.parametrize("mode", ["managed_identity", "client_secret"])
def test_short_lived_tokens_are_refreshed_before_they_expire(
    identity_env: EmulatorInfo, token_lifetime: Any, mode: str
) -> None:
    token_lifetime(3)
    env = app_env(identity_env) if mode == "managed_identity" else secret_env(identity_env)
    provider = D365TokenProvider.from_settings(Settings.from_env(env), refresh_margin_seconds=1)
    seen: list[str] = []
    deadline = time.time() + 3.3
    while time.time() < deadline:  # a long "paging run": every request gets a token with time left
        token = provider.get_token()
        assert claims_of(token)["exp"] > time.time(), "the provider handed out an expired token"
        assert d365_accepts(identity_env, token)
        if not seen or seen[-1] != token:
            seen.append(token)
        time.sleep(0.15)
    provider.close()
    assert len(seen) >= 2  # refreshed at least once, and never sent an expired token


def test_invalidate_gets_a_really_new_token(identity_env: EmulatorInfo) -> None:
    for env in (app_env(identity_env), secret_env(identity_env)):
        provider = D365TokenProvider.from_settings(Settings.from_env(env))
        first = provider.get_token()
        assert provider.get_token() == first  # cached
        provider.invalidate()
        second = provider.get_token()
        assert second != first
        assert claims_of(second)["uti"] != claims_of(first)["uti"]
        provider.close()


def test_after_a_key_rotation_invalidate_recovers(identity_env: EmulatorInfo) -> None:
    """What the transport does on a 401: invalidate once, get a token the server accepts again."""
    provider = D365TokenProvider.from_settings(Settings.from_env(secret_env(identity_env)))
    before = provider.get_token()
    assert d365_accepts(identity_env, before)
    identity_env.admin("POST", "tokens/rotate-key")
    assert not d365_accepts(identity_env, before)
    assert provider.get_token() == before  # still cached: the provider cannot know
    provider.invalidate()
    assert d365_accepts(identity_env, provider.get_token())
    provider.close()


def test_the_mode_is_explicit_never_guessed_from_the_environment(
    identity_env: EmulatorInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With service-principal variables in the environment (which DefaultAzureCredential would prefer),
    managed_identity mode still uses the managed identity."""
    monkeypatch.setenv("AZURE_CLIENT_ID", identity_env.client_id)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", identity_env.client_secret)
    monkeypatch.setenv("AZURE_TENANT_ID", identity_env.tenant_id)
    settings = Settings.from_env(app_env(identity_env))
    assert type(build_credential(settings)).__name__ == "ManagedIdentityCredential"
    assert claims_of(token_for(app_env(identity_env)))["appid"] == system_identity_client_id(identity_env)
