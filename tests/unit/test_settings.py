"""Settings: defaults, normalisation, one error listing every problem, secrets masked, references resolved."""

from __future__ import annotations

import base64
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest
from azure.identity import CertificateCredential, ClientSecretCredential, ManagedIdentityCredential
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from emulator.tls import private_key_pem, self_signed_rsa
from shared import settings as settings_module
from shared.identity import build_credential
from shared.keyvault import KeyVaultReference, KeyVaultUnreachableError, SecretNotFoundError
from shared.settings import ConfigurationError, Secret, Settings, SettingsReader
from shared.settings_sections import AuthMode, HttpSettings, StorageSettings
from shared.trust_bundle import trust_bundle

BASE = {
    "D365_BASE_URL": "https://contoso.operations.dynamics.com",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}
VAULT = "https://127.0.0.1:8766/"


def ref(name: str, vault: str = VAULT) -> str:
    return f"@Microsoft.KeyVault(SecretUri={vault}secrets/{name}/)"


class FakeSecrets:
    """A SecretSource over a dict; a missing name raises like the real resolver."""

    def __init__(self, values: dict[str, str], errors: dict[str, Exception] | None = None) -> None:
        self.values = values
        self.errors = errors or {}
        self.calls: list[KeyVaultReference] = []

    def resolve(self, reference: KeyVaultReference) -> str:
        self.calls.append(reference)
        if reference.name in self.errors:
            raise self.errors[reference.name]
        if reference.name not in self.values:
            raise SecretNotFoundError(
                f"secret {reference.name!r} in vault {reference.vault_host}: not found",
                vault_host=reference.vault_host,
                secret_name=reference.name,
            )
        return self.values[reference.name]


def problems_of(env: dict[str, str], **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env, **kwargs)
    message = str(caught.value)
    assert message.count("\n") == len(caught.value.problems)  # one line per problem
    return list(caught.value.problems)


def make_pem(tmp_path: Path) -> tuple[Path, bytes, bytes]:
    """A self-signed certificate + key as PEM (file and text) and as PKCS#12 bytes."""
    key, cert = self_signed_rsa("d365-test", days=30)
    pem = cert.public_bytes(serialization.Encoding.PEM) + private_key_pem(key)
    path = tmp_path / "cert.pem"
    path.write_bytes(pem)
    pfx = pkcs12.serialize_key_and_certificates(b"x", key, cert, None, serialization.NoEncryption())
    return path, pem, pfx


# ------------------------------------------------------------------------------------------ defaults


def test_minimal_environment_gives_documented_defaults() -> None:
    s = Settings.from_env({**BASE, "D365_BASE_URL": "https://Contoso.Operations.Dynamics.com//"})
    assert s.d365.base_url == "https://contoso.operations.dynamics.com"
    assert s.d365.scope == "https://contoso.operations.dynamics.com/.default"
    assert s.auth.mode is AuthMode.MANAGED_IDENTITY
    assert s.auth.client_id is None
    assert s.http == HttpSettings()
    assert s.http.timeout == (10.0, 120.0)
    assert (s.http.retry_max_attempts, s.http.retry_max_seconds, s.http.retry_after_cap_seconds) == (
        6,
        300,
        120,
    )
    assert (s.http.backoff_base_seconds, s.http.backoff_max_seconds, s.http.odata_page_size) == (
        0.5,
        30,
        None,
    )
    assert s.key_vault.url is None
    assert s.key_vault.cache_seconds == 300
    assert s.secrets is not None  # lazily built: nothing contacted yet


def test_default_environment_is_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("D365_ODATA_PAGE_SIZE", "500")
    assert Settings.from_env().http.odata_page_size == 500


def test_http_policy_values_are_parsed() -> None:
    s = Settings.from_env(
        {
            **BASE,
            "D365_HTTP_CONNECT_TIMEOUT": "3.5",
            "D365_HTTP_READ_TIMEOUT": "60",
            "D365_RETRY_MAX_ATTEMPTS": "4",
            "D365_RETRY_MAX_SECONDS": "90",
            "D365_RETRY_AFTER_CAP_SECONDS": "0",
            "D365_RETRY_BACKOFF_BASE_SECONDS": "1",
            "D365_RETRY_BACKOFF_MAX_SECONDS": "8",
            "D365_ODATA_PAGE_SIZE": "10000",
        }
    )
    assert s.http == HttpSettings(3.5, 60, 4, 90, 0, 1, 8, 10000)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8765", "http://localhost:8765/", "https://contoso.sandbox.operations.dynamics.com"],
)
def test_accepted_base_urls(url: str) -> None:
    assert Settings.from_env({**BASE, "D365_BASE_URL": url}).d365.base_url == url.rstrip("/")


