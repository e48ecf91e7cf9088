"""Key Vault secrets for configuration: reference parsing, a TTL cache, and clear typed errors.

In Azure the platform resolves ``@Microsoft.KeyVault(...)`` app settings before the app starts; locally (and
whenever the platform could not resolve one, in which case the raw reference text arrives) the app resolves
them itself through :class:`SecretResolver`. Values are cached for ``cache_seconds`` so a rotated secret is
picked up after that TTL without a restart. Error messages name the vault host and secret, never a value.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from shared.redact import redact_text

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.keyvault.secrets import SecretClient

__all__ = [
    "InvalidKeyVaultReferenceError",
    "KeyVaultAccessError",
    "KeyVaultError",
    "KeyVaultReference",
    "KeyVaultUnreachableError",
    "SecretNotFoundError",
    "SecretResolver",
    "SecretSource",
    "is_loopback_host",
    "parse_key_vault_reference",
]

_log = logging.getLogger(__name__)

_PREFIX = "@microsoft.keyvault("
_SECRET_NAME_RE = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_VAULT_NAME_RE = re.compile(r"^[0-9A-Za-z-]{3,24}$")
_VERSION_RE = re.compile(r"^[0-9A-Za-z]{1,64}$")
_STALE_RETRY_SECONDS = 30.0


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and loopback IP literals: the only hosts the local stack may use."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------------- references


class InvalidKeyVaultReferenceError(ValueError):
    """The value starts like a Key Vault reference but cannot be parsed."""


@dataclass(frozen=True)
class KeyVaultReference:
    """One parsed ``@Microsoft.KeyVault(...)`` reference: where the secret lives, never its value."""

    vault_url: str  # "https://<host>[:port]/"
    name: str
    version: str | None = None

    @property
    def vault_host(self) -> str:
        """``host[:port]`` of the vault, for messages."""
        return urlsplit(self.vault_url).netloc

    def __str__(self) -> str:
        suffix = f"/{self.version}" if self.version else ""
        return f"{self.vault_url}secrets/{self.name}{suffix}"


def _vault_url(scheme: str, netloc: str) -> str:
    return f"{scheme}://{netloc.lower()}/"


def _parse_secret_uri(uri: str) -> KeyVaultReference:
    parts = urlsplit(uri)
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidKeyVaultReferenceError("SecretUri must be an https URL of a vault")
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) not in (2, 3) or segments[0].lower() != "secrets":
        raise InvalidKeyVaultReferenceError(
            "SecretUri must look like https://<vault>/secrets/<name>/[<version>]"
        )
    name = segments[1]
    version = segments[2] if len(segments) == 3 else None
    _check_names(name, version)
    return KeyVaultReference(_vault_url("https", parts.netloc), name, version)


def _check_names(name: str, version: str | None) -> None:
    if not _SECRET_NAME_RE.match(name):
        raise InvalidKeyVaultReferenceError("the secret name must be 1-127 letters, digits or dashes")
    if version is not None and not _VERSION_RE.match(version):
        raise InvalidKeyVaultReferenceError("the secret version must be letters and digits")


def _vault_name_url(vault_name: str, vault_url: str | None) -> str:
    """Map a ``VaultName`` to a URL: the configured vault when it stands for that name, else Azure's DNS."""
    if vault_url:
        host = urlsplit(vault_url).hostname or ""
        if is_loopback_host(host) or host.split(".")[0].lower() == vault_name.lower():
            parts = urlsplit(vault_url)
            return _vault_url(parts.scheme, parts.netloc)
    return f"https://{vault_name.lower()}.vault.azure.net/"


