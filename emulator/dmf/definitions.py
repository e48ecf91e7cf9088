"""Data projects and DMF entities: what the package API imports into and exports from.

- Data projects live in the OData store as ``DataManagementDefinitionGroups`` (+ ``...GroupDetails``, one row
  per entity), the sets third-party tools query and POST (ref §3.4, [S30]); so they survive restarts, are
  restored by the admin reset, and can be created through OData, the admin API or ``ImportFromPackage``.
- Execution rows are mirrored into ``DataManagementExecutionJobDetails`` (``JobId``, ``EntityName``,
  ``StagingStatus``, ``TargetStatus``, ``TargetRecordsCreatedCount``, ... [S30]) so a client that lost an
  ``ImportFromPackage`` answer can find its job. Field names beyond those [S30] shows are UNCONFIRMED.
- A DMF entity name (``Customers V3``, ``Customer groups``, ``Fixed asset major type``) is the entity *label*
  (ref §7.3); the AOT name (``CustCustomerV3Entity``) is accepted too. The OData names (``CustomersV3``,
  ``CustomerV3``) are not: D365 answers "Entity <x> does not exist in the target environment" (ref §7.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emulator.dmf.model import DmfError, Execution, iso
from emulator.odata.catalog import NO_YES, EntityInfo, Reference
from emulator.odata.schema import (
    EDM_DATETIMEOFFSET,
    EDM_ENUM,
    EDM_INT32,
    EDM_STRING,
    EntityType,
    EnumType,
    Property,
)
from emulator.odata.store import ODataStore, quote_ident

GROUPS_SET = "DataManagementDefinitionGroups"
DETAILS_SET = "DataManagementDefinitionGroupDetails"
JOB_DETAILS_SET = "DataManagementExecutionJobDetails"
DMF_OPERATION_TYPE = EnumType("DMFOperationType", ("Import", "Export"))  # enum name UNCONFIRMED


def _s(name: str, length: int, *, key: bool = False) -> Property:
    return Property(name, EDM_STRING, nullable=not key, max_length=length)


def _i(name: str) -> Property:
    return Property(name, EDM_INT32)


GROUPS = EntityType(
    name="DataManagementDefinitionGroup",
    set_name=GROUPS_SET,
    keys=("DefinitionGroupId",),
    company_specific=False,
    properties=(
        _s("DefinitionGroupId", 60, key=True),
        _s("Description", 60),
        Property("OperationType", EDM_ENUM, enum_type=DMF_OPERATION_TYPE),
        Property("GenerateDataPackage", EDM_ENUM, enum_type=NO_YES),
    ),
)
DETAILS = EntityType(
    name="DataManagementDefinitionGroupDetail",
    set_name=DETAILS_SET,
    keys=("DefinitionGroupId", "EntityName"),
    company_specific=False,
    properties=(
        _s("DefinitionGroupId", 60, key=True),
        _s("EntityName", 100, key=True),
        _s("SourceFormat", 30),
        _i("ExecutionUnit"),
        _i("LevelInExecutionUnit"),
        _i("SequenceInLevel"),
        Property("RunBusinessLogic", EDM_ENUM, enum_type=NO_YES),
        Property("RunBusinessValidation", EDM_ENUM, enum_type=NO_YES),
    ),
)
JOB_DETAILS = EntityType(
    name="DataManagementExecutionJobDetail",
    set_name=JOB_DETAILS_SET,
    keys=("JobId", "EntityName"),
    company_specific=False,
    properties=(
        _s("JobId", 200, key=True),
        _s("EntityName", 100, key=True),
        _s("DefinitionGroupId", 60),
        _s("Company", 4),
        _s("ExecutionStatus", 30),
        _s("StagingStatus", 30),
        _s("TargetStatus", 30),
        _i("StagingRecordsCount"),
        _i("StagingErrorCount"),
        _i("TargetRecordsCreatedCount"),
        _i("TargetRecordsUpdatedCount"),
        _i("TargetErrorCount"),
        Property("StartedDateTime", EDM_DATETIMEOFFSET),
        Property("EndedDateTime", EDM_DATETIMEOFFSET),
    ),
)

# An entity the sample package of ref §7 imports into (AssetMajorTypeEntity). The public collection and
# field names are the emulator's choice (UNCONFIRMED); the staging names MAJORTYPEID / DESCRIPTION are the
# sample manifest's.
FIXED_ASSET_MAJOR_TYPES = EntityType(
    name="FixedAssetMajorType",
    set_name="FixedAssetMajorTypes",
    keys=("dataAreaId", "MajorTypeId"),
    properties=(
        Property("dataAreaId", EDM_STRING, nullable=False, max_length=4),
        _s("MajorTypeId", 20, key=True),
        _s("Description", 60),
    ),
)

# Seeded export project, so exports work out of the box (documented in docs/emulator.md).
SEED_EXPORT_GROUP = "Customers-Export"
_SEED_GROUPS = [
    {
        "DefinitionGroupId": SEED_EXPORT_GROUP,
        "Description": "Customer groups and customers (emulator seed)",
        "OperationType": "Export",
        "GenerateDataPackage": "Yes",
    }
]
_SEED_DETAILS = [
    {
        "DefinitionGroupId": SEED_EXPORT_GROUP,
        "EntityName": "Customer groups",
        "SourceFormat": "CSV-Unicode",
        "ExecutionUnit": 1,
        "LevelInExecutionUnit": 1,
        "SequenceInLevel": 1,
        "RunBusinessLogic": "Yes",
        "RunBusinessValidation": "Yes",
    },
    {
        "DefinitionGroupId": SEED_EXPORT_GROUP,
        "EntityName": "Customers V3",
        "SourceFormat": "CSV-Unicode",
        "ExecutionUnit": 1,
        "LevelInExecutionUnit": 2,
        "SequenceInLevel": 1,
        "RunBusinessLogic": "Yes",
        "RunBusinessValidation": "Yes",
    },
]


def register_sets(store: ODataStore) -> None:
    """Serve the DMF sets and the extra importable entity under /data (idempotent across restarts)."""
    if FIXED_ASSET_MAJOR_TYPES.set_name not in store.catalog.entities:
        store.register_entity(
            EntityInfo(FIXED_ASSET_MAJOR_TYPES, "Fixed asset major type", "AssetMajorTypeEntity")
        )
    if GROUPS_SET not in store.catalog.entities:
        store.register_entity(
            EntityInfo(GROUPS, "Data management definition groups", "DMFDefinitionGroupEntity"), _SEED_GROUPS
        )
        store.register_entity(
            EntityInfo(
                DETAILS,
                "Data management definition group details",
                "DMFDefinitionGroupDetailEntity",
                references=(
                    Reference(
                        "DefinitionGroupId", GROUPS_SET, "DefinitionGroupId", "Data projects", cascade=True
                    ),
                ),
            ),
            _SEED_DETAILS,
        )
        store.register_entity(
            EntityInfo(JOB_DETAILS, "Data management execution job details", "DMFExecutionJobDetailEntity")
        )


# --- DMF entity names --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DmfEntity:
    """An entity as the DMF knows it: its name (label), the set it lands in, staging field names."""

    name: str
    aot_name: str
    entity: EntityType

    @property
    def set_name(self) -> str:
        return self.entity.set_name

    def staging_field(self, prop: Property) -> str:
        """Staging tables use the field names in upper case (the manifests' ``EntityField``, ref §7.3)."""
        return prop.name.upper()

    def property_for(self, staging_field: str) -> Property | None:
        wanted = staging_field.strip().upper()
        for prop in self.entity.properties:
            if prop.name.upper() == wanted:
                return prop
        return None

    def export_properties(self) -> list[Property]:
        """Columns of an export: every field but dataAreaId (the execution's legal entity carries it)."""
        return [p for p in self.entity.properties if p.name != "dataAreaId"]


def dmf_entities(store: ODataStore) -> list[DmfEntity]:
    infos: dict[str, EntityInfo] = getattr(store.catalog, "infos", {})
    return [
        DmfEntity(info.label, info.aot_name, info.entity)
        for set_name, info in infos.items()
        if not set_name.startswith("DataManagement")
    ]


def resolve_entity(store: ODataStore, name: str) -> DmfEntity:
    """The DMF entity called ``name`` (label or AOT name, any case); DmfError as D365 words it."""
    wanted = name.strip().lower()
    for item in dmf_entities(store):
        if wanted in (item.name.lower(), item.aot_name.lower()):
            return item
    raise DmfError(f"Entity {name} does not exist in the target environment")


# --- data projects -----------------------------------------------------------------------------------------


@dataclass
class GroupEntity:
    entity_name: str
    source_format: str
    execution_unit: int = 1
    level: int = 1
    sequence: int = 1


@dataclass
class DefinitionGroup:
    name: str
    description: str = ""
    operation: str = "Import"  # or "Export"
    entities: list[GroupEntity] = field(default_factory=list)

    def entity(self, name: str) -> GroupEntity | None:
        wanted = name.strip().lower()
        return next((e for e in self.entities if e.entity_name.lower() == wanted), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "definition_group": self.name,
            "description": self.description,
            "operation": self.operation,
            "entities": [
                {
                    "entity": e.entity_name,
                    "source_format": e.source_format,
                    "execution_unit": e.execution_unit,
                    "level": e.level,
                    "sequence": e.sequence,
                }
                for e in self.entities
            ],
        }


def _rows(
    store: ODataStore, set_name: str, where: str = "", params: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    cursor = store.connection().execute(f"SELECT * FROM {quote_ident(set_name)} {where}", params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def load_group(store: ODataStore, name: str) -> DefinitionGroup | None:
    rows = _rows(store, GROUPS_SET, 'WHERE "DefinitionGroupId" = ?', (name,))
    if not rows:
        return None
    head = rows[0]
    details = _rows(
        store,
        DETAILS_SET,
        'WHERE "DefinitionGroupId" = ? '
        'ORDER BY "ExecutionUnit", "LevelInExecutionUnit", "SequenceInLevel", "_RecId"',
        (name,),
    )
    return DefinitionGroup(
        name=head["DefinitionGroupId"],
        description=head["Description"] or "",
        operation=head["OperationType"] or "Import",
        entities=[
            GroupEntity(
                d["EntityName"],
                d["SourceFormat"] or "",
                d["ExecutionUnit"] or 1,
                d["LevelInExecutionUnit"] or 1,
                d["SequenceInLevel"] or 1,
            )
            for d in details
        ],
    )


def list_groups(store: ODataStore) -> list[DefinitionGroup]:
    names = [r["DefinitionGroupId"] for r in _rows(store, GROUPS_SET, 'ORDER BY "DefinitionGroupId"')]
    return [g for g in (load_group(store, n) for n in names) if g is not None]


def save_group(store: ODataStore, group: DefinitionGroup) -> None:
    """Create or replace a data project and its entity list (what ``overwrite`` does, ref §3.2)."""
    groups, details = store.entity(GROUPS_SET), store.entity(DETAILS_SET)
    with store.transaction() as conn:
        conn.execute(f'DELETE FROM {quote_ident(DETAILS_SET)} WHERE "DefinitionGroupId" = ?', (group.name,))
        conn.execute(f'DELETE FROM {quote_ident(GROUPS_SET)} WHERE "DefinitionGroupId" = ?', (group.name,))
        store.insert(
            conn,
            groups,
            {
                "DefinitionGroupId": group.name,
                "Description": group.description[:60],
                "OperationType": group.operation,
                "GenerateDataPackage": "Yes",
            },
        )
        for item in group.entities:
            store.insert(
                conn,
                details,
                {
                    "DefinitionGroupId": group.name,
                    "EntityName": item.entity_name,
                    "SourceFormat": item.source_format,
                    "ExecutionUnit": item.execution_unit,
                    "LevelInExecutionUnit": item.level,
                    "SequenceInLevel": item.sequence,
                    "RunBusinessLogic": "Yes",
                    "RunBusinessValidation": "Yes",
                },
            )


def delete_group(store: ODataStore, name: str) -> bool:
    with store.transaction() as conn:
        conn.execute(f'DELETE FROM {quote_ident(DETAILS_SET)} WHERE "DefinitionGroupId" = ?', (name,))
        cursor = conn.execute(f'DELETE FROM {quote_ident(GROUPS_SET)} WHERE "DefinitionGroupId" = ?', (name,))
        return cursor.rowcount > 0


# --- execution job details ------------------------------------------------------------------------------


def record_job_details(store: ODataStore, execution: Execution) -> None:
    """Mirror an execution's per-entity state into DataManagementExecutionJobDetails."""
    entity = store.entity(JOB_DETAILS_SET)
    with store.transaction() as conn:
        conn.execute(f'DELETE FROM {quote_ident(JOB_DETAILS_SET)} WHERE "JobId" = ?', (execution.id,))
        for item in execution.entities:
            store.insert(
                conn,
                entity,
                {
                    "JobId": execution.id,
                    "EntityName": item.entity_name,
                    "DefinitionGroupId": execution.definition_group,
                    "Company": item.company,
                    "ExecutionStatus": str(execution.status),
                    "StagingStatus": str(item.staging_status),
                    "TargetStatus": str(item.target_status),
                    "StagingRecordsCount": item.staging_records,
                    "StagingErrorCount": item.staging_errors,
                    "TargetRecordsCreatedCount": item.target_created,
                    "TargetRecordsUpdatedCount": item.target_updated,
                    "TargetErrorCount": item.target_errors,
                    "StartedDateTime": iso(item.started_at or execution.started_at) or "1900-01-01T00:00:00Z",
                    "EndedDateTime": iso(item.completed_at) or "1900-01-01T00:00:00Z",
                },
            )


def delete_job_details(store: ODataStore, execution_id: str) -> None:
    with store.transaction() as conn:
        conn.execute(f'DELETE FROM {quote_ident(JOB_DETAILS_SET)} WHERE "JobId" = ?', (execution_id,))
