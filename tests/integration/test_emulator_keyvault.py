"""The local Key Vault against the real azure-keyvault-secrets SecretClient and azure-identity, over HTTPS."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from tests.support.d365 import bearer_token
from tests.support.stack import EmulatorInfo

API = "api-version=7.5"


def _name(prefix: str = "kv") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def credential(emulator: EmulatorInfo) -> ClientSecretCredential:
    return ClientSecretCredential(
        emulator.tenant_id,
        emulator.client_id,
        emulator.client_secret,
        authority=emulator.authority_host,
        disable_instance_discovery=True,
        connection_verify=emulator.ca_file,
    )


@pytest.fixture(scope="module")
def client(emulator: EmulatorInfo, credential: ClientSecretCredential) -> SecretClient:
    return SecretClient(
        vault_url=emulator.keyvault_url,
        credential=credential,
        verify_challenge_resource=False,
        connection_verify=emulator.ca_file,
    )


@pytest.fixture(scope="module")
def vault_token(emulator: EmulatorInfo) -> str:
    return bearer_token(emulator, scope="https://vault.azure.net/.default")


@pytest.fixture
def open_vault(emulator: EmulatorInfo) -> Iterator[EmulatorInfo]:
    """Lift any access restriction after the test (the default: every identity may do everything)."""
    yield emulator
    emulator.admin("PUT", "keyvault/access-policies", json={"accessPolicies": None})


def _raw(emulator: EmulatorInfo, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{emulator.keyvault_url}{path}"
    return requests.request(method, url, headers=headers, verify=emulator.ca_file, timeout=30, **kwargs)


# -- authentication -----------------------------------------------------------------------------------------


def test_request_without_token_gets_the_bearer_challenge(emulator: EmulatorInfo) -> None:
    for method in ("GET", "PUT"):  # the SDK's discovery request: no Authorization, no body
        response = _raw(emulator, method, f"secrets/anything?{API}")
        assert response.status_code == 401
        challenge = response.headers["WWW-Authenticate"]
        assert challenge == (
            f'Bearer authorization="{emulator.authority_host}/{emulator.tenant_id}", '
            'resource="https://vault.azure.net"'
        )
        assert response.json()["error"]["code"] == "Unauthorized"


def test_invalid_or_foreign_audience_token_is_refused(emulator: EmulatorInfo) -> None:
    d365_token = bearer_token(emulator)
    for token in ("not-a-jwt", d365_token):
        response = _raw(emulator, "GET", f"secrets/anything?{API}", token)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "Unauthorized"
        assert "WWW-Authenticate" in response.headers
    wrong_audience = _raw(emulator, "GET", f"secrets/anything?{API}", d365_token).json()
    assert wrong_audience["error"]["message"].startswith("AKV10022: Invalid audience.")


def test_api_version_is_required(emulator: EmulatorInfo, vault_token: str) -> None:
    response = _raw(emulator, "GET", "secrets", vault_token)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadParameter"


def test_credential_failure_surfaces_as_client_authentication_error(emulator: EmulatorInfo) -> None:
    bad = ClientSecretCredential(
        emulator.tenant_id,
        emulator.client_id,
        "wrong-secret",
        authority=emulator.authority_host,
        disable_instance_discovery=True,
        connection_verify=emulator.ca_file,
    )
    client = SecretClient(
        emulator.keyvault_url, bad, verify_challenge_resource=False, connection_verify=emulator.ca_file
    )
    with pytest.raises(ClientAuthenticationError):
        client.get_secret("anything")


def test_managed_identity_reads_the_vault(
    emulator: EmulatorInfo, client: SecretClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Functions app's path: App Service managed identity (IDENTITY_ENDPOINT/HEADER) → SecretClient."""
    name = _name("mi")
    client.set_secret(name, "for-the-function")
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", emulator.identity_header)
    identity = ManagedIdentityCredential(client_id=emulator.managed_identity_client_id)
    mi_client = SecretClient(
        emulator.keyvault_url, identity, verify_challenge_resource=False, connection_verify=emulator.ca_file
    )
    assert mi_client.get_secret(name).value == "for-the-function"


# -- secrets through the real SecretClient ------------------------------------------------------------------


def test_set_get_and_versions(client: SecretClient, emulator: EmulatorInfo) -> None:
    name = _name()
    first = client.set_secret(name, "one", content_type="text/plain", tags={"owner": "tests"})
    assert first.value == "one"
    assert first.properties.content_type == "text/plain"
    assert first.properties.tags == {"owner": "tests"}
    assert first.properties.enabled is True
    assert first.properties.recovery_level == "Recoverable+Purgeable"
    assert first.id == f"{emulator.keyvault_url}secrets/{name}/{first.properties.version}"
    assert len(first.properties.version or "") == 32
    second = client.set_secret(name, "two")
    assert second.properties.version != first.properties.version

    assert client.get_secret(name).value == "two"
    assert client.get_secret(name, first.properties.version).value == "one"
    assert client.get_secret(name.upper()).value == "two"  # names are case-insensitive

    versions = {p.version for p in client.list_properties_of_secret_versions(name)}
    assert versions == {first.properties.version, second.properties.version}
    listed = [p for p in client.list_properties_of_secrets() if p.name == name]
    assert len(listed) == 1
    assert listed[0].content_type is None  # the current version's properties


