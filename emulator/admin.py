"""The admin API under ``/_emulator/`` (no auth, loopback only): reset and seed data, limits, faults,
request log and counters, app registrations, tokens. Every endpoint is documented with a curl example
in docs/emulator.md. The Key Vault adds its own ``/_emulator/keyvault/...`` routes.
"""

from __future__ import annotations

import secrets
import uuid
from typing import TYPE_CHECKING, Any

from cryptography import x509
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from emulator.admin_http import AdminError, Handler, admin_routes, int_param, json_object
from emulator.entra import DEFAULT_D365_USER, SEED_CLIENT_ID, AppKind, AppRegistration

if TYPE_CHECKING:
    from emulator.state import EmulatorState


class _Admin:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    # -- general ---------------------------------------------------------------------------------

    async def info(self, request: Request) -> Response:
        return JSONResponse(self.state.info())

    async def reset(self, request: Request) -> Response:
        """Everything back to the start: seed data, limits off, no faults, empty log, default token
        lifetime and no revocations, Key Vault emptied, seeded registrations only."""
        state = self.state
        state.odata.reset()
        state.services.reset()
        state.vault.reset()
        state.limits.reset()
        state.faults.clear()
        state.log.clear()
        state.tokens.reset()
        state.apps.reset()
        state.dmf.reset()
        state.connector.reset()
        state.business_events.reset()
        return JSONResponse({"reset": True})

    async def seed(self, request: Request) -> Response:
        body = await json_object(request)
        entity_set, count = body.get("entity_set"), body.get("count")
        if not isinstance(entity_set, str) or not entity_set:
            raise AdminError(400, "'entity_set' (string) is required")
        if not isinstance(count, int) or count < 0:
            raise AdminError(400, "'count' must be a non-negative integer")
        try:
            rows = self.state.odata.seed(entity_set, count)
        except (KeyError, ValueError) as exc:
            raise AdminError(400, str(exc)) from exc
        return JSONResponse({"entity_set": entity_set, "rows": rows})

    # -- limits ----------------------------------------------------------------------------------

    async def get_limits(self, request: Request) -> Response:
        return JSONResponse(self.state.limits.to_json())

    async def put_limits(self, request: Request) -> Response:
        try:
            self.state.limits.update(await json_object(request))
        except (TypeError, ValueError) as exc:
            raise AdminError(400, str(exc)) from exc
        return JSONResponse(self.state.limits.to_json())

    async def delete_limits(self, request: Request) -> Response:
        self.state.limits.reset()
        return JSONResponse(self.state.limits.to_json())

    # -- faults ----------------------------------------------------------------------------------

    def _faults_json(self) -> dict[str, Any]:
        faults = self.state.faults
        return {"rules": [r.to_json() for r in faults.rules()], "injected": dict(faults.injected)}

    async def get_faults(self, request: Request) -> Response:
        return JSONResponse(self._faults_json())

    async def put_faults(self, request: Request) -> Response:
        """Replace every rule: ``{"rules": [...]}`` (or a single rule object)."""
        body = await json_object(request)
        rules = body.get("rules", [body] if body else [])
        if not isinstance(rules, list):
            raise AdminError(400, "'rules' must be a list")
        try:
            self.state.faults.replace(rules)
        except (TypeError, ValueError) as exc:
            raise AdminError(400, str(exc)) from exc
        return JSONResponse(self._faults_json())

    async def post_fault(self, request: Request) -> Response:
        """Add one rule (a rule with the same id is replaced)."""
        try:
            rule = self.state.faults.add(await json_object(request))
        except (TypeError, ValueError) as exc:
            raise AdminError(400, str(exc)) from exc
        return JSONResponse(rule.to_json(), status_code=201)

    async def delete_faults(self, request: Request) -> Response:
        self.state.faults.clear()
        return JSONResponse(self._faults_json())

    async def delete_fault(self, request: Request) -> Response:
        if not self.state.faults.remove(request.path_params["rule_id"]):
            raise AdminError(404, f"no fault rule '{request.path_params['rule_id']}'")
        return JSONResponse(self._faults_json())

    # -- request log -----------------------------------------------------------------------------

    async def requests(self, request: Request) -> Response:
        query = request.query_params
        status = query.get("status")
        records = self.state.log.records(
            family=query.get("family") or None,
            status=int(status) if status and status.isdigit() else None,
            path_prefix=query.get("path_prefix") or None,
            limit=max(1, int_param(request, "limit", 100)),
        )
        return JSONResponse({"requests": records})

    async def clear_requests(self, request: Request) -> Response:
        self.state.log.clear()
        return JSONResponse({"requests": []})

    async def counters(self, request: Request) -> Response:
        counters = self.state.log.counters()
        counters["throttled"] = dict(self.state.limits.rejections)
        counters["faults"] = dict(self.state.faults.injected)
        return JSONResponse(counters)

    # -- app registrations -----------------------------------------------------------------------

    async def list_apps(self, request: Request) -> Response:
        return JSONResponse({"apps": [app.to_json() for app in self.state.apps.list()]})

    async def post_app(self, request: Request) -> Response:
        """Create a registration, or update the given fields of an existing one (by ``client_id``).

        New applications get a generated secret unless a certificate is given; the answer shows the
        secret once (``client_secret``), like the Entra portal.
        """
        body = await json_object(request)
        apps = self.state.apps
        client_id = str(body.get("client_id") or uuid.uuid4())
        existing = apps.get(client_id)
        try:
            kind = AppKind(body.get("kind", existing.kind if existing else AppKind.APPLICATION))
        except ValueError:
            raise AdminError(400, f"kind must be one of {', '.join(k.value for k in AppKind)}") from None
        app = existing or AppRegistration(
            client_id=client_id,
            object_id=str(body.get("object_id") or uuid.uuid4()),
            display_name=str(body.get("display_name") or f"app {client_id[:8]}"),
            kind=kind,
            default_company=self.state.config.default_company,
        )
        app.kind = kind
        if "display_name" in body:
            app.display_name = str(body["display_name"])
        if "default_company" in body:
            app.default_company = str(body["default_company"])
        if "d365_user_id" in body:
            app.d365_user_id = str(body["d365_user_id"]) if body["d365_user_id"] is not None else None
        elif existing is None:
            app.d365_user_id = DEFAULT_D365_USER
        if "resource_id" in body:
            app.resource_id = str(body["resource_id"]) if body["resource_id"] else None
        new_secret: str | None = None
        if "certificate_pem" in body:
            try:
                cert = x509.load_pem_x509_certificate(str(body["certificate_pem"]).encode())
            except ValueError as exc:
                raise AdminError(400, f"certificate_pem: {exc}") from exc
            app.certificates.append(cert)
        if body.get("client_secret"):
            new_secret = str(body["client_secret"])
        elif existing is None and kind is AppKind.APPLICATION and not app.certificates:
            new_secret = secrets.token_urlsafe(30)
        if new_secret is not None:
            app.secrets.append(new_secret)
        apps.put(app)
        answer = app.to_json()
        if new_secret is not None:
            answer["client_secret"] = new_secret
        return JSONResponse(answer, status_code=200 if existing else 201)

    async def delete_app(self, request: Request) -> Response:
        """Remove a registration; ``?scope=d365`` removes only the F&O registration (Entra keeps it)."""
        client_id = request.path_params["client_id"]
        apps = self.state.apps
        app = apps.get(client_id)
        if app is None:
            raise AdminError(404, f"no app registration '{client_id}'")
        if request.query_params.get("scope") == "d365":
            app.d365_user_id = None
            return JSONResponse(app.to_json())
        apps.remove(client_id)
        return Response(status_code=204)

    # -- tokens ----------------------------------------------------------------------------------

    async def get_tokens(self, request: Request) -> Response:
        tokens = self.state.tokens
        return JSONResponse(
            {"lifetime_seconds": tokens.lifetime_seconds, "kid": tokens.kid, "issuer": tokens.issuer}
        )

    async def put_tokens(self, request: Request) -> Response:
        body = await json_object(request)
        lifetime = body.get("lifetime_seconds")
        if not isinstance(lifetime, int) or lifetime < 1:
            raise AdminError(400, "'lifetime_seconds' must be a positive integer")
        self.state.tokens.lifetime_seconds = lifetime
        return await self.get_tokens(request)

    async def rotate_key(self, request: Request) -> Response:
        kid = self.state.tokens.rotate_key()
        return JSONResponse({"kid": kid})

    async def revoke(self, request: Request) -> Response:
        """``{"uti": ...}`` revokes one token, ``{"client_id": ...}`` every token issued so far to an app."""
        body = await json_object(request)
        token_id, client_id = body.get("uti"), body.get("client_id")
        if not token_id and not client_id:
            raise AdminError(400, "give 'uti' or 'client_id'")
        self.state.tokens.revoke(token_id=token_id, app_id=client_id)
        return JSONResponse({"revoked": {"uti": token_id, "client_id": client_id}})

    async def issue(self, request: Request) -> Response:
        """Mint a token for tests: any registered client, any audience (default: the D365 environment),
        any lifetime (negative = already expired), ``not_before_offset``, another ``tenant_id``."""
        body = await json_object(request)
        state = self.state
        client_id = str(body.get("client_id") or SEED_CLIENT_ID)
        app = state.apps.get(client_id)
        if app is None and not body.get("object_id"):
            raise AdminError(404, f"no app registration '{client_id}' (give object_id to mint anyway)")
        lifetime = body.get("lifetime_seconds")
        issued = state.tokens.issue(
            app_id=app.client_id if app else client_id,
            object_id=str(body.get("object_id") or (app.object_id if app else uuid.uuid4())),
            audience=str(body.get("audience") or state.config.base_url),
            lifetime_seconds=int(lifetime) if lifetime is not None else None,
            not_before_offset=int(body.get("not_before_offset", 0)),
            tenant_id=body.get("tenant_id"),
            extra_claims=body.get("claims") if isinstance(body.get("claims"), dict) else None,
        )
        return JSONResponse(
            {
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_on": issued.expires_on,
                "claims": issued.claims,
            }
        )


