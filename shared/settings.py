"""Typed app settings, read once at start-up from the environment, validated all at once.

The Functions host puts app settings in ``os.environ``. ``Settings.from_env()`` reads them into frozen
dataclasses (one per concern), resolves any ``@Microsoft.KeyVault(...)`` reference that arrives unresolved
(locally; in Azure the platform resolves them), and reports *every* missing or malformed setting in one
:class:`ConfigurationError`. Secret-typed settings are :class:`Secret` objects whose repr is masked; a
Key Vault-backed secret re-reads its value through the TTL cache, so rotation is picked up without a
restart. Features add their own section class (``from_reader(reader)``) and get it with
``settings.section(MySettings)`` — or validate it at start-up via ``from_env(sections=[MySettings])``.
"""

from __future__ import annotations

import atexit
import contextlib
import hmac
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar
from urllib.parse import urlsplit

from shared.keyvault import (
    InvalidKeyVaultReferenceError,
    KeyVaultError,
    KeyVaultReference,
    SecretResolver,
    SecretSource,
    is_loopback_host,
    parse_key_vault_reference,
)
from shared.redact import MASK, redact_text

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.storage.blob import BlobServiceClient

__all__ = [
    "AuthMode",
    "AuthSettings",
    "ConfigurationError",
    "D365Settings",
    "HttpSettings",
    "KeyVaultSettings",
    "Secret",
    "Settings",
    "SettingsReader",
    "SettingsSection",
    "StorageSettings",
    "trust_bundle",
]

T = TypeVar("T")