# ------------------------------------------------------------------------------------------ problems


def test_missing_required_settings_are_named() -> None:
    problems = problems_of({})
    assert [p.split(":")[0] for p in problems] == ["D365_BASE_URL", "AzureWebJobsStorage"]
    assert "https://contoso.operations.dynamics.com" in problems[0]  # says what is expected


def test_every_problem_is_reported_at_once() -> None:
    env = {
        "D365_BASE_URL": "http://contoso.operations.dynamics.com",  # http to a non-loopback host
        "D365_AUTH_MODE": "password",
        "D365_HTTP_CONNECT_TIMEOUT": "0",
        "D365_HTTP_READ_TIMEOUT": "soon",
        "D365_RETRY_MAX_ATTEMPTS": "0",
        "D365_RETRY_MAX_SECONDS": "-1",
        "D365_RETRY_AFTER_CAP_SECONDS": "nan",
        "D365_RETRY_BACKOFF_BASE_SECONDS": "5",
        "D365_RETRY_BACKOFF_MAX_SECONDS": "1",
        "D365_ODATA_PAGE_SIZE": "10001",
        "KEY_VAULT_URL": "http://myvault.vault.azure.net",
        "KEY_VAULT_CACHE_SECONDS": "a while",
        "TLS_CA_BUNDLE": "/nonexistent/ca.pem",
        "D365_AUTHORITY_HOST": "http://login.example",
        "AzureWebJobsStorage__credential": "password",
    }
    names = sorted(p.split(":")[0] for p in problems_of(env))
    assert names == sorted(
        [
            "D365_BASE_URL",
            "D365_AUTH_MODE",
            "D365_HTTP_CONNECT_TIMEOUT",
            "D365_HTTP_READ_TIMEOUT",
            "D365_RETRY_MAX_ATTEMPTS",
            "D365_RETRY_MAX_SECONDS",
            "D365_RETRY_AFTER_CAP_SECONDS",
            "D365_RETRY_BACKOFF_MAX_SECONDS",
            "D365_ODATA_PAGE_SIZE",
            "KEY_VAULT_URL",
            "KEY_VAULT_CACHE_SECONDS",
            "TLS_CA_BUNDLE",
            "D365_AUTHORITY_HOST",
            "AzureWebJobsStorage",
            "AzureWebJobsStorage__credential",
        ]
    )


def test_malformed_values_are_echoed_but_secrets_never_are() -> None:
    problems = problems_of(
        {**BASE, "D365_RETRY_MAX_ATTEMPTS": "many", "AzureWebJobsStorage": "hunter2-not-a-connection-string"}
    )
    text = "\n".join(problems)
    assert "'many' is not valid; expected a whole number from 1 to 100" in text
    assert "AzureWebJobsStorage: is not a storage connection string" in text
    assert "hunter2" not in text


def test_client_secret_mode_needs_client_tenant_and_secret() -> None:
    problems = problems_of({**BASE, "D365_AUTH_MODE": "client_secret"})
    assert [p.split(":")[0] for p in problems] == ["D365_CLIENT_ID", "D365_TENANT_ID", "D365_CLIENT_SECRET"]
    assert all("D365_AUTH_MODE=client_secret" in p for p in problems)


def test_certificate_mode_needs_exactly_one_certificate(tmp_path: Path) -> None:
    app = {**BASE, "D365_AUTH_MODE": "certificate", "D365_CLIENT_ID": "c", "D365_TENANT_ID": "t"}
    assert [p.split(":")[0] for p in problems_of(app)] == ["D365_CLIENT_CERTIFICATE_PATH"]
    path, pem, _ = make_pem(tmp_path)
    both = {**app, "D365_CLIENT_CERTIFICATE_PATH": str(path), "D365_CLIENT_CERTIFICATE": pem.decode()}
    assert [p.split(":")[0] for p in problems_of(both)] == ["D365_CLIENT_CERTIFICATE"]
    missing_file = {**app, "D365_CLIENT_CERTIFICATE_PATH": str(tmp_path / "nope.pem")}
    assert "cannot be read" in problems_of(missing_file)[0]


