"""OData actions (ref §1.1): a registry other modules add to, and the invocation rules F&O applies.

Bound actions answer ``POST /data/{Set}/Microsoft.Dynamics.DataEntities.{Name}`` (collection-bound) or
``/data/{Set}({key})/Microsoft.Dynamics.DataEntities.{Name}`` (entity-bound); unbound ones are action imports,
``POST /data/{Name}``. Primitive results come back as ``{"@odata.context": ".../$metadata#Edm.String",
"value": ...}``, void ones as 204. A handler signals a business failure with ``ActionFailed``, which F&O
reports as 500 "Exception occurred while executing action ..." (ref §1.7).

Another module adds its actions with ``store.actions.register(Action(...))`` (the DMF package API does so
for ``DataManagementDefinitionGroups``; its set need not be in the catalog: routing only needs the name).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emulator.odata.errors import ODataError, bad_request, not_found
from emulator.odata.messages import ODataRequest, ODataResponse, empty_response, json_response
from emulator.odata.schema import NAMESPACE, EntityType, EnumType, Property
from emulator.odata.serialize import json_to_storage, key_segment

if TYPE_CHECKING:
    from emulator.odata.store import ODataStore, Row


class ActionFailed(Exception):
    """A business failure inside an action: answered 500 with the message in innererror (ref §1.7)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ActionParameter:
    name: str
    edm_type: str  # an Edm primitive, or schema.EDM_ENUM with enum_type set
    nullable: bool = True  # False: the caller must send it
    enum_type: EnumType | None = None

    def as_property(self) -> Property:
        return Property(self.name, self.edm_type, nullable=self.nullable, enum_type=self.enum_type)

    @property
    def type_name(self) -> str:
        return self.enum_type.qualified_name if self.enum_type is not None else self.edm_type


@dataclass
class ActionCall:
    """What a handler gets: parameters in storage form, the bound row (entity-bound), the open transaction."""

    store: ODataStore
    conn: sqlite3.Connection
    action: Action
    request: ODataRequest
    parameters: dict[str, Any]
    entity: EntityType | None = None
    row: Row | None = None
    cross_company: bool = False

    @property
    def company(self) -> str:
        """The company the call acts in: the bound row's, else the caller's default company."""
        if self.row is not None and "dataAreaId" in self.row:
            return str(self.row["dataAreaId"])
        return self.request.company


ActionHandler = Callable[[ActionCall], Any]


@dataclass(frozen=True)
class Action:
    name: str
    handler: ActionHandler
    parameters: tuple[ActionParameter, ...] = ()
    return_type: str | None = None  # "Edm.String", "Edm.Int32", "Edm.Decimal", ...; None = void
    bound_set: str | None = None  # None: unbound (an action import)
    entity_bound: bool = False  # True: on /Set(key)/...; False: on /Set/...
    binding_type: str | None = None  # entity type name when bound_set is not in the catalog
    description: str = ""

    @property
    def qualified_name(self) -> str:
        return f"{NAMESPACE}.{self.name}"


@dataclass
class ActionRegistry:
    actions: list[Action] = field(default_factory=list)

    def register(self, action: Action) -> Action:
        """Add (or replace) an action; the same name may be bound to several sets."""
        self.actions = [a for a in self.actions if not _same_slot(a, action)]
        self.actions.append(action)
        return action

    def bound(self, set_name: str, name: str, *, entity_bound: bool) -> Action | None:
        for action in self.actions:
            if action.bound_set == set_name and action.name == name and action.entity_bound == entity_bound:
                return action
        return None

    def unbound(self, name: str) -> Action | None:
        bare = name.removeprefix(f"{NAMESPACE}.")
        for action in self.actions:
            if action.bound_set is None and action.name == bare:
                return action
        return None

    def bound_names(self, set_name: str) -> set[str]:
        return {a.name for a in self.actions if a.bound_set == set_name}

    def __iter__(self) -> Iterator[Action]:
        return iter(list(self.actions))


def _same_slot(a: Action, b: Action) -> bool:
    return (a.name, a.bound_set, a.entity_bound) == (b.name, b.bound_set, b.entity_bound)


def invoke(
    store: ODataStore,
    action: Action,
    request: ODataRequest,
    *,
    entity: EntityType | None = None,
    key: dict[str, Any] | None = None,
    cross_company: bool = False,
) -> ODataResponse:
    """Check the parameters, run the handler in one transaction, and shape the answer."""
    parameters = _parameters(action, request.body)
    try:
        with store.transaction() as conn:
            row = None
            if entity is not None and key is not None:
                row = store.fetch(conn, entity, key)
                if row is None:
                    raise not_found(
                        f"Resource not found for the segment '{entity.set_name}'. No record with "
                        f"key {key_segment(entity, key)} exists."
                    )
            call = ActionCall(store, conn, action, request, parameters, entity, row, cross_company)
            result = action.handler(call)
    except ActionFailed as exc:
        on = f" on Entity {entity.name}" if entity is not None else ""
        raise ODataError(
            500, f"Exception occurred while executing action {action.name}{on}: {exc.message}"
        ) from None
    if action.return_type is None:
        return empty_response(204)
    if isinstance(result, ODataResponse):
        return result
    context = f"{request.service_root}/$metadata#{action.return_type}"
    return json_response(200, {"@odata.context": context, "value": result})


def _parameters(action: Action, body: bytes) -> dict[str, Any]:
    """ODataLib's rules: no unknown parameters, every non-nullable one present, values of their type."""
    data: Any = {}
    if body.strip():
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(f"The request payload is not valid JSON: {exc}.") from None
        if not isinstance(data, dict):
            raise bad_request(
                f"The parameters of the operation '{action.name}' must be sent as a JSON object."
            )
    declared = {p.name: p for p in action.parameters}
    for name in data:
        if name not in declared and "@" not in name:
            raise bad_request(
                f"The parameter '{name}' in the request payload is not a valid parameter for the "
                f"operation '{action.name}'."
            )
    missing = [p.name for p in action.parameters if not p.nullable and p.name not in data]
    if missing:
        raise bad_request(
            f"One or more parameters of the operation '{action.name}' are missing from the request "
            f"payload. The missing parameters are: {', '.join(missing)}."
        )
    return {p.name: json_to_storage(p.as_property(), data.get(p.name)) for p in action.parameters}
