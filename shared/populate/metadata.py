"""What an entity set looks like, from ``/data/$metadata`` (CSDL XML): its key fields and typed properties.

D365's ``$metadata`` document is tens of megabytes, so it is parsed as a stream (expat callbacks, no
element tree): every entity type is held as one compact text until the container names the types of the
requested sets, and only those become models. ``MetadataCache`` keeps the models per
D365 environment for a while (``POPULATE_METADATA_CACHE_MINUTES``): one download serves every record of
every file and request until it expires, on each app instance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol
from xml.parsers import expat

import requests

from shared.d365.errors import D365ConnectionError, D365Error
from shared.d365.transport import D365Transport

__all__ = ["EntityModel", "MetadataCache", "PropertyModel", "UnknownEntitySet", "parse_metadata"]

_CHUNK = 256 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class UnknownEntitySet(Exception):
    """The entity set is not in the environment's ``$metadata``."""


@dataclass(frozen=True)
class PropertyModel:
    name: str
    edm_type: str  # "Edm.String", ... or the qualified enum type name when ``enum_members`` is set
    nullable: bool = True
    max_length: int | None = None
    enum_members: tuple[tuple[str, int], ...] | None = None  # (symbol, value) for enum-typed properties

    @property
    def is_enum(self) -> bool:
        return self.enum_members is not None


@dataclass(frozen=True)
class EntityModel:
    entity_set: str
    type_name: str
    keys: tuple[str, ...]
    properties: dict[str, PropertyModel]

    def field(self, name: str) -> PropertyModel | None:
        return self.properties.get(name)

    @property
    def company_specific(self) -> bool:
        return "dataAreaId" in self.keys