def test_an_unloadable_certificate_fails_at_start_up_without_echoing_it() -> None:
    env = {
        **BASE,
        "D365_AUTH_MODE": "certificate",
        "D365_CLIENT_ID": "c",
        "D365_TENANT_ID": "t",
        "D365_CLIENT_CERTIFICATE": "-----BEGIN PRIVATE KEY-----\nTOPSECRETgarbage\n-----END PRIVATE KEY-----",
    }
    problems = problems_of(env)
    assert problems[0].startswith("D365_CLIENT_CERTIFICATE: the certificate cannot be loaded")
    assert "TOPSECRET" not in problems[0]


@pytest.mark.parametrize("form", ["path", "pem", "pfx"])
def test_certificate_forms_build_a_certificate_credential(tmp_path: Path, form: str) -> None:
    path, pem, pfx = make_pem(tmp_path)
    value = {
        "path": {"D365_CLIENT_CERTIFICATE_PATH": str(path)},
        "pem": {"D365_CLIENT_CERTIFICATE": pem.decode()},
        "pfx": {
            "D365_CLIENT_CERTIFICATE": base64.b64encode(pfx).decode()
        },  # a Key Vault certificate's secret
    }[form]
    env = {**BASE, "D365_AUTH_MODE": "certificate", "D365_CLIENT_ID": "c", "D365_TENANT_ID": "t", **value}
    assert isinstance(build_credential(Settings.from_env(env)), CertificateCredential)


def test_credential_choice_follows_the_mode() -> None:
    assert isinstance(build_credential(Settings.from_env(BASE)), ManagedIdentityCredential)
    env = {**BASE, "D365_AUTH_MODE": "CLIENT_SECRET", "D365_CLIENT_ID": "c", "D365_TENANT_ID": "t"}
    s = Settings.from_env({**env, "D365_CLIENT_SECRET": "s3cr3t"})
    assert s.auth.mode is AuthMode.CLIENT_SECRET
    assert isinstance(build_credential(s), ClientSecretCredential)


# ------------------------------------------------------------------------------------------ secrets


def test_secret_is_masked_everywhere() -> None:
    secret = Secret("hunter2")
    assert repr(secret) == "Secret('***')"
    assert str(secret) == "***"
    assert f"{secret}" == "***"
    assert secret.reveal() == "hunter2"
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert secret == Secret("hunter2")
    assert secret != Secret("hunter3")
    assert Settings.from_env(BASE) == Settings.from_env(BASE)  # comparable without revealing anything
    s = Settings.from_env(
        {
            **BASE,
            "D365_AUTH_MODE": "client_secret",
            "D365_CLIENT_ID": "c",
            "D365_TENANT_ID": "t",
            "D365_CLIENT_SECRET": "hunter2",
        }
    )
    assert "hunter2" not in repr(s)
    assert "UseDevelopmentStorage" not in repr(s)
    assert s.auth.client_secret is not None
    assert s.auth.client_secret.reveal() == "hunter2"


# ------------------------------------------------------------------------------------------ references


def test_references_resolve_through_the_secret_source_for_any_setting() -> None:
    secrets = FakeSecrets({"d365-url": "https://fabrikam.operations.dynamics.com", "page-size": "250"})
    s = Settings.from_env(
        {**BASE, "D365_BASE_URL": ref("d365-url"), "D365_ODATA_PAGE_SIZE": ref("page-size")}, secrets=secrets
    )
    assert s.d365.base_url == "https://fabrikam.operations.dynamics.com"
    assert s.http.odata_page_size == 250


def test_a_referenced_secret_follows_rotation_through_its_source() -> None:
    secrets = FakeSecrets({"client-secret": "first"})
    env = {**BASE, "D365_AUTH_MODE": "client_secret", "D365_CLIENT_ID": "c", "D365_TENANT_ID": "t"}
    s = Settings.from_env({**env, "D365_CLIENT_SECRET": ref("client-secret")}, secrets=secrets)
    assert s.auth.client_secret is not None
    assert s.auth.client_secret.reference == KeyVaultReference(VAULT, "client-secret")
    secrets.values["client-secret"] = "second"
    assert s.auth.client_secret.reveal() == "second"  # the real resolver serves this after its TTL


