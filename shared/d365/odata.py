"""The OData client for D365 F&O ``/data``: lazy paging, $count, CRUD with ETags, actions, $batch and bulk.

Everything goes through one ``D365Transport`` (auth, retries, typed errors); this module only shapes URLs
(via the pure ``odata_query``) and bodies, and decodes answers. Rows are returned exactly as D365 sends
them (``@odata.etag`` included): no per-row objects, so paging runs at plain ``requests`` + JSON speed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from shared.d365.batch import BatchOperation, BatchRequest, BatchResult, OperationResult
from shared.d365.bulk import BulkPlanner, BulkResult
from shared.d365.errors import D365Error, D365ThrottledError, ODataQueryError
from shared.d365.odata_query import Filter, Query, action_path, encode_query, entity_path
from shared.d365.transport import D365Transport

__all__ = ["ODataClient", "PageIterator", "Pager"]

logger = logging.getLogger(__name__)

Row = dict[str, Any]
Page = list[Row]
_BOM = b"\xef\xbb\xbf"
_NAMES = str | Iterable[str] | None


def _decode(content: bytes) -> Any:
    """JSON from bytes at ``json.loads`` speed; a UTF-8 BOM (seen on D365 text answers) is tolerated."""
    if content.startswith(_BOM):
        content = content[3:]
    return json.loads(content)


class PageIterator(Iterator[Page]):
    """Yields one page (the rows list) at a time; only the current page is held.

    ``continuation_token`` is the nextLink of the page that comes next (None once done): pass it to
    ``Pager.by_page`` to resume later. ``count`` is ``@odata.count`` when the query asked for it.
    """

    def __init__(
        self, client: ODataClient, url: str | None, *, top: int | None, page_size: int | None
    ) -> None:
        self._client = client
        self.continuation_token = url
        self._remaining = top
        self._headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
        self.count: int | None = None

    def __iter__(self) -> PageIterator:
        return self

    def __next__(self) -> Page:
        url = self.continuation_token
        if url is None or self._remaining == 0:
            self.continuation_token = None
            raise StopIteration
        # stream=False: the transport reads the whole body inside its retry loop, so a connection dropped
        # mid-page is retried there (GET is idempotent).
        response = self._client._transport.request("GET", url, headers=self._headers, stream=False)
        payload = _decode(response.content)
        del response
        if not isinstance(payload, dict) or not isinstance(payload.get("value"), list):
            raise D365Error("unexpected OData answer: no 'value' list in a collection page", url=url)
        rows: Page = payload["value"]
        if "@odata.count" in payload:
            self.count = int(payload["@odata.count"])
        next_link = payload.get("@odata.nextLink")
        # UNCONFIRMED whether D365 honours odata.maxpagesize or $top across pages: pages of any size are
        # accepted, and $top is enforced here whatever the server does.
        if self._remaining is not None:
            if len(rows) >= self._remaining:
                rows, next_link = rows[: self._remaining], None
            self._remaining -= len(rows)
        self.continuation_token = None if next_link is None else self._client._next_url(str(next_link), url)
        if not rows and self.continuation_token is None:
            raise StopIteration
        return rows


class Pager(Iterable[Row]):
    """A lazy query: iterate for rows across all pages, or ``by_page()`` for lists. Nothing is sent until
    iteration starts, and each new iteration runs the query again."""

    def __init__(self, client: ODataClient, url: str, *, top: int | None, page_size: int | None) -> None:
        self._client = client
        self.url = url
        self._top = top
        self._page_size = page_size

    def by_page(self, continuation_token: str | None = None) -> PageIterator:
        url = continuation_token or self.url
        return PageIterator(self._client, url, top=self._top, page_size=self._page_size)

    def __iter__(self) -> Iterator[Row]:
        for page in self.by_page():
            yield from page
            # Drop the spent page before the loop fetches the next one: otherwise it stays referenced
            # while the next page is downloaded and decoded, and peak memory holds two pages, not one.
            del page


class ODataClient:
    """Client for ``{base}/data``; one per transport, safe to share across threads (it holds no state)."""

    def __init__(
        self,
        transport: D365Transport,
        *,
        page_size: int | None = None,
        default_cross_company: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if page_size is not None and page_size < 1:
            raise ValueError("page_size must be positive")
        self._transport = transport
        self.page_size = page_size
        self.default_cross_company = default_cross_company
        self._sleep = sleep

    # ------------------------------------------------------------------------------------------ reads

    def list(
        self,
        entity_set: str,
        *,
        filter: Filter | str | None = None,
        select: _NAMES = None,
        expand: _NAMES = None,
        orderby: _NAMES = None,
        top: int | None = None,
        skip: int | None = None,
        count: bool = False,
        cross_company: bool | None = None,
        page_size: int | None = None,
    ) -> Pager:
        """Rows of an entity set, following ``@odata.nextLink`` lazily (ref §1.4)."""
        query = Query.build(
            entity_set,
            filter=filter,
            select=select,
            expand=expand,
            orderby=orderby,
            top=top,
            skip=skip,
            count=count,
            cross_company=self._cross(cross_company),
        )
        return self.query(query, page_size=page_size)

    def query(self, query: Query, *, page_size: int | None = None) -> Pager:
        """Like ``list`` for a prebuilt ``Query``."""
        return Pager(
            self,
            self._url(query.path, query.to_params()),
            top=query.top,
            page_size=page_size or self.page_size,
        )

    def count(
        self, entity_set: str, *, filter: Filter | str | None = None, cross_company: bool | None = None
    ) -> int:
        """``GET /data/{Set}/$count``: a bare number as text, with a UTF-8 BOM on D365 (ref §1.3)."""
        params = Query.build(entity_set, filter=filter, cross_company=self._cross(cross_company)).to_params()
        response = self._transport.request(
            "GET",
            self._url(f"{entity_path(entity_set)}/$count", params),
            headers={"Accept": "text/plain, application/json;q=0.9, */*;q=0.1"},
        )
        text = response.content.decode("utf-8-sig", errors="replace").strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:  # tolerate a JSON envelope too
            value = _decode(response.content)
            return int(value["value"] if isinstance(value, dict) else value)
        except (ValueError, KeyError, TypeError) as exc:
            raise D365Error(f"unreadable $count answer: {text[:100]!r}") from exc

    def get(
        self,
        entity_set: str,
        key: object,
        *,
        select: _NAMES = None,
        expand: _NAMES = None,
        cross_company: bool | None = None,
    ) -> Row:
        """One entity by its full key (a mapping for composite keys); 404 raises ``D365NotFoundError``."""
        params = Query.build(
            entity_set, select=select, expand=expand, cross_company=self._cross(cross_company)
        )
        response = self._transport.request(
            "GET", self._url(entity_path(entity_set, _key(key)), params.to_params())
        )
        row = _decode(response.content)
        if not isinstance(row, dict):
            raise D365Error("unexpected OData answer: not an entity object")
        return row

    # ------------------------------------------------------------------------------------------ writes

    def create(self, entity_set: str, values: Mapping[str, Any]) -> Row:
        """POST a new entity. Never retried blindly after sending (a repeat could duplicate the record).

        UNCONFIRMED whether D365 answers 201 with the entity or 204 (ref §1.5): with a body it is returned;
        without one, ``values`` plus what the headers tell (``@odata.etag``, ``@odata.id``) is returned.
        """
        response = self._transport.request(
            "POST",
            entity_path(entity_set),
            json=dict(values),
            headers={"Prefer": "return=representation"},
            idempotent=False,
        )
        if response.content.strip():
            body = _decode(response.content)
            if isinstance(body, dict):
                return body
        row: Row = dict(values)
        if response.headers.get("ETag"):
            row["@odata.etag"] = response.headers["ETag"]
        entity_id = response.headers.get("OData-EntityId") or response.headers.get("Location")
        if entity_id:
            row["@odata.id"] = entity_id
        return row

    def update(
        self, entity_set: str, key: object, changes: Mapping[str, Any], *, etag: str | None = None
    ) -> str | None:
        """PATCH some fields; with ``etag`` it is guarded by ``If-Match`` (a mismatch raises
        ``D365ConflictError``) and therefore safe to retry. Returns the new ETag when D365 sends one."""
        return self._write("PATCH", entity_set, key, changes, etag, idempotent=etag is not None)

    def replace(
        self, entity_set: str, key: object, values: Mapping[str, Any], *, etag: str | None = None
    ) -> str | None:
        """PUT the whole entity (unset fields get defaults); ``etag`` as for ``update``."""
        return self._write("PUT", entity_set, key, values, etag, idempotent=True)

    def delete(self, entity_set: str, key: object, *, etag: str | None = None) -> None:
        """DELETE one entity (``If-Match`` with ``etag``). Retried like any idempotent call, so a repeat after
        a lost answer may report ``D365NotFoundError`` (or 412 with an etag) for a delete that succeeded."""
        headers = {"If-Match": etag} if etag else {}
        self._transport.request(
            "DELETE", entity_path(entity_set, _key(key)), headers=headers, idempotent=True
        )

    def _write(
        self,
        method: str,
        entity_set: str,
        key: object,
        body: Mapping[str, Any],
        etag: str | None,
        *,
        idempotent: bool,
    ) -> str | None:
        headers = {"If-Match": etag} if etag else {}
        response = self._transport.request(
            method,
            entity_path(entity_set, _key(key)),
            json=dict(body),
            headers=headers,
            idempotent=idempotent,
        )
        new_etag = response.headers.get("ETag")
        if not new_etag and response.content.strip():
            answer = _decode(response.content)
            new_etag = answer.get("@odata.etag") if isinstance(answer, dict) else None
        return new_etag or None

    # ------------------------------------------------------------------------------------------ actions

    def call_action(
        self,
        entity_set: str,
        name: str,
        *,
        key: object = None,
        parameters: Mapping[str, Any] | None = None,
        idempotent: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """POST a bound action ``/data/{Set}[({key})]/Microsoft.Dynamics.DataEntities.{name}`` (ref §1.1).

        Returns ``value`` of ``{"@odata.context": ..., "value": ...}``, a bare JSON answer as is, or None for
        an empty answer. ``idempotent=True`` lets the transport retry it after a 5xx or a dropped connection.
        """
        return self._action(action_path(entity_set, name, key), parameters, idempotent, timeout)

    def call_unbound_action(
        self,
        name: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        idempotent: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """POST ``/data/{name}`` (an action import)."""
        return self._action(entity_path(name), parameters, idempotent, timeout)

    def _action(
        self, path: str, parameters: Mapping[str, Any] | None, idempotent: bool, timeout: float | None
    ) -> Any:
        response = self._transport.request(
            "POST", path, json=dict(parameters or {}), idempotent=idempotent, timeout=timeout
        )
        if not response.content.strip():
            return None
        try:
            answer = _decode(response.content)
        except ValueError:
            return response.content.decode("utf-8-sig", errors="replace")
        if isinstance(answer, dict) and "value" in answer:
            return answer["value"]
        return answer

    # ------------------------------------------------------------------------------------------ batch

    def execute_batch(self, batch: BatchRequest, *, timeout: float | None = None) -> BatchResult:
        """POST ``/data/$batch`` (multipart, ref §1.6) and map every answer back to its operation.

        Only a batch of reads is idempotent; otherwise a 5xx or dropped connection is not retried (its
        effect is unknown), but a 429 on the whole batch is (D365 did nothing). ``timeout`` bounds the
        call, waits and retries included (default: the transport's total deadline).
        """
        body, content_type = batch.encode(self._transport.base_url)
        response = self._transport.request(
            "POST",
            "/data/$batch",
            data=body,
            headers={
                "Content-Type": content_type,
                "Accept": "multipart/mixed",
                # ask to go on after a failed part; if D365 ignores it (UNCONFIRMED), later parts come
                # back missing and are reported as not executed (so bulk can re-send them)
                "Prefer": "odata.continue-on-error",
            },
            idempotent=batch.read_only,
            timeout=timeout,
        )
        try:
            return batch.parse_response(response.headers.get("Content-Type", ""), response.content)
        except ValueError as exc:
            raise D365Error(f"unreadable $batch answer: {exc}", url="/data/$batch") from exc

    def bulk(
        self,
        operations: Iterable[BatchOperation],
        *,
        changeset_size: int = 100,
        max_operations_per_batch: int = 1000,
        atomic: bool = True,
        max_resends: int = 30,
        on_success: Callable[[OperationResult], None] | None = None,
    ) -> BulkResult:
        """Send many writes in ``$batch`` requests of up to ``max_operations_per_batch`` (D365 allows 5,000).

        ``atomic=True``: operations go in changesets of ``changeset_size``, each all-or-nothing (a failure
        rolls its changeset back and every member is reported). ``atomic=False``: each operation stands
        alone. The iterable is consumed lazily (constant memory). Operations that D365 throttled (429 per
        operation, per changeset or on the whole batch) are re-sent after ``Retry-After``; genuine failures
        are reported with D365's message and never retried. Idempotency caveat: a whole-batch failure whose
        effect is unknown (5xx, dropped connection) is not re-sent, because creates could be duplicated;
        it is reported in ``failures`` and ``aborted``, and the rest of the iterable is left unconsumed.
        """
        planner = BulkPlanner(
            operations,
            changeset_size=changeset_size,
            max_operations_per_batch=max_operations_per_batch,
            atomic=atomic,
            max_resends=max_resends,
        )
        while (batch := planner.next_batch()) is not None:
            try:
                result = self.execute_batch(batch)
            except D365ThrottledError as exc:
                planner.throttled(batch, exc.retry_after)
            except D365Error as exc:
                planner.abort(batch, exc)
                break
            else:
                for done in planner.record(batch, result):
                    if on_success is not None:
                        on_success(done)
            if planner.wait > 0:
                logger.info(
                    "D365 throttled the bulk (%d re-sends so far): waiting %.1fs",
                    planner.result.resent,
                    planner.wait,
                )
                self._sleep(planner.wait)
        return planner.result

    # ------------------------------------------------------------------------------------------ helpers

    def _cross(self, cross_company: bool | None) -> bool:
        return self.default_cross_company if cross_company is None else cross_company

    @staticmethod
    def _url(path: str, params: Mapping[str, str]) -> str:
        # The query string is encoded here (spaces as %20, quotes and $ kept) instead of by requests,
        # which would write spaces as '+'.
        return f"{path}?{encode_query(params)}" if params else path

    def _next_url(self, link: str, current: str) -> str:
        """The nextLink, treated as opaque. A relative link is resolved against the page URL; a link to
        another origin (a proxy's internal name) keeps its path and query on our base URL, so the bearer
        token never goes to a host we were not configured for."""
        base = urlsplit(self._transport.base_url)
        absolute = link if urlsplit(link).scheme else urljoin(self._absolute(current), link)
        parts = urlsplit(absolute)
        if (parts.scheme, parts.netloc.lower()) != (base.scheme, base.netloc.lower()):
            logger.debug("nextLink points to another origin; following its path on the configured base URL")
            absolute = urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))
        return absolute

    def _absolute(self, url: str) -> str:
        return url if urlsplit(url).scheme else f"{self._transport.base_url.rstrip('/')}/{url.lstrip('/')}"


def _key(key: object) -> object:
    if key is None:
        raise ODataQueryError("an entity key is required")
    return key
