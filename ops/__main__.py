"""``python -m ops <command>``: operator commands on the app's storage and D365, from a checkout.

    python -m ops replay-events [--event-id ID] [--force] [--limit N] [--settings FILE]

``replay-events`` processes poisoned business events again (all of them, in batches of ``--limit``, or
the one ``--event-id``); ``--force`` also replays an event that is not poisoned. It prints a JSON report
and exits 0 when every replayed event was processed, 1 otherwise, 2 for bad settings.

Settings: ``--settings`` (default: local.settings.json, else local.settings.sample.json) ``Values``, with
variables already in the environment winning, as with Core Tools.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from localstack.processes import ROOT
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("replay-events", help="process poisoned business events again")
    replay.add_argument("--event-id", default=None, help="only this EventId (braces and case are ignored)")
    replay.add_argument("--force", action="store_true", help="also replay an event that is not poisoned")
    replay.add_argument("--limit", type=int, default=100, help="events per batch (default 100)")
    replay.add_argument("--settings", default=None, help="settings file (default: local.settings.json)")
    args = parser.parse_args(argv)
    if args.limit < 1:
        parser.error("--limit must be positive")
    return replay_events(args)


if __name__ == "__main__":
    sys.exit(main())
