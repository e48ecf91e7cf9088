"""The OData writer against D365 answers the emulator cannot give, from a scripted HTTP server over real
sockets (tests/support/scripted_server.py) speaking multipart ``$batch`` (ref §1.6): a 429 for one changeset
inside a 200 answer, throttling that outlasts the transport's retries, changesets D365 left unanswered,
a whole ``$batch`` refused, and key literals of non-text keys."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus

import pytest

from emulator.odata.actions import ActionRegistry
from emulator.odata.batch import ChangeSet, Operation, parse_batch
from emulator.odata.catalog import build_catalog
from emulator.odata.metadata import build_metadata
from shared.d365.odata import ODataClient
from shared.d365.retry import RetryPolicy
from shared.d365.transport import D365Transport
from shared.populate.config import EntityTarget
from shared.populate.metadata import EntityModel, MetadataCache, PropertyModel
from shared.populate.records import SourceRecord
from shared.populate.results import RecordOutcome
from shared.populate.writer import MAX_RESENDS, EntityWriter
from tests.support.scripted_server import RecordedRequest, Reply, ScriptedServer

MODEL = EntityModel(
    "Things",
    "Thing",
    ("Id",),
    {"Id": PropertyModel("Id", "Edm.String", False), "V": PropertyModel("V", "Edm.String")},
)
#: What the scripted D365 does with one changeset: answer it, throttle it, or leave it (and all after it)
Verdict = str  # "ok" | "throttle" | "omit"


def _part(status: int, content_id: str | None, headers: dict[str, str] | None = None) -> bytes:
    head = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        head.append(f"Content-ID: {content_id}")
    lines = [*head, "", f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    body = b""
    if status >= 400:
        body = json.dumps({"error": {"code": "", "message": f"scripted {status}"}}).encode()
        lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body + b"\r\n"


@dataclass
class ScriptedD365:
    """A ``$batch`` endpoint: reads answer 404 (nothing exists); each write batch takes the next entry of
    ``script`` (a function of the changeset's position giving its verdict, or a whole-batch ``Reply``)."""

    script: list[Callable[[int], Verdict] | Reply]
    reads: list[Reply | None] = field(default_factory=list)  # a whole answer for the next read batches
    write_batches: list[list[list[Operation]]] = field(default_factory=list)
    read_urls: list[str] = field(default_factory=list)

    def __call__(self, request: RecordedRequest) -> Reply:
        items = parse_batch(request.headers["content-type"], request.body)
        boundary = f"batchresponse_{uuid.uuid4()}"
        out: list[bytes] = []
        if all(isinstance(i, Operation) for i in items):  # the reads
            scripted = self.reads.pop(0) if self.reads else None
            if scripted is not None:
                return scripted
            for item in items:
                assert isinstance(item, Operation)
                self.read_urls.append(item.url)
                out += [f"--{boundary}\r\n".encode(), _part(404, item.content_id)]
        else:
            changesets = [i for i in items if isinstance(i, ChangeSet)]
            self.write_batches.append([c.operations for c in changesets])
            step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            if isinstance(step, Reply):
                return step
            for index, changeset in enumerate(changesets):
                verdict = step(index)
                if verdict == "omit":
                    break
                out.append(f"--{boundary}\r\n".encode())
                if verdict == "throttle":
                    out.append(_part(429, None, {"Retry-After": "3"}))
                    continue
                inner = f"changesetresponse_{uuid.uuid4()}"
                out.append(f"Content-Type: multipart/mixed; boundary={inner}\r\n\r\n".encode())
                for op in changeset.operations:
                    out += [f"--{inner}\r\n".encode(), _part(204, op.content_id)]
                out.append(f"--{inner}--\r\n".encode())
        out.append(f"--{boundary}--\r\n".encode())
        return Reply(200, {"Content-Type": f"multipart/mixed; boundary={boundary}"}, b"".join(out))


def ok(index: int) -> Verdict:
    return "ok"


class FixedToken:
    """The scripted D365 checks no token; the transport sends one like to any D365 host."""

    def get_token(self) -> str:
        return "scripted-token"

    def invalidate(self) -> None:
        pass


Serve = Callable[[ScriptedD365], ODataClient]


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[ScriptedServer] = []
    transports: list[D365Transport] = []

    def start(d365: ScriptedD365) -> ODataClient:
        server = ScriptedServer(d365).start()
        servers.append(server)
        policy = RetryPolicy(max_throttle_attempts=1, total_timeout=10, backoff_base=0.01, backoff_max=0.02)
        transport = D365Transport(server.url, FixedToken(), policy=policy)
        transports.append(transport)
        return ODataClient(transport)

    yield start
    for transport in transports:
        transport.close()
    for server in servers:
        server.stop()


def records(count: int) -> list[SourceRecord]:
    return [SourceRecord(n, {"Id": f"K{n}", "V": "x"}, from_text=False) for n in range(1, count + 1)]


def test_a_changeset_throttled_inside_a_200_answer_is_sent_again_after_retry_after(serve: Serve) -> None:
    d365 = ScriptedD365([lambda i: "throttle" if i == 0 else "ok", ok])
    sleeps: list[float] = []
    writer = EntityWriter(serve(d365), MODEL, EntityTarget("Things", changeset_size=2), sleep=sleeps.append)
    result = writer.write(records(5))
    assert [r.outcome for r in result.records] == [RecordOutcome.CREATED] * 5, result.to_dict()
    assert sleeps == [3.0]  # the changeset's own Retry-After
    assert [[len(c) for c in batch] for batch in d365.write_batches] == [[2, 2, 1], [2]]
    assert result.stats["resent"] == 2


def test_throttling_that_outlasts_every_resend_leaves_the_records_not_attempted(serve: Serve) -> None:
    d365 = ScriptedD365([Reply.odata_error(429, "Too many requests", headers={"Retry-After": "0"})])
    sleeps: list[float] = []
    writer = EntityWriter(serve(d365), MODEL, EntityTarget("Things"), sleep=sleeps.append)
    result = writer.write(records(3))
    assert [r.outcome for r in result.records] == [RecordOutcome.NOT_ATTEMPTED] * 3
    assert result.retry_later  # nothing written: the file is deferred, the HTTP caller gets 503
    assert f"still throttled the writes after {MAX_RESENDS} re-sends" in (result.unavailable or "")
    assert len(d365.write_batches) == 2 * (MAX_RESENDS + 1)  # each send: the transport's 2 attempts


def test_changesets_left_unanswered_go_again_at_once(serve: Serve) -> None:
    # D365 ignoring continue-on-error answers the first changeset only (UNCONFIRMED, ref §1.6)
    d365 = ScriptedD365([lambda i: "ok" if i == 0 else "omit", ok])
    sleeps: list[float] = []
    writer = EntityWriter(serve(d365), MODEL, EntityTarget("Things", changeset_size=2), sleep=sleeps.append)
    result = writer.write(records(6))
    assert [r.outcome for r in result.records] == [RecordOutcome.CREATED] * 6
    assert sleeps == []  # nothing to wait for: the parts were not executed
    assert [[len(c) for c in batch] for batch in d365.write_batches] == [[2, 2, 2], [2, 2]]


def test_a_batch_refused_as_a_whole_is_split_until_the_refused_record_is_alone(serve: Serve) -> None:
    refused = Reply.odata_error(400, "The batch was refused", "Field 'V' of K3 is not valid.")
    d365 = ScriptedD365([refused, ok, refused, refused, ok])
    writer = EntityWriter(
        serve(d365), MODEL, EntityTarget("Things", changeset="record"), sleep=lambda s: None
    )
    result = writer.write(records(4))
    # [1,2,3,4] refused -> [1,2] ok, [3,4] refused -> [3] refused (alone: it fails), [4] ok
    assert [r.outcome for r in result.records] == [
        RecordOutcome.CREATED,
        RecordOutcome.CREATED,
        RecordOutcome.FAILED,
        RecordOutcome.CREATED,
    ]
    assert "HTTP 400: Field 'V' of K3 is not valid." in (result.records[2].error or "")
    assert [sum(len(c) for c in batch) for batch in d365.write_batches] == [4, 2, 2, 1, 1]


def test_keys_that_are_not_text_are_sent_as_their_own_literals(serve: Serve) -> None:
    model = EntityModel(
        "Leaves",
        "Leave",
        ("WorkerId", "LeaveDate"),
        {
            "WorkerId": PropertyModel("WorkerId", "Edm.Guid", False),
            "LeaveDate": PropertyModel("LeaveDate", "Edm.DateTimeOffset", False),
        },
    )
    d365 = ScriptedD365([ok])
    writer = EntityWriter(serve(d365), model, EntityTarget("Leaves"), sleep=lambda s: None)
    record = {"WorkerId": "6F0B3C41-5D1E-4B7A-9C55-0D365F0E0001", "LeaveDate": "2019-10-04"}
    result = writer.write([SourceRecord(1, record, from_text=True)])
    assert result.records[0].outcome is RecordOutcome.CREATED
    assert [url.split("/data/", 1)[1] for url in d365.read_urls] == [
        "Leaves(WorkerId=6f0b3c41-5d1e-4b7a-9c55-0d365f0e0001,LeaveDate=2019-10-04T12:00:00Z)?cross-company=true"
    ]


def test_a_write_that_may_have_landed_says_so_when_reading_it_back_fails(serve: Serve) -> None:
    down = Reply.odata_error(503, "Service unavailable")
    d365 = ScriptedD365([Reply(drop="before_response")], reads=[None] + [down] * 20)
    writer = EntityWriter(serve(d365), MODEL, EntityTarget("Things"), sleep=lambda s: None)
    result = writer.write(records(1))
    only = result.records[0]
    assert only.outcome is RecordOutcome.FAILED
    assert "outcome unknown: the write may have landed" in (only.error or "")
    assert "D365 is unavailable (reading the current records)" in (only.error or "")
    assert result.retry_later  # nothing known to be written: safe to run again (read by key first)


def test_a_stale_model_is_served_while_another_caller_refreshes_it() -> None:
    document = build_metadata(build_catalog(), ActionRegistry())
    answers = [Reply(200, {"Content-Type": "application/xml"}, document)]
    answers.append(Reply(200, {"Content-Type": "application/xml"}, document, delay=1.5))  # a slow refresh
    with ScriptedServer(answers) as server:
        transport = D365Transport(server.url, FixedToken())
        now = [0.0]
        cache = MetadataCache(ttl_seconds=60, clock=lambda: now[0])
        first = cache.entity(transport, "CustomersV3")
        now[0] = 61  # expired
        refresher = threading.Thread(target=cache.entity, args=(transport, "CustomersV3"))
        refresher.start()
        while len(server.requests) < 2:
            time.sleep(0.01)
        started = time.monotonic()
        assert cache.entity(transport, "CustomersV3") is first  # the stale model, at once: no lock held
        assert time.monotonic() - started < 0.5
        assert refresher.is_alive()
        refresher.join()
        assert cache.entity(transport, "CustomersV3") is not first  # the refreshed one
        assert cache.downloads == 2
        transport.close()