def _short(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


_FIELD, _PROPERTY = "\x1f", "\x1e"  # separators of the compact property text (never in CSDL names)


class _Collector:
    """Expat handlers over the CSDL document: every entity type kept as one compact text until the
    EntityContainer says which types the wanted sets use; only those become models. Properties count only
    inside an ``EntityType`` (a ComplexType's or an Action's are not the entity's)."""

    def __init__(self, want: set[str] | None) -> None:
        self.want = want
        self.types: dict[str, tuple[tuple[str, ...], str]] = {}
        self.enums: dict[str, tuple[tuple[str, int], ...]] = {}
        self.sets: dict[str, str] = {}
        self._type: str | None = None  # the EntityType being read
        self._enum: str | None = None
        self._keys: list[str] = []
        self._props: list[str] = []
        self._members: list[tuple[str, int]] = []

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        name = tag.rsplit(":", 1)[-1]
        if name == "EntityType":
            self._type, self._keys, self._props = attrs.get("Name", ""), [], []
        elif name == "EnumType":
            self._enum, self._members = attrs.get("Name", ""), []
        elif name in ("ComplexType", "Action", "Function"):
            self._type = self._enum = None
        elif self._type is not None and name == "PropertyRef":
            self._keys.append(attrs.get("Name", ""))
        elif self._type is not None and name == "Property":
            self._props.append(
                _FIELD.join(
                    (
                        attrs.get("Name", ""),
                        attrs.get("Type", "Edm.String"),
                        attrs.get("Nullable", "true").lower(),
                        attrs.get("MaxLength", ""),
                    )
                )
            )
        elif self._enum is not None and name == "Member":
            value = attrs.get("Value", "")
            number = int(value) if value.lstrip("-").isdigit() else len(self._members)
            self._members.append((attrs.get("Name", ""), number))
        elif name == "EntitySet":
            set_name = attrs.get("Name", "")
            if self.want is None or set_name in self.want:
                self.sets[set_name] = _short(attrs.get("EntityType", ""))

    def end(self, tag: str) -> None:
        name = tag.rsplit(":", 1)[-1]
        if name == "EntityType" and self._type is not None:
            self.types[self._type] = (tuple(self._keys), _PROPERTY.join(self._props))
            self._type = None
        elif name == "EnumType" and self._enum is not None:
            self.enums[self._enum] = tuple(self._members)
            self._enum = None

    def models(self) -> dict[str, EntityModel]:
        models: dict[str, EntityModel] = {}
        for set_name, type_name in self.sets.items():
            found = self.types.get(type_name)
            if found is None:
                continue
            keys, text = found
            properties: dict[str, PropertyModel] = {}
            for entry in text.split(_PROPERTY) if text else ():
                name, edm, nullable, length = entry.split(_FIELD)
                properties[name] = PropertyModel(
                    name,
                    edm,
                    nullable != "false",
                    int(length) if length.isdigit() else None,
                    self.enums.get(_short(edm)),
                )
            models[set_name] = EntityModel(set_name, type_name, keys, properties)
        return models


def parse_metadata(stream: Readable, wanted: Iterable[str] | None = None) -> dict[str, EntityModel]:
    """Entity models by set name (only ``wanted`` sets when given) from a CSDL document, streamed; raises
    ``ValueError`` for a document that is not well-formed XML."""
    collector = _Collector(None if wanted is None else set(wanted))
    # S: the document comes from the configured, authenticated D365 host, and the expat bundled with
    # Python 3.11+ caps entity amplification (billion laughs)
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartElementHandler = collector.start
    parser.EndElementHandler = collector.end
    try:
        while chunk := stream.read(_CHUNK):
            parser.Parse(chunk, False)
        parser.Parse(b"", True)
    except expat.ExpatError as exc:
        raise ValueError(f"unreadable $metadata document: {exc}") from exc
    return collector.models()


class _ChunkReader:
    """A read-only file over an iterator of byte chunks (what ``iterparse`` needs from a response)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


@dataclass(eq=False)
class _Load:
    """One download of ``$metadata`` under way for an environment; others wait for it."""

    wanted: set[str]
    done: threading.Event = field(default_factory=threading.Event)
    models: dict[str, EntityModel] = field(default_factory=dict)
    error: BaseException | None = None


class MetadataCache:
    """Entity models per set, fetched from ``$metadata`` when missing or older than ``ttl_seconds``.

    Thread-safe without holding a lock while downloading: one download per environment at a time, for every
    set asked so far. A caller whose set has a model (even an expired one) while a refresh is under way gets
    that model at once; a caller without one waits for the download.
    """

    def __init__(self, ttl_seconds: float = 3600.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], tuple[float, EntityModel]] = {}
        self._loading: dict[str, _Load] = {}
        self.downloads = 0

    def entity(self, transport: D365Transport, entity_set: str) -> EntityModel:
        """The model of ``entity_set``; raises ``UnknownEntitySet`` or the transport's ``D365Error``."""
        base = transport.base_url.rstrip("/").lower()
        while True:
            with self._lock:
                cached = self._models.get((base, entity_set))
                if cached is not None and self._clock() - cached[0] < self.ttl_seconds:
                    return cached[1]
                load = self._loading.get(base)
                if load is not None and cached is not None:
                    return cached[1]  # stale while another caller refreshes it
                mine = load is None
                if load is None:
                    wanted = {entity_set} | {s for b, s in self._models if b == base}
                    load = self._loading[base] = _Load(wanted)
            if mine:
                self._load(transport, base, load)
            else:
                load.done.wait()
            if entity_set in load.wanted:
                if load.error is not None:
                    raise load.error
                found = load.models.get(entity_set)
                if found is None:
                    raise UnknownEntitySet(
                        f"entity set {entity_set!r} is not in the D365 $metadata (names are case-sensitive: "
                        "use the public collection name, e.g. 'CustomersV3')"
                    )
                return found
            # another caller's download did not include this set: ask again (maybe download it)

    def _load(self, transport: D365Transport, base: str, load: _Load) -> None:
        try:
            load.models = self._download(transport, load.wanted)
        except BaseException as exc:
            load.error = exc
        with self._lock:
            now = self._clock()
            for name, model in load.models.items():
                self._models[(base, name)] = (now, model)
            del self._loading[base]
        load.done.set()

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    def _download(self, transport: D365Transport, wanted: set[str]) -> dict[str, EntityModel]:
        self.downloads += 1
        response = transport.request(
            "GET", "/data/$metadata", headers={"Accept": "application/xml"}, stream=True
        )
        try:
            return parse_metadata(_ChunkReader(response.iter_content(_CHUNK)), wanted)
        except ValueError as exc:
            raise D365Error(str(exc), url="/data/$metadata") from exc
        except requests.RequestException as exc:  # the body is streamed after the transport returned
            raise D365ConnectionError(
                f"the $metadata download broke off: {type(exc).__name__}", url="/data/$metadata"
            ) from exc
        finally:
            response.close()


#: One cache per process: $metadata is the same for every caller of an environment.
METADATA = MetadataCache()
