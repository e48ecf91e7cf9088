"""Shared state of one emulator process: configuration and the model objects every route family uses.

Each API family owns its model (moto-style): the OData store, the token authority, the Key Vault, the
throttling and fault settings, the request log. Routes receive this object; tests can build it in-process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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

    @property
    def throttle_key(self) -> str:
        """Service protection limits are kept per (object id, client id) (ref §2.2)."""
        return f"{self.object_id}:{self.app_id}"