def routes(state: EmulatorState) -> list[BaseRoute]:
    admin = _Admin(state)

    table: list[tuple[str, Handler, str]] = [
        ("/_emulator", admin.info, "GET"),
        ("/_emulator/", admin.info, "GET"),
        ("/_emulator/reset", admin.reset, "POST"),
        ("/_emulator/seed", admin.seed, "POST"),
        ("/_emulator/limits", admin.get_limits, "GET"),
        ("/_emulator/limits", admin.put_limits, "PUT"),
        ("/_emulator/limits", admin.delete_limits, "DELETE"),
        ("/_emulator/faults", admin.get_faults, "GET"),
        ("/_emulator/faults", admin.put_faults, "PUT"),
        ("/_emulator/faults", admin.post_fault, "POST"),
        ("/_emulator/faults", admin.delete_faults, "DELETE"),
        ("/_emulator/faults/{rule_id}", admin.delete_fault, "DELETE"),
        ("/_emulator/requests", admin.requests, "GET"),
        ("/_emulator/requests", admin.clear_requests, "DELETE"),
        ("/_emulator/counters", admin.counters, "GET"),
        ("/_emulator/apps", admin.list_apps, "GET"),
        ("/_emulator/apps", admin.post_app, "POST"),
        ("/_emulator/apps/{client_id}", admin.delete_app, "DELETE"),
        ("/_emulator/tokens", admin.get_tokens, "GET"),
        ("/_emulator/tokens", admin.put_tokens, "PUT"),
        ("/_emulator/tokens/rotate-key", admin.rotate_key, "POST"),
        ("/_emulator/tokens/revoke", admin.revoke, "POST"),
        ("/_emulator/tokens/issue", admin.issue, "POST"),
    ]
    return admin_routes(table)