def parse_key_vault_reference(value: str | None, *, vault_url: str | None = None) -> KeyVaultReference | None:
    """Parse an App Service Key Vault reference; ``None`` when ``value`` is not one.

    Accepted forms (keys case-insensitive, as App Service accepts them)::

        @Microsoft.KeyVault(SecretUri=https://<vault>/secrets/<name>/[<version>])
        @Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>[;SecretVersion=<version>])

    ``VaultName`` maps to ``https://<vault>.vault.azure.net/`` unless ``vault_url`` (the app's
    ``KEY_VAULT_URL``) stands for it: its host's first label equals the vault name, or it is a loopback URL
    (the local vault then stands in for every vault, so references copied from Azure work locally).
    Raises :class:`InvalidKeyVaultReferenceError` for a malformed reference.
    """
    if value is None:
        return None
    text = value.strip()
    if not text.lower().startswith(_PREFIX):
        return None
    if not text.endswith(")"):
        raise InvalidKeyVaultReferenceError("a Key Vault reference must end with ')'")
    fields: dict[str, str] = {}
    for item in text[len(_PREFIX) : -1].split(";"):
        if not item.strip():
            continue
        key, eq, val = item.partition("=")
        if not eq or not val.strip():
            raise InvalidKeyVaultReferenceError(f"malformed item {key.strip()!r} in a Key Vault reference")
        fields[key.strip().lower()] = val.strip()
    if "secreturi" in fields:
        if len(fields) != 1:
            raise InvalidKeyVaultReferenceError("SecretUri cannot be combined with other keys")
        return _parse_secret_uri(fields["secreturi"])
    unknown = set(fields) - {"vaultname", "secretname", "secretversion"}
    if unknown or "vaultname" not in fields or "secretname" not in fields:
        raise InvalidKeyVaultReferenceError(
            "expected SecretUri=..., or VaultName=...;SecretName=...[;SecretVersion=...]"
        )
    vault_name = fields["vaultname"]
    if not _VAULT_NAME_RE.match(vault_name):
        raise InvalidKeyVaultReferenceError("VaultName must be 3-24 letters, digits or dashes")
    version = fields.get("secretversion")
    _check_names(fields["secretname"], version)
    return KeyVaultReference(_vault_name_url(vault_name, vault_url), fields["secretname"], version)


# ------------------------------------------------------------------------------------------------- errors


class KeyVaultError(Exception):
    """A secret could not be read; names the vault host and the secret, never a value."""

    def __init__(self, message: str, *, vault_host: str, secret_name: str) -> None:
        super().__init__(message)
        self.vault_host = vault_host
        self.secret_name = secret_name


class SecretNotFoundError(KeyVaultError):
    """The vault answered 404: no such secret (or version)."""


class KeyVaultAccessError(KeyVaultError):
    """Authentication to the vault failed, or the identity lacks permission to read the secret (401/403)."""


class KeyVaultUnreachableError(KeyVaultError):
    """The vault could not be reached: DNS, refused connection, TLS failure, timeout."""


class SecretSource(Protocol):
    """Anything that turns a reference into its current value (the resolver, or a fake in tests)."""

    def resolve(self, reference: KeyVaultReference) -> str: ...


# ----------------------------------------------------------------------------------------------- resolver


@dataclass
class _Entry:
    value: str
    expires_at: float


def _detail(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "message", None) or exc).split())
    return redact_text(text)[:300]


