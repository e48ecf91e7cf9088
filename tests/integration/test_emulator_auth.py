"""Entra and managed-identity stand-ins, exercised with the real azure-identity credentials, and the D365
gate's bearer validation (ref §8)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import (
    CertificateCredential,
    ClientSecretCredential,
    DefaultAzureCredential,
    ManagedIdentityCredential,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator.tls import private_key_pem, self_signed_rsa
from tests.support.stack import EmulatorInfo


@pytest.fixture(autouse=True)
def leave_emulator_clean(emulator: EmulatorInfo) -> Iterator[None]:
    """The session emulator is shared with other modules: no fault, limit or app outlives a test here."""
    yield
    emulator.admin("POST", "reset")


MI_ENV = (
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


def d365_scope(emulator: EmulatorInfo) -> str:
    return f"{emulator.base_url}/.default"


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def call_d365(emulator: EmulatorInfo, token: str | None, path: str = "/data/") -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.get(f"{emulator.base_url}{path}", headers=headers, timeout=10)


def assert_passes_gate(response: requests.Response) -> None:
    """The gate let the request through (the route behind it may still be a placeholder: 404)."""
    assert response.status_code not in (401, 403, 429), response.text


def assert_401(response: requests.Response, fragment: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    error = response.json()["error"]
    assert error["message"]
    assert fragment.lower() in error["innererror"]["message"].lower(), error


def secret_credential(emulator: EmulatorInfo, client_id: str, secret: str) -> ClientSecretCredential:
    return ClientSecretCredential(
        emulator.tenant_id,
        client_id,
        secret,
        authority=emulator.authority_host,
        disable_instance_discovery=True,
        connection_verify=emulator.ca_file,
    )


@pytest.fixture
def no_identity_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in MI_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# -- Entra client credentials ----------------------------------------------------------------------


def test_client_secret_credential(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    token = secret_credential(emulator, emulator.client_id, emulator.client_secret).get_token(
        d365_scope(emulator)
    )
    assert 3500 < token.expires_on - time.time() <= 3600
    claims = claims_of(token.token)
    assert claims["aud"] == emulator.base_url
    assert claims["iss"] == f"https://sts.windows.net/{emulator.tenant_id}/"
    assert claims["tid"] == emulator.tenant_id
    assert claims["appid"] == claims["azp"] == emulator.client_id
    assert claims["oid"]
    assert claims["sub"] == claims["oid"]
    assert claims["ver"] == "1.0"
    assert claims["appidacr"] == "1"
    assert claims["nbf"] <= claims["iat"] + 1
    assert claims["exp"] > claims["iat"]
    assert jwt.get_unverified_header(token.token)["alg"] == "RS256"
    assert_passes_gate(call_d365(emulator, token.token))


def test_settings_from_the_environment(
    clean_emulator: EmulatorInfo, no_identity_env: pytest.MonkeyPatch
) -> None:
    """What a Functions app configures: AZURE_* variables, AZURE_AUTHORITY_HOST and REQUESTS_CA_BUNDLE."""
    emulator = clean_emulator
    env = no_identity_env
    env.setenv("AZURE_TENANT_ID", emulator.tenant_id)
    env.setenv("AZURE_CLIENT_ID", emulator.client_id)
    env.setenv("AZURE_CLIENT_SECRET", emulator.client_secret)
    env.setenv("AZURE_AUTHORITY_HOST", emulator.authority_host)
    env.setenv("REQUESTS_CA_BUNDLE", emulator.ca_file)
    credential = DefaultAzureCredential(disable_instance_discovery=True)
    token = credential.get_token(d365_scope(emulator))
    assert claims_of(token.token)["appid"] == emulator.client_id


def test_certificate_credential(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    credential = CertificateCredential(
        emulator.tenant_id,
        emulator.certificate_client_id,
        certificate_path=emulator.certificate_path,
        authority=emulator.authority_host,
        disable_instance_discovery=True,
        connection_verify=emulator.ca_file,
    )
    token = credential.get_token(d365_scope(emulator))
    claims = claims_of(token.token)
    assert claims["appid"] == emulator.certificate_client_id
    assert claims["appidacr"] == "2"
    assert_passes_gate(call_d365(emulator, token.token))


def test_certificate_not_registered_is_refused(clean_emulator: EmulatorInfo, tmp_path: Path) -> None:
    emulator = clean_emulator
    key, cert = self_signed_rsa("stranger", days=1)
    pem = tmp_path / "stranger.pem"
    pem.write_bytes(private_key_pem(key) + cert.public_bytes(serialization.Encoding.PEM))
    credential = CertificateCredential(
        emulator.tenant_id,
        emulator.certificate_client_id,
        certificate_path=str(pem),
        authority=emulator.authority_host,
        disable_instance_discovery=True,
        connection_verify=emulator.ca_file,
    )
    with pytest.raises(ClientAuthenticationError, match="AADSTS700027"):
        credential.get_token(d365_scope(emulator))


@pytest.mark.parametrize(
    ("tenant", "client", "secret", "status", "error", "code"),
    [
        ("wrong-tenant", None, None, 400, "invalid_request", "AADSTS90002"),
        (None, "11111111-2222-3333-4444-555555555555", None, 400, "unauthorized_client", "AADSTS700016"),
        (None, None, "not-the-secret", 401, "invalid_client", "AADSTS7000215"),
    ],
)
def test_token_endpoint_errors(
    clean_emulator: EmulatorInfo,
    tenant: str | None,
    client: str | None,
    secret: str | None,
    status: int,
    error: str,
    code: str,
) -> None:
    emulator = clean_emulator
    response = requests.post(
        f"{emulator.authority_host}/{tenant or emulator.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client or emulator.client_id,
            "client_secret": secret or emulator.client_secret,
            "scope": d365_scope(emulator),
        },
        verify=emulator.ca_file,
        timeout=10,
    )
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error
    assert body["error_description"].startswith(code + ":")
    assert body["error_codes"] == [int(code.removeprefix("AADSTS"))]


def test_bad_secret_raises_in_azure_identity(clean_emulator: EmulatorInfo) -> None:
    credential = secret_credential(clean_emulator, clean_emulator.client_id, "wrong")
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        credential.get_token(d365_scope(clean_emulator))


def test_scope_must_be_dot_default(clean_emulator: EmulatorInfo) -> None:
    response = requests.post(
        clean_emulator.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": clean_emulator.client_id,
            "client_secret": clean_emulator.client_secret,
            "scope": f"{clean_emulator.base_url}/user_impersonation",
        },
        verify=clean_emulator.ca_file,
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


# -- managed identity ------------------------------------------------------------------------------


@pytest.mark.parametrize("user_assigned", [False, True])
def test_managed_identity_app_service_style(
    clean_emulator: EmulatorInfo, no_identity_env: pytest.MonkeyPatch, user_assigned: bool
) -> None:
    emulator = clean_emulator
    no_identity_env.setenv("IDENTITY_ENDPOINT", emulator.identity_endpoint)
    no_identity_env.setenv("IDENTITY_HEADER", emulator.identity_header)
    client_id = emulator.managed_identity_client_id if user_assigned else None
    token = ManagedIdentityCredential(client_id=client_id).get_token(d365_scope(emulator))
    claims = claims_of(token.token)
    if user_assigned:
        assert claims["appid"] == emulator.managed_identity_client_id
    else:
        assert claims["oid"] == emulator.system_identity_object_id
    assert claims["aud"] == emulator.base_url
    assert_passes_gate(call_d365(emulator, token.token))
    log = emulator.admin("GET", "requests?family=token&limit=1")["requests"][-1]
    assert log["query"].startswith("api-version=2019-08-01")


@pytest.mark.parametrize("user_assigned", [False, True])
def test_managed_identity_imds_style(
    clean_emulator: EmulatorInfo, no_identity_env: pytest.MonkeyPatch, user_assigned: bool
) -> None:
    emulator = clean_emulator
    no_identity_env.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", emulator.imds_endpoint)
    client_id = emulator.managed_identity_client_id if user_assigned else None
    token = ManagedIdentityCredential(client_id=client_id).get_token(d365_scope(emulator))
    claims = claims_of(token.token)
    expected = emulator.managed_identity_client_id if user_assigned else emulator.system_identity_client_id
    assert claims["appid"] == expected
    assert_passes_gate(call_d365(emulator, token.token))
    log = emulator.admin("GET", "requests?family=token&limit=1")["requests"][-1]
    assert log["query"].startswith("api-version=2018-02-01")


def test_managed_identity_wire_shapes(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    url = emulator.identity_endpoint
    resource = {"resource": emulator.base_url}
    apps = {a["client_id"]: a for a in emulator.admin("GET", "apps")["apps"]}
    resource_id = apps[emulator.managed_identity_client_id]["resource_id"]
    app_service = requests.get(
        url,
        params={"api-version": "2019-08-01", **resource, "mi_res_id": resource_id},
        headers={"X-IDENTITY-HEADER": emulator.identity_header},
        timeout=10,
    )
    assert app_service.status_code == 200
    body = app_service.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert isinstance(body["expires_on"], str)
    assert int(body["expires_on"]) > time.time()
    assert body["client_id"] == emulator.managed_identity_client_id
    imds = requests.get(
        url, params={"api-version": "2018-02-01", **resource}, headers={"Metadata": "true"}, timeout=10
    )
    assert imds.status_code == 200
    assert int(imds.json()["expires_in"]) > 3000
    assert "expires_on" in imds.json()


@pytest.mark.parametrize(
    ("params", "headers", "status", "fragment"),
    [
        ({"api-version": "2019-08-01"}, {}, 400, "X-IDENTITY-HEADER"),
        ({"api-version": "2019-08-01"}, {"X-IDENTITY-HEADER": "wrong"}, 401, "X-IDENTITY-HEADER"),
        (
            {"api-version": "2019-08-01", "client_id": "00000000-0000-0000-0000-000000000009"},
            None,
            400,
            "not found",
        ),
        ({"api-version": "2018-02-01"}, {}, 400, "metadata header"),
        (
            {"api-version": "2018-02-01", "client_id": "00000000-0000-0000-0000-000000000009"},
            {"Metadata": "true"},
            400,
            "Identity not found",
        ),
    ],
)
def test_managed_identity_errors(
    clean_emulator: EmulatorInfo,
    params: dict[str, str],
    headers: dict[str, str] | None,
    status: int,
    fragment: str,
) -> None:
    emulator = clean_emulator
    sent = headers if headers is not None else {"X-IDENTITY-HEADER": emulator.identity_header}
    response = requests.get(
        emulator.identity_endpoint, params={**params, "resource": emulator.base_url}, headers=sent, timeout=10
    )
    assert response.status_code == status
    assert fragment.lower() in response.text.lower()


def test_unknown_user_assigned_identity_in_azure_identity(
    clean_emulator: EmulatorInfo, no_identity_env: pytest.MonkeyPatch
) -> None:
    no_identity_env.setenv("IDENTITY_ENDPOINT", clean_emulator.identity_endpoint)
    no_identity_env.setenv("IDENTITY_HEADER", clean_emulator.identity_header)
    credential = ManagedIdentityCredential(client_id="00000000-0000-0000-0000-000000000009")
    with pytest.raises(ClientAuthenticationError, match="Managed Identity"):
        credential.get_token(d365_scope(clean_emulator))


# -- the D365 gate -----------------------------------------------------------------------------------


def issued(emulator: EmulatorInfo, **body: object) -> str:
    return str(emulator.admin("POST", "tokens/issue", json=body)["access_token"])


def test_missing_token(clean_emulator: EmulatorInfo) -> None:
    response = call_d365(clean_emulator, None)
    assert_401(response, "missing")
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"lifetime_seconds": -10}, "expired"),
        ({"not_before_offset": 600}, "not valid before"),
        ({"audience": "https://contoso.operations.dynamics.com"}, "audience"),
        ({"tenant_id": "00000000-0000-0000-0000-00000000dead"}, "tenant"),
    ],
)
def test_bad_tokens_are_refused(clean_emulator: EmulatorInfo, body: dict[str, object], fragment: str) -> None:
    response = call_d365(clean_emulator, issued(clean_emulator, **body))
    assert_401(response, fragment)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "path", ["/data/", "/api/services/x", "/api/connector/dequeue/x", "/Metadata/DataEntities"]
)
def test_every_d365_family_is_gated(clean_emulator: EmulatorInfo, path: str) -> None:
    assert call_d365(clean_emulator, None, path).status_code == 401
    assert_passes_gate(call_d365(clean_emulator, issued(clean_emulator), path))


def test_bad_signature(clean_emulator: EmulatorInfo) -> None:
    token = issued(clean_emulator)
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[:-6]}AAAAAA"
    assert_401(call_d365(clean_emulator, tampered), "signature")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims_of(token), other, algorithm="RS256", headers=jwt.get_unverified_header(token))
    assert_401(call_d365(clean_emulator, forged), "signature")
    assert_401(call_d365(clean_emulator, "not-a-jwt"), "malformed")


def test_unregistered_app_is_refused(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    app = emulator.admin("POST", "apps", json={"display_name": "not in F&O", "d365_user_id": None})
    credential = secret_credential(emulator, app["client_id"], app["client_secret"])
    token = credential.get_token(d365_scope(emulator)).token  # Entra issues it...
    assert_401(call_d365(emulator, token), "not registered")  # ...D365 refuses it
    emulator.admin("POST", "apps", json={"client_id": app["client_id"], "d365_user_id": "Admin"})
    assert_passes_gate(call_d365(emulator, token))


def test_key_rotation_invalidates_tokens(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    credential = secret_credential(emulator, emulator.client_id, emulator.client_secret)
    before = credential.get_token(d365_scope(emulator)).token
    assert_passes_gate(call_d365(emulator, before))
    emulator.admin("POST", "tokens/rotate-key")
    assert_401(call_d365(emulator, before), "signature")
    fresh = secret_credential(emulator, emulator.client_id, emulator.client_secret).get_token(
        d365_scope(emulator)
    )
    assert_passes_gate(call_d365(emulator, fresh.token))


def test_revocation(clean_emulator: EmulatorInfo) -> None:
    token = issued(clean_emulator)
    assert_passes_gate(call_d365(clean_emulator, token))
    clean_emulator.admin("POST", "tokens/revoke", json={"uti": claims_of(token)["uti"]})
    assert_401(call_d365(clean_emulator, token), "revoked")


def test_short_lifetime_and_refresh(clean_emulator: EmulatorInfo) -> None:
    """A client must refresh: with a 2 s lifetime the first token is refused after 2 s, and
    azure-identity fetches a new one (MSAL treats a token with < 5 min left as expired)."""
    emulator = clean_emulator
    emulator.admin("PUT", "tokens", json={"lifetime_seconds": 2})
    credential = secret_credential(emulator, emulator.client_id, emulator.client_secret)
    first = credential.get_token(d365_scope(emulator))
    assert first.expires_on - time.time() <= 2
    assert_passes_gate(call_d365(emulator, first.token))
    time.sleep(max(0.0, first.expires_on - time.time()) + 0.2)
    assert_401(call_d365(emulator, first.token), "expired")
    second = credential.get_token(d365_scope(emulator))
    assert second.token != first.token
    assert_passes_gate(call_d365(emulator, second.token))


def test_principal_is_logged(clean_emulator: EmulatorInfo) -> None:
    call_d365(clean_emulator, issued(clean_emulator, client_id=clean_emulator.certificate_client_id))
    entry = clean_emulator.admin("GET", "requests?family=odata")["requests"][-1]
    assert entry["app_id"] == clean_emulator.certificate_client_id
