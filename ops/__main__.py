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
variables already in the environment winning, as with Core Tools.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from localstack.processes import ROOT
from ops.actions import ACTION_COMMANDS, add_action_commands, run_action_command
from ops.check import check
from ops.common import report_error
from ops.query import FORMATS, QueryRequest, query
from ops.status import status
from runner import SettingsError, load_local_settings
from shared.context import AppContext
from shared.events.settings import BusinessEventProcessingSettings, BusinessEventSettings
from shared.pipelines.business_events import ProcessOutcome, ReplayReport, replay_poisoned
from shared.settings import ConfigurationError, Settings


def _context(settings_path: str | None) -> AppContext:
    local = load_local_settings(Path(settings_path) if settings_path else None, root=ROOT)
    env = {**local.values, **os.environ}
    return AppContext.from_settings(
        Settings.from_env(env, sections=[BusinessEventSettings, BusinessEventProcessingSettings])
    )


def replay_events(args: argparse.Namespace) -> int:
    try:
        context = _context(args.settings)
    except (ConfigurationError, SettingsError) as exc:
        print(exc, file=sys.stderr)
        return 2
    reports: list[ReplayReport] = []
    after: str | None = None
    try:
        while True:
            report = replay_poisoned(context, args.event_id, force=args.force, limit=args.limit, after=after)
            reports.append(report)
            if args.event_id or not report.remaining:
                break
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
    probe.add_argument("--settings", default=None, help="settings file (default: local.settings.json)")
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
    overview.add_argument("--settings", default=None, help="settings file (default: local.settings.json)")
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
    rows.add_argument("--settings", default=None, help="settings file (default: local.settings.json)")


def _run_operator_command(args: argparse.Namespace) -> int:
    # azure-identity/azure-core log a warning for each failure they raise; the one ops: line says it already.
    logging.getLogger("azure").setLevel(logging.ERROR)
    try:
        if args.command == "check":
            return check(args.settings, as_json=args.json)
        if args.command == "status":
            return status(args.settings, as_json=args.json, ask_d365=not args.no_d365, out=sys.stdout)
        request = QueryRequest(
            args.entity_set, args.filter, tuple(args.select), args.top, args.cross_company, args.format
        )
        return query(args.settings, request, args.output, sys.stdout)
    except KeyboardInterrupt:
        print("ops: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `| head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # every failure is one line for the operator, never a traceback
        return report_error(exc)


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
    replay.add_argument("--limit", type=int, default=100, help="events per batch (default 100)")
    replay.add_argument("--settings", default=None, help="settings file (default: local.settings.json)")
    add_action_commands(commands)
    args = parser.parse_args(argv)
    if args.command in ACTION_COMMANDS:
        return run_action_command(args)
    if args.command in ("check", "query", "status"):
        return _run_operator_command(args)
    if args.limit < 1:
        parser.error("--limit must be positive")
    return replay_events(args)


if __name__ == "__main__":
    sys.exit(main())
