"""The OData model's storage: one SQLite table per entity set, per-thread connections, nestable transactions.

Storage contract (shared with the query compiler in query.py): the table is named like the set, one column per
property with its exact name; Edm.String TEXT (COLLATE NOCASE: F&O runs on a case-insensitive SQL Server
collation, so 'USMF' finds 'usmf'), Int32/Int64 INTEGER, Decimal REAL, Boolean INTEGER 0/1, DateTimeOffset
``YYYY-MM-DDTHH:MM:SSZ``, Date TEXT ``YYYY-MM-DD``, enums TEXT symbol, Guid TEXT lowercase. Two hidden columns
carry what the ETag is made of (ref §1.5): ``_RecId`` (the rowid) and ``_RecVersion``.

Change listeners (``on_change``) hear about rows written through ``insert``/``update``/``delete`` once the
outermost transaction commits, never for rolled-back work (business events are tied to the commit, ref §5.3).
"""

from __future__ import annotations

import binascii
import hashlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emulator.odata.catalog import EMPTY_DATETIME, EmulatorCatalog, EntityInfo, build_catalog
from emulator.odata.schema import (
    EDM_BOOLEAN,
    EDM_DATE,
    EDM_DATETIMEOFFSET,
    EDM_DECIMAL,
    EDM_ENUM,
    EDM_GUID,
    EDM_INT32,
    EDM_INT64,
    EDM_STRING,
    EntityType,
    Property,
)
from emulator.odata.seed import (
    DEMO_DATA_VERSION,
    demo_rows,
)

if TYPE_CHECKING:
    from emulator.odata.actions import ActionRegistry

__all__ = ["FIRST_REC_ID", "ChangeListener", "ODataStore", "Row", "etag_for"]

Row = dict[str, Any]  # storage values by column name, including _RecId and _RecVersion
# (entity set, "create" | "update" | "delete", row before or None, row after or None), after the commit
ChangeListener = Callable[[str, str, Row | None, Row | None], None]
_Change = tuple[str, str, Row | None, Row | None]
log = logging.getLogger("emulator.odata.store")
FIRST_REC_ID = 5637144576  # where F&O RecIds of a fresh table typically start
_BUSY_TIMEOUT_S = 30.0
_b64 = binascii.b2a_base64


def etag_for(rec_version: int, rec_id: int) -> str:
    """``W/"<base64 of 'RecVersion,RecId'>"`` — quotes included, as in the captured payload of ref §1.5.

    Called by SQLite once per served row, so it stays on the cheapest path (binascii, one format).
    """
    return 'W/"' + _b64(f"'{rec_version},{rec_id}'".encode(), newline=False).decode() + '"'


