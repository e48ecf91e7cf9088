"""shared.logs: the line format, redaction, correlation scopes (nesting, threads, asyncio) and the factory."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.logs import (
    EVENT_ATTRIBUTE,
    annotate,
    carry_log_context,
    current_log_context,
    format_fields,
    install,
    log_context,
    log_crash,
    log_event,
)

log = logging.getLogger("tests.unit.logs")


class Lines:
    """This module's records captured during the test."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog

    def __getitem__(self, index: int) -> logging.LogRecord:
        return self.records()[index]

    def __iter__(self) -> Iterator[logging.LogRecord]:
        return iter(self.records())

    def records(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if r.name == log.name]


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Lines:
    caplog.set_level(logging.DEBUG, logger="tests.unit.logs")
    return Lines(caplog)


def messages(records: Lines | list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.name == log.name]


def test_an_event_is_name_text_and_fields(lines: Lines) -> None:
    log_event(log, "IMPORT_JOB_STUCK", logging.WARNING, "D365 has not finished", job_id="J1", minutes=45)
    [record] = lines.records()
    assert record.getMessage() == "IMPORT_JOB_STUCK: D365 has not finished | job_id=J1 minutes=45"
    assert record.levelno == logging.WARNING
    assert getattr(record, EVENT_ATTRIBUTE) == "IMPORT_JOB_STUCK"
    assert (record.app_job_id, record.app_minutes) == ("J1", "45")  # type: ignore[attr-defined]
    assert record.funcName == "test_an_event_is_name_text_and_fields"  # the caller, not log_event


def test_values_are_quoted_only_when_a_query_would_split_them() -> None:
    text = format_fields(
        {
            "file": "inbound/my file.csv",
            "route": "groups",
            "note": 'say "hi"',
            "pipe": "a|b",
            "eq": "a=b",
            "empty": "",
            "missing": None,
            "flag": True,
            "ratio": 0.5,
            "odd key!": 1,
        }
    )
    assert text == (
        'file="inbound/my file.csv" route=groups note="say \\"hi\\"" pipe="a|b" eq="a=b" empty="" '
        "flag=true ratio=0.5 odd_key=1"
    )


def test_long_values_are_cut() -> None:
    assert len(format_fields({"x": "y" * 5000})) < 320


def test_secrets_never_reach_the_line_or_the_attributes(lines: Lines) -> None:
    sas = "https://acct.blob.core.windows.net/c/p.zip?sv=2022-11-02&se=2030-01-01&sig=S3CR3TSIG"
    with log_context(file=sas):
        log_event(
            log, "EXPORT_ACK_FAILED", logging.ERROR, "refused: Authorization: Bearer abc.def.ghi", url=sas
        )
        log.info("downloading %s", "thing")
    text = " ".join(messages(lines)) + " ".join(str(vars(r)) for r in lines)
    assert "S3CR3TSIG" not in text
    assert "abc.def.ghi" not in text
    assert "sig=***" in messages(lines)[0]
    assert "sv=2022-11-02" in messages(lines)[0]  # the rest of the URL stays useful


def test_plain_lines_inside_a_scope_carry_its_ids(lines: Lines) -> None:
    log.info("outside")
    with log_context(event_id="E1", file="in/100%.csv"):
        log.info("claimed %s after %d tries", "it", 2)
        log.info("no args, 100% plain")
        log.info(ValueError("not a string"))
    log.info("outside again")
    assert messages(lines) == [
        "outside",
        "claimed it after 2 tries | event_id=E1 file=in/100%.csv",
        "no args, 100% plain | event_id=E1 file=in/100%.csv",
        "not a string | event_id=E1 file=in/100%.csv",
        "outside again",
    ]
    assert lines[1].app_event_id == "E1"  # type: ignore[attr-defined]
    assert not hasattr(lines[0], "app_event_id")


def test_an_event_inside_a_scope_lists_its_fields_then_the_scope_ids_once(
    lines: Lines,
) -> None:
    with log_context(execution_id="X1", route="groups"):
        log_event(log, "IMPORT_FAILED", logging.ERROR, "refused", route="other", reason="bad")
    [line] = messages(lines)
    assert line == "IMPORT_FAILED: refused | route=other reason=bad execution_id=X1"
    assert lines[0].app_route == "other"  # type: ignore[attr-defined]


def test_scopes_nest_and_restore(lines: Lines) -> None:
    assert current_log_context() == {}
    with log_context(activity="customers", execution_id="outer"):
        with log_context(execution_id="inner", message_id="M1"):
            assert current_log_context() == {
                "activity": "customers",
                "execution_id": "inner",
                "message_id": "M1",
            }
            annotate(file="x.zip")
            log.info("deep")
        assert current_log_context() == {"activity": "customers", "execution_id": "outer"}
        annotate(route="r")
        log.info("shallow")
    assert current_log_context() == {}
    annotate(route="ignored")  # outside every scope: nowhere to write
    assert current_log_context() == {}
    assert messages(lines) == [
        "deep | activity=customers execution_id=inner message_id=M1 file=x.zip",
        "shallow | activity=customers execution_id=outer route=r",
    ]


def test_a_scope_is_restored_when_the_work_raises() -> None:
    with pytest.raises(RuntimeError), log_context(event_id="E"):
        raise RuntimeError("boom")
    assert current_log_context() == {}


