"""Which credential the app uses (explicit configuration, never guessed) and the D365 token provider.

``build_credential`` maps ``D365_AUTH_MODE`` to one azure-identity credential; there is deliberately no
``DefaultAzureCredential`` fallback, so an app never silently runs as a developer's identity.
``D365TokenProvider`` keeps one token per scope and refreshes it ahead of expiry, so a long paging run never
sends an expired token; after a 401 its ``invalidate()`` also rebuilds the credential, because azure-identity
caches tokens inside the credential object.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.d365.errors import D365Error
from shared.redact import redact_text
from shared.settings import Settings
from shared.settings_sections import AuthMode, AuthSettings
from shared.trust_bundle import trust_bundle

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, TokenCredential
    from azure.identity import ManagedIdentityCredential

__all__ = [
    "MICROSOFT_AUTHORITY_HOSTS",
    "D365TokenProvider",
    "TokenAcquisitionError",
    "build_credential",
    "credential_options",
    "is_microsoft_authority",
    "managed_identity_credential",
]

_log = logging.getLogger(__name__)
_REFRESH_RETRY_SECONDS = 10.0

#: Entra authority hosts MSAL knows; any other authority (e.g. the local emulator) skips instance discovery.
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login.usgovcloudapi.net",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.microsoftonline.de",
    }
)


def is_microsoft_authority(authority: str) -> bool:
    host = urlsplit(authority if "://" in authority else f"https://{authority}").hostname or ""
    return host.lower() in MICROSOFT_AUTHORITY_HOSTS


def managed_identity_credential(client_id: str | None = None) -> ManagedIdentityCredential:
    """System-assigned identity without ``client_id``, the user-assigned one with it.

    azure-identity finds the endpoint itself: ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER`` (App Service,
    Functions) or IMDS (``AZURE_POD_IDENTITY_AUTHORITY_HOST`` overrides its address, used locally).
    """
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def credential_options(auth: AuthSettings) -> dict[str, Any]:
    """Keyword arguments for an app-registration credential (secret or certificate).

    ``authority`` when ``D365_AUTHORITY_HOST`` is set; ``disable_instance_discovery=True`` for a
    non-Microsoft authority (else MSAL asks login.microsoftonline.com to validate it and fails); and
    ``connection_verify`` = public roots + ``TLS_CA_BUNDLE`` so MSAL's HTTP client (an azure-core pipeline
    on ``requests``) trusts the local authority's self-signed certificate.
    """
    options: dict[str, Any] = {}
    if auth.authority_host:
        options["authority"] = auth.authority_host
        if not is_microsoft_authority(auth.authority_host):
            options["disable_instance_discovery"] = True
    bundle = trust_bundle(auth.ca_bundle)
    if bundle:
        options["connection_verify"] = bundle
    return options


def _certificate_data(text: str) -> bytes:
    """PEM text as is; otherwise base64 PKCS#12, the form a Key Vault certificate's secret holds."""
    if "-----BEGIN" in text:
        return text.encode("utf-8")
    return base64.b64decode("".join(text.split()), validate=True)


def build_credential(settings: Settings | AuthSettings) -> TokenCredential:
    """The credential ``D365_AUTH_MODE`` asks for. Building it makes no network call.

    Raises ``ValueError`` when a certificate cannot be loaded.
    """
    auth = settings.auth if isinstance(settings, Settings) else settings
    if auth.mode is AuthMode.MANAGED_IDENTITY:
        return managed_identity_credential(auth.client_id)
    if not auth.client_id or not auth.tenant_id:
        raise ValueError(f"D365_AUTH_MODE={auth.mode.value} needs D365_CLIENT_ID and D365_TENANT_ID")
    options = credential_options(auth)
    if auth.mode is AuthMode.CLIENT_SECRET:
        from azure.identity import ClientSecretCredential

        if auth.client_secret is None:
            raise ValueError("D365_AUTH_MODE=client_secret needs D365_CLIENT_SECRET")
        return ClientSecretCredential(auth.tenant_id, auth.client_id, auth.client_secret.reveal(), **options)
    from azure.identity import CertificateCredential

    if auth.certificate_password is not None:
        options["password"] = auth.certificate_password.reveal()
    if auth.certificate_path:
        return CertificateCredential(auth.tenant_id, auth.client_id, auth.certificate_path, **options)
    if auth.certificate is None:
        raise ValueError(
            "D365_AUTH_MODE=certificate needs D365_CLIENT_CERTIFICATE_PATH or D365_CLIENT_CERTIFICATE"
        )
    data = _certificate_data(auth.certificate.reveal())
    return CertificateCredential(auth.tenant_id, auth.client_id, certificate_data=data, **options)


