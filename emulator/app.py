"""Compose the emulator: one Starlette app with every API family behind the D365 gate, served over HTTP
and HTTPS by ``python -m emulator`` and usable in-process (``create_app(build_state(config))``).
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

from starlette.applications import Starlette
from starlette.types import ASGIApp

from emulator import admin, connector, entra, keyvault, services
from emulator.business_events import BusinessEvents
from emulator.business_events import routes as business_events_routes
from emulator.dmf import admin as dmf_admin
from emulator.dmf import wiring as dmf_wiring
from emulator.entra import AppRegistry, TokenAuthority, seeded_apps
from emulator.faults import FaultInjector
from emulator.middleware import EmulatorGate
from emulator.odata import routes as odata_routes
from emulator.odata.store import ODataStore
from emulator.requestlog import RequestLog
from emulator.state import EmulatorConfig, EmulatorState
from emulator.throttling import ServiceProtection
from emulator.tls import SIGNING_KEY_FILE, ensure_client_certificate, ensure_server_tls

CERTIFICATE_APP_FILE = "certificate-app.pem"


def build_state(config: EmulatorConfig, *, identity_header: str | None = None) -> EmulatorState:
    """Create (or reopen) everything in the data dir: TLS files, signing key, client certificate, the
    SQLite store; and the in-memory models. A temporary data dir is created when none is configured."""
    data_dir = Path(config.data_dir) if config.data_dir else Path(tempfile.mkdtemp(prefix="d365-emulator-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    config.data_dir = data_dir
    tls = ensure_server_tls(data_dir, [config.host])
    client_cert = ensure_client_certificate(data_dir, CERTIFICATE_APP_FILE, "d365-emulator-certificate-app")
    tokens = TokenAuthority(
        tenant_id=config.tenant_id,
        lifetime_seconds=config.token_lifetime_seconds,
        key_path=data_dir / SIGNING_KEY_FILE,
    )
    default_company = config.default_company
    apps = AppRegistry(lambda: seeded_apps(client_cert.certificate, default_company))
    state = EmulatorState(
        config=config,
        data_dir=data_dir,
        tokens=tokens,
        apps=apps,
        odata=ODataStore(data_dir / "d365.sqlite", seed=config.seed, default_company=default_company),
        services=services.ServiceRegistry(),
        vault=keyvault.KeyVault(),
        limits=ServiceProtection(),
        faults=FaultInjector(),
        log=RequestLog(),
        identity_header=identity_header or secrets.token_urlsafe(24),
        ca_file=tls.ca_file,
        certificate_path=client_cert.path,
    )
    state.dmf = dmf_wiring.install(
        state,
        blob_connection_string=config.blob_connection_string,
        step_delay_seconds=config.dmf_step_delay_seconds,
    )
    state.connector = connector.build_connector(state)
    state.business_events = BusinessEvents()
    state.business_events.attach(state)
    return state


def server_tls_files(state: EmulatorState) -> tuple[Path, Path]:
    """(certificate chain, private key) for the HTTPS listener, written by ``build_state``."""
    from emulator.tls import SERVER_CERT_FILE, SERVER_KEY_FILE

    return state.data_dir / SERVER_CERT_FILE, state.data_dir / SERVER_KEY_FILE


def create_app(state: EmulatorState) -> ASGIApp:
    """The ASGI app: the Entra stand-ins first (so ``/metadata/identity`` is never taken for the D365
    metadata service), then the D365 families, Key Vault and the admin API, all behind the gate."""
    routes = [
        *entra.routes(state),
        *odata_routes.routes(state),
        *services.routes(state),
        *connector.routes(state),
        *dmf_admin.routes(state),
        *business_events_routes(state),
        *keyvault.routes(state),
        *admin.routes(state),
    ]
    app = Starlette(routes=routes)
    app.state.emulator = state
    return EmulatorGate(app, state)
