"""The operator commands that act on the pipelines: ``resubmit``, ``export-now``, ``import``, ``enqueue``.

``add_action_commands`` adds their subparsers to ``python -m ops``; ``run_action`` runs the one chosen
(``python -m ops`` reports its failures as one line, ``ops: <message>``, through ``ops.common.run_guarded``).
The work itself is in ops/resubmit.py, ops/export_now.py and
ops/importing.py; docs/operations.md has examples.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ops.common import SETTINGS_HELP, OpsError
from ops.export_now import ExportRequest, export_now
from ops.importing import EnqueueRequest, ImportRequest, enqueue_file, import_file
from ops.resubmit import ResubmitRequest, resubmit

__all__ = ["ACTION_COMMANDS", "add_action_commands", "run_action"]

ACTION_COMMANDS = ("resubmit", "export-now", "import", "enqueue")


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _common(parser: argparse.ArgumentParser, *, wait: str | None = None) -> None:
    if wait:
        parser.add_argument("--wait", action="store_true", help=wait)
        parser.add_argument("--timeout", type=_seconds, default=600.0, help="seconds to wait (default 600)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of lines")
    parser.add_argument("--settings", default=None, help=SETTINGS_HELP)


def _add_resubmit(commands: Any) -> None:
    parser = commands.add_parser(
        "resubmit",
        help="re-submit a failed import (or --list them)",
        description="Put a failed import's input (errors container) back through the normal intake, "
        "keeping the old input and status record. Safe to run twice: the second run says it was already "
        "re-submitted. Select by PATH (the input or its .status.json, with or without the container) or by "
        "--route and --file.",
    )
    parser.add_argument("path", nargs="?", metavar="PATH", help="e.g. errors/groups/2026/11/26/<job>/a.csv")
    parser.add_argument("--route", default=None, help="route name (the folder in the errors container)")
    parser.add_argument("--file", dest="file_name", default=None, help="file name, with --route")
    parser.add_argument("--list", dest="list_only", action="store_true", help="list failed imports")
    _common(parser, wait="run the intake now and follow the file to its new status record")


def _add_export_now(commands: Any) -> None:
    parser = commands.add_parser(
        "export-now",
        help="run an export now (recurring dequeue or DMF package export)",
        description="Run an export timer's pipeline now and print what was written where. Exit 0 when "
        "every export finished well, 1 otherwise (also when a DMF export still runs in D365).",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--activity", default=None, help="dequeue this EXPORT_ACTIVITIES entry (name)")
    which.add_argument("--all-activities", action="store_true", help="dequeue every export activity")
    which.add_argument("--dmf", default=None, help="run this DMF_EXPORTS entry (name or definition group)")
    parser.add_argument("--timeout", type=_seconds, default=300.0, help="seconds the run may take (300)")
    parser.add_argument("--json", action="store_true", help="print the run reports as JSON")
    parser.add_argument("--settings", default=None, help=SETTINGS_HELP)


def _add_import(commands: Any) -> None:
    parser = commands.add_parser(
        "import",
        help="upload a local file into the inbound container for a route",
        description="Stream FILE into the inbound container at the route's folder (create-only), with a "
        "progress bar on stderr when it is a terminal. --wait runs the intake and follows the file to its "
        "status record (exit 0 when D365 imported it).",
    )
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--route", required=True, help="IMPORT_ROUTES name")
    parser.add_argument("--legal-entity", default=None, help="company (routes that take it from the folder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(parser, wait="run the intake now and wait for the file's final status record")


def _add_enqueue(commands: Any) -> None:
    parser = commands.add_parser(
        "enqueue",
        help="POST a local file straight to a recurring data job (not idempotent)",
        description="Stream FILE to /api/connector/enqueue/<activity> and print the message id. Each run "
        "enqueues again (use `import` for exactly-once). --wait polls jobstatus until D365 finished it.",
    )
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--activity", required=True, help="the recurring data job's ID (activity id)")
    parser.add_argument("--entity", default=None, help="DMF entity name (File jobs)")
    parser.add_argument("--company", default=None, help="legal entity (default: the job's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(parser, wait="wait until D365 processed the message")


def add_action_commands(commands: Any) -> None:
    """Add the four subparsers to ``python -m ops``'s subparsers."""
    _add_resubmit(commands)
    _add_export_now(commands)
    _add_import(commands)
    _add_enqueue(commands)


def run_action(args: argparse.Namespace) -> int:
    """Run ``args.command`` (one of :data:`ACTION_COMMANDS`); the exit status. Failures raise."""
    out, err = sys.stdout, sys.stderr
    if args.command == "resubmit":
        if args.list_only == bool(args.path or args.file_name) or (args.path and args.file_name):
            raise OpsError("give PATH, or --route and --file, or --list")
        if args.file_name and not args.route:
            raise OpsError("--file needs --route")
        request = ResubmitRequest(
            args.path, args.route, args.file_name, args.list_only, args.wait, args.timeout, args.json
        )
        return resubmit(args.settings, request, out, err)
    if args.command == "export-now":
        export = ExportRequest(args.activity, args.all_activities, args.dmf, args.timeout, args.json)
        return export_now(args.settings, export, out)
    if args.command == "import":
        upload = ImportRequest(
            args.file, args.route, args.legal_entity, args.wait, args.timeout, not args.no_progress, args.json
        )
        return import_file(args.settings, upload, out, err)
    enqueue = EnqueueRequest(
        args.file, args.activity, args.entity, args.company, args.wait, args.timeout, not args.no_progress,
        args.json,
    )  # fmt: skip
    return enqueue_file(args.settings, enqueue, out, err)
