"""Settings of the file-import pipelines: where files are dropped and end up, how inbound folders route to
D365 targets, and the bounds of one run.

App settings (all optional; an app without imports configures no route and every drop is rejected):

- ``IMPORT_INBOUND_CONTAINER`` (``inbound``): where users drop files. The blob trigger watches
  ``%IMPORT_INBOUND_CONTAINER%/{name}`` (blueprints/imports.py), so the host reads the same setting.
- ``IMPORT_ARCHIVE_CONTAINER`` (``archive``), ``IMPORT_ERRORS_CONTAINER`` (``errors``): final locations,
  ``{route}/{yyyy}/{mm}/{dd}/{job}/{file}`` + ``{file}.status.json`` (+ D365 error files in ``errors``).
- ``IMPORT_STATE_CONTAINER`` (``state``): ledger, in-flight job records, in-flight inputs, locks.
- ``IMPORT_ROUTES``: JSON list of routes (may be a Key Vault reference); schema below.
- ``IMPORT_STUCK_AFTER_MINUTES`` (120): a job not finished in D365 after this is flagged stuck.
- ``IMPORT_RETRY_AFTER_MINUTES`` (10): an inbound file still there after this (missed trigger, deferred
  because the import lock was busy, crash) is picked up by the monitor's sweep.
- ``IMPORT_LEASE_SECONDS`` (60, 15-60): lease on an input while it is processed, and on the locks.
- ``IMPORT_LOCK_WAIT_SECONDS`` (120): how long an intake waits for the ``ImportFromPackage`` lock (and, with
  ``IMPORT_SERIALIZE=execution``, for the previous package import to end) before deferring the file.
- ``IMPORT_SERIALIZE`` (``execution``): ``execution`` = no ``ImportFromPackage`` while the previous one
  still runs in D365 (what "must not be called in parallel" needs in practice); ``call`` = only the calls
  themselves are serialised.
- ``IMPORT_MONITOR_MAX_SECONDS`` (240): a monitor run starts no new poll or sweep after this.
- ``IMPORT_ERROR_FILE_POLLS`` (15) / ``IMPORT_ERROR_FILE_POLL_SECONDS`` (2): bounded polling of
  ``GetImportTargetErrorKeysFileUrl`` per entity.
- ``IMPORT_UNKNOWN_STATUS_POLLS`` (3): ``Unknown`` execution statuses seen before a job counts as failed;
  also how many later attempts ask D365 for a job whose ``ImportFromPackage`` answer was lost before the
  file is sent again (with the same execution id).
- ``IMPORT_MAX_DEFERRAL_HOURS`` (24): how long a file may stay in inbound, deferred (D365 unreachable,
  throttled, lock busy, import unconfirmed...), counted from its first deferral, before it goes to the
  errors location (``deferred_too_often``); the sweep tries it again ``IMPORT_RETRY_AFTER_MINUTES`` after
  each attempt.
- ``IMPORT_MAX_DEFERRALS`` (20): the least number of attempts before that (a floor, so a file is not given
  up on the first attempt after the monitor itself was down for the whole period).
- ``IMPORT_COMPRESSION_LEVEL`` (1, 0-9): deflate level of packages built from raw files (0 = stored; 1-3
  ISA-L when ``isal`` is importable, else zlib; 4-9 zlib).
- ``IMPORT_UPLOAD_CONCURRENCY`` (2): blocks in flight when uploading a package to D365's SAS URL.
- Size limits: ``PACKAGE_MAX_BYTES``, ``PACKAGE_MAX_ENTRIES``, ``PACKAGE_MAX_UNCOMPRESSED_BYTES``,
  ``PACKAGE_MAX_ENTRY_BYTES``, ``PACKAGE_MAX_RATIO`` (``shared.packages.validate.PackageLimits``), plus a
  route's ``max_file_mb``.
- ``IMPORT_MONITOR_SCHEDULE`` (NCRONTAB, e.g. ``0 */2 * * * *``) is read by the host, not here.

``IMPORT_ROUTES`` schema: a JSON list (or one object) of::

    {"name": "customer-groups",          # 1-40 of [A-Za-z0-9._-]; also the folder in archive/errors
     "prefix": "customer-groups/",       # inbound folder it serves (default name + "/"); longest match wins
     "target": "recurring" | "package",
     # recurring integration (POST /api/connector/enqueue/{activity_id}):
     "activity_id": "<recurring data job ID>",
     "send_as": "file" | "package",      # File job (raw file, ?entity=) or Data package job; default:
                                         # "file" when "entity" is set, else "package"
     "entity": "Customer groups",        # DMF entity name for File jobs (and for wrapping one raw file)
     # package API (GetAzureWriteUrl + upload + ImportFromPackage):
     "definition_group": "Customer groups import", "execute": true, "overwrite": false,
     # both:
     "legal_entity": "usmf",             # default company (recurring ?company=, package legalEntityId)
     "legal_entity_from": "route" | "folder" | "file_name",   # folder: {prefix}{company}/{file};
     "file_name_separator": "_", "file_name_token": 1,        # file_name: ORDERS_usmf_1.csv -> usmf
     "accept": "any" | "package" | "raw",  # ready packages (.zip with Manifest.xml), raw files, or both
     "entities": [                       # how raw files become a package (one entry per entity)
        {"entity": "Customer groups", "source_format": "CSV-Unicode", "file_pattern": "*.csv",
         "field_map": {"Group": "CUSTOMERGROUPID"}, "encoding": "utf-8", "delimiter": ",",
         "execution_unit": 1, "level": 1, "sequence": 1}],
     "on_redrop": "skip" | "reimport",   # an identical file dropped again: skipped, or imported again
     "max_file_mb": 1024, "package_version": "2"}

Targets ``"odata"`` (records written to an entity set: ``entity_set``, ``mode``, ``changeset``, ...) and
``"service"`` (a JSON custom service operation per record or per file) write small files record by record in
real time; their keys are in ``shared.populate.config`` and docs/populate.md.

A raw ``.csv``/``.xml``/``.xlsx`` file becomes a one-entity package (the first entity whose
``file_pattern`` matches; ``source_format`` defaults by extension: CSV-Unicode, XML-Element, EXCEL). A
``.zip`` without ``Manifest.xml`` is a bundle of raw files: one package, one entity per file.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Self

from shared.packages.validate import PackageLimits
from shared.populate.config import POPULATE_ROUTE_KEYS, POPULATE_TARGETS, PopulateRoute, populate_route
from shared.settings_reader import JsonFields, SettingsReader

__all__ = ["EntityConfig", "ImportSettings", "MiB", "Route"]

MiB = 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
_ACTIVITY_ID = re.compile(r"^\{?[A-Za-z0-9-]{1,64}\}?$")
_LEGAL_ENTITY = re.compile(r"^[A-Za-z0-9]{1,10}$")
_ROUTE_KEYS = {
    "name", "prefix", "target", "activity_id", "send_as", "entity", "definition_group", "execute",
    "overwrite", "legal_entity", "legal_entity_from", "file_name_separator", "file_name_token", "accept",
    "entities", "on_redrop", "max_file_mb", "package_version", *POPULATE_ROUTE_KEYS,
}  # fmt: skip
_ENTITY_KEYS = {
    "entity", "source_format", "file_pattern", "field_map", "encoding", "delimiter", "execution_unit",
    "level", "sequence", "run_business_logic", "run_business_validation",
}  # fmt: skip
DEFAULT_FORMATS = {".csv": "CSV-Unicode", ".txt": "CSV-Unicode", ".xml": "XML-Element", ".xlsx": "EXCEL"}


@dataclass(frozen=True)
class EntityConfig:
    """How one raw file becomes one entity of a package."""

    entity: str
    source_format: str = ""  # "" = by the file's extension (DEFAULT_FORMATS)
    file_pattern: str = "*"
    field_map: tuple[tuple[str, str], ...] | None = None  # None = from the CSV header row
    encoding: str | None = None
    delimiter: str = ","
    execution_unit: int = 1
    level: int = 1
    sequence: int | None = None
    run_business_logic: bool = True
    run_business_validation: bool = True

    def matches(self, file_name: str) -> bool:
        return fnmatch.fnmatch(file_name.lower(), self.file_pattern.lower())

    def format_for(self, file_name: str) -> str:
        if self.source_format:
            return self.source_format
        extension = "." + file_name.rsplit(".", 1)[-1].lower() if "." in file_name else ""
        return DEFAULT_FORMATS.get(extension, "CSV-Unicode")


@dataclass(frozen=True)
class Route:
    """One inbound folder and the D365 target its files go to (see the module docstring)."""

    name: str
    prefix: str
    target: str  # "recurring" | "package" | "odata" | "service"
    activity_id: str = ""
    send_as: str = "package"  # recurring only: "file" | "package"
    entity: str = ""
    definition_group: str = ""
    execute: bool = True
    overwrite: bool = False
    legal_entity: str = ""
    legal_entity_from: str = "route"  # "route" | "folder" | "file_name"
    file_name_separator: str = "_"
    file_name_token: int = 0
    accept: str = "any"  # "any" | "package" | "raw"
    entities: tuple[EntityConfig, ...] = ()
    on_redrop: str = "skip"  # "skip" | "reimport"
    max_file_bytes: int | None = None
    package_version: str = "2"
    populate: PopulateRoute | None = None  # "odata" / "service" targets: written record by record

    @property
    def is_recurring(self) -> bool:
        return self.target == "recurring"

    def target_key(self, legal_entity: str) -> str:
        """The D365 target a file goes to: the ledger's key (two routes to one target share it)."""
        if self.populate is not None:
            return self.populate.target_key(legal_entity)
        if self.is_recurring:
            what = self.entity if self.send_as == "file" else "package"
            return f"recurring|{self.activity_id.strip('{}').lower()}|{legal_entity}|{what.lower()}"
        return f"package|{self.definition_group.lower()}|{legal_entity}"

    def entity_for(self, file_name: str) -> EntityConfig | None:
        """The entity configuration a raw file of this name belongs to."""
        for entity in self.entities:
            if entity.matches(file_name):
                return entity
        return None


