"""The app's own settings sections: D365 environment, authentication, Key Vault, HTTP policy, storage.

Each section is a frozen dataclass that reads itself from a :class:`~shared.settings_reader.SettingsReader`
(``from_reader``); its docstring lists the app settings it reads. ``shared.settings.Settings`` assembles them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Self

from shared.settings_reader import Secret, SettingsReader

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import BlobServiceClient

__all__ = [
    "AuthMode",
    "AuthSettings",
    "D365Settings",
    "HttpSettings",
    "KeyVaultSettings",
    "StorageSettings",
    "check_certificate",
]


@dataclass(frozen=True)
class D365Settings:
    """The D365 F&O environment.

    - ``D365_BASE_URL`` (required): environment URL, e.g. ``https://contoso.operations.dynamics.com``;
      a trailing slash is dropped, the host lowercased; http only for loopback hosts (local emulator).
      The token scope is ``{D365_BASE_URL}/.default``.
    """

    base_url: str

    @property
    def scope(self) -> str:
        return f"{self.base_url}/.default"

    @classmethod
    def from_reader(cls, reader: SettingsReader) -> Self:
        url = reader.url(
            "D365_BASE_URL",
            required=True,
            expected="the D365 environment URL, e.g. https://contoso.operations.dynamics.com "
            "(http only for a loopback host)",
        )
        return cls(base_url=url or "")


class AuthMode(StrEnum):
    MANAGED_IDENTITY = "managed_identity"
    CLIENT_SECRET = "client_secret"
    CERTIFICATE = "certificate"


_PEM_OR_PFX = "PEM text with the certificate and its private key, or base64 PKCS#12 (a Key Vault certificate)"


@dataclass(frozen=True)
class AuthSettings:
    """How the app authenticates to D365 (and, by default, to Key Vault).

    - ``D365_AUTH_MODE``: ``managed_identity`` (default) | ``client_secret`` | ``certificate``.
    - ``D365_CLIENT_ID``: client id of the user-assigned managed identity (optional; unset means the
      system-assigned one), or of the app registration (required for client_secret / certificate).
    - ``D365_TENANT_ID``: Entra tenant id (required for client_secret / certificate).
    - ``D365_CLIENT_SECRET`` (secret): the app registration's secret, normally a Key Vault reference.
    - ``D365_CLIENT_CERTIFICATE_PATH``: PEM or PKCS#12 file; or ``D365_CLIENT_CERTIFICATE`` (secret): PEM
      text, or base64 PKCS#12 as a Key Vault certificate's secret holds it. Exactly one for certificate mode.
    - ``D365_CLIENT_CERTIFICATE_PASSWORD`` (secret, optional): password of an encrypted certificate.
    - ``D365_AUTHORITY_HOST`` (optional): Entra authority, e.g. the local emulator's https authority;
      default Azure public cloud. Instance discovery is off for non-Microsoft authorities.
    - ``TLS_CA_BUNDLE`` (optional): extra PEM CA to trust (the local stack's self-signed certificate).
    """

    mode: AuthMode = AuthMode.MANAGED_IDENTITY
    client_id: str | None = None
    tenant_id: str | None = None
    client_secret: Secret | None = None
    certificate_path: str | None = None
    certificate: Secret | None = None
    certificate_password: Secret | None = None
    authority_host: str | None = None
    ca_bundle: str | None = None

    NAMES = (
        "D365_AUTH_MODE",
        "D365_CLIENT_ID",
        "D365_TENANT_ID",
        "D365_CLIENT_SECRET",
        "D365_CLIENT_CERTIFICATE_PATH",
        "D365_CLIENT_CERTIFICATE",
        "D365_CLIENT_CERTIFICATE_PASSWORD",
        "D365_AUTHORITY_HOST",
    )

    @classmethod
    def from_reader(cls, reader: SettingsReader) -> Self:
        mode = AuthMode(
            reader.choice("D365_AUTH_MODE", [m.value for m in AuthMode], AuthMode.MANAGED_IDENTITY)
        )
        app = mode is not AuthMode.MANAGED_IDENTITY
        needs = f"(required for D365_AUTH_MODE={mode.value})"
        client_id = (
            reader.required("D365_CLIENT_ID", f"the app registration's client id {needs}")
            if app
            else reader.text("D365_CLIENT_ID")
        )
        tenant_id = (
            reader.required("D365_TENANT_ID", f"the Entra tenant id {needs}")
            if app
            else reader.text("D365_TENANT_ID")
        )
        secret = cert_path = cert = password = None
        if mode is AuthMode.CLIENT_SECRET:
            secret = reader.secret("D365_CLIENT_SECRET", required=f"the client secret {needs}")
        elif mode is AuthMode.CERTIFICATE:
            cert_path = reader.file("D365_CLIENT_CERTIFICATE_PATH", expected="a PEM or PKCS#12 file")
            cert = reader.secret("D365_CLIENT_CERTIFICATE")
            password = reader.secret("D365_CLIENT_CERTIFICATE_PASSWORD")
            given = [
                n for n in ("D365_CLIENT_CERTIFICATE_PATH", "D365_CLIENT_CERTIFICATE") if reader.env.get(n)
            ]
            if len(given) == 2:
                reader.problem(
                    "D365_CLIENT_CERTIFICATE", "set only one of it and D365_CLIENT_CERTIFICATE_PATH"
                )
            elif not given:
                reader.problem(
                    "D365_CLIENT_CERTIFICATE_PATH",
                    "missing; expected a certificate file, or D365_CLIENT_CERTIFICATE with "
                    f"{_PEM_OR_PFX} {needs}",
                )
        authority = reader.url(
            "D365_AUTHORITY_HOST",
            expected="an https Entra authority, e.g. https://login.microsoftonline.com",
            https_only=True,
        )
        ca_bundle = _ca_bundle(reader)
        return cls(mode, client_id, tenant_id, secret, cert_path, cert, password, authority, ca_bundle)


def check_certificate(reader: SettingsReader, auth: AuthSettings) -> None:
    """Build (not use) a certificate credential so a bad certificate fails at start-up, not at first call."""
    if auth.mode is not AuthMode.CERTIFICATE:
        return
    from shared.identity import build_credential

    try:
        build_credential(auth)
    except (ValueError, TypeError, OSError):
        name = "D365_CLIENT_CERTIFICATE_PATH" if auth.certificate_path else "D365_CLIENT_CERTIFICATE"
        reader.problem(name, f"the certificate cannot be loaded; expected {_PEM_OR_PFX} (check the password)")


def _ca_bundle(reader: SettingsReader) -> str | None:
    return reader.file(
        "TLS_CA_BUNDLE",
        expected="a PEM CA certificate file",
        must_contain=b"-----BEGIN CERTIFICATE",
        references=False,
    )


@dataclass(frozen=True)
class KeyVaultSettings:
    """Key Vault used for secrets and for resolving references locally.

    - ``KEY_VAULT_URL`` (optional): default vault, e.g. ``https://myvault.vault.azure.net``; a
      ``VaultName=`` reference maps to it when its host's first label is that name or it is loopback.
    - ``KEY_VAULT_CACHE_SECONDS`` (default 300): how long secret values are cached; a rotated secret is
      picked up after this.
    - ``KEY_VAULT_REFERENCE_CLIENT_ID`` (optional): user-assigned managed identity used to resolve
      references (App Service's keyVaultReferenceIdentity). Unset: the app's own credential, or the
      system-assigned identity when the D365 auth settings are references themselves.
    These settings, and ``TLS_CA_BUNDLE``, cannot be Key Vault references (they are needed to reach it).
    """

    url: str | None = None
    cache_seconds: float = 300.0
    reference_client_id: str | None = None
    ca_bundle: str | None = None

    @classmethod
    def from_reader(cls, reader: SettingsReader) -> Self:
        url = reader.url("KEY_VAULT_URL", expected="https://<vault>.vault.azure.net", https_only=True)
        return cls(
            url=url + "/" if url else None,
            cache_seconds=reader.number("KEY_VAULT_CACHE_SECONDS", 300.0, maximum=86400),
            reference_client_id=reader.text("KEY_VAULT_REFERENCE_CLIENT_ID"),
            ca_bundle=_ca_bundle(reader),
        )


@dataclass(frozen=True)
class HttpSettings:
    """Resilience policy of every D365 call.

    - ``D365_HTTP_CONNECT_TIMEOUT`` (10 s), ``D365_HTTP_READ_TIMEOUT`` (120 s): per attempt.
    - ``D365_RETRY_MAX_ATTEMPTS`` (6): attempts per call for 5xx / network errors.
    - ``D365_RETRY_MAX_SECONDS`` (300): total deadline of one call, waits included.
    - ``D365_RETRY_AFTER_CAP_SECONDS`` (120): longest ``Retry-After`` wait honoured.
    - ``D365_RETRY_BACKOFF_BASE_SECONDS`` (0.5), ``D365_RETRY_BACKOFF_MAX_SECONDS`` (30): exponential backoff.
    - ``D365_ODATA_PAGE_SIZE`` (optional, 1-10000): sent as ``Prefer: odata.maxpagesize``.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    retry_max_attempts: int = 6
    retry_max_seconds: float = 300.0
    retry_after_cap_seconds: float = 120.0
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    odata_page_size: int | None = None

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` as ``requests`` takes it."""
        return (self.connect_timeout, self.read_timeout)

    @classmethod
    def from_reader(cls, reader: SettingsReader) -> Self:
        base = reader.number("D365_RETRY_BACKOFF_BASE_SECONDS", 0.5, maximum=3600)
        high = reader.number("D365_RETRY_BACKOFF_MAX_SECONDS", 30.0, maximum=3600)
        if high < base:
            reader.problem("D365_RETRY_BACKOFF_MAX_SECONDS", "must be >= D365_RETRY_BACKOFF_BASE_SECONDS")
        return cls(
            connect_timeout=reader.number("D365_HTTP_CONNECT_TIMEOUT", 10.0, above=True, maximum=600),
            read_timeout=reader.number("D365_HTTP_READ_TIMEOUT", 120.0, above=True, maximum=3600),
            retry_max_attempts=reader.integer("D365_RETRY_MAX_ATTEMPTS", 6, minimum=1, maximum=100),
            retry_max_seconds=reader.number("D365_RETRY_MAX_SECONDS", 300.0, above=True, maximum=86400),
            retry_after_cap_seconds=reader.number("D365_RETRY_AFTER_CAP_SECONDS", 120.0, maximum=3600),
            backoff_base_seconds=base,
            backoff_max_seconds=high,
            odata_page_size=reader.optional_integer("D365_ODATA_PAGE_SIZE", minimum=1, maximum=10000),
        )


@dataclass(frozen=True)
class StorageSettings:
    """A Functions storage connection (default ``AzureWebJobsStorage``), in either form the host accepts.

    - ``AzureWebJobsStorage`` (secret): a connection string (``UseDevelopmentStorage=true`` for Azurite), or
    - identity-based: ``AzureWebJobsStorage__blobServiceUri`` (or ``__accountName`` →
      ``https://<name>.blob.core.windows.net``), ``__credential=managedidentity`` and, for a user-assigned
      identity, ``__clientId``. A connection string wins when both are given (as in the Functions host).
    """

    connection: str = "AzureWebJobsStorage"
    connection_string: Secret | None = None
    blob_service_uri: str | None = None
    client_id: str | None = None

    @classmethod
    def from_reader(cls, reader: SettingsReader, connection: str = "AzureWebJobsStorage") -> Self:
        conn = reader.secret(connection)
        if conn is not None:
            pairs = {
                k.strip().lower() for k, _, v in (p.partition("=") for p in conn.reveal().split(";")) if v
            }
            if not pairs & {"usedevelopmentstorage", "accountname", "blobendpoint"}:
                reader.problem(
                    connection, "is not a storage connection string (AccountName=...;AccountKey=...)"
                )
            return cls(connection, connection_string=conn)
        uri = reader.url(f"{connection}__blobServiceUri", expected="https://<account>.blob.core.windows.net")
        account = reader.text(f"{connection}__accountName")
        kind = reader.choice(f"{connection}__credential", ["managedidentity"], "managedidentity")
        del kind  # the only identity kind the host supports; validated for the user's benefit
        if uri is None and account:
            uri = f"https://{account.lower()}.blob.core.windows.net"
        if uri is None and not any(
            reader.env.get(f"{connection}__{s}") for s in ("blobServiceUri", "accountName")
        ):
            reader.problem(
                connection,
                f"missing; expected a storage connection string, or {connection}__blobServiceUri / "
                f"{connection}__accountName for an identity-based connection",
            )
        return cls(connection, blob_service_uri=uri, client_id=reader.text(f"{connection}__clientId"))

    @property
    def account_url(self) -> str | None:
        return self.blob_service_uri

    def blob_service_client(
        self, credential: TokenCredential | None = None, **kwargs: Any
    ) -> BlobServiceClient:
        """A ``BlobServiceClient`` for this connection.

        Identity-based connections use ``credential`` or else the managed identity named by ``__clientId``
        (system-assigned without). ``kwargs`` go to the client (e.g. ``api_version``; Azurite needs nothing
        as it runs with ``--skipApiVersionCheck``).
        """
        from azure.storage.blob import BlobServiceClient

        if self.connection_string is not None:
            return BlobServiceClient.from_connection_string(self.connection_string.reveal(), **kwargs)
        if not self.blob_service_uri:
            raise ValueError(f"storage connection {self.connection} is not configured")
        if credential is None:
            from shared.identity import managed_identity_credential

            credential = managed_identity_credential(self.client_id)
        return BlobServiceClient(self.blob_service_uri, credential=credential, **kwargs)
