"""Resource paths below /data (ref §1.1) parsed into what they address; sans-IO and table-free.

The path arrives percent-encoded (raw), so a key value may hold ``/`` (``%2F``) or ``%``; segments are split
outside quotes and parentheses, names are decoded, key predicates go to the query compiler as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from emulator.odata.actions import Action, ActionRegistry
from emulator.odata.errors import ODataError, no_resource
from emulator.odata.query import parse_key_predicate
from emulator.odata.schema import NAMESPACE, Catalog, EntityType, Navigation, Property

_SEGMENT = re.compile(r"([^()]*)(?:\((.*)\))?", re.DOTALL)
_ACTION_PREFIX = f"{NAMESPACE}."


@dataclass
class Target:
    """What a path addresses. ``kind`` is one of: service, metadata, batch, collection, count, entity,
    navigation, navigation_count, property, property_value, action."""

    kind: str
    set_name: str = ""
    entity: EntityType | None = None
    key: dict[str, Any] | None = None
    key_text: str = ""  # the predicate as written (decoded), e.g. dataAreaId='usmf',CustomerAccount='US-001'
    navigation: Navigation | None = None
    prop: Property | None = None
    action: Action | None = None


def split_segments(path: str) -> list[str]:
    segments: list[str] = []
    current: list[str] = []
    quoted, depth = False, 0
    for ch in path:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == "/" and not quoted and depth == 0:
            segments.append("".join(current))
            current = []
        else:
            current.append(ch)
    segments.append("".join(current))
    return [s for s in segments if s]


def parse_path(path: str, catalog: Catalog, actions: ActionRegistry, url: str) -> Target:
    segments = split_segments(path)
    if not segments:
        return Target("service")
    head = unquote(segments[0])
    if len(segments) == 1 and head in ("$metadata", "$batch"):
        return Target(head[1:])
    match = _SEGMENT.fullmatch(segments[0])
    if match is None:
        raise no_resource(url)
    name, key_raw = unquote(match.group(1)), match.group(2)
    entity = catalog.entities.get(name)
    if entity is None:
        return _unbound_or_foreign(name, key_raw, segments, actions, url)
    if key_raw is None:
        return _collection_target(entity, segments[1:], actions, url)
    key = parse_key_predicate(key_raw, entity)
    target = Target("entity", name, entity, key, unquote(key_raw))
    rest = [unquote(s) for s in segments[1:]]
    if not rest:
        return target
    if rest[0].startswith(_ACTION_PREFIX) and len(rest) == 1:
        action = actions.bound(name, rest[0][len(_ACTION_PREFIX) :], entity_bound=True)
        if action is None:
            raise no_resource(url)
        target.kind, target.action = "action", action
        return target
    nav = entity.navigation(rest[0])
    if nav is not None:
        target.navigation = nav
        if len(rest) == 1:
            target.kind = "navigation"
            return target
        if len(rest) == 2 and rest[1] == "$count" and nav.collection:
            target.kind = "navigation_count"
            return target
        raise no_resource(url)
    prop = entity.property(rest[0])
    if prop is not None and len(rest) <= 2:
        target.prop = prop
        if len(rest) == 1:
            target.kind = "property"
            return target
        if rest[1] == "$value":
            target.kind = "property_value"
            return target
    raise no_resource(url)


def _collection_target(entity: EntityType, rest_raw: list[str], actions: ActionRegistry, url: str) -> Target:
    rest = [unquote(s) for s in rest_raw]
    if not rest:
        return Target("collection", entity.set_name, entity)
    if rest == ["$count"]:
        return Target("count", entity.set_name, entity)
    if len(rest) == 1 and rest[0].startswith(_ACTION_PREFIX):
        action = actions.bound(entity.set_name, rest[0][len(_ACTION_PREFIX) :], entity_bound=False)
        if action is not None:
            return Target("action", entity.set_name, entity, action=action)
    raise no_resource(url)


def _unbound_or_foreign(
    name: str, key_raw: str | None, segments: list[str], actions: ActionRegistry, url: str
) -> Target:
    if len(segments) == 1 and key_raw is None:
        action = actions.unbound(name)
        if action is not None:
            return Target("action", action=action)
    # a set served only through actions registered by another module (e.g. the DMF package API)
    if key_raw is None and len(segments) == 2:
        action_name = unquote(segments[1])
        if action_name.startswith(_ACTION_PREFIX):
            action = actions.bound(name, action_name[len(_ACTION_PREFIX) :], entity_bound=False)
            if action is not None:
                return Target("action", name, action=action)
    if name.startswith("$"):
        raise ODataError(404, f"The path segment '{name}' is not supported by the OData service.")
    raise no_resource(url)
