"""The operations page: an ``Overview`` as one server-rendered HTML page (inline CSS, no script, no build).

Every value is HTML-escaped; links carry the function key the page was opened with in its URL (``?code=``)
so a click works — never a key that came in a header, which the page must not copy into its HTML — and the
page tells the browser not to send its URL on as a referrer. A part that could not be gathered is shown as
unknown ("?"), never as zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from urllib.parse import quote, urlencode

from shared.pipelines.overview.model import (
    EVENTS,
    EXPORTS,
    IMPORTS,
    EventRow,
    ExportRow,
    Failure,
    InflightJob,
    Overview,
    RouteCounts,
)

__all__ = ["SECURITY_HEADERS", "PageLinks", "render_page"]

#: Headers the page is served with: no script at all, no framing, no referrer (links hold the key).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class PageLinks:
    """URLs on the page: ``page`` is the page's own path (``/api/operations``), ``key`` the function key from
    the page's own URL (``?code=``); ``header_key``: the page was opened with an ``x-functions-key`` header,
    so its links carry no key (the page says so)."""

    page: str
    key: str | None = None
    header_key: bool = False

    def _with(self, target: str, /, **params: str) -> str:
        if self.key:
            params["code"] = self.key
        return f"{target}?{urlencode(params, quote_via=quote)}" if params else target

    def refresh(self) -> str:
        return self._with(self.page)

    def as_json(self) -> str:
        return self._with(self.page, format="json")

    def record(self, path: str) -> str:
        return self._with(f"{self.page}/record", path=path)


_CSS = """
:root{--ink:#1f2933;--muted:#616e7c;--line:#e4e7eb;--bg:#f5f7fa;--card:#fff;--accent:#0b6bcb;
--bad:#c62828;--bad-bg:#fdecea;--warn:#a15c00;--warn-bg:#fff4e0;--ok:#1b7f3b;--ok-bg:#e6f4ea;--info-bg:#e8f0fe}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:var(--ink);background:var(--bg)}
header{background:#102a43;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:20px;font-weight:600}
header .meta{color:#bcccdc;margin-top:4px;font-size:13px}
header a{color:#9fd3ff}
main{padding:20px 32px 40px;max-width:1400px}
h2{font-size:16px;margin:28px 0 10px}
h2 .count{color:var(--muted);font-weight:400}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px}
.card .n{font-size:26px;font-weight:600}
.card .l{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card.bad{border-color:#f5b7b1;background:var(--bad-bg)}.card.bad .n{color:var(--bad)}
.card.warn{border-color:#f7d9a8;background:var(--warn-bg)}.card.warn .n{color:var(--warn)}
table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);
border-radius:8px;overflow:hidden}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:#f0f4f8;font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.03em}
tr:last-child td{border-bottom:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.stuck td{background:var(--warn-bg)}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-size:11px;font-weight:600;
white-space:nowrap;background:#e4e7eb;color:var(--ink);margin-right:4px}
.b-ok{background:var(--ok-bg);color:var(--ok)}.b-bad{background:var(--bad-bg);color:var(--bad)}
.b-warn{background:var(--warn-bg);color:var(--warn)}.b-info{background:var(--info-bg);color:var(--accent)}
.failure{background:var(--card);border:1px solid var(--line);border-left:4px solid var(--bad);
border-radius:8px;padding:10px 14px;margin-bottom:10px}
.failure .head{display:flex;gap:8px;align-items:baseline;flex-wrap:wrap}
.failure .when{color:var(--muted);margin-left:auto;font-size:12px}
.failure .msg{margin:6px 0}
.failure ul{margin:4px 0 4px 18px;padding:0}
.muted{color:var(--muted)}
.empty{color:var(--muted);background:var(--card);border:1px dashed var(--line);border-radius:8px;padding:12px}
.box{border-radius:8px;padding:10px 14px;margin-top:16px}
.box.problems{background:var(--bad-bg);border:1px solid #f5b7b1}
.box.notes{background:#fff;border:1px solid var(--line)}
.box ul{margin:4px 0 0 18px;padding:0}
a{color:var(--accent)}
.scroll{overflow-x:auto}.nw{white-space:nowrap}.nw code{word-break:normal}
.card.unknown{border-style:dashed}.card.unknown .n{color:var(--muted)}
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _when(stamp: str) -> str:
    return _e(stamp.replace("T", " ").replace("+00:00", "Z")) if stamp else "—"


def _age(minutes: float) -> str:
    if minutes < 1:
        return "< 1 min"
    if minutes < 120:
        return f"{minutes:.0f} min"
    hours, rest = divmod(int(minutes), 60)
    return f"{hours} h {rest} min" if hours < 48 else f"{hours // 24} d {hours % 24} h"


_OUTCOME_CLASS = {
    "succeeded": "b-ok", "duplicate": "b-ok", "received": "b-info", "sent": "b-info", "in_progress": "b-info",
    "stuck": "b-warn", "partially_succeeded": "b-warn", "failed": "b-bad", "rejected": "b-bad",
    "poisoned": "b-bad",
}  # fmt: skip


def _badge(text: str, css: str | None = None) -> str:
    return f'<span class="badge {css or _OUTCOME_CLASS.get(text, "")}">{_e(text.replace("_", " "))}</span>'


def _link(href: str, text: str) -> str:
    return f'<a href="{_e(href)}">{_e(text)}</a>'


def _record_link(links: PageLinks, path: str | None, text: str = "record") -> str:
    """A link to the stored status record (``record`` in table rows, where space is short)."""
    return _link(links.record(path), text) if path else '<span class="muted">—</span>'


def _table(head: Iterable[str], rows: list[str], numeric: Iterable[int] = ()) -> str:
    right = set(numeric)
    cells = "".join(f"<th{' class=num' if i in right else ''}>{_e(h)}</th>" for i, h in enumerate(head))
    table = f"<table><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _cards(overview: Overview) -> str:
    totals = overview.totals()
    events = overview.event_counts
    window = f"{overview.window_hours:g} h"
    cards = [
        (IMPORTS, "Waiting in inbound", totals["waiting"], ""),
        (IMPORTS, "In flight", totals["in_flight"], ""),
        (IMPORTS, "Stuck", len(overview.stuck), "warn" if overview.stuck else ""),
        (IMPORTS, f"Archived · {window}", totals["archived"], ""),
        (IMPORTS, f"Failed · {window}", totals["failed"], "bad" if totals["failed"] else ""),
        (EVENTS, f"Events received · {window}", events.get("received", 0), ""),
        (EVENTS, "Events retrying", events.get("retrying", 0), "warn" if events.get("retrying") else ""),
        (EVENTS, "Events poisoned", events.get("poisoned", 0), "bad" if events.get("poisoned") else ""),
    ]
    body = "".join(
        f'<div class="card unknown" data-card="{_e(label)}" title="could not be gathered: see above">'
        f'<div class="n">?</div><div class="l">{_e(label)}</div></div>'
        if part in overview.unknown
        else f'<div class="card {css}" data-card="{_e(label)}"><div class="n">{n}</div>'
        f'<div class="l">{_e(label)}</div></div>'
        for part, label, n, css in cards
    )
    return f'<section class="cards">{body}</section>'


def _routes(routes: list[RouteCounts]) -> str:
    if not routes:
        return '<p class="empty">No import routes configured (IMPORT_ROUTES) and no files seen.</p>'
    rows = [
        f'<tr data-route="{_e(r.route)}"><td><code>{_e(r.route)}</code></td><td class=num>{r.waiting}</td>'
        f"<td class=num>{r.in_flight}</td><td class=num>{r.stuck}</td><td class=num>{r.archived}</td>"
        f"<td class=num>{r.failed}</td></tr>"
        for r in routes
    ]
    head = ("Route", "Waiting in inbound", "In flight", "Stuck", "Archived", "Failed")
    return _table(head, rows, numeric=range(1, 6))


def _inflight(jobs: list[InflightJob], links: PageLinks) -> str:
    if not jobs:
        return '<p class="empty">Nothing in flight: D365 is not working on any import of ours.</p>'
    rows = []
    for job in jobs:
        if job.d365_status:
            live = _badge(job.d365_status, "b-info")
        elif job.d365_error:
            live = f'<span class="muted" title="{_e(job.d365_error)}">could not ask D365</span>'
        else:
            live = '<span class="muted">not asked</span>'
        state = _badge("stuck") if job.stuck else _badge(job.outcome)
        rows.append(
            f'<tr class="{"stuck" if job.stuck else ""}"><td><code>{_e(job.job_id)}</code></td>'
            f"<td><code>{_e(job.route)}</code></td><td>{_e(job.file)}</td><td>{_e(job.target)}</td>"
            f"<td class=nw>{_when(job.sent_at)}</td><td class=num>{_e(_age(job.minutes))}</td>"
            f"<td>{state}</td>"
            f"<td>{live}</td><td>{_e(job.recorded_status)}</td><td class=num>{job.polls}</td>"
            f"<td class=nw>{_record_link(links, job.record_path)}</td></tr>"
        )
    head = (
        "Job",
        "Route",
        "File",
        "Target",
        "Sent",
        "Age",
        "State",
        "D365 now",
        "Last recorded",
        "Polls",
        "",
    )
    return _table(head, rows, numeric=(5, 9))


def _failure(failure: Failure, links: PageLinks) -> str:
    parts = [
        '<div class="failure"><div class="head">',
        _badge(failure.outcome),
        f'<span class="badge">{_e(failure.kind)}</span>',
        f"<code>{_e(failure.subject)}</code>",
        f'<span class="when">{_when(failure.at)}</span></div>',
        f'<div class="msg">{_e(failure.message)}</div>',
    ]
    facts = []
    if failure.d365_status:
        facts.append(f"D365 status <b>{_e(failure.d365_status)}</b>")
    if failure.error_count is not None:
        facts.append(f"{failure.error_count} error(s) reported by D365")
    if failure.reason_code:
        facts.append(f"reason <code>{_e(failure.reason_code)}</code>")
    again = failure.resubmitted
    if again is not None:
        parts[2:2] = [_badge("re-submitted", "b-info")]
        facts.append(
            f"re-submitted {_when(str(again.get('at') or ''))} as <code>{_e(again.get('to'))}</code> "
            f"(attempt {_e(again.get('attempt'))})"
        )
    if facts:
        parts.append(f'<div class="muted">{" · ".join(facts)}</div>')
    if failure.errors:
        parts.append("<ul>" + "".join(f"<li>{_e(m)}</li>" for m in failure.errors) + "</ul>")
    if failure.error_files:
        files = ", ".join(f"<code>{_e(f)}</code>" for f in failure.error_files)
        parts.append(f'<div class="muted">D365 error files: {files}</div>')
    tail = [_record_link(links, failure.record_path, "status record")]
    if failure.summary_page_url and failure.summary_page_url.startswith("https://"):
        tail.append(
            f'<a href="{_e(failure.summary_page_url)}" rel="noopener noreferrer" target="_blank">'
            "execution summary in D365</a>"
        )
    parts.append(f"<div>{' · '.join(tail)}</div></div>")
    return "".join(parts)


def _or_dash(value: object) -> object:
    return "—" if value is None else value


def _markers(event: EventRow) -> str:
    marks = []
    if event.duplicate:
        marks.append(f'<span class="badge b-warn" title="{_e(event.duplicate_reason)}">duplicate</span>')
    if event.out_of_order:
        why = f"an event with ControlNumber {event.high_water_mark} was handled before it"
        marks.append(f'<span class="badge b-warn" title="{_e(why)}">out of order</span>')
    if event.poisoned:
        marks.append(_badge("poisoned"))
    if event.deliveries > 1:
        again, last = event.deliveries - 1, (event.last_redelivered or "?").replace("T", " ")
        why = (
            f"{event.deliveries} deliveries of this EventId: D365 sent it again {again} time(s), answered "
            f"duplicate and not processed again; last {last}"
        )
        marks.append(
            f'<span class="badge b-info" data-deliveries="{event.deliveries}" title="{_e(why)}">'
            f"redelivered ×{again}</span>"
        )
    return "".join(marks) or '<span class="muted">—</span>'


def _events(events: list[EventRow], links: PageLinks) -> str:
    if not events:
        return '<p class="empty">No business event received in this window.</p>'
    rows = [
        f'<tr data-event="{_e(e.event_id)}"><td class=nw>{_when(e.received)}</td>'
        f"<td>{_e(e.business_event_id)}</td>"
        f"<td>{_e(e.legal_entity)}</td><td class=num>{_e(_or_dash(e.control_number))}</td>"
        f'<td title="updated {_when(e.updated)}">{_badge(e.outcome)}</td><td class=num>{e.attempts}</td>'
        f"<td>{_markers(e)}</td>"
        f"<td class=nw><code>{_e(e.event_id)}</code></td>"
        f"<td class=nw>{_record_link(links, e.record_path)}</td></tr>"
        for e in events
    ]
    head = ("Received", "Business event", "Legal entity", "ControlNumber", "Outcome", "Attempts", "Markers",
            "EventId", "")  # fmt: skip
    return _table(head, rows, numeric=(3, 5))


def _exports(exports: list[ExportRow], links: PageLinks) -> str:
    if not exports:
        return '<p class="empty">No export stored in this window.</p>'
    rows = [
        f"<tr><td class=nw>{_when(x.at)}</td><td>{_e(x.kind)}</td><td><code>{_e(x.name)}</code></td>"
        f"<td>{_badge(x.outcome)}</td><td><code>{_e(x.subject)}</code></td><td>{_e(x.message)}</td>"
        f"<td class=nw>{_record_link(links, x.record_path)}</td></tr>"
        for x in exports
    ]
    return _table(("When", "Kind", "Activity / job", "Outcome", "Package", "Message", ""), rows)


def _boxes(overview: Overview) -> str:
    html = ""
    if overview.problems:
        items = "".join(f"<li>{_e(p)}</li>" for p in overview.problems)
        html += f'<div class="box problems"><b>Could not gather everything</b><ul>{items}</ul></div>'
    if overview.notes:
        items = "".join(f"<li>{_e(n)}</li>" for n in overview.notes)
        html += f'<div class="box notes"><b>Notes</b><ul>{items}</ul></div>'
    return html


def _section(title: str, count: int | str | None, body: str, anchor: str) -> str:
    shown = f' <span class="count">({_e(count)})</span>' if count is not None else ""
    return f'<section id="{_e(anchor)}"><h2>{_e(title)}{shown}</h2>{body}</section>'


_UNKNOWN = '<p class="empty">Unknown: the {part} could not be gathered (see the box above).</p>'


def _part(overview: Overview, part: str, count: int, body: str) -> tuple[int | str, str]:
    """A section's count and body, or "?" and why when its part could not be gathered."""
    if part in overview.unknown:
        return "?", _UNKNOWN.format(part=_e(part))
    return count, body


def _key_note(links: PageLinks) -> str:
    if not links.header_key or links.key:
        return ""
    return (
        ' · <span title="the page never copies a key from a header into its links">links carry no key: '
        "open the page with <code>?code=&lt;function key&gt;</code> to follow them</span>"
    )


def render_page(overview: Overview, links: PageLinks) -> str:
    """The whole page as one HTML document."""
    window = f"{overview.window_hours:g} h"
    stuck = overview.stuck
    body = [
        _cards(overview),
        _boxes(overview),
        _section(
            "Pipelines by route", None, _part(overview, IMPORTS, 0, _routes(overview.routes))[1], "routes"
        ),
        _section(
            "In-flight imports",
            *_part(overview, IMPORTS, overview.in_flight_total, _inflight(overview.in_flight, links)),
            "in-flight",
        ),
    ]
    if stuck:
        names = ", ".join(f"<code>{_e(j.job_id)}</code>" for j in stuck)
        body.append(
            f'<div class="box problems"><b>{len(stuck)} stuck job(s)</b>: {names} — D365 has not finished '
            "them within IMPORT_STUCK_AFTER_MINUTES; see 'A stuck import' in docs/runbook.md.</div>"
        )
    failures = "".join(_failure(f, links) for f in overview.failures) or (
        f'<p class="empty">No failure in the last {_e(window)}.</p>'
    )
    if overview.unknown:
        missing = ", ".join(_e(part) for part in overview.unknown)
        failures = f'<p class="muted">Failures of the {missing} could not be gathered.</p>' + failures
    body += [
        _section(f"Recent failures · {window}", len(overview.failures), failures, "failures"),
        _section(
            f"Recent business events · {window}",
            *_part(overview, EVENTS, len(overview.events), _events(overview.events, links)),
            "events",
        ),
        _section(
            f"Recent exports · {window}",
            *_part(overview, EXPORTS, len(overview.exports), _exports(overview.exports, links)),
            "exports",
        ),
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>Operations · D365 integration</title><style>{_CSS}</style></head><body>"
        "<header><h1>D365 integration · Operations</h1>"
        f'<div class="meta">Generated {_when(overview.generated_at)} · window {_e(window)} · '
        f"{_link(links.refresh(), 'refresh')} · {_link(links.as_json(), 'JSON')}{_key_note(links)}</div>"
        "</header>"
        f"<main>{''.join(body)}</main></body></html>"
    )
