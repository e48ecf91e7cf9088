"""Local Key Vault: the secrets data plane that ``azure-keyvault-secrets`` uses, plus admin seeding.

Served on the HTTPS port; the vault URL is ``{tls_base_url}/``. State and rules live in
``emulator.keyvault_model``; this module is the HTTP shape: bearer challenge, ``api-version``, JSON bodies.

Auth follows Azure (local-stack.md, Key Vault): a request without ``Authorization`` gets ``401`` and a
``WWW-Authenticate: Bearer authorization="…/{tenant}", resource="https://vault.azure.net"`` challenge; the
SDK sends that first request without a body, reads the tenant from the challenge, then retries with a token
whose audience must be ``https://vault.azure.net``.

The challenge's ``authorization`` URI names the emulator's own login authority
(``{tls_base_url}/{tenant}``), not ``https://login.microsoftonline.com/{tenant}``. Measured with
azure-keyvault-secrets 4.12 and azure-identity 1.27: the SDK only takes the tenant from the URI path
(``HttpChallenge.tenant_id``) and asks the credential for ``https://vault.azure.net/.default``, so both
work with ``verify_challenge_resource=False``; the emulator URI keeps a client that follows it on loopback.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from emulator.entra import InvalidTokenError
from emulator.keyvault_model import (
    RECOVERABLE_DAYS,
    RECOVERY_LEVEL,
    AccessPolicy,
    Caller,
    DeletedSecret,
    KeyVault,
    KeyVaultError,
    SecretVersion,
    bad_parameter,
)

__all__ = ["KEYVAULT_RESOURCE", "AccessPolicy", "KeyVault", "KeyVaultError", "SecretVersion", "routes"]

KEYVAULT_RESOURCE = "https://vault.azure.net"
MAX_PAGE_SIZE = 25  # Azure's cap (and default) for maxresults on list operations

Endpoint = Callable[[Request], Awaitable[Response]]

# Azure's AKV error-code prefixes for the token problems it names (the rest of the text is the emulator's).
_AKV_CODES = {"audience": "AKV10022: Invalid audience. ", "tenant": "AKV10032: Invalid issuer. "}


def routes(state: Any) -> list[BaseRoute]:
    """Data-plane routes (``/secrets``, ``/deletedsecrets``) and admin routes (``/_emulator/keyvault``).

    ``state`` provides ``vault`` (KeyVault), ``tokens`` (``validate(token, audience) -> claims``) and
    ``config`` (``tenant_id``, ``tls_base_url``).
    """
    api = _DataPlane(state)
    admin = _Admin(state)
    guard = api.guard
    return [
        Route("/secrets", guard("list", api.list_secrets), methods=["GET"]),
        Route("/secrets/restore", guard("restore", api.restore), methods=["POST"]),
        Route("/secrets/{name}", guard("set", api.set_secret), methods=["PUT"]),
        Route("/secrets/{name}", guard("get", api.get_secret), methods=["GET"]),
        Route("/secrets/{name}", guard("delete", api.delete_secret), methods=["DELETE"]),
        Route("/secrets/{name}/", guard("get", api.get_secret), methods=["GET"]),
        Route("/secrets/{name}/", guard("set", api.update_secret), methods=["PATCH"]),
        Route("/secrets/{name}/versions", guard("list", api.list_versions), methods=["GET"]),
        Route("/secrets/{name}/backup", guard("backup", api.backup), methods=["POST"]),
        Route("/secrets/{name}/{version}", guard("get", api.get_secret), methods=["GET"]),
        Route("/secrets/{name}/{version}", guard("set", api.update_secret), methods=["PATCH"]),
        Route("/deletedsecrets", guard("list", api.list_deleted), methods=["GET"]),
        Route("/deletedsecrets/{name}", guard("list", api.get_deleted), methods=["GET"]),
        Route("/deletedsecrets/{name}", guard("purge", api.purge_deleted), methods=["DELETE"]),
        Route("/deletedsecrets/{name}/recover", guard("recover", api.recover_deleted), methods=["POST"]),
        Route("/_emulator/keyvault/secrets", admin.list_names, methods=["GET"]),
        Route("/_emulator/keyvault/secrets/{name}", admin.get_secret, methods=["GET"]),
        Route("/_emulator/keyvault/secrets/{name}", admin.put_secret, methods=["PUT"]),
        Route("/_emulator/keyvault/secrets/{name}", admin.delete_secret, methods=["DELETE"]),
        Route("/_emulator/keyvault/access-policies", admin.get_policies, methods=["GET"]),
        Route("/_emulator/keyvault/access-policies", admin.put_policies, methods=["PUT"]),
    ]


# -- wire shapes --------------------------------------------------------------------------------------------


def _attributes(version: SecretVersion) -> dict[str, Any]:
    attributes: dict[str, Any] = {"enabled": version.enabled}
    if version.not_before is not None:
        attributes["nbf"] = version.not_before
    if version.expires is not None:
        attributes["exp"] = version.expires
    attributes.update(
        created=version.created,
        updated=version.updated,
        recoveryLevel=RECOVERY_LEVEL,
        recoverableDays=RECOVERABLE_DAYS,
    )
    return attributes


def secret_bundle(version: SecretVersion, vault_url: str, *, with_value: bool = True) -> dict[str, Any]:
    """Azure's SecretBundle; ``id`` is ``{vault}/secrets/{name}/{version}``."""
    body: dict[str, Any] = {"value": version.value} if with_value else {}
    if version.content_type is not None:
        body["contentType"] = version.content_type
    body["id"] = f"{vault_url}/secrets/{version.name}/{version.version}"
    body["attributes"] = _attributes(version)
    if version.tags is not None:
        body["tags"] = dict(version.tags)
    return body


