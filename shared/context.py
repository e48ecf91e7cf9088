"""Everything a function needs, built once per process from the settings and shared by every invocation.

Functions never construct clients themselves: they ask for the context and pass it to a pipeline. Tests and
the local runner build their own context from an explicit environment with :meth:`AppContext.from_settings`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from azure.storage.blob import BlobServiceClient

from shared.d365.odata import ODataClient
from shared.d365.services import CustomServiceClient
from shared.d365.transport import D365Transport
from shared.identity import D365TokenProvider
from shared.settings import Settings
from shared.storage import BlobStore


@dataclass
class AppContext:
    """The process-wide dependencies: settings, the D365 clients on one transport, and blob storage."""

    settings: Settings
    tokens: D365TokenProvider
    transport: D365Transport
    odata: ODataClient
    services: CustomServiceClient
    blob_service: BlobServiceClient
    store: BlobStore

    @classmethod
    def from_settings(cls, settings: Settings, **transport_options: Any) -> AppContext:
        tokens = D365TokenProvider.from_settings(settings)
        transport = D365Transport.from_settings(
            settings.d365.base_url, tokens, settings.http, **transport_options
        )
        return cls(
            settings=settings,
            tokens=tokens,
            transport=transport,
            odata=ODataClient(transport, page_size=settings.http.odata_page_size),
            services=CustomServiceClient(transport),
            blob_service=(blob_service := settings.storage.blob_service_client()),
            store=BlobStore(blob_service),
        )

    def close(self) -> None:
        self.transport.close()
        self.tokens.close()
        self.blob_service.close()


_lock = threading.Lock()
_context: AppContext | None = None


def get_context() -> AppContext:
    """The process-wide context, built on first use from the app settings (raises ConfigurationError)."""
    global _context
    if _context is None:
        with _lock:  # only guards lazy construction inside this process; no business decision relies on it
            if _context is None:
                _context = AppContext.from_settings(Settings.from_env())
    return _context


def reset_context() -> None:
    """Forget the process-wide context (tests, or after settings changed)."""
    global _context
    with _lock:
        if _context is not None:
            _context.close()
        _context = None
