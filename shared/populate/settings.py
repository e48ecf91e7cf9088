"""Settings of real-time populate (the HTTP function and the metadata cache); routes live in IMPORT_ROUTES.

- ``POPULATE_HTTP_TARGETS``: JSON list of the entities the HTTP function may write (the allow-list)::

      {"name": "customers",             # the URL: POST /api/populate/customers
       "entity_set": "CustomersV3", "mode": "upsert",        # create | update | upsert
       "legal_entity": "usmf",           # default company of the records
       "legal_entity_from_request": false,  # true: ?legal_entity=... may choose another one
       "changeset": "group", "changeset_size": 20, "all_or_nothing": false,
       "allow_record_company": false,    # true: a record's dataAreaId may name another legal entity
       "max_records": 1000}              # default POPULATE_HTTP_MAX_RECORDS

- ``POPULATE_HTTP_MAX_RECORDS`` (1000, 1-5000): records per request (more: 413).
- ``POPULATE_HTTP_MAX_BYTES`` (4194304, 1 KiB-16 MiB): request body size (more: 413).
- ``POPULATE_HTTP_TIME_LIMIT_SECONDS`` (120, 5-200): one request's time for D365 (well under the ~230 s
  the Azure front end waits); records left when it runs out are ``not_attempted`` (answer 503).
- ``POPULATE_FILE_TIME_LIMIT_SECONDS`` (420, 10-540): one file's time for D365 (under host.json's
  functionTimeout of 10 minutes); a file that runs out is tried again later (or ends partially written).
- ``POPULATE_METADATA_CACHE_MINUTES`` (60, 0-1440): how long an entity's ``$metadata`` model (and a custom
  service operation's description) is reused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Self

from shared.populate.config import ENTITY_KEYS, EntityTarget, entity_target
from shared.settings_reader import JsonFields, SettingsReader

__all__ = ["HttpTarget", "PopulateSettings"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
_LEGAL_ENTITY = re.compile(r"^[A-Za-z0-9]{1,10}$")
_TARGET_KEYS = ENTITY_KEYS | {"name", "legal_entity", "legal_entity_from_request"}


@dataclass(frozen=True)
class HttpTarget:
    name: str
    entity: EntityTarget
    legal_entity: str = ""
    legal_entity_from_request: bool = False


@dataclass(frozen=True)
class PopulateSettings:
    http_targets: tuple[HttpTarget, ...] = ()
    http_max_records: int = 1000
    http_max_bytes: int = 4 * 1024 * 1024
    metadata_cache_minutes: float = 60.0
    http_time_limit_seconds: float = 120.0
    file_time_limit_seconds: float = 420.0

    def http_target(self, name: str) -> HttpTarget | None:
        return next((t for t in self.http_targets if t.name.lower() == name.lower()), None)

    @classmethod
    def from_reader(cls, reader: SettingsReader) -> Self:
        max_records = reader.integer("POPULATE_HTTP_MAX_RECORDS", 1000, minimum=1, maximum=5000)
        targets: list[HttpTarget] = []
        for index, item in enumerate(reader.json_objects("POPULATE_HTTP_TARGETS")):
            fields = JsonFields(reader, f"POPULATE_HTTP_TARGETS[{index}]", item, _TARGET_KEYS)
            name = fields.text("name", required=True)
            if name and not _NAME.match(name):
                fields.problem(f"name {name!r} must be 1-40 letters, digits, '.', '_' or '-' (URL part)")
            if any(t.name.lower() == name.lower() for t in targets):
                fields.problem(f"name {name!r} is used twice")
            legal_entity = fields.text("legal_entity").lower()
            if legal_entity and not _LEGAL_ENTITY.match(legal_entity):
                fields.problem(f"legal_entity {legal_entity!r} must be 1-10 letters or digits")
            targets.append(
                HttpTarget(
                    name=name,
                    entity=entity_target(fields, default_max=max_records),
                    legal_entity=legal_entity,
                    legal_entity_from_request=fields.flag("legal_entity_from_request", False),
                )
            )
        return cls(
            http_targets=tuple(targets),
            http_max_records=max_records,
            http_max_bytes=reader.integer(
                "POPULATE_HTTP_MAX_BYTES", 4 * 1024 * 1024, minimum=1024, maximum=16 * 1024 * 1024
            ),
            metadata_cache_minutes=reader.number("POPULATE_METADATA_CACHE_MINUTES", 60.0, maximum=1440),
            http_time_limit_seconds=reader.number(
                "POPULATE_HTTP_TIME_LIMIT_SECONDS", 120.0, minimum=5, maximum=200
            ),
            file_time_limit_seconds=reader.number(
                "POPULATE_FILE_TIME_LIMIT_SECONDS", 420.0, minimum=10, maximum=540
            ),
        )
