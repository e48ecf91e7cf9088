"""``/data/$metadata`` (CSDL 4.0 XML, incl. EnumTypes and Actions) and the service document ``/data/``."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from emulator.odata.actions import ActionRegistry
from emulator.odata.messages import ODataRequest, ODataResponse, json_response
from emulator.odata.schema import NAMESPACE, Catalog, EntityType, Property

EDMX_NS = "http://docs.oasis-open.org/odata/ns/edmx"
EDM_NS = "http://docs.oasis-open.org/odata/ns/edm"
CONTAINER = "Resources"  # F&O's entity container name


def _type_name(prop: Property) -> str:
    return prop.enum_type.qualified_name if prop.enum_type is not None else prop.edm_type


def _entity_type(schema: ET.Element, entity: EntityType, catalog: Catalog) -> None:
    element = ET.SubElement(schema, "EntityType", Name=entity.name)
    key = ET.SubElement(element, "Key")
    for name in entity.keys:
        ET.SubElement(key, "PropertyRef", Name=name)
    for prop in entity.properties:
        attrs = {"Name": prop.name, "Type": _type_name(prop)}
        if not prop.nullable:
            attrs["Nullable"] = "false"
        if prop.max_length is not None:
            attrs["MaxLength"] = str(prop.max_length)
        if prop.edm_type == "Edm.Decimal":
            attrs.update(Precision="32", Scale="6")
        ET.SubElement(element, "Property", attrs)
    for nav in entity.navigations:
        target = catalog.entities.get(nav.target_set)
        if target is None:
            continue
        type_name = f"{NAMESPACE}.{target.name}"
        nav_el = ET.SubElement(
            element,
            "NavigationProperty",
            Name=nav.name,
            Type=f"Collection({type_name})" if nav.collection else type_name,
        )
        for local, remote in nav.on:
            ET.SubElement(nav_el, "ReferentialConstraint", Property=local, ReferencedProperty=remote)


def build_metadata(catalog: Catalog, actions: ActionRegistry) -> bytes:
    root = ET.Element("edmx:Edmx", {"Version": "4.0", "xmlns:edmx": EDMX_NS})
    services = ET.SubElement(root, "edmx:DataServices")
    schema = ET.SubElement(services, "Schema", {"Namespace": NAMESPACE, "xmlns": EDM_NS})
    for entity in catalog.entities.values():
        _entity_type(schema, entity, catalog)
    for enum in catalog.enums.values():
        enum_el = ET.SubElement(schema, "EnumType", Name=enum.name)
        for value, member in enumerate(enum.members):
            ET.SubElement(enum_el, "Member", Name=member, Value=str(value))
    for action in actions:
        attrs = {"Name": action.name}
        if action.bound_set is not None:
            attrs["IsBound"] = "true"
        action_el = ET.SubElement(schema, "Action", attrs)
        if action.bound_set is not None:
            bound = catalog.entities.get(action.bound_set)
            type_name = f"{NAMESPACE}.{bound.name if bound else action.binding_type or action.bound_set}"
            binding = type_name if action.entity_bound else f"Collection({type_name})"
            ET.SubElement(action_el, "Parameter", Name="_this", Type=binding, Nullable="false")
        for param in action.parameters:
            p_attrs = {"Name": param.name, "Type": param.type_name}
            if not param.nullable:
                p_attrs["Nullable"] = "false"
            ET.SubElement(action_el, "Parameter", p_attrs)
        if action.return_type is not None:
            ET.SubElement(action_el, "ReturnType", Type=action.return_type)
    container = ET.SubElement(schema, "EntityContainer", Name=CONTAINER)
    for entity in catalog.entities.values():
        set_el = ET.SubElement(
            container, "EntitySet", Name=entity.set_name, EntityType=f"{NAMESPACE}.{entity.name}"
        )
        for nav in entity.navigations:
            if nav.target_set in catalog.entities:
                ET.SubElement(set_el, "NavigationPropertyBinding", Path=nav.name, Target=nav.target_set)
    for action in actions:
        if action.bound_set is None:
            ET.SubElement(container, "ActionImport", Name=action.name, Action=action.qualified_name)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>' + document


def metadata_response(catalog: Catalog, actions: ActionRegistry) -> ODataResponse:
    return ODataResponse(
        200, [("Content-Type", "application/xml"), ("OData-Version", "4.0")], build_metadata(catalog, actions)
    )


def service_document(request: ODataRequest, catalog: Catalog) -> ODataResponse:
    sets = [{"name": e.set_name, "kind": "EntitySet", "url": e.set_name} for e in catalog.entities.values()]
    return json_response(200, {"@odata.context": f"{request.service_root}/$metadata", "value": sets})