def test_threads_do_not_share_scopes(lines: Lines) -> None:
    ready, go = threading.Barrier(2), threading.Event()

    def work(name: str) -> None:
        with log_context(event_id=name):
            ready.wait()
            go.wait(5)
            log.info("working")

    threads = [threading.Thread(target=work, args=(n,)) for n in ("A", "B")]
    with log_context(event_id="main"):
        for thread in threads:
            thread.start()
        go.set()
        for thread in threads:
            thread.join(5)
        log.info("main")
    assert sorted(messages(lines)) == [
        "main | event_id=main",
        "working | event_id=A",
        "working | event_id=B",
    ]


def test_a_thread_pool_gets_the_scope_only_when_carried(lines: Lines) -> None:
    with ThreadPoolExecutor(2) as pool, log_context(message_id="M9"):
        pool.submit(log.info, "bare").result()
        pool.submit(carry_log_context(log.info), "carried").result()
    assert sorted(messages(lines)) == ["bare", "carried | message_id=M9"]


def test_asyncio_tasks_keep_their_own_scopes(lines: Lines) -> None:
    async def work(name: str, delay: float) -> None:
        with log_context(event_id=name):
            await asyncio.sleep(delay)
            log.info("after sleep")
            annotate(step="2")
            await asyncio.sleep(delay)
            log.info("later")

    async def main() -> None:
        await asyncio.gather(work("A", 0.02), work("B", 0.01))
        log.info("done")

    asyncio.run(main())
    assert sorted(messages(lines)) == [
        "after sleep | event_id=A",
        "after sleep | event_id=B",
        "done",
        "later | event_id=A step=2",
        "later | event_id=B step=2",
    ]


def test_install_is_idempotent(lines: Lines) -> None:
    install()
    install()
    with log_context(event_id="once"):
        log.info("line")
    assert messages(lines) == ["line | event_id=once"]


def test_a_disabled_level_costs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tests.unit.logs")
    log_event(log, "EVENT_PROCESSED", logging.INFO, "quiet")
    assert messages(caplog.records) == []


def fields_of(message: str) -> str:
    """What docs/observability.md's KQL ``extract(@"\\| (.*)", 1, message)`` reads: after the first ``|``."""
    found = re.search(r"\| (.*)", message)
    return "" if found is None else found.group(1)


def field(message: str, key: str) -> str | None:
    found = re.search(rf'\b{key}=("(?:[^"\\]|\\.)*"|\S+)', fields_of(message))
    return None if found is None else found.group(1).strip('"')


D365_ERROR = "HTTP 400: bad row | url=https://d365.example/data/X | request_id=FROM-THE-TEXT"


def test_a_bar_in_an_events_text_cannot_pass_for_the_field_separator(lines: Lines) -> None:
    with log_context(file="inbound/a b.csv", note="a | b"):
        log_event(log, "IMPORT_FAILED", logging.ERROR, f"refused: {D365_ERROR}", request_id="R1")
    [line] = messages(lines)
    assert line.startswith("IMPORT_FAILED: refused: HTTP 400: bad row ¦ url=https://d365.example/data/X ¦ ")
    assert fields_of(line) == 'request_id=R1 file="inbound/a b.csv" note="a | b"'  # a quoted value keeps it
    assert (field(line, "request_id"), field(line, "url")) == ("R1", None)


def test_a_bar_in_a_plain_lines_arguments_cannot_either(lines: Lines) -> None:
    with log_context(job_id="J1"):
        log.warning("send failed: %s", D365_ERROR)
        log.warning("literal | bar, %d%% done", 50)
    first, second = messages(lines)
    assert first == f"send failed: {D365_ERROR.replace('|', '¦')} | job_id=J1"
    assert (field(first, "request_id"), field(first, "job_id")) == (None, "J1")
    assert second == "literal ¦ bar, 50% done | job_id=J1"
    assert lines[0].args == ()  # formatted once, here; handlers format it again harmlessly


def test_a_bad_format_still_reaches_the_handler_with_the_ids() -> None:
    with log_context(job_id="J1"):
        record = logging.getLogRecordFactory()("x", logging.INFO, __file__, 1, "%d | items", ("nan",), None)
    assert record.msg == "%d ¦ items | job_id=J1"  # logging reports the bad pair when it formats


def test_a_crash_is_logged_inside_the_scope_with_its_ids_then_raised(lines: Lines) -> None:
    def work() -> None:
        with log_context(file="inbound/a.csv", route="groups"), log_crash(log, "import"):
            annotate(job_id="J7")
            raise KeyError("https://a.blob.core.windows.net/c/x?sv=1&sig=S3CR3T | no such column")

    with pytest.raises(KeyError):
        work()
    [record] = lines.records()
    assert record.levelno == logging.ERROR
    assert getattr(record, EVENT_ATTRIBUTE) == "PIPELINE_CRASHED"
    message = record.getMessage()
    assert message.startswith("PIPELINE_CRASHED: import stopped on an unexpected KeyError: ")
    assert "S3CR3T" not in message
    assert fields_of(message) == "pipeline=import error=KeyError file=inbound/a.csv route=groups job_id=J7"


def test_expected_exceptions_and_success_log_nothing(lines: Lines) -> None:
    with log_crash(log, "import", expected=(LookupError,)):
        pass
    with pytest.raises(IndexError), log_crash(log, "import", expected=(LookupError,)):
        raise IndexError("busy")
    assert messages(lines) == []