def secret_item(version: SecretVersion, vault_url: str, *, with_version: bool) -> dict[str, Any]:
    """Azure's SecretItem (list entries): no value; the id names a version only in version listings."""
    body: dict[str, Any] = {"id": f"{vault_url}/secrets/{version.name}"}
    if with_version:
        body["id"] += f"/{version.version}"
    body["attributes"] = _attributes(version)
    if version.tags is not None:
        body["tags"] = dict(version.tags)
    if version.content_type is not None:
        body["contentType"] = version.content_type
    return body


def deleted_bundle(deleted: DeletedSecret, vault_url: str, *, item: bool = False) -> dict[str, Any]:
    """DeletedSecretBundle / DeletedSecretItem; the value is never returned for a deleted secret."""
    latest = deleted.latest
    base = (
        secret_item(latest, vault_url, with_version=False)
        if item
        else secret_bundle(latest, vault_url, with_value=False)
    )
    return {
        "recoveryId": f"{vault_url}/deletedsecrets/{latest.name}",
        "deletedDate": deleted.deleted_date,
        "scheduledPurgeDate": deleted.scheduled_purge_date,
        **base,
    }


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> JSONResponse:
    merged = {"x-ms-request-id": str(uuid.uuid4()), "Cache-Control": "no-cache"}
    merged.update(headers or {})
    return JSONResponse(body, status_code=status, headers=merged)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else None
    except ValueError as exc:
        raise bad_parameter(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise bad_parameter("The request body must be a JSON object.")
    return data


def _optional_int(attributes: Mapping[str, Any], key: str) -> int | None:
    value = attributes.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_parameter(f"Attribute '{key}' must be a number of seconds since 1970-01-01T00:00:00Z.")
    return int(value)


def _properties(body: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for KeyVault.set_secret/update_secret from a SecretSetParameters-like body."""
    attributes = body.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise bad_parameter("'attributes' must be an object.")
    enabled = attributes.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise bad_parameter("Attribute 'enabled' must be a boolean.")
    tags = body.get("tags")
    if tags is not None and (
        not isinstance(tags, Mapping) or not all(isinstance(v, str) for v in tags.values())
    ):
        raise bad_parameter("'tags' must be an object of strings.")
    content_type = body.get("contentType")
    if content_type is not None and not isinstance(content_type, str):
        raise bad_parameter("'contentType' must be a string.")
    return {
        "content_type": content_type,
        "tags": tags,
        "enabled": enabled,
        "not_before": _optional_int(attributes, "nbf"),
        "expires": _optional_int(attributes, "exp"),
    }


def _error(exc: KeyVaultError, challenge: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": challenge} if challenge and exc.status == 401 else None
    return _json(exc.body(), exc.status, headers)


# -- data plane ---------------------------------------------------------------------------------------------


class _VaultHandlers:
    """What both handler sets read from the emulator state: the vault and its URL."""

    def __init__(self, state: Any) -> None:
        self._state = state

    @property
    def vault(self) -> KeyVault:
        vault: KeyVault = self._state.vault
        return vault

    @property
    def vault_url(self) -> str:
        return str(self._state.config.tls_base_url).rstrip("/")


class _DataPlane(_VaultHandlers):
    """Handlers for the authenticated ``/secrets`` and ``/deletedsecrets`` API."""

    @property
    def challenge(self) -> str:
        tenant = self._state.config.tenant_id
        return f'Bearer authorization="{self.vault_url}/{tenant}", resource="{KEYVAULT_RESOURCE}"'

    def guard(self, permission: str, handler: Endpoint) -> Endpoint:
        """Bearer auth, then ``api-version``, then the access policy, then the handler; errors as JSON.

        Auth comes first so the SDK's body-less discovery request always gets the challenge.
        """

        async def endpoint(request: Request) -> Response:
            try:
                caller = self._authenticate(request)
                if not request.query_params.get("api-version"):
                    raise bad_parameter("The 'api-version' query parameter is missing.")  # UNCONFIRMED text
                self.vault.check_access(caller, permission)
                return await handler(request)
            except KeyVaultError as exc:
                return _error(exc, self.challenge)

        return endpoint

    def _authenticate(self, request: Request) -> Caller:
        header = request.headers.get("authorization", "")
        if not header:
            raise KeyVaultError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise KeyVaultError(401, "Unauthorized", "The Authorization header is not a Bearer token.")
        try:
            claims: Mapping[str, Any] = self._state.tokens.validate(token, KEYVAULT_RESOURCE)
        except InvalidTokenError as exc:
            prefix = _AKV_CODES.get(exc.kind, "")
            raise KeyVaultError(401, "Unauthorized", prefix + (str(exc) or "Invalid bearer token.")) from exc
        return Caller.from_claims(claims)

    async def set_secret(self, request: Request) -> Response:
        body = await _json_body(request)
        value = body.get("value")
        if not isinstance(value, str):
            raise bad_parameter("The parameter 'value' is required and must be a string.")
        props = _properties(body)
        version = self.vault.set_secret(
            request.path_params["name"],
            value,
            content_type=props["content_type"],
            tags=props["tags"],
            enabled=True if props["enabled"] is None else props["enabled"],
            not_before=props["not_before"],
            expires=props["expires"],
        )
        return _json(secret_bundle(version, self.vault_url))

    async def get_secret(self, request: Request) -> Response:
        version = self.vault.get_secret(request.path_params["name"], request.path_params.get("version"))
        return _json(secret_bundle(version, self.vault_url))

    async def update_secret(self, request: Request) -> Response:
        props = _properties(await _json_body(request))
        version = self.vault.update_secret(
            request.path_params["name"], request.path_params.get("version"), **props
        )
        return _json(secret_bundle(version, self.vault_url, with_value=False))

    async def delete_secret(self, request: Request) -> Response:
        deleted = self.vault.delete_secret(request.path_params["name"])
        return _json(deleted_bundle(deleted, self.vault_url))

    async def list_secrets(self, request: Request) -> Response:
        items = [secret_item(v, self.vault_url, with_version=False) for v in self.vault.list_secrets()]
        return _json(self._page(request, items))

    async def list_versions(self, request: Request) -> Response:
        versions = self.vault.list_versions(request.path_params["name"])
        items = [secret_item(v, self.vault_url, with_version=True) for v in versions]
        return _json(self._page(request, items))

    async def list_deleted(self, request: Request) -> Response:
        items = [deleted_bundle(d, self.vault_url, item=True) for d in self.vault.list_deleted()]
        return _json(self._page(request, items))

    async def get_deleted(self, request: Request) -> Response:
        return _json(deleted_bundle(self.vault.get_deleted(request.path_params["name"]), self.vault_url))

    async def purge_deleted(self, request: Request) -> Response:
        self.vault.purge_deleted(request.path_params["name"])
        return Response(status_code=204, headers={"x-ms-request-id": str(uuid.uuid4())})

    async def recover_deleted(self, request: Request) -> Response:
        version = self.vault.recover_deleted(request.path_params["name"])
        return _json(secret_bundle(version, self.vault_url, with_value=False))

    async def backup(self, request: Request) -> Response:
        return _json({"value": self.vault.backup(request.path_params["name"])})

    async def restore(self, request: Request) -> Response:
        blob = (await _json_body(request)).get("value")
        if not isinstance(blob, str):
            raise bad_parameter("The parameter 'value' is required and must be a string.")
        version = self.vault.restore(blob)
        return _json(secret_bundle(version, self.vault_url, with_value=False))

    def _page(self, request: Request, items: list[dict[str, Any]]) -> dict[str, Any]:
        """One page of at most ``maxresults`` (≤ 25) items and an absolute ``nextLink`` or null."""
        raw_size = request.query_params.get("maxresults")
        try:
            size = int(raw_size) if raw_size else MAX_PAGE_SIZE
        except ValueError:
            size = 0
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise bad_parameter(f"The value for maxresults must be between 1 and {MAX_PAGE_SIZE}.")
        start = _decode_skiptoken(request.query_params.get("$skiptoken"))
        end = start + size
        next_link = None
        if end < len(items):
            token = base64.urlsafe_b64encode(f"offset:{end}".encode()).decode()
            api_version = request.query_params.get("api-version", "")
            next_link = (
                f"{self.vault_url}{request.url.path}?api-version={api_version}"
                f"&$skiptoken={token}&maxresults={size}"
            )
        return {"value": items[start:end], "nextLink": next_link}


def _decode_skiptoken(token: str | None) -> int:
    if not token:
        return 0
    try:
        prefix, _, offset = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if prefix != "offset":
            raise ValueError(token)
        return max(0, int(offset))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise bad_parameter("The $skiptoken is not valid.") from exc


# -- admin (no auth; plain HTTP port as well) ---------------------------------------------------------------


class _Admin(_VaultHandlers):
    """``/_emulator/keyvault``: seed and inspect secrets and restrict access, without a token."""

    async def list_names(self, request: Request) -> Response:
        return _json({"secrets": self.vault.names(), "deletedSecrets": self.vault.deleted_names()})

    async def get_secret(self, request: Request) -> Response:
        try:
            version = self.vault.get_secret(request.path_params["name"], allow_disabled=True)
        except KeyVaultError as exc:
            return _error(exc)
        return _json(secret_bundle(version, self.vault_url))

    async def put_secret(self, request: Request) -> Response:
        """Set a new version; a soft-deleted secret of that name is purged first so seeding always works."""
        name = request.path_params["name"]
        try:
            body = await _json_body(request)
            value = body.get("value")
            if not isinstance(value, str):
                raise bad_parameter("The parameter 'value' is required and must be a string.")
            props = _properties(body)
            if isinstance(body.get("enabled"), bool) and props["enabled"] is None:
                props["enabled"] = body["enabled"]
            if props["enabled"] is None:
                props["enabled"] = True
            if name.lower() in {n.lower() for n in self.vault.deleted_names()}:
                self.vault.purge_deleted(name)
            version = self.vault.set_secret(name, value, **props)
        except KeyVaultError as exc:
            return _error(exc)
        return _json(secret_bundle(version, self.vault_url))

    async def delete_secret(self, request: Request) -> Response:
        """Forget the secret entirely (no soft delete); idempotent."""
        self.vault.purge(request.path_params["name"])
        return Response(status_code=204)

    async def get_policies(self, request: Request) -> Response:
        return _json(self._policies_body())

    async def put_policies(self, request: Request) -> Response:
        """``{"accessPolicies": null}`` lets everyone in; a list (Azure's entry shape) restricts."""
        try:
            body = await _json_body(request)
            raw = body.get("accessPolicies")
            if raw is None:
                self.vault.set_access_policies(None)
            elif isinstance(raw, list) and all(isinstance(p, Mapping) for p in raw):
                self.vault.set_access_policies([AccessPolicy.from_json(p) for p in raw])
            else:
                raise bad_parameter("'accessPolicies' must be null or a list of objects.")
        except KeyVaultError as exc:
            return _error(exc)
        return _json(self._policies_body())

    def _policies_body(self) -> dict[str, Any]:
        policies = self.vault.access_policies()
        return {"accessPolicies": None if policies is None else [p.to_json() for p in policies]}