class TokenAcquisitionError(D365Error):
    """No token could be obtained for D365 (identity endpoint, authority or Key Vault failed)."""


class D365TokenProvider:
    """Thread-safe cached bearer token for one scope (implements ``shared.d365.tokens.TokenProvider``).

    A new token is fetched when fewer than ``refresh_margin_seconds`` remain — or, for tokens that live
    shorter than twice the margin, once half the remaining lifetime is spent, so short-lived tokens are not
    re-fetched on every call. If a refresh fails while the cached token is still valid, the cached one is
    used. One fetch at a time: concurrent callers wait for it rather than stampeding the authority.
    """

    def __init__(
        self,
        credential_factory: Callable[[], TokenCredential],
        scope: str,
        *,
        refresh_margin_seconds: float = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._factory = credential_factory
        self._scope = scope
        self._margin = max(0.0, float(refresh_margin_seconds))
        self._clock = clock
        self._lock = threading.Lock()
        self._credential: TokenCredential | None = None
        self._token: str | None = None
        self._expires_on = 0.0
        self._refresh_at = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> D365TokenProvider:
        """A provider for ``settings.d365.scope`` whose credential is rebuilt from ``settings`` as needed."""
        return cls(lambda: build_credential(settings), settings.d365.scope, **kwargs)

    @property
    def scope(self) -> str:
        return self._scope

    def __repr__(self) -> str:
        state = f"expires_on={self._expires_on:.0f}" if self._token else "no token"
        return f"D365TokenProvider(scope={self._scope!r}, {state})"

    def get_token(self) -> str:
        """A token valid for at least the refresh margin (or half its lifetime); never an expired one."""
        with self._lock:
            now = self._clock()
            if self._token is not None and now < self._refresh_at:
                return self._token
            try:
                return self._fetch()
            except TokenAcquisitionError:
                now = self._clock()
                if self._token is None or now >= self._expires_on:
                    raise
                # Still valid: use it, and retry the refresh a little later rather than on every call.
                _log.warning("D365 token refresh failed; using the cached token until it expires")
                self._refresh_at = now + min(_REFRESH_RETRY_SECONDS, (self._expires_on - now) / 2)
                return self._token

    def invalidate(self) -> None:
        """Drop the cached token and the credential (with its internal cache); the next call fetches anew."""
        with self._lock:
            self._token = None
            self._expires_on = self._refresh_at = 0.0
            self._drop_credential()

    def close(self) -> None:
        with self._lock:
            self._drop_credential()

    # -- internals (called with the lock held)

    def _fetch(self) -> str:
        previous = self._token
        access = self._request()
        if access.expires_on <= self._clock() or access.token == previous:
            # The credential served its own cached (expired or aging) token: a new credential has no cache.
            _log.info("credential returned a cached token on refresh; rebuilding the credential")
            self._drop_credential()
            access = self._request()
            if access.expires_on <= self._clock():
                raise TokenAcquisitionError(f"the credential returned an expired token for {self._scope}")
        now = self._clock()
        remaining = access.expires_on - now
        self._token = access.token
        self._expires_on = float(access.expires_on)
        self._refresh_at = access.expires_on - min(self._margin, remaining / 2)
        _log.debug("D365 token acquired for %s, valid for %.0f s", self._scope, remaining)
        return access.token

    def _request(self) -> AccessToken:
        try:
            if self._credential is None:
                self._credential = self._factory()
            return self._credential.get_token(self._scope)
        except Exception as exc:
            detail = redact_text(" ".join(str(exc).split()))[:500]
            raise TokenAcquisitionError(
                f"could not get a token for {self._scope}: {type(exc).__name__}: {detail}"
            ) from exc

    def _drop_credential(self) -> None:
        credential, self._credential = self._credential, None
        close = getattr(credential, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # closing a pool must never mask the real work
                _log.debug("closing the old credential failed", exc_info=True)
