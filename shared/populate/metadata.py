"""What an entity set looks like, from ``/data/$metadata`` (CSDL XML): its key fields and typed properties.

D365's ``$metadata`` document is tens of megabytes, so it is parsed as a stream (``iterparse``), each
element dropped once read, and only the requested sets are kept. ``MetadataCache`` keeps the models per
D365 environment for a while (``POPULATE_METADATA_CACHE_MINUTES``): one download serves every record of
every file and request until it expires, on each app instance.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

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


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _short(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def parse_metadata(stream: Readable, wanted: Iterable[str] | None = None) -> dict[str, EntityModel]:
    """Entity models by set name (only ``wanted`` sets when given) from a CSDL document, streamed."""
    want = None if wanted is None else set(wanted)
    types: dict[str, tuple[tuple[str, ...], list[tuple[str, str, bool, int | None]]]] = {}
    enums: dict[str, tuple[tuple[str, int], ...]] = {}
    sets: dict[str, str] = {}
    keys: list[str] = []
    props: list[tuple[str, str, bool, int | None]] = []
    members: list[tuple[str, int]] = []
    # S314: the document comes from the configured, authenticated D365 host, and the expat bundled
    # with Python 3.11+ caps entity amplification (billion laughs)
    for event, element in ET.iterparse(stream, events=("start", "end")):  # noqa: S314
        tag = _local(element.tag)
        if event == "start":
            if tag in ("EntityType", "EnumType"):
                keys, props, members = [], [], []
            continue
        if tag == "PropertyRef":
            keys.append(element.get("Name", ""))
        elif tag == "Property":
            length = element.get("MaxLength", "")
            props.append(
                (
                    element.get("Name", ""),
                    element.get("Type", "Edm.String"),
                    element.get("Nullable", "true").lower() != "false",
                    int(length) if length.isdigit() else None,
                )
            )
        elif tag == "Member":
            value = element.get("Value", "")
            members.append(
                (element.get("Name", ""), int(value) if value.lstrip("-").isdigit() else len(members))
            )
        elif tag == "EntityType":
            types[element.get("Name", "")] = (tuple(keys), props)
            element.clear()
        elif tag == "EnumType":
            enums[element.get("Name", "")] = tuple(members)
            element.clear()
        elif tag == "EntitySet":
            name = element.get("Name", "")
            if want is None or name in want:
                sets[name] = _short(element.get("EntityType", ""))
            element.clear()
        elif tag in ("Action", "Function", "NavigationProperty", "Annotation"):
            element.clear()
    models: dict[str, EntityModel] = {}
    for set_name, type_name in sets.items():
        found = types.get(type_name)
        if found is None:
            continue
        type_keys, type_props = found
        properties = {
            name: PropertyModel(name, edm, nullable, length, enums.get(_short(edm)))
            for name, edm, nullable, length in type_props
        }
        models[set_name] = EntityModel(set_name, type_name, type_keys, properties)
    return models


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


class MetadataCache:
    """Entity models per set, fetched from ``$metadata`` when missing or older than ``ttl_seconds``.

    Thread-safe; a miss downloads the document once for every set asked so far (a burst of misses for the
    same set waits for one download instead of starting one each).
    """

    def __init__(self, ttl_seconds: float = 3600.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], tuple[float, EntityModel]] = {}
        self.downloads = 0

    def entity(self, transport: D365Transport, entity_set: str) -> EntityModel:
        """The model of ``entity_set``; raises ``UnknownEntitySet`` or the transport's ``D365Error``."""
        key = (transport.base_url.rstrip("/").lower(), entity_set)
        with self._lock:
            cached = self._models.get(key)
            if cached is not None and self._clock() - cached[0] < self.ttl_seconds:
                return cached[1]
            wanted = {entity_set} | {s for base, s in self._models if base == key[0]}
            models = self._download(transport, wanted)
            now = self._clock()
            for name, model in models.items():
                self._models[(key[0], name)] = (now, model)
        if entity_set not in models:
            raise UnknownEntitySet(
                f"entity set {entity_set!r} is not in the D365 $metadata (names are case-sensitive: use the "
                "public collection name, e.g. 'CustomersV3')"
            )
        return models[entity_set]

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
        except ET.ParseError as exc:
            raise D365Error(f"unreadable $metadata document: {exc}", url="/data/$metadata") from exc
        except requests.RequestException as exc:  # the body is streamed after the transport returned
            raise D365ConnectionError(
                f"the $metadata download broke off: {type(exc).__name__}", url="/data/$metadata"
            ) from exc
        finally:
            response.close()


#: One cache per process: $metadata is the same for every caller of an environment.
METADATA = MetadataCache()
