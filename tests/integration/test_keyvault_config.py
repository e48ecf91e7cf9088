"""Settings with Key Vault references, resolved by the real SecretClient against the emulator's vault."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from shared.identity import D365TokenProvider, TokenAcquisitionError
from shared.settings import ConfigurationError, Settings
from tests.support.app_env import client_secret_settings, use_emulator_managed_identity
from tests.support.stack import AzuriteInfo, EmulatorInfo


@pytest.fixture
def vault(emulator: EmulatorInfo, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorInfo]:
    """The emulator, with the app's managed identity (App Service style) and an open vault afterwards."""
    use_emulator_managed_identity(emulator, monkeypatch)
    yield emulator
    emulator.admin("PUT", "keyvault/access-policies", json={"accessPolicies": None})


def put_secret(emu: EmulatorInfo, value: str, name: str | None = None) -> str:
    name = name or f"cfg-{uuid.uuid4().hex[:12]}"
    emu.admin("PUT", f"keyvault/secrets/{name}", json={"value": value})
    return name


def uri_ref(emu: EmulatorInfo, name: str, vault_url: str | None = None) -> str:
    return f"@Microsoft.KeyVault(SecretUri={vault_url or emu.keyvault_url}secrets/{name}/)"


def base_env(emu: EmulatorInfo, **extra: str) -> dict[str, str]:
    return {
        "D365_BASE_URL": emu.base_url,
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "TLS_CA_BUNDLE": emu.ca_file,
        **extra,
    }


def secret_mode(emu: EmulatorInfo, client_secret: str) -> dict[str, str]:
    return base_env(emu, **client_secret_settings(emu, client_secret=client_secret))


def only_allow(emu: EmulatorInfo, client_id: str) -> None:
    policy = {"objectId": client_id, "permissions": {"secrets": ["get"]}}
    emu.admin("PUT", "keyvault/access-policies", json={"accessPolicies": [policy]})


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens here once the socket is closed


def test_secret_uri_references_resolve_and_authenticate(vault: EmulatorInfo) -> None:
    """The client secret lives in Key Vault; the managed identity reads it (as App Service would)."""
    secret_name = put_secret(vault, vault.client_secret)
    page_size = put_secret(vault, "250")
    env = secret_mode(vault, uri_ref(vault, secret_name))
    env["D365_ODATA_PAGE_SIZE"] = uri_ref(vault, page_size)
    only_allow(vault, vault.system_identity_client_id)

    settings = Settings.from_env(env)

    assert settings.http.odata_page_size == 250
    assert settings.auth.client_secret is not None
    assert vault.client_secret not in repr(settings)
    provider = D365TokenProvider.from_settings(settings)
    assert provider.get_token()  # the resolved secret really works against the authority
    provider.close()


def test_vault_name_references_use_the_local_vault(vault: EmulatorInfo) -> None:
    name = put_secret(vault, "https://fabrikam.operations.dynamics.com")
    env = base_env(
        vault,
        KEY_VAULT_URL=vault.keyvault_url,
        D365_BASE_URL=f"@Microsoft.KeyVault(VaultName=contoso-prod;SecretName={name})",
    )
    assert Settings.from_env(env).d365.base_url == "https://fabrikam.operations.dynamics.com"


def test_literal_auth_settings_read_references_with_the_apps_own_credential(vault: EmulatorInfo) -> None:
    name = put_secret(vault, "42")
    only_allow(vault, vault.client_id)  # only the app registration may read: the identity would get 403
    env = secret_mode(vault, vault.client_secret)
    env["D365_ODATA_PAGE_SIZE"] = uri_ref(vault, name)
    assert Settings.from_env(env).http.odata_page_size == 42


def test_a_rotated_secret_is_picked_up_after_the_ttl(vault: EmulatorInfo) -> None:
    name = put_secret(vault, vault.client_secret)
    env = secret_mode(vault, uri_ref(vault, name))
    env["KEY_VAULT_CACHE_SECONDS"] = "1"
    settings = Settings.from_env(env)
    secret = settings.auth.client_secret
    assert secret is not None
    assert secret.reveal() == vault.client_secret

    put_secret(vault, "rotated-but-wrong", name)
    assert secret.reveal() == vault.client_secret  # inside the TTL
    time.sleep(1.1)
    assert secret.reveal() == "rotated-but-wrong"

    # invalidate() rebuilds the credential from settings, so the credential sees the rotated value too
    provider = D365TokenProvider.from_settings(settings)
    with pytest.raises(TokenAcquisitionError) as caught:
        provider.get_token()
    assert "rotated-but-wrong" not in str(caught.value)
    put_secret(vault, vault.client_secret, name)
    time.sleep(1.1)
    provider.invalidate()
    assert provider.get_token()
    provider.close()


def test_a_missing_secret_names_the_setting_and_vault(vault: EmulatorInfo) -> None:
    env = secret_mode(vault, uri_ref(vault, "no-such-secret"))
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)
    (problem,) = caught.value.problems
    host = vault.keyvault_url.split("//")[1].rstrip("/")
    assert problem.startswith("D365_CLIENT_SECRET: Key Vault reference could not be resolved")
    assert f"'no-such-secret' in vault {host}: not found" in problem


def test_an_unreachable_vault_names_the_setting_and_vault_quickly(vault: EmulatorInfo) -> None:
    port = closed_port()
    env = base_env(vault, AzureWebJobsStorage=uri_ref(vault, "storage", f"https://127.0.0.1:{port}/"))
    started = time.monotonic()
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)
    assert time.monotonic() - started < 10
    (problem,) = caught.value.problems
    assert problem.startswith("AzureWebJobsStorage: Key Vault reference could not be resolved")
    assert f"vault 127.0.0.1:{port}: vault unreachable" in problem


def test_a_forbidden_secret_names_the_setting_and_vault(vault: EmulatorInfo) -> None:
    name = put_secret(vault, "x")
    only_allow(vault, "someone-else")
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(base_env(vault, D365_ODATA_PAGE_SIZE=uri_ref(vault, name)))
    (problem,) = caught.value.problems
    assert problem.startswith("D365_ODATA_PAGE_SIZE: Key Vault reference could not be resolved")
    assert "access denied (HTTP 403)" in problem


def test_without_the_local_ca_the_vault_is_not_trusted(vault: EmulatorInfo) -> None:
    name = put_secret(vault, "x")
    env = base_env(vault, D365_ODATA_PAGE_SIZE=uri_ref(vault, name))
    del env["TLS_CA_BUNDLE"]
    with pytest.raises(ConfigurationError, match="CERTIFICATE_VERIFY_FAILED"):
        Settings.from_env(env)


def test_every_reference_problem_is_in_one_error(vault: EmulatorInfo) -> None:
    env = secret_mode(vault, uri_ref(vault, "missing-one"))
    env["D365_ODATA_PAGE_SIZE"] = uri_ref(vault, "missing-two")
    del env["D365_BASE_URL"]
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "D365_CLIENT_SECRET",
        "D365_BASE_URL",
        "D365_ODATA_PAGE_SIZE",
    ]


def test_storage_settings_build_a_working_blob_client(azurite: AzuriteInfo) -> None:
    settings = Settings.from_env(
        {
            "D365_BASE_URL": "https://contoso.operations.dynamics.com",
            "AzureWebJobsStorage": azurite.connection_string,
        }
    )
    client = settings.storage.blob_service_client()
    name = f"cfg{uuid.uuid4().hex[:10]}"
    client.create_container(name)
    assert name in [c.name for c in client.list_containers()]
    assert "AccountKey" not in repr(settings)