@dataclass(frozen=True)
class ImportSettings:
    """The imports section (see the module docstring for every app setting)."""

    inbound_container: str = "inbound"
    archive_container: str = "archive"
    errors_container: str = "errors"
    state_container: str = "state"
    routes: tuple[Route, ...] = ()
    stuck_after_minutes: float = 120.0
    retry_after_minutes: float = 10.0
    lease_seconds: int = 60
    lock_wait_seconds: float = 120.0
    serialize: str = "execution"
    monitor_max_seconds: float = 240.0
    error_file_polls: int = 15
    error_file_poll_seconds: float = 2.0
    unknown_status_polls: int = 3
    max_deferrals: int = 20
    max_deferral_hours: float = 24.0
    compression_level: int = 1
    upload_concurrency: int = 2
    limits: PackageLimits = field(default_factory=PackageLimits)

    def route(self, name: str) -> Route:
        for route in self.routes:
            if route.name == name:
                return route
        raise KeyError(f"no import route named {name!r} in IMPORT_ROUTES")

    @classmethod
    def from_reader(cls, reader: SettingsReader) -> Self:
        return cls(
            inbound_container=reader.container("IMPORT_INBOUND_CONTAINER", "inbound"),
            archive_container=reader.container("IMPORT_ARCHIVE_CONTAINER", "archive"),
            errors_container=reader.container("IMPORT_ERRORS_CONTAINER", "errors"),
            state_container=reader.container("IMPORT_STATE_CONTAINER", "state"),
            routes=_routes(reader),
            stuck_after_minutes=reader.number("IMPORT_STUCK_AFTER_MINUTES", 120.0, above=True, maximum=43200),
            retry_after_minutes=reader.number("IMPORT_RETRY_AFTER_MINUTES", 10.0, maximum=10080),
            lease_seconds=reader.integer("IMPORT_LEASE_SECONDS", 60, minimum=15, maximum=60),
            lock_wait_seconds=reader.number("IMPORT_LOCK_WAIT_SECONDS", 120.0, maximum=3600),
            serialize=reader.choice("IMPORT_SERIALIZE", ("execution", "call"), "execution"),
            monitor_max_seconds=reader.number("IMPORT_MONITOR_MAX_SECONDS", 240.0, above=True, maximum=86400),
            error_file_polls=reader.integer("IMPORT_ERROR_FILE_POLLS", 15, minimum=1, maximum=1000),
            error_file_poll_seconds=reader.number("IMPORT_ERROR_FILE_POLL_SECONDS", 2.0, maximum=300),
            unknown_status_polls=reader.integer("IMPORT_UNKNOWN_STATUS_POLLS", 3, minimum=1, maximum=1000),
            max_deferrals=reader.integer("IMPORT_MAX_DEFERRALS", 20, minimum=1, maximum=10000),
            max_deferral_hours=reader.number("IMPORT_MAX_DEFERRAL_HOURS", 24.0, maximum=8760),
            compression_level=reader.integer("IMPORT_COMPRESSION_LEVEL", 1, minimum=0, maximum=9),
            upload_concurrency=reader.integer("IMPORT_UPLOAD_CONCURRENCY", 2, minimum=1, maximum=16),
            limits=PackageLimits.from_reader(reader),
        )