def test_not_found_message_matches_azure(client: SecretClient) -> None:
    name = _name("missing")
    with pytest.raises(ResourceNotFoundError) as info:
        client.get_secret(name)
    assert info.value.error is not None
    assert info.value.error.code == "SecretNotFound"
    assert f"A secret with (name/id) {name} was not found in this key vault." in str(info.value)
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name, "0" * 32)


def test_disabled_secret_cannot_be_read(client: SecretClient) -> None:
    name = _name()
    client.set_secret(name, "hidden")
    props = client.update_secret_properties(name, enabled=False)
    assert props.enabled is False
    with pytest.raises(HttpResponseError) as info:
        client.get_secret(name)
    assert info.value.status_code == 403
    assert info.value.error is not None
    assert info.value.error.code == "Forbidden"
    assert "Operation get is not allowed on a disabled secret." in str(info.value)
    disabled_at_birth = client.set_secret(_name(), "x", enabled=False)
    assert disabled_at_birth.properties.enabled is False


def test_delete_recover_and_purge(client: SecretClient) -> None:
    name = _name()
    client.set_secret(name, "value")
    deleted = client.begin_delete_secret(name).result()
    assert (deleted.recovery_id or "").endswith(f"/deletedsecrets/{name}")
    assert deleted.deleted_date is not None
    assert deleted.scheduled_purge_date is not None
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)
    assert client.get_deleted_secret(name).name == name
    assert name in {d.name for d in client.list_deleted_secrets()}
    with pytest.raises(HttpResponseError) as conflict:  # a deleted name cannot be reused until purged
        client.set_secret(name, "again")
    assert conflict.value.status_code == 409

    recovered = client.begin_recover_deleted_secret(name).result()
    assert recovered.name == name
    assert client.get_secret(name).value == "value"

    client.begin_delete_secret(name).wait()
    client.purge_deleted_secret(name)
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret(name)
    assert client.set_secret(name, "fresh").value == "fresh"


def test_backup_and_restore(client: SecretClient) -> None:
    name = _name()
    client.set_secret(name, "keep-me")
    blob = client.backup_secret(name)
    client.begin_delete_secret(name).wait()
    client.purge_deleted_secret(name)
    restored = client.restore_secret_backup(blob)
    assert restored.name == name
    assert client.get_secret(name).value == "keep-me"


def test_listing_pages_follow_next_link(
    client: SecretClient, emulator: EmulatorInfo, vault_token: str
) -> None:
    prefix = _name("page")
    for i in range(27):
        emulator.admin("PUT", f"keyvault/secrets/{prefix}-{i}", json={"value": str(i)})
    first = _raw(emulator, "GET", f"secrets?{API}", vault_token).json()
    assert len(first["value"]) == 25
    assert first["nextLink"].startswith(f"{emulator.keyvault_url}secrets?")
    names = [p.name for p in client.list_properties_of_secrets(max_page_size=10)]
    mine = sorted(n for n in names if n and n.startswith(prefix))
    assert mine == sorted(f"{prefix}-{i}" for i in range(27))
    assert "value" not in first["value"][0]
    last = _raw(emulator, "GET", f"secrets/{prefix}-1/versions?{API}", vault_token).json()
    assert last["nextLink"] is None


# -- admin seeding and access policies ----------------------------------------------------------------------


def test_admin_seeding(client: SecretClient, emulator: EmulatorInfo) -> None:
    name = _name("seeded")
    bundle = emulator.admin("PUT", f"keyvault/secrets/{name}", json={"value": "from-admin"})
    assert bundle["value"] == "from-admin"
    assert name in emulator.admin("GET", "keyvault/secrets")["secrets"]
    assert client.get_secret(name).value == "from-admin"
    emulator.admin("DELETE", f"keyvault/secrets/{name}")
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)
    assert name not in emulator.admin("GET", "keyvault/secrets")["deletedSecrets"]


def test_access_policy_restricts_and_grants(client: SecretClient, open_vault: EmulatorInfo) -> None:
    emulator = open_vault
    name = _name()
    client.set_secret(name, "guarded")
    emulator.admin(
        "PUT",
        "keyvault/access-policies",
        json={"accessPolicies": [{"objectId": emulator.client_id, "permissions": {"secrets": ["list"]}}]},
    )
    with pytest.raises(HttpResponseError) as info:
        client.get_secret(name)
    assert info.value.status_code == 403
    assert f"'appid={emulator.client_id};" in str(info.value)
    assert "does not have secrets get permission" in str(info.value)
    assert any(p.name == name for p in client.list_properties_of_secrets())

    emulator.admin(
        "PUT",
        "keyvault/access-policies",
        json={"accessPolicies": [{"objectId": emulator.client_id, "permissions": {"secrets": ["get"]}}]},
    )
    assert client.get_secret(name).value == "guarded"
