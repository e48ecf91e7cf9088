"""Every named log event the app emits is documented in docs/observability.md, and every documented one is
emitted: alert rules key on these names, so a rename must show up in the docs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = [
    ROOT / "function_app.py",
    *sorted((ROOT / "shared").rglob("*.py")),
    *(ROOT / "blueprints").rglob("*.py"),
]
DOC = ROOT / "docs" / "observability.md"
NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
#: ``IMPORT_{outcome}``: intake's events, one per ``ImportReport.outcome`` the docs list.
FAMILY_MEMBERS = {"IMPORT_": 5}


def emitted() -> tuple[dict[str, list[str]], set[str]]:
    """Names passed to ``log_event`` (with where), and the prefixes of names built by f-strings."""
    names: dict[str, list[str]] = {}
    families: set[str] = set()
    for path in RUNTIME:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "log_event"):
                continue
            assert len(node.args) >= 4, f"{path}:{node.lineno}: log_event(logger, NAME, level, text, ...)"
            argument = node.args[1]
            if isinstance(argument, ast.JoinedStr):
                first = argument.values[0]
                assert isinstance(first, ast.Constant), (
                    f"{path}:{node.lineno}: name must start with a constant"
                )
                families.add(str(first.value))
                continue
            found = [
                n.value
                for n in ast.walk(argument)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)
            ]
            assert found, f"{path}:{node.lineno}: the event name must be a literal"
            for name in found:
                assert NAME.fullmatch(name), (
                    f"{path}:{node.lineno}: {name!r} is not an UPPER_SNAKE event name"
                )
                names.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return names, families


def documented() -> dict[str, str]:
    """``#### `NAME` `` headings of docs/observability.md, each with its section text."""
    sections = re.split(r"^#### `([A-Z0-9_]+)`\s*$", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return dict(zip(sections[1::2], sections[2::2], strict=True))


def test_the_scan_finds_the_alert_events() -> None:
    names, families = emitted()
    for name in ("IMPORT_JOB_STUCK", "EVENT_POISONED", "D365_THROTTLED", "EXPORT_ACK_FAILED"):
        assert name in names
    assert "IMPORT_" in families


def test_every_emitted_event_is_documented() -> None:
    names, families = emitted()
    docs = documented()
    missing = {name: where for name, where in names.items() if name not in docs}
    assert not missing, f"document these in docs/observability.md: {missing}"
    for prefix in families:
        members = [name for name in docs if name.startswith(prefix) and name not in names]
        assert len(members) >= FAMILY_MEMBERS.get(prefix, 1), f"document the {prefix}* events"


def test_every_documented_event_is_emitted() -> None:
    names, families = emitted()
    stale = [name for name in documented() if name not in names and not name.startswith(tuple(families))]
    assert not stale, f"documented but never logged: {stale}"


def test_every_event_says_level_fields_meaning_and_what_to_do() -> None:
    for name, text in documented().items():
        for part in ("Level:", "Fields:", "Meaning:", "What to do:"):
            assert part in text, f"{name}: no {part!r}"


def test_every_alert_worthy_event_has_an_alert_query() -> None:
    alerts = DOC.read_text(encoding="utf-8").split("## Alert rules", 1)[1]
    for name in ("IMPORT_JOB_STUCK", "EVENT_POISONED", "D365_THROTTLED", "EXPORT_ACK_FAILED", "IMPORT_FAILED",
                 "IMPORT_JOB_FAILED", "DMF_EXPORT_FAILED", "D365_THROTTLING_SUSTAINED",
                 "PIPELINE_CRASHED"):  # fmt: skip
        assert f'"{name}:"' in alerts, f"no alert query for {name}"


def test_queries_read_fields_after_the_first_bar_not_from_the_whole_message() -> None:
    """A D365 error in the text holds ``url=`` and ``request_id=``: a query must not take them for fields."""
    queries = re.findall(r"```kusto\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(queries) >= 10
    for query in queries:
        field_reads = re.findall(r"extract\(@['\"]\\b\w+=.*?, 1, (\w+)\)", query)
        field_reads += re.findall(r"(\w+) contains \"(?:status|outcome)=", query)  # a search may use message
        assert all(source == "fields" for source in field_reads if source), query
        if "fields" in query.replace("extend fields", ""):
            assert 'extend fields = extract(@"\\| (.*)", 1, message)' in query, query