def _entity(reader: SettingsReader, where: str, item: Any) -> EntityConfig | None:
    if not isinstance(item, dict):
        reader.problem(where, "must be a JSON object")
        return None
    fields = JsonFields(reader, where, item, _ENTITY_KEYS)
    raw_map = item.get("field_map")
    field_map: tuple[tuple[str, str], ...] | None = None
    if raw_map is not None:
        if (
            not isinstance(raw_map, dict)
            or not raw_map
            or not all(isinstance(k, str) and isinstance(v, str) and k and v for k, v in raw_map.items())
        ):
            fields.problem("'field_map' must be a non-empty object of file column -> staging field")
        else:
            field_map = tuple(raw_map.items())
    delimiter = fields.text("delimiter", ",")
    if len(delimiter) != 1:
        fields.problem("'delimiter' must be one character")
        delimiter = ","
    sequence = item.get("sequence")
    return EntityConfig(
        entity=fields.text("entity", required=True),
        source_format=fields.text("source_format"),
        file_pattern=fields.text("file_pattern", "*") or "*",
        field_map=field_map,
        encoding=fields.text("encoding") or None,
        delimiter=delimiter,
        execution_unit=fields.whole("execution_unit", 1, 1, 1000),
        level=fields.whole("level", 1, 1, 1000),
        sequence=None if sequence is None else fields.whole("sequence", 1, 1, 1000),
        run_business_logic=fields.flag("run_business_logic", True),
        run_business_validation=fields.flag("run_business_validation", True),
    )