def column_type(prop: Property) -> str:
    if prop.edm_type == EDM_STRING:
        return "TEXT COLLATE NOCASE"
    if prop.edm_type in (EDM_INT32, EDM_INT64, EDM_BOOLEAN):
        return "INTEGER"
    if prop.edm_type == EDM_DECIMAL:
        return "REAL"
    return "TEXT"  # dates, enums, guids


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ODataStore:
    """SQLite-backed entity sets (the moto-style model of /data); safe to use from many threads."""

    def __init__(
        self,
        db_path: Path,
        *,
        seed: bool = True,
        default_company: str = "usmf",
        catalog: EmulatorCatalog | None = None,
    ) -> None:
        from emulator.odata.actions import ActionRegistry
        from emulator.odata.sample_actions import register_sample_actions

        self.db_path = Path(db_path)
        self.catalog = catalog or build_catalog()
        self.default_company = default_company.lower()
        self.seeded = seed
        self.actions: ActionRegistry = ActionRegistry()
        register_sample_actions(self.actions)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._extra_demo: dict[str, list[dict[str, Any]]] = {}
        self._listeners: list[tuple[ChangeListener, frozenset[str] | None]] = []
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._prepare()

    # --- connections and transactions ---------------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode; writes go through ``transaction()``)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.db_path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_S
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-65536")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.create_function("odata_etag", 2, etag_for, deterministic=True)
            self._local.conn = conn
            self._local.depth = 0
            self._local.pending = []  # committed-changes-to-be of the open transaction (_Change)
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; nested calls become savepoints so a batch changeset can wrap many writes."""
        conn = self.connection()
        depth: int = self._local.depth
        pending: list[_Change] = self._local.pending
        if depth == 0:
            self._write_lock.acquire()
            pending.clear()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                self._write_lock.release()
                raise
        else:
            conn.execute(f"SAVEPOINT sp{depth}")
        mark = len(pending)
        self._local.depth = depth + 1
        try:
            yield conn
        except BaseException:
            self._local.depth = depth
            del pending[mark:]  # the rolled-back writes never happened for the listeners
            if depth == 0:
                try:
                    conn.execute("ROLLBACK")
                finally:
                    self._write_lock.release()
            else:
                conn.execute(f"ROLLBACK TO sp{depth}")
                conn.execute(f"RELEASE sp{depth}")
            raise
        self._local.depth = depth
        if depth == 0:
            try:
                conn.execute("COMMIT")
            except BaseException:
                pending.clear()
                raise
            finally:
                self._write_lock.release()
            if pending:
                committed = list(pending)
                pending.clear()
                self._notify(committed)
        else:
            conn.execute(f"RELEASE sp{depth}")

    # --- change listeners -----------------------------------------------------------------------------

    def on_change(
        self, listener: ChangeListener, *, entity_sets: Iterable[str] | None = None
    ) -> Callable[[], None]:
        """Call ``listener(entity_set, operation, before, after)`` for every committed create/update/delete
        (of ``entity_sets`` only, when given: other sets cost nothing). Rows are storage values with
        ``_RecId``/``_RecVersion``. It runs on the writing thread right after the commit, outside the write
        lock; it must be quick and must not raise (errors are logged). Returns a function that unsubscribes.
        """
        entry = (listener, frozenset(entity_sets) if entity_sets is not None else None)
        with self._connections_lock:
            self._listeners = [*self._listeners, entry]

        def unsubscribe() -> None:
            with self._connections_lock:
                self._listeners = [e for e in self._listeners if e is not entry]

        return unsubscribe

    def watched(self, entity_set: str) -> bool:
        """Whether any change listener wants changes of this set."""
        return any(sets is None or entity_set in sets for _, sets in self._listeners)

    def record_change(self, entity_set: str, operation: str, before: Row | None, after: Row | None) -> None:
        """Report a write to the listeners (after the commit of the open transaction, if any). Writers that
        bypass ``insert``/``update``/``delete`` (bulk SQL of an import) call this for the rows they touch."""
        if not self.watched(entity_set):
            return
        change = (entity_set, operation, before, after)
        if getattr(self._local, "depth", 0) > 0:
            self._local.pending.append(change)
        else:
            self._notify([change])

    def _notify(self, changes: Sequence[_Change]) -> None:
        listeners = self._listeners
        for entity_set, operation, before, after in changes:
            for listener, sets in listeners:
                if sets is not None and entity_set not in sets:
                    continue
                try:
                    listener(entity_set, operation, before, after)
                except Exception:
                    log.exception("change listener failed for %s %s", operation, entity_set)

    def _row_by_rec_id(self, conn: sqlite3.Connection, entity: EntityType, rec_id: int) -> Row | None:
        cursor = conn.execute(f'SELECT * FROM {quote_ident(entity.set_name)} WHERE "_RecId" = ?', (rec_id,))
        row = cursor.fetchone()
        return None if row is None else dict(zip([d[0] for d in cursor.description], row, strict=True))

    def close(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # --- schema ---------------------------------------------------------------------------------------

    def entity(self, set_name: str) -> EntityType:
        """The entity set by its public collection name (KeyError when unknown)."""
        return self.catalog.entities[set_name]

    def _ddl(self, entities: Iterable[EntityType]) -> list[str]:
        statements: list[str] = []
        entities = list(entities)
        for entity in entities:
            table = quote_ident(entity.set_name)
            columns = ['"_RecId" INTEGER PRIMARY KEY', '"_RecVersion" INTEGER NOT NULL DEFAULT 1']
            columns += [f"{quote_ident(p.name)} {column_type(p)}" for p in entity.properties]
            statements.append(f"CREATE TABLE {table} ({', '.join(columns)})")
            keys = ", ".join(quote_ident(k) for k in entity.keys)
            statements.append(f'CREATE UNIQUE INDEX "ux_{entity.set_name}" ON {table} ({keys})')
        # the target side of every navigation is indexed, so $expand and navigation filters stay cheap
        for entity in entities:
            for nav in entity.navigations:
                target = self.catalog.entities.get(nav.target_set)
                cols = tuple(t for _, t in nav.on)
                if target is None or cols == target.keys[: len(cols)]:
                    continue
                statements.append(
                    f'CREATE INDEX IF NOT EXISTS "ix_{nav.target_set}_{"_".join(cols)}" '
                    f"ON {quote_ident(nav.target_set)} ({', '.join(quote_ident(c) for c in cols)})"
                )
        return statements

    def register_entity(self, info: EntityInfo, demo: Sequence[Mapping[str, Any]] = ()) -> None:
        """Serve one more entity set, e.g. the DMF work's ``DataManagementDefinitionGroups``.

        Its table is created (or kept, when a reopened database already has it with the same columns), and
        ``demo`` rows are its seed data, restored by ``reset()`` like the built-in sets'.
        """
        entity = info.entity
        self.catalog.add(entity)
        self.catalog.infos[entity.set_name] = info
        self._extra_demo[entity.set_name] = [dict(row) for row in demo]
        wanted = ["_RecId", "_RecVersion", *(p.name for p in entity.properties)]
        with self.transaction() as conn:
            table = quote_ident(entity.set_name)
            existing = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            if existing == wanted:
                return
            if existing:
                conn.execute(f"DROP TABLE {table}")
            for statement in self._ddl([entity]):
                conn.execute(statement)
            if self.seeded:
                self._insert_rows(conn, entity, self._extra_demo[entity.set_name])

    def _prepare(self) -> None:
        """Create the tables, or keep an existing database whose schema matches (data survives restarts)."""
        ddl = self._ddl(self.catalog.entities.values())
        fingerprint = hashlib.sha256("\n".join([*ddl, f"demo {DEMO_DATA_VERSION}"]).encode()).hexdigest()
        with self.transaction() as conn:
            conn.execute('CREATE TABLE IF NOT EXISTS "_emulator_meta" (key TEXT PRIMARY KEY, value TEXT)')
            row = conn.execute("SELECT value FROM _emulator_meta WHERE key = 'schema'").fetchone()
            if row is not None and row[0] == fingerprint:
                return
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                    "AND name != '_emulator_meta'"
                )
            ]
            for name in tables:
                conn.execute(f"DROP TABLE {quote_ident(name)}")
            for statement in ddl:
                conn.execute(statement)
            conn.execute("INSERT OR REPLACE INTO _emulator_meta VALUES ('schema', ?)", (fingerprint,))
            if self.seeded:
                self._insert_demo(conn)

    def _insert_demo(self, conn: sqlite3.Connection) -> None:
        for set_name, rows in [*demo_rows().items(), *self._extra_demo.items()]:
            if set_name in self.catalog.entities and rows:
                self._insert_rows(conn, self.catalog.entities[set_name], rows)

    def _insert_rows(
        self, conn: sqlite3.Connection, entity: EntityType, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        names = [p.name for p in entity.properties]
        sql = (
            f'INSERT INTO {quote_ident(entity.set_name)} ("_RecId", {", ".join(map(quote_ident, names))}) '
            f"VALUES ({', '.join('?' * (len(names) + 1))})"
        )
        conn.executemany(
            sql,
            (
                (FIRST_REC_ID + i, *(storage_default(p, row.get(p.name)) for p in entity.properties))
                for i, row in enumerate(rows)
            ),
        )

    # --- admin operations -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Restore the seeded demo data (or empty sets when started without seed); fast at any size."""
        with self.transaction() as conn:
            for entity in self.catalog.entities.values():
                conn.execute(f"DELETE FROM {quote_ident(entity.set_name)}")  # SQLite's truncate path
            if self.seeded:
                self._insert_demo(conn)

    def seed(self, entity_set: str, count: int, *, company: str | None = None) -> int:
        """Generate ``count`` more believable rows (default company); returns the set's new row count."""
        from emulator.odata.bulk import bulk_insert

        if entity_set not in self.catalog.entities:
            raise ValueError(f"unknown entity set {entity_set!r}")
        if count < 0:
            raise ValueError("count must be >= 0")
        with self.transaction() as conn:
            bulk_insert(
                conn, self.catalog.entities[entity_set], count, (company or self.default_company).lower()
            )
            total: int = conn.execute(f"SELECT COUNT(*) FROM {quote_ident(entity_set)}").fetchone()[0]
        return total

    def count(self, entity_set: str) -> int:
        row = self.connection().execute(f"SELECT COUNT(*) FROM {quote_ident(entity_set)}").fetchone()
        return int(row[0])

    # --- row primitives (storage values; callers validate) --------------------------------------------

    def fetch(self, conn: sqlite3.Connection, entity: EntityType, key: Mapping[str, Any]) -> Row | None:
        """The row with this complete key (case-insensitive on strings, like F&O), or None."""
        where = " AND ".join(f"{quote_ident(k)} = ?" for k in entity.keys)
        cursor = conn.execute(
            f"SELECT * FROM {quote_ident(entity.set_name)} WHERE {where}", [key[k] for k in entity.keys]
        )
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cursor.description], row, strict=True))

    def exists(self, conn: sqlite3.Connection, set_name: str, where: Mapping[str, Any]) -> bool:
        clause = " AND ".join(f"{quote_ident(k)} = ?" for k in where)
        row = conn.execute(
            f"SELECT 1 FROM {quote_ident(set_name)} WHERE {clause} LIMIT 1", list(where.values())
        ).fetchone()
        return row is not None

    def insert(self, conn: sqlite3.Connection, entity: EntityType, values: Mapping[str, Any]) -> int:
        """Insert a complete row; returns its RecId (sqlite3.IntegrityError on a duplicate key)."""
        names = [p.name for p in entity.properties]
        cursor = conn.execute(
            f"INSERT INTO {quote_ident(entity.set_name)} ({', '.join(map(quote_ident, names))}) "
            f"VALUES ({', '.join('?' * len(names))})",
            [values.get(n) for n in names],
        )
        rec_id = cursor.lastrowid
        assert rec_id is not None
        if rec_id < FIRST_REC_ID:  # the first row of an empty table: move it into F&O's RecId range
            conn.execute(
                f'UPDATE {quote_ident(entity.set_name)} SET "_RecId" = ? WHERE "_RecId" = ?',
                (FIRST_REC_ID, rec_id),
            )
            rec_id = FIRST_REC_ID
        if self.watched(entity.set_name):
            self.record_change(entity.set_name, "create", None, self._row_by_rec_id(conn, entity, rec_id))
        return int(rec_id)

    def update(
        self, conn: sqlite3.Connection, entity: EntityType, rec_id: int, changes: Mapping[str, Any]
    ) -> None:
        """Write ``changes`` and bump RecVersion (every update changes the ETag, ref §1.5)."""
        watched = self.watched(entity.set_name)
        before = self._row_by_rec_id(conn, entity, rec_id) if watched else None
        sets = ['"_RecVersion" = "_RecVersion" + 1'] + [f"{quote_ident(n)} = ?" for n in changes]
        conn.execute(
            f'UPDATE {quote_ident(entity.set_name)} SET {", ".join(sets)} WHERE "_RecId" = ?',
            [*changes.values(), rec_id],
        )
        if watched and before is not None:
            after = self._row_by_rec_id(conn, entity, rec_id)
            self.record_change(entity.set_name, "update", before, after)

    def delete(self, conn: sqlite3.Connection, entity: EntityType, rec_id: int) -> None:
        before = self._row_by_rec_id(conn, entity, rec_id) if self.watched(entity.set_name) else None
        conn.execute(f'DELETE FROM {quote_ident(entity.set_name)} WHERE "_RecId" = ?', (rec_id,))
        if before is not None:
            self.record_change(entity.set_name, "delete", before, None)


def storage_default(prop: Property, value: Any) -> Any:
    """The value F&O keeps for an unset field: tables have no NULLs, so empty string, 0, first enum value."""
    return default_value(prop) if value is None else value


def default_value(prop: Property) -> Any:
    if prop.edm_type == EDM_STRING:
        return ""
    if prop.edm_type in (EDM_INT32, EDM_INT64, EDM_BOOLEAN):
        return 0
    if prop.edm_type == EDM_DECIMAL:
        return 0.0
    if prop.edm_type == EDM_DATETIMEOFFSET:
        return EMPTY_DATETIME
    if prop.edm_type == EDM_DATE:
        return "1900-01-01"
    if prop.edm_type == EDM_ENUM and prop.enum_type is not None:
        return prop.enum_type.members[0]
    if prop.edm_type == EDM_GUID:
        return "00000000-0000-0000-0000-000000000000"
    return None
