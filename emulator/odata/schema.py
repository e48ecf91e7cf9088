"""Typed description of the emulated OData entity sets: the single source for $metadata, keys and filters."""

from __future__ import annotations

from dataclasses import dataclass, field

NAMESPACE = "Microsoft.Dynamics.DataEntities"

# Edm types the emulator uses. Enum-typed properties carry their enum name in Property.enum_type.
EDM_STRING = "Edm.String"
EDM_INT32 = "Edm.Int32"
EDM_INT64 = "Edm.Int64"
EDM_DECIMAL = "Edm.Decimal"
EDM_BOOLEAN = "Edm.Boolean"
EDM_DATE = "Edm.Date"
EDM_DATETIMEOFFSET = "Edm.DateTimeOffset"
EDM_GUID = "Edm.Guid"
EDM_ENUM = "Edm.Enum"  # marker: the property is an enum; see Property.enum_type


@dataclass(frozen=True)
class EnumType:
    name: str  # e.g. "NoYes"; literal in filters: Microsoft.Dynamics.DataEntities.NoYes'Yes'
    members: tuple[str, ...]

    @property
    def qualified_name(self) -> str:
        return f"{NAMESPACE}.{self.name}"


@dataclass(frozen=True)
class Property:
    name: str
    edm_type: str
    nullable: bool = True
    enum_type: EnumType | None = None
    max_length: int | None = None
    mandatory: bool = False  # must be present on create (besides keys)


@dataclass(frozen=True)
class Navigation:
    name: str  # navigation property name, e.g. "SalesOrderLines"
    target_set: str  # entity set it points to
    collection: bool
    # (local property, target property) pairs joining the two sets, e.g. (("dataAreaId","dataAreaId"), ...)
    on: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class EntityType:
    name: str  # entity type name, e.g. "CustomerV3"
    set_name: str  # public collection name, e.g. "CustomersV3"
    keys: tuple[str, ...]
    properties: tuple[Property, ...]
    navigations: tuple[Navigation, ...] = ()
    company_specific: bool = True  # has dataAreaId and obeys default-company scoping (ref §1.2)
    etag: bool = True

    @property
    def qualified_name(self) -> str:
        return f"{NAMESPACE}.{self.name}"

    def property(self, name: str) -> Property | None:
        for prop in self.properties:
            if prop.name == name:
                return prop
        return None

    def navigation(self, name: str) -> Navigation | None:
        for nav in self.navigations:
            if nav.name == name:
                return nav
        return None


@dataclass
class Catalog:
    """All entity sets and enums served under /data."""

    entities: dict[str, EntityType] = field(default_factory=dict)  # by set name
    enums: dict[str, EnumType] = field(default_factory=dict)  # by enum name

    def add(self, entity: EntityType) -> None:
        self.entities[entity.set_name] = entity
        for prop in entity.properties:
            if prop.enum_type is not None:
                self.enums[prop.enum_type.name] = prop.enum_type
