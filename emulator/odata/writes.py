"""POST / PATCH / PUT / DELETE on entities (ref §1.5), with the validation F&O runs in validateWrite.

Choices where the reference is UNCONFIRMED (ref §1.5, §9):
- POST answers 201 with the entity (or 204 with ``Prefer: return=minimal``); PATCH/PUT/DELETE answer 204
  (200 with the entity on ``Prefer: return=representation``).
- ``If-Match`` is enforced when sent: a stale ETag gets 412; ``*`` always matches; no header means no check.
- A duplicate key answers 400 with F&O's "The record already exists." text in innererror (D365 is also seen
  answering 500 for failed writes); every failed validateWrite answers 400 with the Infolog-style text.
- A key read or write with an explicit dataAreaId works whatever the caller's default company: the key is
  complete, so no cross-company=true is needed (ref §1.2 only describes collection reads).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from emulator.odata.catalog import EmulatorCatalog, EntityInfo
from emulator.odata.errors import ODataError, bad_request, not_found
from emulator.odata.messages import ODataRequest, ODataResponse, empty_response, parse_prefer
from emulator.odata.query import SqlFragment
from emulator.odata.reads import QueryOptions, Reader
from emulator.odata.schema import EntityType
from emulator.odata.serialize import etag_matches, json_to_storage, key_segment, utc_now
from emulator.odata.store import ODataStore, Row, default_value, etag_for, quote_ident


def parse_json_object(body: bytes, what: str = "entity") -> dict[str, Any]:
    if not body.strip():
        raise bad_request(f"The request body is empty; a JSON object with the {what} was expected.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"The request payload is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise bad_request(f"The request payload must be a JSON object with the {what}.")
    return data


def payload_values(entity: EntityType, data: Mapping[str, Any]) -> dict[str, Any]:
    """Payload properties in storage form; annotations (``@odata.etag``, ``Name@odata.type``) are ignored."""
    values: dict[str, Any] = {}
    for name, value in data.items():
        if "@" in name:
            continue
        prop = entity.property(name)
        if prop is None:
            if entity.navigation(name) is not None:
                raise bad_request(
                    f"The navigation property '{name}' cannot be written: deep insert and deep "
                    "update are not supported; write the related entity through its own set."
                )
            raise bad_request(
                f"The property '{name}' does not exist on type '{entity.qualified_name}'. Make sure to "
                "only use "
                "property names that are defined by the type or mark the type as open type."
            )
        stored = json_to_storage(prop, value, owner=entity.qualified_name)
        values[name] = default_value(prop) if stored is None else stored  # F&O fields hold no nulls
    return values


class Writer:
    def __init__(self, store: ODataStore, reader: Reader) -> None:
        self.store = store
        self.reader = reader
        catalog = store.catalog
        assert isinstance(catalog, EmulatorCatalog)
        self.catalog = catalog

    # --- create -------------------------------------------------------------------------------------

    def create(self, request: ODataRequest, entity: EntityType) -> ODataResponse:
        values = payload_values(entity, parse_json_object(request.body))
        info = self.catalog.info(entity.set_name)
        with self.store.transaction() as conn:
            if entity.company_specific:
                values["dataAreaId"] = str(values.get("dataAreaId") or request.company).lower()
                self._check_company(conn, values["dataAreaId"])
            problems = [
                f"Field '{name}' must be filled in."
                for name in self._required(entity)
                if values.get(name) in (None, "")
            ]
            problems += self._reference_problems(conn, entity, info, values)
            if problems:
                raise self._write_failed(info, problems)
            key = {k: values[k] for k in entity.keys}
            if self.store.fetch(conn, entity, key) is not None:
                shown = ", ".join(f"{k}: {v}" for k, v in key.items())
                raise bad_request(
                    f"Cannot create a record in {info.label} ({info.aot_name}). {shown}. "
                    "The record already exists."
                )
            now = utc_now()
            for stamp in (info.stamps_created, info.stamps_modified):
                if stamp and stamp not in values:
                    values[stamp] = now
            row = {p.name: values.get(p.name, default_value(p)) for p in entity.properties}
            try:
                self.store.insert(conn, entity, row)
            except sqlite3.IntegrityError as exc:  # a case-variant of an existing key
                raise bad_request(
                    f"Cannot create a record in {info.label} ({info.aot_name}). "
                    f"The record already exists. ({exc})"
                ) from None
            location = f"{request.service_root}/{key_segment(entity, row)}"
            headers = [("Location", location), ("OData-EntityId", location)]
            if parse_prefer(request.header("prefer")).get("return") == "minimal":
                stored = self.store.fetch(conn, entity, key)
                assert stored is not None
                headers += [
                    ("ETag", etag_for(stored["_RecVersion"], stored["_RecId"])),
                    ("Preference-Applied", "return=minimal"),
                ]
                return empty_response(204, headers=headers)
            response = self._representation(request, entity, key)
        response.status = 201
        response.headers += headers
        return response

    # --- update ---------------------------------------------------------------------------------------

    def update(
        self, request: ODataRequest, entity: EntityType, key: dict[str, Any], *, replace: bool
    ) -> ODataResponse:
        data = parse_json_object(request.body)
        info = self.catalog.info(entity.set_name)
        with self.store.transaction() as conn:
            row = self._existing(conn, request, entity, key)
            values = payload_values(entity, data)
            for name in entity.keys:
                if name in values:
                    given, current = values.pop(name), row[name]
                    same = (
                        (str(given).lower() == str(current).lower())
                        if isinstance(current, str)
                        else given == current
                    )
                    if not same:
                        raise bad_request(
                            f"The key field '{name}' of {info.label} cannot be changed "
                            f"(from '{current}' to '{given}'); delete and create the record instead."
                        )
            if replace:
                for prop in entity.properties:
                    if prop.name not in entity.keys and prop.name not in values:
                        values[prop.name] = default_value(prop)
            merged = {**row, **values}
            problems = [
                f"Field '{name}' must be filled in."
                for name in self._required(entity)
                if merged.get(name) in (None, "")
            ]
            problems += self._reference_problems(conn, entity, info, values, merged)
            if problems:
                raise self._write_failed(info, problems)
            if info.stamps_modified and info.stamps_modified not in data:
                values[info.stamps_modified] = utc_now()
            self.store.update(conn, entity, row["_RecId"], values)
            if parse_prefer(request.header("prefer")).get("return") == "representation":
                response = self._representation(request, entity, key)
                response.headers.append(("Preference-Applied", "return=representation"))
                return response
        return empty_response(204, headers=[("ETag", etag_for(row["_RecVersion"] + 1, row["_RecId"]))])

    # --- delete ---------------------------------------------------------------------------------------

    def delete(self, request: ODataRequest, entity: EntityType, key: dict[str, Any]) -> ODataResponse:
        info = self.catalog.info(entity.set_name)
        with self.store.transaction() as conn:
            row = self._existing(conn, request, entity, key)
            for other in self.catalog.infos.values():
                for ref in other.references:
                    if ref.target_set != entity.set_name:
                        continue
                    where = {ref.field: row[ref.target_field]}
                    if other.entity.company_specific and entity.company_specific:
                        where["dataAreaId"] = row["dataAreaId"]
                    if ref.cascade:
                        clause = " AND ".join(f"{quote_ident(k)} = ?" for k in where)
                        conn.execute(
                            f"DELETE FROM {quote_ident(other.entity.set_name)} WHERE {clause}",
                            list(where.values()),
                        )
                    elif self.store.exists(conn, other.entity.set_name, where):
                        raise bad_request(
                            f"Cannot delete a record in {info.label} ({info.aot_name}). The record may "
                            f"not be deleted. Transactions exist in table '{other.label}' ({other.aot_name})."
                        )
            self.store.delete(conn, entity, row["_RecId"])
        return empty_response(204)

    # --- helpers --------------------------------------------------------------------------------------

    def _existing(
        self, conn: sqlite3.Connection, request: ODataRequest, entity: EntityType, key: dict[str, Any]
    ) -> Row:
        row = self.store.fetch(conn, entity, key)
        if row is None:
            raise not_found(
                f"Resource not found for the segment '{entity.set_name}'. No record with key "
                f"{key_segment(entity, key)} exists."
            )
        if_match = request.header("if-match")
        if if_match and entity.etag and not etag_matches(if_match, row["_RecVersion"], row["_RecId"]):
            # UNCONFIRMED whether F&O enforces If-Match (ref §1.5); the emulator does, so clients see the race
            raise ODataError(
                412,
                "The ETag in the If-Match header does not match the current version of the "
                f"record {key_segment(entity, key)}: it was changed after it was read.",
            )
        return row

    def _required(self, entity: EntityType) -> list[str]:
        return list(entity.keys) + [
            p.name for p in entity.properties if p.mandatory and p.name not in entity.keys
        ]

    def _check_company(self, conn: sqlite3.Connection, company: str) -> None:
        if "LegalEntities" in self.catalog.entities and not self.store.exists(
            conn, "LegalEntities", {"LegalEntityId": company}
        ):
            raise bad_request(f"Company '{company}' does not exist.")

    def _reference_problems(
        self,
        conn: sqlite3.Connection,
        entity: EntityType,
        info: EntityInfo,
        changed: Mapping[str, Any],
        merged: Mapping[str, Any] | None = None,
    ) -> list[str]:
        merged = merged if merged is not None else changed
        problems: list[str] = []
        for ref in info.references:
            value = changed.get(ref.field)
            if value in (None, "") or ref.target_set not in self.catalog.entities:
                continue
            target = self.catalog.entities[ref.target_set]
            where: dict[str, Any] = {ref.target_field: value}
            if target.company_specific and entity.company_specific:
                where["dataAreaId"] = merged["dataAreaId"]
            if not self.store.exists(conn, ref.target_set, where):
                problems.append(
                    f"The value '{value}' in field '{ref.field}' is not found in the relating table "
                    f"'{ref.target_label}'."
                )
        return problems

    def _write_failed(self, info: EntityInfo, problems: list[str]) -> ODataError:
        infolog = " ".join(f"Warning: {p}" for p in problems)
        return bad_request(f"Write failed for table row of type '{info.aot_name}'. Infolog: {infolog}")

    def _representation(
        self, request: ODataRequest, entity: EntityType, key: Mapping[str, Any]
    ) -> ODataResponse:
        conditions = [SqlFragment(f"t.{quote_ident(k)} = ?", [v]) for k, v in key.items()]
        response = self.reader.single(request, entity, QueryOptions(), conditions)
        assert response is not None
        return response
