"""Processing stored events on real Azurite (+ the emulator for enrichment): exactly once under concurrency,
ControlNumber order, retries with backoff, the poison area and replay, and the built-in handlers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from localstack.processes import ROOT
from shared.context import AppContext
from shared.events.handler_api import HandlerContext, HandlerResult, PermanentHandlerError
from shared.events.handlers import HandlerRegistry
from shared.events.layout import raw_path
from shared.events.model import BusinessEvent, parse_event
from shared.pipelines.business_events import (
    ProcessOutcome,
    process_stored_event,
    receive_events,
    replay_poisoned,
    retry_due_events,
)
from tests.support.business_events import (
    blob_names,
    body_of,
    events_context,
    events_env,
    make_event,
    read_blob,
    read_json,
)
from tests.support.scripted_server import Reply, ScriptedServer
from tests.support.stack import AzuriteInfo, EmulatorInfo


class Recorder:
    """A Python-registered handler that records its calls and fails while told to."""

    def __init__(self, failures: int = 0, permanent: bool = False) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.failures = failures
        self.permanent = permanent
        self.lock = threading.Lock()

    def __call__(self, event: BusinessEvent, context: HandlerContext) -> HandlerResult:
        with self.lock:
            self.calls.append((event.event_id, context.sequence.out_of_order))
            if self.failures:
                self.failures -= 1
                error = PermanentHandlerError if self.permanent else RuntimeError
                raise error(f"downstream refused {event.event_id} (Authorization: Bearer s3cr3t-t0ken)")
        return HandlerResult("recorded")


@pytest.fixture
def env(emulator: EmulatorInfo, azurite: AzuriteInfo) -> dict[str, str]:
    return events_env(
        emulator, azurite, BUSINESS_EVENTS_MAX_ATTEMPTS="3", BUSINESS_EVENTS_RETRY_BACKOFF_SECONDS="60"
    )


@pytest.fixture
def context(env: dict[str, str]) -> Iterator[AppContext]:
    with events_context(env) as built:
        yield built


def raw_blob(env: dict[str, str], event: dict[str, Any]) -> str:
    return f"{env['BUSINESS_EVENTS_CONTAINER']}/{raw_path(parse_event(event, b''))}"


def receive(context: AppContext, env: dict[str, str], event: dict[str, Any]) -> str:
    result = receive_events(context, body_of(event), {"Content-Type": "application/json"})
    assert result.body["status"] == "stored", result.body
    return raw_blob(env, event)


def registry_with(*handlers: tuple[str, Any, bool]) -> HandlerRegistry:
    registry = HandlerRegistry()
    for name, handler, skip in handlers:
        registry.register("*", handler, name=name, skip_out_of_order=skip)
    return registry


def test_concurrent_triggers_process_an_event_once(
    context: AppContext, env: dict[str, str], azurite: AzuriteInfo
) -> None:
    recorder = Recorder()
    registry = registry_with(("record", recorder, False))
    event = make_event()
    blob = receive(context, env, event)
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda _: process_stored_event(context, blob, registry=registry), range(10)))
    outcomes = sorted(str(r.outcome) for r in results)
    assert outcomes.count("processed") == 1, outcomes
    assert set(outcomes) <= {"processed", "already_processed", "busy"}
    assert len(recorder.calls) == 1
    state = read_json(
        azurite, env["BUSINESS_EVENTS_STATE_CONTAINER"], f"business-events/{event['EventId']}.json"
    )
    assert (state["kind"], state["outcome"], state["subject"]) == ("business-event", "succeeded", blob)
    assert state["details"]["attempts"] == 1
    assert state["details"]["completed_handlers"] == ["record"]
    again = process_stored_event(context, blob, registry=registry)
    assert again.outcome is ProcessOutcome.ALREADY_PROCESSED
    assert len(recorder.calls) == 1
    # a poison record left behind (a crash between writing it and the status record) is only tidied up
    poison = env["BUSINESS_EVENTS_POISON_CONTAINER"]
    context.store.blob(poison, f"{event['EventId']}.json").upload_blob(b"{}", metadata={"blob": blob})
    replayed = replay_poisoned(context, registry=registry)
    assert [r.outcome for r in replayed.results] == [ProcessOutcome.ALREADY_PROCESSED]
    assert blob_names(azurite, poison) == []
    assert len(recorder.calls) == 1


def test_control_numbers_mark_out_of_order_events(
    context: AppContext, env: dict[str, str], azurite: AzuriteInfo
) -> None:
    recorder, stale_averse = Recorder(), Recorder()
    registry = registry_with(("always", recorder, False), ("in-order-only", stale_averse, True))
    events = [make_event(ControlNumber=n) for n in (100, 300, 200)]
    other_company = make_event(ControlNumber=150, BusinessEventLegalEntity="DEMF")
    results = [
        process_stored_event(context, receive(context, env, e), registry=registry)
        for e in [*events, other_company]
    ]
    assert [r.out_of_order for r in results] == [False, False, True, False]
    assert [e for e, _ in stale_averse.calls] == [
        events[0]["EventId"],
        events[1]["EventId"],
        other_company["EventId"],
    ]
    assert [stale for _, stale in recorder.calls] == [False, False, True, False]
    state_container = env["BUSINESS_EVENTS_STATE_CONTAINER"]
    mark = read_json(azurite, state_container, "control-numbers/SalesInvoicePostedBusinessEvent/usmf.json")
    assert (mark["control_number"], mark["event_id"]) == (300, events[1]["EventId"])
    state = read_json(azurite, state_container, f"business-events/{events[2]['EventId']}.json")
    assert state["details"]["sequence"] == {
        "control_number": 200,
        "high_water_mark": 300,
        "out_of_order": True,
    }
    assert "in-order-only: skipped (out of order)" in state["details"]["summaries"]
    # the newest event replayed equals the mark: not out of order
    replayed = replay_poisoned(context, events[1]["EventId"], registry=registry, force=True)
    assert [r.out_of_order for r in replayed.results] == [False]


def test_failures_back_off_then_poison_then_replay(
    context: AppContext, env: dict[str, str], azurite: AzuriteInfo
) -> None:
    first, flaky = Recorder(), Recorder(failures=3)
    registry = registry_with(("first", first, False), ("flaky", flaky, False))
    event = make_event()
    blob = receive(context, env, event)
    start = datetime.now(UTC)
    result = process_stored_event(context, blob, registry=registry, clock=lambda: start)
    assert (result.outcome, result.attempts) == (ProcessOutcome.RETRY_SCHEDULED, 1)
    assert result.next_attempt_at == (start + timedelta(seconds=60)).isoformat().replace("+00:00", "Z")
    state_container = env["BUSINESS_EVENTS_STATE_CONTAINER"]
    assert blob_names(azurite, state_container, "business-events-retry/") == [
        f"business-events-retry/{event['EventId']}.json"
    ]
    # not due yet: neither the sweep nor a repeated trigger runs it early
    assert retry_due_events(context, registry=registry, clock=lambda: start + timedelta(seconds=59)) == []
    early = process_stored_event(context, blob, registry=registry, clock=lambda: start + timedelta(seconds=1))
    assert early.outcome is ProcessOutcome.RETRY_SCHEDULED
    second = retry_due_events(context, registry=registry, clock=lambda: start + timedelta(seconds=61))
    assert [(r.outcome, r.attempts) for r in second] == [(ProcessOutcome.RETRY_SCHEDULED, 2)]
    assert second[0].next_attempt_at == (start + timedelta(seconds=61 + 120)).isoformat().replace(
        "+00:00", "Z"
    )
    third = retry_due_events(context, registry=registry, clock=lambda: start + timedelta(hours=1))
    assert [(r.outcome, r.attempts) for r in third] == [(ProcessOutcome.POISONED, 3)]
    assert len(first.calls) == 1  # a handler that succeeded is not run again on retries
    assert len(flaky.calls) == 3
    assert blob_names(azurite, state_container, "business-events-retry/") == []
    poison = read_json(azurite, env["BUSINESS_EVENTS_POISON_CONTAINER"], f"{event['EventId']}.json")
    assert (poison["blob"], poison["attempts"], poison["permanent"]) == (blob, 3, False)
    assert "RuntimeError: downstream refused" in poison["error"]
    assert "s3cr3t-t0ken" not in json.dumps(poison)  # redacted like every error text
    assert [e["attempt"] for e in poison["errors"]] == [1, 2, 3]
    state = read_json(azurite, state_container, f"business-events/{event['EventId']}.json")
    assert state["outcome"] == "failed"
    assert state["message"].startswith("poisoned after 3 attempt(s)")
    # poisoned events stay put until an operator replays them
    assert process_stored_event(context, blob, registry=registry).outcome is ProcessOutcome.POISONED
    assert len(flaky.calls) == 3
    report = replay_poisoned(context, event["EventId"].lower(), registry=registry)
    assert [(r.outcome, r.attempts) for r in report.results] == [(ProcessOutcome.PROCESSED, 1)]
    assert len(first.calls) == 1
    assert len(flaky.calls) == 4
    assert blob_names(azurite, env["BUSINESS_EVENTS_POISON_CONTAINER"]) == []
    state = read_json(azurite, state_container, f"business-events/{event['EventId']}.json")
    assert state["outcome"] == "succeeded"
    assert [h["outcome"] for h in state["history"]].count("failed") == 1
    assert replay_poisoned(context, event["EventId"], registry=registry).not_found == [event["EventId"]]


def test_permanent_errors_poison_at_once_and_replay_all(
    context: AppContext, env: dict[str, str], azurite: AzuriteInfo
) -> None:
    refusing = Recorder(failures=2, permanent=True)
    registry = registry_with(("refusing", refusing, False))
    events = [make_event(), make_event()]
    for event in events:
        result = process_stored_event(context, receive(context, env, event), registry=registry)
        assert (result.outcome, result.attempts) == (ProcessOutcome.POISONED, 1)
    poison = env["BUSINESS_EVENTS_POISON_CONTAINER"]
    assert len(blob_names(azurite, poison)) == 2
    assert read_json(azurite, poison, f"{events[0]['EventId']}.json")["permanent"] is True
    partial = replay_poisoned(context, registry=registry, limit=1)
    assert (len(partial.results), partial.remaining) == (1, True)
    assert partial.continue_after == min(f"{e['EventId']}.json" for e in events)
    rest = replay_poisoned(context, registry=registry, after=partial.continue_after)
    assert ([str(r.outcome) for r in rest.results], rest.remaining) == (["processed"], False)
    assert blob_names(azurite, poison) == []


def test_a_blob_that_is_not_an_event_is_poisoned_and_a_missing_one_reported(
    context: AppContext, env: dict[str, str], azurite: AzuriteInfo
) -> None:
    raw = env["BUSINESS_EVENTS_CONTAINER"]
    context.store.create_if_absent(raw, "stray/readme.txt", b"not an event")
    result = process_stored_event(context, f"{raw}/stray/readme.txt")
    assert result.outcome is ProcessOutcome.POISONED
    record = read_json(azurite, env["BUSINESS_EVENTS_POISON_CONTAINER"], "_unreadable/stray/readme.txt")
    assert (record["blob"], record["error"]) == (f"{raw}/stray/readme.txt", "the stored blob is not JSON")
    assert process_stored_event(context, f"{raw}/nothing.json").outcome is ProcessOutcome.MISSING


def first_order(context: AppContext) -> tuple[str, int]:
    orders = context.odata.list("SalesOrderHeadersV2", cross_company=True, top=50)
    for order in orders:
        lines = list(
            context.odata.list(
                "SalesOrderLines",
                filter=f"dataAreaId eq 'usmf' and SalesOrderNumber eq '{order['SalesOrderNumber']}'",
                cross_company=True,
            )
        )
        if order["dataAreaId"] == "usmf" and lines:
            return str(order["SalesOrderNumber"]), len(lines)
    raise AssertionError("the emulator's seed has no usmf order with lines")


def test_enrich_reads_the_record_and_its_lines_through_odata(
    clean_emulator: EmulatorInfo, azurite: AzuriteInfo
) -> None:
    handlers = {
        "SalesInvoicePostedBusinessEvent": [
            {
                "type": "enrich",
                "entity_set": "SalesOrderHeadersV2",
                "key": {"dataAreaId": "{legal_entity}", "SalesOrderNumber": "{SalesOrderId}"},
                "select": ["SalesOrderNumber", "OrderingCustomerAccountNumber", "dataAreaId"],
                "related": [
                    {
                        "name": "lines",
                        "entity_set": "SalesOrderLines",
                        "match": {"dataAreaId": "{legal_entity}", "SalesOrderNumber": "{SalesOrderId}"},
                        "select": ["ItemNumber", "LineAmount", "SalesOrderNumber"],
                    }
                ],
            }
        ]
    }
    env = events_env(clean_emulator, azurite, BUSINESS_EVENTS_HANDLERS=json.dumps(handlers))
    with events_context(env) as context:
        number, line_count = first_order(context)
        event = make_event(SalesOrderId=number, InvoiceId=f"CIV-{number}")
        result = process_stored_event(context, receive(context, env, event))
        missing = make_event(SalesOrderId="NO-SUCH-ORDER")
        not_found = process_stored_event(context, receive(context, env, missing))
    assert result.outcome is ProcessOutcome.PROCESSED, result
    name = f"SalesInvoicePostedBusinessEvent/usmf/2022/12/30/{event['EventId']}.json"
    assert result.outputs == (f"{env['BUSINESS_EVENTS_ENRICHED_CONTAINER']}/{name}",)
    document = read_json(azurite, env["BUSINESS_EVENTS_ENRICHED_CONTAINER"], name)
    assert document["record"]["SalesOrderNumber"] == number
    assert document["source"] == {
        "entity_set": "SalesOrderHeadersV2",
        "key": {"dataAreaId": "usmf", "SalesOrderNumber": number},
    }
    assert len(document["related"]["lines"]) == line_count
    assert {line["SalesOrderNumber"] for line in document["related"]["lines"]} == {number}
    assert document["event"]["eventTime"] == "2022-12-30T13:51:15.294274Z"
    assert document["event"]["fields"]["EventTime"] == "2022-12-30T13:51:15Z"
    # a record D365 does not have (yet) is retried, not poisoned at once
    assert not_found.outcome is ProcessOutcome.RETRY_SCHEDULED
    assert "D365NotFoundError" in not_found.message


def test_forward_http_sends_the_original_bytes_with_an_idempotency_key(
    emulator: EmulatorInfo, azurite: AzuriteInfo
) -> None:
    with ScriptedServer([Reply(503), Reply(202), Reply(400, body=b"no")]) as target:
        handlers = {
            "*": {
                "type": "forward_http",
                "url_setting": "ERP_EVENTS_URL",
                "headers": {"X-Source": "d365"},
                "secret_headers": {"X-Api-Key": "ERP_EVENTS_KEY"},
            }
        }
        env = events_env(
            emulator,
            azurite,
            BUSINESS_EVENTS_HANDLERS=json.dumps(handlers),
            ERP_EVENTS_URL=f"{target.url}/hooks/d365?code=hook-secret",
            ERP_EVENTS_KEY="erp-key",
        )
        with events_context(env) as context:
            event = make_event()
            ok = process_stored_event(context, receive(context, env, event))
            refused = process_stored_event(context, receive(context, env, make_event()))
    assert ok.outcome is ProcessOutcome.PROCESSED, ok
    assert len(target.requests) == 3  # 503 retried by the policy inside one attempt, then a 202
    delivered = target.requests[1]
    assert delivered.path == "/hooks/d365?code=hook-secret"
    assert delivered.body == body_of(event)
    assert delivered.headers["idempotency-key"] == event["EventId"]
    assert (delivered.headers["x-source"], delivered.headers["x-api-key"]) == ("d365", "erp-key")
    assert refused.outcome is ProcessOutcome.POISONED  # a 400 cannot get better by retrying
    assert "hook-secret" not in refused.message


def test_forward_blob_writes_once(emulator: EmulatorInfo, azurite: AzuriteInfo) -> None:
    target = "forwarded-" + events_env(emulator, azurite)["BUSINESS_EVENTS_CONTAINER"].split("-")[1]
    handlers = {
        "*": {
            "type": "forward_blob",
            "container": target,
            "path": "{legal_entity}/{event_id}.json",
            "body": "document",
        }
    }
    env = events_env(emulator, azurite, BUSINESS_EVENTS_HANDLERS=json.dumps(handlers))
    with events_context(env) as context:
        event = make_event()
        first = process_stored_event(context, receive(context, env, event))
        again = replay_poisoned(context, event["EventId"], force=True)
    assert first.outputs == (f"{target}/usmf/{event['EventId']}.json",)
    assert [r.outcome for r in again.results] == [ProcessOutcome.PROCESSED]
    state = read_json(
        azurite, env["BUSINESS_EVENTS_STATE_CONTAINER"], f"business-events/{event['EventId']}.json"
    )
    assert state["details"]["summaries"][-1].endswith(f"usmf/{event['EventId']}.json already there")
    assert blob_names(azurite, target) == [f"usmf/{event['EventId']}.json"]
    stored, metadata = read_blob(azurite, target, f"usmf/{event['EventId']}.json")
    assert json.loads(stored)["eventId"] == event["EventId"]
    assert metadata == {"event_id": event["EventId"]}


def test_operator_command_replays_poisoned_events(
    emulator: EmulatorInfo, azurite: AzuriteInfo, tmp_path: Any
) -> None:
    with ScriptedServer([Reply(400), Reply(400), Reply(204), Reply(204)]) as target:
        handlers = {"*": {"type": "forward_http", "url": f"{target.url}/in"}}
        env = events_env(emulator, azurite, BUSINESS_EVENTS_HANDLERS=json.dumps(handlers))
        events = [make_event(), make_event()]
        with events_context(env) as context:
            for event in events:
                assert (
                    process_stored_event(context, receive(context, env, event)).outcome
                    is ProcessOutcome.POISONED
                )
        settings = tmp_path / "settings.json"
        settings.write_text(json.dumps({"IsEncrypted": False, "Values": {}}))
        done = subprocess.run(
            [sys.executable, "-m", "ops", "replay-events", "--settings", str(settings)],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["replayed"], report["processed"], report["remaining"]) == (2, 2, False)
    assert sorted(r["event_id"] for r in report["results"]) == sorted(e["EventId"] for e in events)
    assert blob_names(azurite, env["BUSINESS_EVENTS_POISON_CONTAINER"]) == []
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "ops",
            "replay-events",
            "--event-id",
            events[0]["EventId"],
            "--settings",
            str(settings),
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 1  # not poisoned any more: nothing to replay without --force
    assert json.loads(again.stdout)["not_found"] == [events[0]["EventId"]]
