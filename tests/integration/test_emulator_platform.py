"""The emulator process: ready line, HTTPS certificate, admin API, request log, clean shutdown."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from cryptography import x509

from tests.support.stack import EmulatorInfo, run_emulator


@pytest.fixture(autouse=True)
def leave_emulator_clean(emulator: EmulatorInfo) -> Iterator[None]:
    """The session emulator is shared with other modules: no fault, limit or app outlives a test here."""
    yield
    emulator.admin("POST", "reset")


READY_KEYS = {
    "base_url", "tls_url", "tenant_id", "authority_host", "token_url", "identity_endpoint", "identity_header",
    "imds_endpoint", "keyvault_url", "ca_file", "admin_url", "client_id", "client_secret",
    "certificate_client_id", "certificate_path", "managed_identity_client_id", "system_identity_object_id",
}  # fmt: skip


def token_for(emulator: EmulatorInfo, **body: object) -> str:
    return str(emulator.admin("POST", "tokens/issue", json=body)["access_token"])


def test_ready_line(emulator: EmulatorInfo) -> None:
    info = emulator.raw
    assert set(info) >= READY_KEYS
    base, tls, tenant = info["base_url"], info["tls_url"], info["tenant_id"]
    assert base.startswith("http://127.0.0.1:")
    assert tls.startswith("https://127.0.0.1:")
    assert info["authority_host"] == tls
    assert info["token_url"] == f"{tls}/{tenant}/oauth2/v2.0/token"
    assert info["identity_endpoint"] == f"{base}/metadata/identity/oauth2/token"
    assert info["imds_endpoint"] == base
    assert info["keyvault_url"] == f"{tls}/"
    assert info["admin_url"] == f"{base}/_emulator"
    assert len(info["identity_header"]) >= 16
    ca = x509.load_pem_x509_certificate(Path(info["ca_file"]).read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    pem = Path(info["certificate_path"]).read_text()
    assert "PRIVATE KEY" in pem
    assert "CERTIFICATE" in pem


def test_admin_info_is_the_ready_json(emulator: EmulatorInfo) -> None:
    assert emulator.admin("GET", "") == emulator.raw


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_https_certificate_is_trusted_through_ca_file(emulator: EmulatorInfo, host: str) -> None:
    url = emulator.tls_url.replace("127.0.0.1", host)
    response = requests.get(
        f"{url}/{emulator.tenant_id}/v2.0/.well-known/openid-configuration",
        verify=emulator.ca_file,
        timeout=10,
    )
    assert response.status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(emulator.tls_url, timeout=10)  # the system trust store does not know the emulator CA
    context = ssl.create_default_context(cafile=emulator.ca_file)
    if hasattr(ssl, "VERIFY_X509_STRICT"):  # what Python 3.13 turns on by default
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    port = int(emulator.tls_url.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version()


def test_openid_configuration_and_jwks(emulator: EmulatorInfo) -> None:
    doc = requests.get(
        f"{emulator.authority_host}/{emulator.tenant_id}/v2.0/.well-known/openid-configuration",
        verify=emulator.ca_file,
        timeout=10,
    ).json()
    assert doc["token_endpoint"] == emulator.token_url
    keys = requests.get(doc["jwks_uri"], verify=emulator.ca_file, timeout=10).json()["keys"]
    token = token_for(emulator)
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys if k["kid"] == kid)
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["RS256"], audience=emulator.base_url)
    assert claims["appid"] == emulator.client_id
    wrong = requests.get(
        f"{emulator.authority_host}/not-my-tenant/v2.0/.well-known/openid-configuration",
        verify=emulator.ca_file,
        timeout=10,
    )
    assert wrong.status_code == 400


def test_limits_admin_roundtrip(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    limits = emulator.admin("GET", "limits")
    assert limits["window_seconds"] == 300
    assert limits["requests"] == {"enabled": False, "limit": 6000}
    assert limits["execution_time"] == {"enabled": False, "limit_seconds": 1200}
    assert limits["concurrency"] == {"enabled": False, "limit": 52}
    changed = emulator.admin(
        "PUT", "limits", json={"window_seconds": 5, "requests": {"enabled": True, "limit": 9}}
    )
    assert changed["window_seconds"] == 5
    assert changed["requests"] == {"enabled": True, "limit": 9}
    bad = requests.put(f"{emulator.admin_url}/limits", json={"window_seconds": -1}, timeout=10)
    assert bad.status_code == 400
    assert "window_seconds" in bad.json()["error"]
    assert emulator.admin("DELETE", "limits")["requests"]["enabled"] is False


def test_faults_admin_roundtrip(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    rule = emulator.admin("POST", "faults", json={"id": "r1", "family": "odata", "latency_ms": 5})
    assert rule["id"] == "r1"
    emulator.admin("POST", "faults", json={"id": "r2", "error_rate": 1, "count": 1})
    assert [r["id"] for r in emulator.admin("GET", "faults")["rules"]] == ["r1", "r2"]
    emulator.admin("DELETE", "faults/r1")
    replaced = emulator.admin("PUT", "faults", json={"rules": [{"id": "r3", "drop_rate": 0.5, "seed": 1}]})
    assert [r["id"] for r in replaced["rules"]] == ["r3"]
    bad = requests.post(f"{emulator.admin_url}/faults", json={"error_status": 200}, timeout=10)
    assert bad.status_code == 400
    assert emulator.admin("DELETE", "faults")["rules"] == []


def test_apps_admin(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    apps = {a["client_id"]: a for a in emulator.admin("GET", "apps")["apps"]}
    assert {emulator.client_id, emulator.certificate_client_id, emulator.managed_identity_client_id} <= set(
        apps
    )
    assert emulator.client_secret not in json.dumps(apps)  # listings never show secret values
    created = requests.post(f"{emulator.admin_url}/apps", json={"display_name": "tmp"}, timeout=10)
    assert created.status_code == 201
    body = created.json()
    assert body["client_secret"]
    assert body["d365_registered"]
    assert body["d365_user_id"] == "Admin"
    emulator.admin("DELETE", f"apps/{body['client_id']}?scope=d365")
    listed = {a["client_id"]: a for a in emulator.admin("GET", "apps")["apps"]}
    assert listed[body["client_id"]]["d365_registered"] is False
    emulator.admin("DELETE", f"apps/{body['client_id']}")
    assert body["client_id"] not in {a["client_id"] for a in emulator.admin("GET", "apps")["apps"]}
    missing = requests.delete(f"{emulator.admin_url}/apps/{body['client_id']}", timeout=10)
    assert missing.status_code == 404


def test_reset_restores_everything(emulator: EmulatorInfo) -> None:
    emulator.admin("PUT", "limits", json={"requests": {"enabled": True, "limit": 1}})
    emulator.admin("POST", "faults", json={"latency_ms": 1})
    emulator.admin("PUT", "tokens", json={"lifetime_seconds": 5})
    extra = emulator.admin("POST", "apps", json={"display_name": "gone after reset"})
    requests.get(f"{emulator.base_url}/data/x", timeout=10)
    emulator.admin("POST", "reset")
    assert emulator.admin("GET", "limits")["requests"]["enabled"] is False
    assert emulator.admin("GET", "faults")["rules"] == []
    assert emulator.admin("GET", "tokens")["lifetime_seconds"] == 3600
    assert emulator.admin("GET", "requests")["requests"] == []
    assert emulator.admin("GET", "counters")["total"] == 0
    assert extra["client_id"] not in {a["client_id"] for a in emulator.admin("GET", "apps")["apps"]}


def test_seed_endpoint_validates_and_answers_rows(clean_emulator: EmulatorInfo) -> None:
    bad = requests.post(f"{clean_emulator.admin_url}/seed", json={"entity_set": "CustomersV3"}, timeout=10)
    assert bad.status_code == 400
    answer = requests.post(
        f"{clean_emulator.admin_url}/seed", json={"entity_set": "CustomersV3", "count": 3}, timeout=60
    )
    if answer.status_code == 200:
        assert isinstance(answer.json()["rows"], int)
    else:  # the store may refuse an unknown entity set with a readable 400
        assert answer.status_code == 400
        assert answer.json()["error"]


def test_request_log_and_counters_never_keep_secrets(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    token = token_for(emulator)
    requests.get(
        f"{emulator.base_url}/data/Anything?sig=SASSIG&$top=1&client_secret=QUERYSECRET",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    requests.post(
        emulator.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
            "scope": f"{emulator.base_url}/.default",
        },
        verify=emulator.ca_file,
        timeout=10,
    )
    requests.get(f"{emulator.base_url}/data/x", timeout=10)  # 401
    log = emulator.admin("GET", "requests")["requests"]
    dumped = json.dumps(log)
    for secret in (token, "SASSIG", "QUERYSECRET", emulator.client_secret):
        assert secret not in dumped
    odata = emulator.admin("GET", "requests?family=odata&limit=5")["requests"]
    assert [r["status"] for r in odata][-1] == 401
    first = odata[0]
    assert first["path"] == "/data/Anything"
    query = first["query"]
    assert "sig=REDACTED" in query
    assert "client_secret=REDACTED" in query
    assert "top=1" in query
    assert first["app_id"] == emulator.client_id
    assert first["duration_ms"] >= 0
    token_calls = emulator.admin("GET", "requests?family=token")["requests"]
    assert token_calls
    assert token_calls[-1]["status"] == 200
    counters = emulator.admin("GET", "counters")
    assert counters["families"]["odata"]["401"] == 1
    assert counters["families"]["token"]["200"] == 1
    assert counters["total"] == 3


def test_sigterm_shuts_down_cleanly(tmp_path: Path) -> None:
    with run_emulator(tmp_path) as info:
        session = requests.Session()
        assert session.get(info.admin_url + "/", timeout=10).status_code == 200  # a kept-alive connection
        process = info.process
        assert process is not None
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
