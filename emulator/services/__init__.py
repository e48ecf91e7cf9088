"""JSON custom services (``/api/services``, ref §6): a registry of operations and its routes.

``ServiceRegistry()`` starts with Microsoft's ``UserSessionService`` and the emulator's sample services;
add more with ``registry.register(group, service, operation, handler, parameters=..., returns=...)``.
"""

from emulator.services.registry import (
    DataContract,
    Handler,
    Parameter,
    ServiceCall,
    ServiceFault,
    ServiceOperation,
    ServiceRegistry,
    XppError,
)
from emulator.services.routes import routes

__all__ = [
    "DataContract",
    "Handler",
    "Parameter",
    "ServiceCall",
    "ServiceFault",
    "ServiceOperation",
    "ServiceRegistry",
    "XppError",
    "routes",
]