def test_unresolvable_references_name_the_setting_and_vault_but_no_value() -> None:
    secrets = FakeSecrets(
        {"ok": "hunter2"},
        errors={
            "down": KeyVaultUnreachableError(
                "secret 'down' in vault 127.0.0.1:9: vault unreachable (Connection refused)",
                vault_host="127.0.0.1:9",
                secret_name="down",
            )
        },
    )
    env = {
        **BASE,
        "D365_AUTH_MODE": "client_secret",
        "D365_CLIENT_ID": "c",
        "D365_TENANT_ID": "t",
        "D365_CLIENT_SECRET": ref("missing"),
        "AzureWebJobsStorage": ref("down", "https://127.0.0.1:9/"),
        "D365_ODATA_PAGE_SIZE": "@Microsoft.KeyVault(VaultName=x)",
    }
    problems = problems_of(env, secrets=secrets)
    assert problems[0].startswith("D365_CLIENT_SECRET: Key Vault reference could not be resolved")
    assert "127.0.0.1:8766" in problems[0]
    assert "'missing'" in problems[0]
    assert problems[1].startswith("AzureWebJobsStorage: Key Vault reference could not be resolved")
    assert "127.0.0.1:9" in problems[1]
    assert problems[2].startswith("D365_ODATA_PAGE_SIZE: malformed Key Vault reference")
    assert "hunter2" not in "\n".join(problems)


def test_settings_needed_to_reach_key_vault_cannot_be_references() -> None:
    env = {**BASE, "KEY_VAULT_URL": ref("vault-url"), "TLS_CA_BUNDLE": ref("ca")}
    problems = problems_of(env, secrets=FakeSecrets({"vault-url": VAULT, "ca": "x"}))
    assert [p.split(":")[0] for p in problems] == ["KEY_VAULT_URL", "TLS_CA_BUNDLE"]
    assert all("cannot be a Key Vault reference" in p for p in problems)


class RecordingResolver:
    """Replaces SecretResolver inside settings to see which credential Settings picks for references."""

    instances: list[RecordingResolver] = []  # noqa: RUF012

    def __init__(self, credential: object, **kwargs: Any) -> None:
        self.credential = credential
        self.kwargs = kwargs
        RecordingResolver.instances.append(self)

    def resolve(self, reference: KeyVaultReference) -> str:
        return {"page": "100", "secret": "s3cr3t"}[reference.name]


@pytest.mark.parametrize(
    ("extra", "credential_type"),
    [
        # literal auth settings: the app's own credential reads the vault
        ({"D365_AUTH_MODE": "client_secret", "D365_CLIENT_SECRET": "literal"}, ClientSecretCredential),
        # the auth secret is itself a reference: the managed identity reads it (as App Service does)
        ({"D365_AUTH_MODE": "client_secret", "D365_CLIENT_SECRET": ref("secret")}, ManagedIdentityCredential),
        # explicit reference identity wins
        (
            {
                "D365_AUTH_MODE": "client_secret",
                "D365_CLIENT_SECRET": "literal",
                "KEY_VAULT_REFERENCE_CLIENT_ID": "u",
            },
            ManagedIdentityCredential,
        ),
    ],
)
def test_reference_credential_choice(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, str], credential_type: type
) -> None:
    RecordingResolver.instances = []
    monkeypatch.setattr(settings_module, "SecretResolver", RecordingResolver)
    env = {**BASE, "D365_CLIENT_ID": "c", "D365_TENANT_ID": "t", "KEY_VAULT_CACHE_SECONDS": "42", **extra}
    s = Settings.from_env({**env, "D365_ODATA_PAGE_SIZE": ref("page")})
    assert s.http.odata_page_size == 100
    (resolver,) = RecordingResolver.instances
    assert isinstance(resolver.credential, credential_type)
    assert resolver.kwargs["cache_seconds"] == 42


def test_no_reference_means_no_key_vault_client(monkeypatch: pytest.MonkeyPatch) -> None:
    RecordingResolver.instances = []
    monkeypatch.setattr(settings_module, "SecretResolver", RecordingResolver)
    Settings.from_env(BASE)
    assert RecordingResolver.instances == []