def _route(reader: SettingsReader, index: int, item: dict[str, Any]) -> Route:
    fields = JsonFields(reader, f"IMPORT_ROUTES[{index}]", item, _ROUTE_KEYS)
    name = fields.text("name", required=True)
    if name and not _NAME.match(name):
        fields.problem(f"name {name!r} must be 1-40 letters, digits, '.', '_' or '-' (it is a folder name)")
    prefix = fields.text("prefix", f"{name}/")
    if prefix.startswith("/") or (prefix and not prefix.endswith("/")):
        fields.problem(f"prefix {prefix!r} must be a folder: no leading '/', ending with '/' (or '' for all)")
    target = fields.choice("target", ("recurring", "package", *POPULATE_TARGETS), "package")
    entity = fields.text("entity")
    send_as = fields.choice("send_as", ("file", "package"), "file" if entity else "package")
    legal_entity = fields.text("legal_entity").lower()
    if legal_entity and not _LEGAL_ENTITY.match(legal_entity):
        fields.problem(f"legal_entity {legal_entity!r} must be 1-10 letters or digits")
    raw_entities = item.get("entities", [])
    if not isinstance(raw_entities, list):
        fields.problem("'entities' must be a list")
        raw_entities = []
    entities = [_entity(reader, f"{fields.where}.entities[{i}]", e) for i, e in enumerate(raw_entities)]
    found = tuple(e for e in entities if e is not None)
    if not found and entity:
        found = (EntityConfig(entity=entity),)
    max_mb = item.get("max_file_mb")
    if target in POPULATE_TARGETS:  # small files read record by record: 32 MB by default, 64 MB at most
        max_bytes: int | None = fields.whole("max_file_mb", 32, 1, 64) * MiB
    else:
        max_bytes = None if max_mb is None else fields.whole("max_file_mb", 1, 1, 10**7) * MiB
    route = Route(
        name=name,
        prefix=prefix,
        target=target,
        activity_id=fields.text("activity_id"),
        send_as=send_as,
        entity=entity,
        definition_group=fields.text("definition_group"),
        execute=fields.flag("execute", True),
        overwrite=fields.flag("overwrite", False),
        legal_entity=legal_entity,
        legal_entity_from=fields.choice("legal_entity_from", ("route", "folder", "file_name"), "route"),
        file_name_separator=fields.text("file_name_separator", "_") or "_",
        file_name_token=fields.whole("file_name_token", 0, 0, 50),
        accept=fields.choice("accept", ("any", "package", "raw"), "any"),
        entities=found,
        # writing records again through OData is safe (read by key first), so odata routes re-write an
        # identical re-drop; a custom service is not safe to run twice, so service routes skip it
        on_redrop=fields.choice(
            "on_redrop", ("skip", "reimport"), "reimport" if target == "odata" else "skip"
        ),
        max_file_bytes=max_bytes,
        package_version=fields.text("package_version", "2") or "2",
        populate=populate_route(fields, target) if target in POPULATE_TARGETS else None,
    )
    _check_target(fields, route)
    return route


