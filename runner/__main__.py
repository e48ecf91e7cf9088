"""``python -m runner``: run the function app on the local stack, as ``func start`` would.

    python -m runner [--app function_app:app] [--port 7071] [--settings local.settings.json]
                     [--host 127.0.0.1] [--root .] [--shutdown-timeout 30] [--blob-poll-interval 2]

Order matters and follows Core Tools: settings are exported to the environment *before* the app is
imported, so module-level code in the app sees them. Prints the functions, URLs and keys, then a
machine-readable ``RUNNER READY {json}`` line, and serves until Ctrl-C / SIGTERM (a second one quits
at once). Exit status: 0 after a clean stop, 1 if invocations had to be abandoned, 2 if it cannot start.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from runner.discovery import load_app
from runner.host import Runner, RunnerError
from runner.logs import configure_logging
from runner.settings import SettingsError, apply_to_environment, load_local_settings

READY_PREFIX = "RUNNER READY "
log = logging.getLogger("runner")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="app folder (host.json, settings)")
    parser.add_argument(
        "--settings",
        type=Path,
        default=None,
        help="settings file (default: local.settings.json, else local.settings.sample.json)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: Host.LocalHttpPort, else 7071")
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds in-flight invocations get to finish on Ctrl-C/SIGTERM",
    )
    parser.add_argument("--blob-poll-interval", type=float, default=2.0)
    parser.add_argument(
        "--standby-interval",
        type=float,
        default=5.0,
        help="how often a standby runner tries to take over a timer",
    )
    parser.add_argument("--instance-id", default=None)
    parser.add_argument(
        "--host-id", default=None, help="default: AzureFunctionsWebHost__hostid, else the folder name"
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    root = args.root.resolve()
    try:
        local = load_local_settings(args.settings, root=root)
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    applied = apply_to_environment(local.values)
    if local.path is not None:
        log.info(
            "Settings from %s (%d applied; kept from the environment: %s)",
            local.path,
            len(applied.applied),
            ", ".join(applied.kept_from_environment) or "none",
        )
    else:
        log.warning("No local.settings.json or local.settings.sample.json in %s", root)
    try:
        app = load_app(args.app, root=root)
    except Exception:
        log.exception("Could not import the function app %s", args.app)
        return 2
    runner = Runner(
        app,
        settings=dict(os.environ),
        host=args.host,
        port=args.port if args.port is not None else local.local_http_port or 7071,
        instance_id=args.instance_id,
        host_id=args.host_id,
        app_root=root,
        blob_poll_interval=args.blob_poll_interval,
        standby_interval=args.standby_interval,
        shutdown_timeout=args.shutdown_timeout,
    )
    try:
        info = runner.start()
    except (RunnerError, SettingsError) as exc:
        log.error("%s", exc)
        return 2
    print(info.describe(), flush=True)
    print(READY_PREFIX + json.dumps(info.as_dict()), flush=True)
    runner.serve_forever()
    return 0 if runner.clean_shutdown else 1


if __name__ == "__main__":
    sys.exit(main())
