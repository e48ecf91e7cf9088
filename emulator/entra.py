"""Microsoft Entra ID stand-ins: the client-credentials token endpoint (v2 and v1), OIDC discovery and JWKS
that MSAL needs, the managed-identity endpoint (App Service and IMDS styles), the token authority that
signs and validates access tokens, and the app registrations (Entra apps + F&O "Microsoft Entra
applications" page, ref §8.2).

Wire shapes follow what azure-identity 1.27 / MSAL 1.39 send and parse (local-stack.md, "Managed
identity"); error bodies follow Entra's AADSTS JSON so client error handling can be exercised.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulator.tls import key_id, load_or_create_signing_key, new_signing_key

if TYPE_CHECKING:
    from emulator.state import EmulatorState

# Seeded registrations: fixed, documented values (like Azurite's well-known key) so a local
# configuration keeps working across restarts. Local use only.
SEED_CLIENT_ID = "0a1b2c3d-d365-4e11-8f00-00000000c001"
SEED_CLIENT_SECRET = "emu8Q~LocalOnly.D365.Emulator.Secret.0001"  # well-known local value (like Azurite)
SEED_CERT_CLIENT_ID = "0a1b2c3d-d365-4e11-8f00-00000000c002"
SEED_UAMI_CLIENT_ID = "0a1b2c3d-d365-4e11-8f00-00000000a001"
SEED_SYSTEM_MI_CLIENT_ID = "0a1b2c3d-d365-4e11-8f00-00000000a000"
SEED_UAMI_RESOURCE_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/d365-emulator/providers/"
    "Microsoft.ManagedIdentity/userAssignedIdentities/d365-emulator-identity"
)
DEFAULT_D365_USER = "Admin"

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_DEFAULT_SUFFIX = "/.default"


def normalize_audience(value: str) -> str:
    """D365 expects ``aud`` = the environment URL, lowercase, without a trailing slash (ref §8.1)."""
    return value.strip().rstrip("/").lower()


# --------------------------------------------------------------------------------------------------
# App registrations


class AppKind(StrEnum):
    APPLICATION = "application"  # Entra app registration: client secret and/or certificate
    SYSTEM_IDENTITY = "system_assigned_identity"
    USER_IDENTITY = "user_assigned_identity"


@dataclass
class AppRegistration:
    """An Entra client (app or managed identity) plus its row on F&O's Microsoft Entra applications page.

    ``d365_user_id`` None means the client exists in Entra (can get tokens) but is not registered in F&O,
    so D365 answers 401 to its tokens.
    """

    client_id: str
    object_id: str  # the service principal's object id: the token's ``oid`` (throttling key, ref §2.2)
    display_name: str
    kind: AppKind = AppKind.APPLICATION
    secrets: list[str] = field(default_factory=list)
    certificates: list[x509.Certificate] = field(default_factory=list)
    d365_user_id: str | None = DEFAULT_D365_USER
    default_company: str = "usmf"
    resource_id: str | None = None  # user-assigned identities: their ARM id (mi_res_id / msi_res_id)

    def to_json(self) -> dict[str, Any]:
        """Public view: never includes secret values (only how many there are)."""
        return {
            "client_id": self.client_id,
            "object_id": self.object_id,
            "display_name": self.display_name,
            "kind": self.kind.value,
            "secret_count": len(self.secrets),
            "certificate_thumbprints": [
                c.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - thumbprints are SHA-1
                for c in self.certificates
            ],
            "d365_user_id": self.d365_user_id,
            "d365_registered": self.d365_user_id is not None,
            "default_company": self.default_company,
            "resource_id": self.resource_id,
        }


class AppRegistry:
    """Client ids known to the emulated tenant; ``reset()`` goes back to the seeded set."""

    def __init__(self, seed: Callable[[], Iterable[AppRegistration]]) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self._apps: dict[str, AppRegistration] = {}
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._apps = {app.client_id.lower(): app for app in self._seed()}

    def get(self, client_id: str) -> AppRegistration | None:
        return self._apps.get(client_id.lower())

    def list(self) -> list[AppRegistration]:
        return list(self._apps.values())

    def put(self, app: AppRegistration) -> AppRegistration:
        with self._lock:
            self._apps[app.client_id.lower()] = app
        return app

    def remove(self, client_id: str) -> bool:
        with self._lock:
            return self._apps.pop(client_id.lower(), None) is not None

    def system_identity(self) -> AppRegistration | None:
        for app in self._apps.values():
            if app.kind is AppKind.SYSTEM_IDENTITY:
                return app
        return None

    def find_identity(
        self, *, client_id: str | None = None, object_id: str | None = None, resource_id: str | None = None
    ) -> AppRegistration | None:
        """The managed identity a token request selects; no selector means the system-assigned one."""
        if not (client_id or object_id or resource_id):
            return self.system_identity()
        for app in self._apps.values():
            if app.kind is AppKind.APPLICATION:
                continue
            if client_id and app.client_id.lower() == client_id.lower():
                return app
            if object_id and app.object_id.lower() == object_id.lower():
                return app
            if resource_id and app.resource_id and app.resource_id.lower() == resource_id.lower():
                return app
        return None


def seeded_apps(certificate: x509.Certificate, default_company: str) -> list[AppRegistration]:
    """The registrations every start (and every admin reset) begins with."""
    return [
        AppRegistration(
            client_id=SEED_CLIENT_ID,
            object_id="0a1b2c3d-d365-4e11-8f00-0000000b0c01",
            display_name="d365-integration (client secret)",
            secrets=[SEED_CLIENT_SECRET],
            default_company=default_company,
        ),
        AppRegistration(
            client_id=SEED_CERT_CLIENT_ID,
            object_id="0a1b2c3d-d365-4e11-8f00-0000000b0c02",
            display_name="d365-integration (certificate)",
            certificates=[certificate],
            default_company=default_company,
        ),
        AppRegistration(
            client_id=SEED_SYSTEM_MI_CLIENT_ID,
            object_id="0a1b2c3d-d365-4e11-8f00-0000000b0a00",
            display_name="function app (system-assigned identity)",
            kind=AppKind.SYSTEM_IDENTITY,
            default_company=default_company,
        ),
        AppRegistration(
            client_id=SEED_UAMI_CLIENT_ID,
            object_id="0a1b2c3d-d365-4e11-8f00-0000000b0a01",
            display_name="d365-emulator-identity (user-assigned)",
            kind=AppKind.USER_IDENTITY,
            resource_id=SEED_UAMI_RESOURCE_ID,
            default_company=default_company,
        ),
    ]


# --------------------------------------------------------------------------------------------------
# Token authority


class InvalidTokenError(Exception):
    """A bearer token was refused; ``str(exc)`` is the human reason, ``kind`` a short machine code
    (missing, malformed, signature, expired, not_yet_valid, audience, tenant, revoked, claims)."""

    def __init__(self, reason: str, *, kind: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    claims: dict[str, Any]

    @property
    def expires_on(self) -> int:
        return int(self.claims["exp"])


class TokenAuthority:
    """Signs RS256 access tokens in Entra's v1 shape and validates them for a resource.

    Validated tokens are cached by their string until ``exp`` (the D365 gate runs per request and
    benchmarks page through 200k rows); rotating the key or revoking clears the cache.
    No clock-skew leeway: the emulator's clock is the clients' clock, and tests rely on a token with a
    few seconds' lifetime being refused right after ``exp``.
    """

    _CACHE_MAX = 4096

    def __init__(
        self,
        *,
        tenant_id: str,
        lifetime_seconds: int = 3600,
        key_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant_id = tenant_id
        self.default_lifetime = lifetime_seconds
        self.lifetime_seconds = lifetime_seconds
        self._key_path = key_path
        self._clock = clock
        self._lock = threading.Lock()
        self._key = load_or_create_signing_key(key_path)
        self._kid = key_id(self._key.public_key())
        self._revoked_ids: set[str] = set()
        self._revoked_before: dict[str, float] = {}  # app id -> tokens issued at or before this are revoked
        self._cache: dict[str, tuple[str, dict[str, Any]]] = {}

    @property
    def issuer(self) -> str:
        return f"https://sts.windows.net/{self.tenant_id}/"

    @property
    def kid(self) -> str:
        return self._kid

    def reset(self) -> None:
        """Back to the start-up lifetime; revocations forgotten (the key is kept)."""
        with self._lock:
            self.lifetime_seconds = self.default_lifetime
            self._revoked_ids.clear()
            self._revoked_before.clear()
            self._cache.clear()

    def rotate_key(self) -> str:
        """A new signing key: every token issued before is refused from now on."""
        key = new_signing_key(self._key_path)
        with self._lock:
            self._key = key
            self._kid = key_id(key.public_key())
            self._cache.clear()
        return self._kid

    def revoke(self, *, token_id: str | None = None, app_id: str | None = None) -> None:
        """Revoke one token (by its ``uti``) or every token issued so far to an app."""
        with self._lock:
            if token_id:
                self._revoked_ids.add(token_id)
            if app_id:
                self._revoked_before[app_id.lower()] = self._clock()
            self._cache.clear()

    def jwks(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        jwk.update({"kid": self._kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def issue(
        self,
        *,
        app_id: str,
        object_id: str,
        audience: str,
        lifetime_seconds: int | None = None,
        not_before_offset: int = 0,
        tenant_id: str | None = None,
        appidacr: str = "1",
        extra_claims: dict[str, Any] | None = None,
    ) -> IssuedToken:
        """Mint an access token. A negative ``lifetime_seconds`` gives an already expired token and
        ``tenant_id`` another tenant's token (both for tests via the admin API)."""
        now = int(self._clock())
        lifetime = self.lifetime_seconds if lifetime_seconds is None else lifetime_seconds
        tid = tenant_id or self.tenant_id
        claims: dict[str, Any] = {
            "aud": normalize_audience(audience),
            "iss": f"https://sts.windows.net/{tid}/",
            "iat": now,
            "nbf": now + not_before_offset,
            "exp": now + lifetime,
            "appid": app_id,
            "appidacr": appidacr,
            "azp": app_id,
            "idp": f"https://sts.windows.net/{tid}/",
            "oid": object_id,
            "sub": object_id,
            "tid": tid,
            "uti": uuid.uuid4().hex,
            "ver": "1.0",
        }
        if extra_claims:
            claims.update(extra_claims)
        with self._lock:
            key, kid = self._key, self._kid
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})
        return IssuedToken(access_token=token, claims=claims)

    def validate(self, token: str, audience: str) -> dict[str, Any]:
        """Claims of a valid token for ``audience``; raises InvalidTokenError otherwise."""
        expected = normalize_audience(audience)
        now = self._clock()
        cached = self._cache.get(token)
        if cached is not None and cached[0] == expected:
            claims = cached[1]
            self._check_times(claims, now)
            return claims
        claims = self._decode(token)
        self._check_claims(claims, expected, now)
        with self._lock:
            if len(self._cache) >= self._CACHE_MAX:
                self._cache.clear()
            self._cache[token] = (expected, claims)
        return claims

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("The access token is malformed.", kind="malformed") from exc
        with self._lock:
            key, kid = self._key, self._kid
        if header.get("alg") != "RS256":
            raise InvalidTokenError(
                f"The token algorithm '{header.get('alg')}' is not allowed.", kind="signature"
            )
        if header.get("kid") != kid:
            raise InvalidTokenError(
                f"The signature key '{header.get('kid')}' was not found (unknown or rotated key).",
                kind="signature",
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public_key(),
                algorithms=["RS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError as exc:
            raise InvalidTokenError("The token signature is invalid.", kind="signature") from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("The access token is malformed.", kind="malformed") from exc
        return claims

    def _check_claims(self, claims: dict[str, Any], expected_audience: str, now: float) -> None:
        if claims.get("tid") != self.tenant_id or claims.get("iss") != self.issuer:
            raise InvalidTokenError(
                f"The token was issued for tenant '{claims.get('tid')}', not '{self.tenant_id}'.",
                kind="tenant",
            )
        aud = claims.get("aud")
        if not isinstance(aud, str) or aud != expected_audience:
            raise InvalidTokenError(
                f"The audience '{aud}' is invalid; expected '{expected_audience}'.", kind="audience"
            )
        if not claims.get("oid") or not claims.get("appid"):
            raise InvalidTokenError("The token has no 'oid' or 'appid' claim.", kind="claims")
        self._check_times(claims, now)
        if claims.get("uti") in self._revoked_ids:
            raise InvalidTokenError("The token has been revoked.", kind="revoked")
        revoked_before = self._revoked_before.get(str(claims["appid"]).lower())
        if revoked_before is not None and float(claims.get("iat", 0)) <= revoked_before:
            raise InvalidTokenError("The token has been revoked.", kind="revoked")

    @staticmethod
    def _check_times(claims: dict[str, Any], now: float) -> None:
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or now >= exp:
            raise InvalidTokenError(f"The token expired at {_iso(exp)}.", kind="expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and now < nbf:
            raise InvalidTokenError(f"The token is not valid before {_iso(nbf)}.", kind="not_yet_valid")


def _iso(epoch: object) -> str:
    if not isinstance(epoch, int | float):
        return "?"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------------
# Entra error bodies


def aad_error(status: int, error: str, code: int, description: str) -> JSONResponse:
    """Entra's error JSON: ``{"error", "error_description": "AADSTSnnnn: ...", "error_codes", ...}``."""
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    timestamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    body = {
        "error": error,
        "error_description": (
            f"AADSTS{code}: {description} Trace ID: {trace_id} Correlation ID: {correlation_id} "
            f"Timestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _tenant_not_found(tenant: str) -> JSONResponse:
    return aad_error(
        400,
        "invalid_request",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
        "into the correct cloud.",
    )


def _b64_thumbprint(value: object) -> bytes | None:
    """Decode an ``x5t`` / ``x5t#S256`` header (base64url; MSAL keeps the ``=`` padding)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().rstrip("=").replace("+", "-").replace("/", "_")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------
# HTTP endpoints


class _EntraEndpoints:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    # -- helpers ---------------------------------------------------------------------------------

    @property
    def tenant(self) -> str:
        return self.state.config.tenant_id

    def _tenant_ok(self, tenant: str) -> bool:
        return tenant.lower() == self.tenant.lower()

    @staticmethod
    def _origin(request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}"

    # -- discovery -------------------------------------------------------------------------------

    async def openid_configuration(self, request: Request) -> Response:
        """OIDC discovery: MSAL reads ``authorization_endpoint`` and ``token_endpoint`` from it."""
        tenant = request.path_params["tenant"]
        if not self._tenant_ok(tenant):
            return JSONResponse(
                {
                    "error": "invalid_tenant",
                    "error_description": f"AADSTS90002: Tenant '{tenant}' not found.",
                },
                status_code=400,
            )
        v2 = request.url.path.endswith("/v2.0/.well-known/openid-configuration")
        base = f"{self._origin(request)}/{self.tenant}"
        suffix = "/v2.0" if v2 else ""
        body = {
            "token_endpoint": f"{base}/oauth2{suffix}/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{base}/discovery{suffix}/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0" if v2 else f"https://sts.windows.net/{self.tenant}/",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{base}/oauth2{suffix}/authorize",
            "device_authorization_endpoint": f"{base}/oauth2{suffix}/devicecode",
            "end_session_endpoint": f"{base}/oauth2{suffix}/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }
        return JSONResponse(body)

    async def keys(self, request: Request) -> Response:
        return JSONResponse(self.state.tokens.jwks())

    # -- client credentials ----------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        """``POST /{tenant}/oauth2/v2.0/token`` (scope) and ``/{tenant}/oauth2/token`` (v1, resource)."""
        tenant = request.path_params["tenant"]
        v2 = "/v2.0/" in request.url.path
        if not self._tenant_ok(tenant):
            return _tenant_not_found(tenant)
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = _basic_credentials(request.headers.get("authorization"))
        if basic is not None:
            client_id, client_secret = client_id or basic[0], client_secret or basic[1]
        grant_type = form.get("grant_type")
        if grant_type != "client_credentials":
            return aad_error(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'. The emulator supports "
                "client_credentials only.",
            )
        if not client_id:
            return aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        if v2:
            scope = (form.get("scope") or "").strip()
            if not scope:
                return aad_error(
                    400,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'scope'.",
                )
            scopes = scope.split()
            if len(scopes) != 1 or not scopes[0].endswith(_DEFAULT_SUFFIX):
                return aad_error(
                    400,
                    "invalid_scope",
                    1002012,
                    f"The provided value for scope {scope} is not valid. Client credential flows must have a "
                    "scope value with /.default suffixed to the resource identifier (application ID URI).",
                )
            resource = scopes[0][: -len(_DEFAULT_SUFFIX)]
        else:
            resource = (form.get("resource") or "").strip()
            if not resource:
                return aad_error(
                    400,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'resource'.",
                )
        app = self.state.apps.get(client_id)
        if app is None or app.kind is not AppKind.APPLICATION:
            return aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{self.tenant}'. "
                "This can happen if the application has not been installed by the administrator of the "
                "tenant or consented to by any user in the tenant. You may have sent your authentication "
                "request to the wrong tenant.",
            )
        assertion = form.get("client_assertion")
        if client_secret:
            if not any(secrets.compare_digest(client_secret, s) for s in app.secrets):
                return aad_error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the "
                    "client secret value, not the client secret ID, for a secret added to app "
                    f"'{app.client_id}'.",
                )
            appidacr = "1"
        elif assertion:
            if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
                return aad_error(
                    400,
                    "invalid_request",
                    50027,
                    f"Invalid client_assertion_type; expected '{CLIENT_ASSERTION_TYPE}'.",
                )
            problem = self._check_assertion(app, assertion, self._assertion_audiences(request, v2))
            if problem is not None:
                return aad_error(401, "invalid_client", problem[0], problem[1])
            appidacr = "2"
        else:
            return aad_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or "
                "'client_secret'.",
            )
        issued = self.state.tokens.issue(
            app_id=app.client_id, object_id=app.object_id, audience=resource, appidacr=appidacr
        )
        lifetime = max(0, issued.expires_on - int(issued.claims["iat"]))
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": issued.access_token,
        }
        if not v2:  # v1 answers carry strings, plus expires_on / not_before / resource
            body = {
                "token_type": "Bearer",
                "expires_in": str(lifetime),
                "ext_expires_in": str(lifetime),
                "expires_on": str(issued.expires_on),
                "not_before": str(issued.claims["nbf"]),
                "resource": resource,
                "access_token": issued.access_token,
            }
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _assertion_audiences(self, request: Request, v2: bool) -> set[str]:
        path = f"/{self.tenant}/oauth2/v2.0/token" if v2 else f"/{self.tenant}/oauth2/token"
        return {
            normalize_audience(f"{self.state.config.tls_base_url}{path}"),
            normalize_audience(f"{self._origin(request)}{path}"),
            normalize_audience(f"{self._origin(request)}/{self.tenant}/v2.0"),
        }

    @staticmethod
    def _check_assertion(app: AppRegistration, assertion: str, audiences: set[str]) -> tuple[int, str] | None:
        """Verify a client assertion (RFC 7523) against the app's registered certificates.

        Returns ``(AADSTS code, description)`` on failure. The AADSTS code for an audience mismatch is
        UNCONFIRMED; 50027 (invalid JWT) is used.
        """
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return 50027, "JWT token is invalid or malformed."
        if not app.certificates:
            return 700027, "Client assertion contains an invalid signature. [Reason - The key was not found.]"
        x5t, x5t256 = header.get("x5t"), header.get("x5t#S256")
        sha1, sha256 = _b64_thumbprint(x5t), _b64_thumbprint(x5t256)

        def matches(cert: x509.Certificate) -> bool:
            return (sha1 is not None and sha1 == cert.fingerprint(hashes.SHA1())) or (  # noqa: S303
                sha256 is not None and sha256 == cert.fingerprint(hashes.SHA256())
            )

        candidates = (
            [c for c in app.certificates if matches(c)] if (x5t or x5t256) else list(app.certificates)
        )
        if not candidates:
            return 700027, (
                "Client assertion contains an invalid signature. [Reason - The key was not found., "
                f"Thumbprint of key used by client: '{x5t or x5t256}']"
            )
        for cert in candidates:
            public_key = cert.public_key()
            if not isinstance(public_key, rsa.RSAPublicKey):
                continue
            try:
                claims = jwt.decode(
                    assertion,
                    public_key,
                    algorithms=["RS256", "PS256"],
                    options={"verify_aud": False, "require": ["exp", "iss", "sub", "aud"]},
                    leeway=60,
                )
            except jwt.InvalidSignatureError:
                continue
            except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
                return 700024, "Client assertion is not within its valid time range."
            except jwt.PyJWTError:
                return 50027, "JWT token is invalid or malformed."
            if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
                return 700021, "Client assertion application identifier doesn't match 'client_id' parameter."
            aud = claims.get("aud")
            aud_values = [aud] if isinstance(aud, str) else list(aud or [])
            if not any(isinstance(a, str) and normalize_audience(a) in audiences for a in aud_values):
                return 50027, f"Invalid JWT token. The audience '{aud}' is not this token endpoint."
            return None
        return 700027, "Client assertion failed signature validation."

    # -- managed identity ------------------------------------------------------------------------

    async def managed_identity(self, request: Request) -> Response:
        """``GET /metadata/identity/oauth2/token``: App Service style (``X-IDENTITY-HEADER``,
        api-version 2019-08-01) or IMDS style (``Metadata: true``, api-version 2018-02-01)."""
        query = request.query_params
        app_service = "x-identity-header" in request.headers or query.get("api-version") == "2019-08-01"
        return self._app_service(request) if app_service else self._imds(request)

    def _app_service(self, request: Request) -> Response:
        query = request.query_params

        def fail(status: int, message: str) -> JSONResponse:
            return JSONResponse(
                {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())},
                status_code=status,
            )

        # UNCONFIRMED: the exact App Service status/message for a missing vs. wrong header; chosen 400 / 401.
        header = request.headers.get("x-identity-header")
        if header is None:
            return fail(400, "Required header X-IDENTITY-HEADER is missing.")
        if not secrets.compare_digest(header, self.state.identity_header):
            return fail(401, "The X-IDENTITY-HEADER value is invalid.")
        if query.get("api-version") != "2019-08-01":
            return fail(400, f"Unsupported api-version '{query.get('api-version')}'; use 2019-08-01.")
        resource = query.get("resource")
        if not resource:
            return fail(400, "The 'resource' query parameter is required.")
        identity = self.state.apps.find_identity(
            client_id=query.get("client_id"),
            object_id=query.get("object_id") or query.get("principal_id"),
            resource_id=query.get("mi_res_id") or query.get("msi_res_id"),
        )
        if identity is None:
            return fail(400, "Unable to load the proper Managed Identity. Identity not found.")
        issued = self._issue_for_identity(identity, resource)
        return JSONResponse(
            {
                "access_token": issued.access_token,
                "expires_on": str(issued.expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": identity.client_id,
            }
        )

    def _imds(self, request: Request) -> Response:
        query = request.query_params

        def fail(status: int, error: str, description: str) -> JSONResponse:
            return JSONResponse({"error": error, "error_description": description}, status_code=status)

        if request.headers.get("metadata", "").lower() != "true":
            return fail(400, "invalid_request", "Required metadata header not specified")
        if not query.get("api-version"):
            return fail(400, "invalid_request", "Required query variable 'api-version' is missing")
        resource = query.get("resource")
        if not resource:
            return fail(400, "invalid_request", "Required query variable 'resource' is missing")
        identity = self.state.apps.find_identity(
            client_id=query.get("client_id"),
            object_id=query.get("object_id"),
            resource_id=query.get("msi_res_id") or query.get("mi_res_id"),
        )
        if identity is None:
            return fail(400, "invalid_request", "Identity not found")
        issued = self._issue_for_identity(identity, resource)
        lifetime = max(0, issued.expires_on - int(issued.claims["iat"]))
        return JSONResponse(
            {  # IMDS sends these numbers as strings
                "access_token": issued.access_token,
                "client_id": identity.client_id,
                "expires_in": str(lifetime),
                "expires_on": str(issued.expires_on),
                "ext_expires_in": str(lifetime),
                "not_before": str(issued.claims["nbf"]),
                "resource": resource,
                "token_type": "Bearer",
            }
        )

    def _issue_for_identity(self, identity: AppRegistration, resource: str) -> IssuedToken:
        extra = {"xms_mirid": identity.resource_id} if identity.resource_id else None
        return self.state.tokens.issue(
            app_id=identity.client_id,
            object_id=identity.object_id,
            audience=resource,
            appidacr="2",
            extra_claims=extra,
        )


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    """client_secret_basic: ``Authorization: Basic base64(client_id:secret)``."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


def routes(state: EmulatorState) -> list[BaseRoute]:
    endpoints = _EntraEndpoints(state)
    return [
        Route("/metadata/identity/oauth2/token", endpoints.managed_identity, methods=["GET"]),
        Route("/{tenant}/oauth2/v2.0/token", endpoints.token, methods=["POST"]),
        Route("/{tenant}/oauth2/token", endpoints.token, methods=["POST"]),
        Route(
            "/{tenant}/v2.0/.well-known/openid-configuration", endpoints.openid_configuration, methods=["GET"]
        ),
        Route("/{tenant}/.well-known/openid-configuration", endpoints.openid_configuration, methods=["GET"]),
        Route("/{tenant}/discovery/v2.0/keys", endpoints.keys, methods=["GET"]),
        Route("/{tenant}/discovery/keys", endpoints.keys, methods=["GET"]),
    ]
