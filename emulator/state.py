"""Shared state of one emulator process: configuration and the model objects every route family uses.

Each API family owns its model (moto-style): the OData store, the token authority, the Key Vault, the
throttling and fault settings, the request log. Routes receive this object; tests can build it in-process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emulator.business_events import BusinessEvents
    from emulator.connector import Connector
    from emulator.dmf import DmfModel
    from emulator.entra import AppRegistry, TokenAuthority
    from emulator.faults import FaultInjector
    from emulator.keyvault import KeyVault
    from emulator.odata.store import ODataStore
    from emulator.requestlog import RequestLog
    from emulator.services import ServiceRegistry
    from emulator.throttling import ServiceProtection


@dataclass
class EmulatorConfig:
    """Start-up options of the emulator (``python -m emulator --help`` lists them)."""

    host: str = "127.0.0.1"
    port: int = 8765  # plain HTTP: D365 (/data, /api/services, ...), managed identity, admin API
    tls_port: int = 8766  # HTTPS with a self-signed certificate: Entra login authority and Key Vault
    data_dir: Path | None = None  # SQLite database, certificate and key files; a temp dir when None
    tenant_id: str = "6f0b3c41-5d1e-4b7a-9c55-0d365f0e0001"
    token_lifetime_seconds: int = 3600
    default_company: str = "usmf"
    seed: bool = True  # load the believable demo data set on first start
    # Azurite (or Azure) storage of the DMF package API's ``dmf`` container; None = UseDevelopmentStorage=true
    blob_connection_string: str | None = None
    dmf_step_delay_seconds: float = 1.0  # how long each DMF execution step takes (admin can change it)

    @property
    def base_url(self) -> str:
        """The D365 environment URL; also the token audience (lowercase, no trailing slash, ref §8.1)."""
        return f"http://{self.host}:{self.port}"

    @property
    def tls_base_url(self) -> str:
        return f"https://{self.host}:{self.tls_port}"


@dataclass
class Principal:
    """The caller identified by a validated bearer token (set on ``request.state.principal``)."""

    app_id: str
    object_id: str
    tenant_id: str
    default_company: str
    claims: dict[str, Any] = field(default_factory=dict)
    user_id: str = "Admin"  # the F&O user the app is mapped to on "Microsoft Entra applications" (ref §8.2)

    @property
    def throttle_key(self) -> str:
        """Service protection limits are kept per (object id, client id) (ref §2.2)."""
        return f"{self.object_id}:{self.app_id}"


@dataclass
class EmulatorState:
    """Everything one emulator process holds; built by ``emulator.app.build_state``.

    ``tokens`` is the Entra stand-in's token authority: the D365 gate and the Key Vault validate bearer
    tokens with ``state.tokens.validate(token, audience)``.
    """

    config: EmulatorConfig
    data_dir: Path
    tokens: TokenAuthority
    apps: AppRegistry
    odata: ODataStore
    services: ServiceRegistry
    vault: KeyVault
    limits: ServiceProtection
    faults: FaultInjector
    log: RequestLog
    identity_header: str  # the App Service managed-identity secret (X-IDENTITY-HEADER)
    ca_file: Path
    certificate_path: Path
    extra_info: dict[str, Any] = field(default_factory=dict)
    connector: Connector = field(init=False)  # recurring integrations; set by build_state
    business_events: BusinessEvents = field(init=False)  # ref §5; set by build_state
    dmf: DmfModel = field(init=False)  # the DMF package API (ref §3); set by build_state

    @property
    def authority_url(self) -> str:
        """The tenant's login authority (what a Key Vault challenge names as ``authorization``)."""
        return f"{self.config.tls_base_url}/{self.config.tenant_id}"

    @property
    def token_url(self) -> str:
        return f"{self.authority_url}/oauth2/v2.0/token"

    def info(self) -> dict[str, Any]:
        """The ready-line JSON (also ``GET /_emulator/``): every URL and credential a client needs."""
        from emulator.entra import (
            SEED_CERT_CLIENT_ID,
            SEED_CLIENT_ID,
            SEED_CLIENT_SECRET,
            SEED_UAMI_CLIENT_ID,
        )

        config = self.config
        system = self.apps.system_identity()
        uami = self.apps.get(SEED_UAMI_CLIENT_ID)
        info: dict[str, Any] = {
            "base_url": config.base_url,
            "tls_url": config.tls_base_url,
            "tenant_id": config.tenant_id,
            "authority_host": config.tls_base_url,
            "token_url": self.token_url,
            "identity_endpoint": f"{config.base_url}/metadata/identity/oauth2/token",
            "identity_header": self.identity_header,
            "imds_endpoint": config.base_url,
            "keyvault_url": f"{config.tls_base_url}/",
            "ca_file": str(self.ca_file),
            "admin_url": f"{config.base_url}/_emulator",
            "client_id": SEED_CLIENT_ID,
            "client_secret": SEED_CLIENT_SECRET,
            "certificate_client_id": SEED_CERT_CLIENT_ID,
            "certificate_path": str(self.certificate_path),
            "managed_identity_client_id": SEED_UAMI_CLIENT_ID,
            "managed_identity_object_id": uami.object_id if uami else None,
            "system_identity_client_id": system.client_id if system else None,
            "system_identity_object_id": system.object_id if system else None,
            "default_company": config.default_company,
            "data_dir": str(self.data_dir),
        }
        info.update(self.extra_info)
        return info