# ------------------------------------------------------------------------------------------ storage


def test_identity_based_storage_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "D365_BASE_URL": BASE["D365_BASE_URL"],
        "AzureWebJobsStorage__accountName": "MyAccount",
        "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__clientId": "uami-client",
    }
    storage = Settings.from_env(env).storage
    assert storage.connection_string is None
    assert storage.account_url == "https://myaccount.blob.core.windows.net"
    assert storage.client_id == "uami-client"
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi")
    monkeypatch.setenv("IDENTITY_HEADER", "h")
    client = storage.blob_service_client()
    assert client.url.startswith("https://myaccount.blob.core.windows.net")
    assert isinstance(client.credential, ManagedIdentityCredential)
    given = ManagedIdentityCredential()
    assert storage.blob_service_client(credential=given).credential is given


def test_blob_service_uri_and_connection_string_precedence() -> None:
    env = {**BASE, "AzureWebJobsStorage__blobServiceUri": "https://other.blob.core.windows.net/"}
    storage = Settings.from_env(env).storage
    assert storage.connection_string is not None  # a connection string wins, as in the Functions host
    client = storage.blob_service_client()
    assert client.url.startswith("http://127.0.0.1:10000/devstoreaccount1")
    uri_only = {
        "D365_BASE_URL": BASE["D365_BASE_URL"],
        "AzureWebJobsStorage__blobServiceUri": "https://x.blob.core.windows.net/",
    }
    assert Settings.from_env(uri_only).storage.blob_service_uri == "https://x.blob.core.windows.net"


def test_other_storage_connections_read_the_same_way() -> None:
    s = Settings.from_env({**BASE, "PackagesStorage__accountName": "pkgs"})
    packages = s.read(lambda r: StorageSettings.from_reader(r, connection="PackagesStorage"))
    assert packages.account_url == "https://pkgs.blob.core.windows.net"
    with pytest.raises(ConfigurationError, match="OtherStorage: missing"):
        s.read(lambda r: StorageSettings.from_reader(r, connection="OtherStorage"))


# ------------------------------------------------------------------------------------------ sections


@dataclass(frozen=True)
class DequeueSettings:
    """A feature's own section, as later features add them."""

    activity_id: str
    schedule: str

    @classmethod
    def from_reader(cls, reader: SettingsReader) -> Self:
        return cls(
            activity_id=reader.required("DEQUEUE_ACTIVITY_ID", "the recurring job's activity id (a GUID)"),
            schedule=reader.text("DEQUEUE_SCHEDULE", default="0 */5 * * * *") or "",
        )


def test_feature_sections_are_validated_with_everything_else() -> None:
    problems = problems_of({"D365_HTTP_READ_TIMEOUT": "x"}, sections=[DequeueSettings])
    assert [p.split(":")[0] for p in problems] == [
        "D365_BASE_URL",
        "AzureWebJobsStorage",
        "D365_HTTP_READ_TIMEOUT",
        "DEQUEUE_ACTIVITY_ID",
    ]


def test_feature_sections_load_on_demand_and_are_cached() -> None:
    s = Settings.from_env({**BASE, "DEQUEUE_ACTIVITY_ID": "abc"})
    first = s.section(DequeueSettings)
    assert first == DequeueSettings("abc", "0 */5 * * * *")
    assert s.section(DequeueSettings) is first
    with pytest.raises(ConfigurationError, match="DEQUEUE_ACTIVITY_ID: missing"):
        Settings.from_env(BASE).section(DequeueSettings)


# ------------------------------------------------------------------------------------------ TLS


def test_trust_bundle_adds_the_local_ca_to_the_public_roots(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nLOCAL\n-----END CERTIFICATE-----\n")
    bundle = trust_bundle(str(ca))
    assert bundle is not None
    content = Path(bundle).read_text()
    assert content.rstrip().endswith("-----END CERTIFICATE-----")
    assert "LOCAL" in content
    assert content.count("BEGIN CERTIFICATE") > 10  # the public roots are still there
    assert trust_bundle(str(ca)) == bundle
    assert trust_bundle(None) is None
    s = Settings.from_env({**BASE, "TLS_CA_BUNDLE": str(ca)})
    assert s.auth.ca_bundle == s.key_vault.ca_bundle == str(ca)