class ConfigurationError(Exception):
    """Every configuration problem found, one ``NAME: what is wrong / expected`` line each."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"Invalid configuration ({count} problem{'s' if count != 1 else ''}):\n{lines}")


class Secret:
    """A secret setting value: masked in repr/str/logs; ``reveal()`` returns it.

    A Key Vault-backed secret asks its source on every ``reveal()``; the source's TTL cache keeps that
    cheap and makes a rotated secret visible after ``KEY_VAULT_CACHE_SECONDS``.
    """

    __slots__ = ("_reference", "_source", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._reference: KeyVaultReference | None = None
        self._source: SecretSource | None = None

    @classmethod
    def from_reference(cls, reference: KeyVaultReference, source: SecretSource, value: str) -> Secret:
        """A secret re-read from ``source`` on each reveal (``value`` is the one read at start-up)."""
        secret = cls(value)
        secret._reference, secret._source = reference, source
        return secret

    @property
    def reference(self) -> KeyVaultReference | None:
        """Where the value comes from, when it is Key Vault-backed."""
        return self._reference

    def reveal(self) -> str:
        """The plain value; only hand it to the API that needs it."""
        if self._source is not None and self._reference is not None:
            return self._source.resolve(self._reference)
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        """Key Vault-backed secrets are equal by reference, literal ones by value (constant-time)."""
        if not isinstance(other, Secret):
            return NotImplemented
        if self._reference is not None or other._reference is not None:
            return self._reference == other._reference
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._reference) if self._reference is not None else hash(Secret)

    def __reduce__(self) -> Any:
        raise TypeError("Secret values are not picklable")


_TRUST_FILES: dict[tuple[str, int, int], str] = {}
_TRUST_LOCK = threading.Lock()


def trust_bundle(extra_pem: str | None) -> str | None:
    """Path of a CA bundle = the usual public roots + ``extra_pem`` (None when there is nothing extra).

    ``connection_verify`` *replaces* the trusted roots, so the local stack's self-signed certificate is
    appended to the public ones: the app can then reach the local vault and real Azure hosts alike. The
    bundle is a private temp file per process (removed at exit), rebuilt when ``extra_pem`` changes.
    """
    if not extra_pem:
        return None
    stat = os.stat(extra_pem)
    key = (os.path.abspath(extra_pem), stat.st_mtime_ns, stat.st_size)
    with _TRUST_LOCK:
        if key not in _TRUST_FILES:
            from requests.utils import DEFAULT_CA_BUNDLE_PATH  # certifi's bundle: what requests trusts

            content = Path(DEFAULT_CA_BUNDLE_PATH).read_bytes() + b"\n" + Path(extra_pem).read_bytes()
            fd, path = tempfile.mkstemp(prefix="d365fo-trust-", suffix=".pem")
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            if not _TRUST_FILES:
                atexit.register(_remove_trust_files)
            _TRUST_FILES[key] = path
        return _TRUST_FILES[key]


def _remove_trust_files() -> None:
    for path in _TRUST_FILES.values():
        with contextlib.suppress(OSError):
            os.remove(path)


# ------------------------------------------------------------------------------------------------- reader


class SettingsReader:
    """Reads typed values from an environment mapping and collects problems instead of raising.

    Values that are Key Vault references are resolved through ``secrets``; with ``secrets=None`` a
    reference is itself reported as a problem (used for the few settings needed to reach Key Vault).
    Non-secret values may be echoed (redacted, shortened) in messages; secret values never are.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        secrets: SecretSource | None = None,
        vault_url: str | None = None,
    ) -> None:
        self.env = env
        self.secrets = secrets
        self.vault_url = vault_url
        self._problems: dict[str, str] = {}

    @property
    def problems(self) -> list[str]:
        return [f"{name}: {message}" for name, message in self._problems.items()]

    def problem(self, name: str, message: str) -> None:
        """Record a problem (the first one per setting name is kept)."""
        self._problems.setdefault(name, message)

    def raise_for_problems(self) -> None:
        if self._problems:
            raise ConfigurationError(self.problems)

    def is_reference(self, name: str) -> bool:
        try:
            return parse_key_vault_reference(self.env.get(name)) is not None
        except InvalidKeyVaultReferenceError:
            return True

    def merge(self, other: SettingsReader) -> None:
        """Take over the problems another reader found (they come first in the message)."""
        self._problems = {**other._problems, **self._problems}

    def lookup(
        self, name: str, *, strip: bool = True, references: bool = True
    ) -> tuple[str | None, KeyVaultReference | None]:
        """(value, reference) of ``name``: blank counts as unset; a reference is resolved (or reported).

        ``references=False`` refuses references for settings that are needed to reach Key Vault.
        """
        raw = self.env.get(name)
        if raw is None or not raw.strip():
            return None, None
        try:
            reference = parse_key_vault_reference(raw, vault_url=self.vault_url)
        except InvalidKeyVaultReferenceError as exc:
            self.problem(name, f"malformed Key Vault reference: {exc}")
            return None, None
        if reference is None:
            return (raw.strip() if strip else raw), None
        if self.secrets is None or not references:
            self.problem(name, "cannot be a Key Vault reference (it is needed to reach Key Vault)")
            return None, None
        try:
            value = self.secrets.resolve(reference)
        except KeyVaultError as exc:
            self.problem(name, f"Key Vault reference could not be resolved: {exc}")
            return None, None
        except Exception as exc:
            detail = redact_text(str(exc))[:300]
            self.problem(
                name,
                f"Key Vault reference to vault {reference.vault_host} could not be resolved: "
                f"{type(exc).__name__}: {detail}",
            )
            return None, None
        value = value.strip() if strip else value
        return (value or None), reference

    def _missing(self, name: str, expected: str) -> None:
        if name not in self._problems:
            self.problem(name, f"missing; expected {expected}")

    def _bad(self, name: str, value: str, expected: str) -> None:
        shown = redact_text(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        self.problem(name, f"{shown!r} is not valid; expected {expected}")

    # -- typed getters

    def text(self, name: str, *, default: str | None = None, references: bool = True) -> str | None:
        value, _ = self.lookup(name, references=references)
        return default if value is None else value

    def required(self, name: str, expected: str) -> str:
        value, _ = self.lookup(name)
        if value is None:
            self._missing(name, expected)
            return ""
        return value

    def secret(self, name: str, *, required: str | None = None) -> Secret | None:
        """A :class:`Secret`; ``required`` is the 'expected ...' text when the setting must be present."""
        value, reference = self.lookup(name, strip=False)
        if value is None:
            if required:
                self._missing(name, required)
            return None
        if reference is not None and self.secrets is not None:
            return Secret.from_reference(reference, self.secrets, value)
        return Secret(value)

    def choice(self, name: str, options: Iterable[str], default: str) -> str:
        allowed = tuple(options)
        value = self.text(name)
        if value is None:
            return default
        if value.lower() not in allowed:
            self._bad(name, value, "one of " + ", ".join(allowed))
            return default
        return value.lower()

    def url(
        self, name: str, *, required: bool = False, expected: str, https_only: bool = False
    ) -> str | None:
        """An absolute URL, lowercased host, no trailing slash; http only for loopback unless https_only."""
        value = self.required(name, expected) if required else self.text(name)
        if not value:
            return None
        parts = urlsplit(value)
        scheme_ok = parts.scheme == "https" or (
            parts.scheme == "http" and not https_only and is_loopback_host(parts.hostname)
        )
        if not scheme_ok or not parts.hostname or "@" in parts.netloc or parts.query or parts.fragment:
            self._bad(name, value, expected)
            return None
        return f"{parts.scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"

    def number(
        self,
        name: str,
        default: float,
        *,
        minimum: float = 0.0,
        maximum: float | None = None,
        above: bool = False,
    ) -> float:
        """A float; ``above`` makes ``minimum`` exclusive."""
        value = self.text(name)
        if value is None:
            return default
        bound = f"> {minimum:g}" if above else f">= {minimum:g}"
        expected = f"a number of seconds {bound}" + (f" and <= {maximum:g}" if maximum is not None else "")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        low_ok = number > minimum if above else number >= minimum
        if not math.isfinite(number) or not low_ok or (maximum is not None and number > maximum):
            self._bad(name, value, expected)
            return default
        return number

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        found = self.optional_integer(name, minimum=minimum, maximum=maximum)
        return default if found is None else found

    def optional_integer(self, name: str, *, minimum: int, maximum: int) -> int | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if not minimum <= number <= maximum:
            self._bad(name, value, f"a whole number from {minimum} to {maximum}")
            return None
        return number

    def file(
        self, name: str, *, expected: str, must_contain: bytes | None = None, references: bool = True
    ) -> str | None:
        """Path of a readable file (optionally containing ``must_contain``)."""
        value = self.text(name, references=references)
        if value is None:
            return None
        path = Path(value).expanduser()
        try:
            content = path.read_bytes()
        except OSError:
            self.problem(name, f"file {value!r} cannot be read; expected {expected}")
            return None
        if must_contain is not None and must_contain not in content:
            self.problem(name, f"file {value!r} is not {expected}")
            return None
        return str(path)


class SettingsSection(Protocol):
    """A feature's settings: a frozen dataclass that knows how to read itself."""

    @classmethod
    def from_reader(cls, reader: SettingsReader) -> Self: ...


S = TypeVar("S", bound=SettingsSection)


# ----------------------------------------------------------------------------------------------- sections


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


# ----------------------------------------------------------------------------------------------- settings


class _ReferenceSource:
    """Builds the Key Vault resolver (and its credential) on first use: no reference, no Key Vault call."""

    def __init__(self, make_credential: Callable[[], TokenCredential], vault: KeyVaultSettings) -> None:
        self._make_credential = make_credential
        self._vault = vault
        self._resolver: SecretResolver | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"_ReferenceSource(vault_url={self._vault.url!r})"

    def resolver(self) -> SecretResolver:
        with self._lock:
            if self._resolver is None:
                self._resolver = SecretResolver(
                    self._make_credential(),
                    cache_seconds=self._vault.cache_seconds,
                    ca_bundle=trust_bundle(self._vault.ca_bundle),
                    vault_url=self._vault.url,
                )
            return self._resolver

    def resolve(self, reference: KeyVaultReference) -> str:
        return self.resolver().resolve(reference)


@dataclass
class _Context:
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: SecretSource | None = None
    vault_url: str | None = None
    sections: dict[type, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Settings:
    """All settings of the app, one frozen section per concern (see each section's docstring for names).

    ``Settings.from_env()`` is the way to build it; tests may also construct sections directly.
    """

    d365: D365Settings
    auth: AuthSettings
    storage: StorageSettings
    http: HttpSettings = field(default_factory=HttpSettings)
    key_vault: KeyVaultSettings = field(default_factory=KeyVaultSettings)
    _context: _Context = field(default_factory=_Context, repr=False, compare=False)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        secrets: SecretSource | None = None,
        sections: Iterable[type[SettingsSection]] = (),
    ) -> Settings:
        """Read and validate everything; raise one :class:`ConfigurationError` listing every problem.

        ``env`` defaults to ``os.environ``. ``secrets`` resolves Key Vault references; by default a
        :class:`~shared.keyvault.SecretResolver` is built on the first reference, with the credential
        described in :class:`KeyVaultSettings`. ``sections`` are feature sections validated now too.
        """
        env = os.environ if env is None else env
        bootstrap = SettingsReader(env)  # references refused: these are needed to reach Key Vault
        vault = KeyVaultSettings.from_reader(bootstrap)
        auth_referenced = any(bootstrap.is_reference(name) for name in AuthSettings.NAMES)
        holder: dict[str, AuthSettings] = {}

        def reference_credential() -> TokenCredential:
            from shared.identity import build_credential, managed_identity_credential

            if vault.reference_client_id or auth_referenced:
                return managed_identity_credential(vault.reference_client_id)
            if "auth" not in holder:
                raise RuntimeError(
                    "the D365 authentication settings are invalid, so Key Vault cannot be used"
                )
            return build_credential(holder["auth"])

        source = secrets if secrets is not None else _ReferenceSource(reference_credential, vault)
        reader = SettingsReader(env, secrets=source, vault_url=vault.url)
        reader.merge(bootstrap)
        auth = AuthSettings.from_reader(reader)
        if not any(p.split(":")[0] in (*AuthSettings.NAMES, "TLS_CA_BUNDLE") for p in reader.problems):
            holder["auth"] = auth
            _check_credential(reader, auth)
        d365 = D365Settings.from_reader(reader)
        storage = StorageSettings.from_reader(reader)
        http = HttpSettings.from_reader(reader)
        extra = {section: section.from_reader(reader) for section in sections}
        reader.raise_for_problems()
        context = _Context(env=env, secrets=source, vault_url=vault.url, sections=extra)
        return cls(d365=d365, auth=auth, storage=storage, http=http, key_vault=vault, _context=context)

    @property
    def secrets(self) -> SecretSource | None:
        """The source that resolves Key Vault references for these settings (for features' own secrets)."""
        return self._context.secrets

    def read(self, build: Callable[[SettingsReader], T]) -> T:
        """Run ``build`` on a reader over the same environment and secrets; raise its problems at once."""
        reader = SettingsReader(
            self._context.env, secrets=self._context.secrets, vault_url=self._context.vault_url
        )
        value = build(reader)
        reader.raise_for_problems()
        return value

    def section(self, cls: type[S]) -> S:
        """A feature's settings section, validated on first use (or at start-up via ``sections=``)."""
        with self._context.lock:
            found = self._context.sections.get(cls)
        if found is None:
            found = self.read(cls.from_reader)
            with self._context.lock:
                found = self._context.sections.setdefault(cls, found)
        return found  # type: ignore[no-any-return]


def _check_credential(reader: SettingsReader, auth: AuthSettings) -> None:
    """Build (not use) a certificate credential so a bad certificate fails at start-up, not at first call."""
    if auth.mode is not AuthMode.CERTIFICATE:
        return
    from shared.identity import build_credential

    try:
        build_credential(auth)
    except (ValueError, TypeError, OSError):
        name = "D365_CLIENT_CERTIFICATE_PATH" if auth.certificate_path else "D365_CLIENT_CERTIFICATE"
        reader.problem(name, f"the certificate cannot be loaded; expected {_PEM_OR_PFX} (check the password)")