def _check_target(fields: JsonFields, route: Route) -> None:
    if route.populate is not None:
        return  # checked by populate_route
    stray = sorted(set(fields.item) & POPULATE_ROUTE_KEYS)
    if stray:
        fields.problem(f"{', '.join(stray)}: only for targets 'odata' and 'service' (route-level keys)")
    if route.is_recurring:
        if not route.activity_id or not _ACTIVITY_ID.match(route.activity_id):
            fields.problem("a recurring route needs 'activity_id' (the recurring data job ID, a GUID)")
        if route.send_as == "file" and not route.entity:
            fields.problem("send_as 'file' needs 'entity' (the DMF entity name the File job imports)")
    elif not route.definition_group:
        fields.problem("a package route needs 'definition_group' (the data project to import into)")
    if (
        route.accept != "package"
        and not route.entities
        and not (route.is_recurring and route.send_as == "file")
    ):
        fields.problem("raw files need 'entities' (or 'entity') to build a package; or set accept 'package'")


def _routes(reader: SettingsReader) -> tuple[Route, ...]:
    found: list[Route] = []
    for index, item in enumerate(reader.json_objects("IMPORT_ROUTES")):
        route = _route(reader, index, item)
        if any(r.name == route.name for r in found):
            reader.problem(f"IMPORT_ROUTES[{index}]", f"name {route.name!r} is used twice")
        if any(r.prefix == route.prefix for r in found):
            reader.problem(f"IMPORT_ROUTES[{index}]", f"prefix {route.prefix!r} is used twice")
        found.append(route)
    return tuple(found)
