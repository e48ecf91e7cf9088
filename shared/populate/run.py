"""Write records to an OData target or a custom service: the one entry both the file route and the HTTP
function use (``$metadata`` or the operation's description from the process-wide caches, then the writer
or the service caller)."""

from __future__ import annotations

import time
from collections.abc import Callable

from shared.context import AppContext
from shared.populate.config import EntityTarget, PopulateRoute, ServiceTarget
from shared.populate.deadline import Deadline
from shared.populate.metadata import METADATA, EntityModel
from shared.populate.records import SourceRecord
from shared.populate.results import PopulateResult
from shared.populate.service_params import SERVICE_DESCRIPTIONS, ParameterTypes
from shared.populate.service_route import call_service
from shared.populate.settings import PopulateSettings
from shared.populate.writer import EntityWriter

__all__ = ["entity_model", "parameter_types", "write_records", "write_route"]


def entity_model(context: AppContext, entity_set: str) -> EntityModel:
    """The entity's model from ``$metadata`` (cached per process for POPULATE_METADATA_CACHE_MINUTES)."""
    METADATA.ttl_seconds = context.settings.section(PopulateSettings).metadata_cache_minutes * 60
    return METADATA.entity(context.transport, entity_set)


def write_records(
    context: AppContext,
    target: EntityTarget,
    model: EntityModel,
    records: list[SourceRecord],
    *,
    legal_entity: str,
    sleep: Callable[[float], None] = time.sleep,
    deadline: Deadline | None = None,
) -> PopulateResult:
    writer = EntityWriter(
        context.odata, model, target, legal_entity=legal_entity, sleep=sleep, deadline=deadline
    )
    return writer.write(records)


def write_route(
    context: AppContext,
    route: PopulateRoute,
    records: list[SourceRecord],
    *,
    legal_entity: str,
    model: EntityModel | None,
    sleep: Callable[[float], None] = time.sleep,
    deadline: Deadline | None = None,
) -> PopulateResult:
    """An ``odata`` route (``model`` given) or a ``service`` route."""
    if route.entity is not None:
        assert model is not None
        return write_records(
            context, route.entity, model, records, legal_entity=legal_entity, sleep=sleep, deadline=deadline
        )
    assert route.service is not None
    return call_service(
        context.services,
        route.service,
        records,
        legal_entity=legal_entity,
        key_fields=route.service.key_fields,
        types=parameter_types(context, route.service),
        deadline=deadline,
    )


def parameter_types(context: AppContext, target: ServiceTarget) -> ParameterTypes | None:
    """The operation's parameter types (cached per process like ``$metadata``); None: not described."""
    SERVICE_DESCRIPTIONS.ttl_seconds = context.settings.section(PopulateSettings).metadata_cache_minutes * 60
    return SERVICE_DESCRIPTIONS.parameters(context.services, target)