class SecretResolver:
    """Reads secrets with the real ``SecretClient`` (one per vault, reused) and caches them for a TTL.

    ``cache_seconds`` is how long a value is served from memory (0 disables caching): a rotated secret is
    picked up after it. When a refresh fails because the vault is unreachable, the last value is served a
    little longer (and a warning logged) rather than failing callers. ``ca_bundle`` is passed as
    ``connection_verify`` (the local vault's self-signed certificate). The SDK's challenge-resource check is
    switched off only for loopback vaults (the local stand-in), never for real ones.
    """

    def __init__(
        self,
        credential: TokenCredential,
        *,
        cache_seconds: float = 300,
        ca_bundle: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        vault_url: str | None = None,
        retries: int = 2,
    ) -> None:
        self._credential = credential
        self._cache_seconds = max(0.0, float(cache_seconds))
        self._ca_bundle = ca_bundle
        self._clock = clock
        self._default_vault_url = _normalise_vault_url(vault_url) if vault_url else None
        self._retries = retries
        self._clients: dict[str, SecretClient] = {}
        self._cache: dict[tuple[str, str, str], _Entry] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SecretResolver(vault_url={self._default_vault_url!r}, cache_seconds={self._cache_seconds:g})"

    def get(self, name: str, *, vault_url: str | None = None, version: str | None = None) -> str:
        """The current value of secret ``name`` in ``vault_url`` (default: the resolver's ``vault_url``)."""
        url = _normalise_vault_url(vault_url) if vault_url else self._default_vault_url
        if not url:
            raise ValueError("no vault URL given and no default vault (KEY_VAULT_URL) configured")
        return self._get(url, name, version)

    def resolve(self, reference: KeyVaultReference) -> str:
        """The current value behind a parsed Key Vault reference."""
        return self._get(reference.vault_url, reference.name, reference.version)

    def refresh(self, name: str, *, vault_url: str | None = None) -> None:
        """Forget cached values of ``name`` (in every vault unless ``vault_url``): the next read fetches."""
        url = _normalise_vault_url(vault_url) if vault_url else None
        with self._lock:
            for key in [k for k in self._cache if k[1] == name and (url is None or k[0] == url)]:
                del self._cache[key]

    def close(self) -> None:
        """Close the SDK clients' connection pools."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    # -- internals

    def _get(self, vault_url: str, name: str, version: str | None) -> str:
        key = (vault_url, name, version or "")
        now = self._clock()
        with self._lock:
            entry = self._cache.get(key)
        if entry is not None and now < entry.expires_at:
            return entry.value
        try:
            value = self._fetch(vault_url, name, version)
        except KeyVaultUnreachableError as exc:
            if entry is None:
                raise
            _log.warning("Key Vault refresh failed, serving the cached value of %r for now: %s", name, exc)
            with self._lock:
                self._cache[key] = _Entry(entry.value, now + min(self._cache_seconds, _STALE_RETRY_SECONDS))
            return entry.value
        if self._cache_seconds > 0:
            with self._lock:
                self._cache[key] = _Entry(value, now + self._cache_seconds)
        return value

    def _client(self, vault_url: str) -> SecretClient:
        with self._lock:
            client = self._clients.get(vault_url)
            if client is None:
                from azure.keyvault.secrets import SecretClient

                kwargs: dict[str, Any] = {
                    "retry_total": self._retries,
                    "connection_timeout": 10,
                    "read_timeout": 30,
                }
                if is_loopback_host(urlsplit(vault_url).hostname):
                    kwargs["verify_challenge_resource"] = False
                if self._ca_bundle:
                    kwargs["connection_verify"] = self._ca_bundle
                client = SecretClient(vault_url, self._credential, **kwargs)
                self._clients[vault_url] = client
            return client

    def _fetch(self, vault_url: str, name: str, version: str | None) -> str:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        host = urlsplit(vault_url).netloc
        where = f"secret {name!r} in vault {host}"
        try:
            secret = self._client(vault_url).get_secret(name, version)
        except ResourceNotFoundError as exc:
            raise SecretNotFoundError(f"{where}: not found", vault_host=host, secret_name=name) from exc
        except ClientAuthenticationError as exc:
            raise KeyVaultAccessError(
                f"{where}: authentication failed ({_detail(exc)})", vault_host=host, secret_name=name
            ) from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            detail = _detail(exc)
            hint = "; is its CA in TLS_CA_BUNDLE?" if "CERTIFICATE_VERIFY_FAILED" in detail else ""
            raise KeyVaultUnreachableError(
                f"{where}: vault unreachable ({detail}){hint}", vault_host=host, secret_name=name
            ) from exc
        except HttpResponseError as exc:
            if exc.status_code in (401, 403):
                raise KeyVaultAccessError(
                    f"{where}: access denied (HTTP {exc.status_code})", vault_host=host, secret_name=name
                ) from exc
            raise KeyVaultError(
                f"{where}: HTTP {exc.status_code} ({_detail(exc)})", vault_host=host, secret_name=name
            ) from exc
        return secret.value or ""


def _normalise_vault_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        raise ValueError("a vault URL must look like https://<vault-host>/")
    return _vault_url(parts.scheme, parts.netloc)
