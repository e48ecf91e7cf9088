"""``python -m ops <command>``: operator commands on the app's storage and D365, from a checkout.

    python -m ops check [--json] [--settings FILE]
    python -m ops status [--json] [--no-d365] [--settings FILE]
    python -m ops query ENTITY_SET [--filter TEXT] [--select A,B] [--top N] [--cross-company]
                        [--format json|csv] [--output FILE] [--settings FILE]
    python -m ops replay-events [--event-id ID] [--force] [--limit N] [--settings FILE]
    python -m ops resubmit (PATH | --route NAME --file NAME | --list) [--wait] [--json] [--settings FILE]
    python -m ops export-now (--activity NAME | --all-activities | --dmf NAME) [--timeout S] [--json]
    python -m ops import FILE --route NAME [--legal-entity X] [--wait] [--no-progress] [--json]
    python -m ops enqueue FILE --activity ID [--entity NAME] [--company X] [--wait] [--no-progress]

``check`` validates the settings (listing every problem, exit 2) and probes the D365 token, one D365 OData
call, blob storage and, when ``KEY_VAULT_URL`` is set, Key Vault: one ``OK``/``FAIL`` line per check (or
``--json``); exit 0 when all are OK, 1 otherwise. ``query`` streams an entity set's rows as JSON Lines or
CSV to stdout or ``--output`` (see ops/query.py). Errors are one line on stderr, ``ops: <message>``, with
exit 1 (2 for bad settings). docs/operations.md has examples.

``replay-events`` processes poisoned business events again (all of them, in batches of ``--limit``, or
the one ``--event-id``); ``--force`` also replays an event that is not poisoned. It prints a JSON report
and exits 0 when every replayed event was processed, 1 otherwise, 2 for bad settings.

Settings: ``--settings`` (default: local.settings.json, else local.settings.sample.json) ``Values``, with
variables already in the environment winning, as with Core Tools (they are also put into the command's
environment, where e.g. a managed identity credential reads ``IDENTITY_ENDPOINT``).

Logging (every command): stderr shows the named events at WARNING and above (``IMPORT_JOB_FAILED: ...``,
the lines alerts key on: work run here is logged here, not in Application Insights); ``-v``/``--verbose``
shows the whole log (retries, progress) as well.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ops.actions import ACTION_COMMANDS, add_action_commands, run_action
from ops.check import check
from ops.common import SETTINGS_HELP, load_settings, open_context, run_guarded
from ops.query import FORMATS, QueryRequest, query
from ops.status import status
from shared.events.model import EventFormatError, normalise_event_id
from shared.events.settings import BusinessEventProcessingSettings, BusinessEventSettings
from shared.pipelines.business_events import ProcessOutcome, ReplayReport, replay_poisoned


def _unpoisoned_report(event_id: str | None) -> ReplayReport:
    """The answer when the poison container does not exist: nothing was ever poisoned. Asked without
    ``replay_poisoned``, which creates the container to look into it."""
    if event_id is None:
        return ReplayReport()
    try:
        return ReplayReport(not_found=[normalise_event_id(event_id)])
    except EventFormatError:
        return ReplayReport(not_found=[event_id[:100]])


def replay_events(args: argparse.Namespace) -> int:
    """Replay poisoned events; raises ConfigurationError/SettingsError for bad settings (``run_guarded``
    reports every failure as one line)."""
    settings = load_settings(args.settings, [BusinessEventSettings, BusinessEventProcessingSettings])
    context = open_context(settings)
    reports: list[ReplayReport] = []
    try:
        poison = settings.section(BusinessEventSettings).poison_container
        forced_one = args.force and args.event_id is not None  # may replay an event that is not poisoned
        if not forced_one and not context.blob_service.get_container_client(poison).exists():
            reports.append(_unpoisoned_report(args.event_id))
        after: str | None = None
        while not reports or (args.event_id is None and reports[-1].remaining):
            report = replay_poisoned(context, args.event_id, force=args.force, limit=args.limit, after=after)
            reports.append(report)
            after = report.continue_after  # events poisoned again in this batch are not taken again
    finally:
        context.close()
    results = [r for report in reports for r in report.results]
    not_found = [n for report in reports for n in report.not_found]
    summary = {
        "replayed": len(results),
        "processed": sum(1 for r in results if r.outcome is ProcessOutcome.PROCESSED),
        "results": [r.to_dict() for r in results],
        "not_found": not_found,
        "remaining": reports[-1].remaining if reports else False,
    }
    print(json.dumps(summary, indent=2))
    failed = not_found or any(r.outcome is not ProcessOutcome.PROCESSED for r in results)
    return 1 if failed else 0


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _add_operator_commands(commands: Any) -> None:
    probe = commands.add_parser(
        "check",
        help="check settings and connectivity (D365 token and OData, blob storage, Key Vault)",
        description="Validate the settings, then probe each dependency: one OK/FAIL line per check. "
        "Exit 0 when all are OK, 1 when a check fails, 2 when the settings are invalid (all listed).",
    )
    probe.add_argument("--json", action="store_true", help="print a JSON report instead of lines")
    probe.add_argument("--settings", default=None, help=SETTINGS_HELP)
    overview = commands.add_parser(
        "status",
        help="pipeline status: files waiting, in flight, archived, failed; stuck jobs; recent events",
        description="What the operations page shows, as a report: files per import route, in-flight and "
        "stuck imports with their D365 status, recent failures with D365's error detail, recent business "
        "events (duplicate / out-of-order markers) and exports. Exit 0; 1 when part of it could not be "
        "gathered; 2 for invalid settings.",
    )
    overview.add_argument("--json", action="store_true", help="print the overview as JSON")
    overview.add_argument("--no-d365", action="store_true", help="do not ask D365 for in-flight job status")
    overview.add_argument("--settings", default=None, help=SETTINGS_HELP)
    rows = commands.add_parser(
        "query",
        help="stream the rows of an OData entity set as JSON Lines or CSV",
        description="Stream rows of ENTITY_SET page by page (constant memory). json: JSON Lines, one row "
        "per line as D365 returns it; csv: a header from --select, else from the first row's fields. "
        "--output writes FILE.partial and renames it when complete.",
    )
    rows.add_argument("entity_set", metavar="ENTITY_SET", help="e.g. CustomersV3")
    rows.add_argument("--filter", default=None, help="OData $filter text, e.g. \"dataAreaId eq 'usmf'\"")
    rows.add_argument(
        "--select", type=_names, default=[], help="comma-separated fields (also the CSV columns)"
    )
    rows.add_argument("--top", type=_positive, default=None, help="at most N rows")
    rows.add_argument("--cross-company", action="store_true", help="rows of every legal entity")
    rows.add_argument("--format", choices=FORMATS, default="json", help="json (JSON Lines, default) or csv")
    rows.add_argument("--output", default=None, help="write to FILE instead of stdout")
    rows.add_argument("--settings", default=None, help=SETTINGS_HELP)


def _run(args: argparse.Namespace) -> int:
    if args.command in ACTION_COMMANDS:
        return run_action(args)
    if args.command == "check":
        return check(args.settings, as_json=args.json)
    if args.command == "status":
        return status(args.settings, as_json=args.json, ask_d365=not args.no_d365, out=sys.stdout)
    if args.command == "query":
        request = QueryRequest(
            args.entity_set, args.filter, tuple(args.select), args.top, args.cross_company, args.format
        )
        return query(args.settings, request, args.output, sys.stdout)
    return replay_events(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_operator_commands(commands)
    replay = commands.add_parser("replay-events", help="process poisoned business events again")
    replay.add_argument("--event-id", default=None, help="only this EventId (braces and case are ignored)")
    replay.add_argument("--force", action="store_true", help="also replay an event that is not poisoned")
    replay.add_argument("--limit", type=_positive, default=100, help="events per batch (default 100)")
    replay.add_argument("--settings", default=None, help=SETTINGS_HELP)
    add_action_commands(commands)
    for command in commands.choices.values():
        command.add_argument(
            "-v", "--verbose", action="store_true", help="also show the log (retries, progress) on stderr"
        )
    args = parser.parse_args(argv)
    return run_guarded(lambda: _run(args), verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
