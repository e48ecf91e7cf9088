"""``python -m demo`` (``make demo``): the demo once, on a fresh local stack, as a smoke test.

Starts Azurite and the D365 emulator on free ports with state in a temporary directory, serves the function
app through the local runner with the settings file's values (only the stack's addresses replaced), runs
every flow, prints the summary and exits: 0 when every flow passed, 1 when one failed, 2 when the stack
could not start.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from demo.inputs import SAMPLE_PACKAGE
from demo.run import FLOWS, run_demo
from demo.target import DemoTarget
from localstack.processes import ROOT, AzuriteInfo, EmulatorInfo, run_azurite, run_emulator
from runner import Runner, RunnerError, SettingsError, configure_logging, load_local_settings

#: The emulator's pace for a one-shot run (seconds per DMF step; connector pick-up, steps, export build).
DMF_STEP_SECONDS = "0.1"
CONNECTOR_PACE = {"pickup_delay_seconds": 0.2, "step_seconds": 0.2, "export_delay_seconds": 0.2}


def stack_overrides(
    values: Mapping[str, str], emulator: EmulatorInfo, azurite: AzuriteInfo
) -> dict[str, str]:
    """The settings that point the app at this run's stack (free ports, fresh CA) instead of the file's."""
    found = {
        "D365_BASE_URL": str(emulator.base_url),
        "IDENTITY_ENDPOINT": str(emulator.identity_endpoint),
        "IDENTITY_HEADER": str(emulator.identity_header),
        "TLS_CA_BUNDLE": str(emulator.ca_file),
        "AzureWebJobsStorage": azurite.connection_string,
    }
    if values.get("KEY_VAULT_URL"):
        found["KEY_VAULT_URL"] = str(emulator.keyvault_url)
    if values.get("D365_AUTHORITY_HOST"):
        found["D365_AUTHORITY_HOST"] = str(emulator.authority_host)
    return found


def _fault(text: str) -> dict[str, Any]:
    try:
        rule = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(rule, dict):
        raise argparse.ArgumentTypeError("a fault rule is a JSON object (docs/emulator.md, Fault injection)")
    return rule


def _flows(text: str) -> list[str]:
    chosen = [f.strip() for f in text.split(",") if f.strip()]
    unknown = sorted(set(chosen) - set(FLOWS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"flows are {', '.join(FLOWS)} (unknown: {', '.join(unknown)})")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--settings", help="settings file (default: local.settings.json, else the sample)")
    parser.add_argument("--flows", type=_flows, default=list(FLOWS), help=f"comma list of {', '.join(FLOWS)}")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds each flow may wait (90)")
    parser.add_argument("--package", type=Path, default=SAMPLE_PACKAGE, help="the data package to import")
    parser.add_argument(
        "--inject-fault", type=_fault, action="append", default=[], metavar="JSON",
        help="an emulator fault rule added before the flows start (POST /_emulator/faults): see a flow fail",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="show the functions' and runner's logs")
    args = parser.parse_args(argv)
    try:
        local = load_local_settings(Path(args.settings) if args.settings else None, root=ROOT)
    except SettingsError as exc:
        print(f"python -m demo: {exc}", file=sys.stderr)
        return 2
    configure_logging(logging.INFO if args.verbose else logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="d365-demo-") as state, ExitStack() as stack:
        try:
            azurite = stack.enter_context(run_azurite())
            header = local.values.get("IDENTITY_HEADER") or "local-development-identity-header"
            emulator = stack.enter_context(
                run_emulator(
                    Path(state) / "emulator",
                    "--identity-header", header,
                    "--dmf-step-delay", DMF_STEP_SECONDS, "--log-level", "warning",
                    blob_connection_string=azurite.connection_string,
                )
            )  # fmt: skip
            emulator.admin("PUT", "connector/settings", json=CONNECTOR_PACE)
            for rule in args.inject_fault:
                emulator.admin("POST", "faults", json=rule)
            overrides = stack_overrides(local.values, emulator, azurite)
            os.environ.update(
                overrides
            )  # this run's stack wins; otherwise the environment wins, as in Core Tools
            runner = Runner.from_values(
                {**local.values, **overrides}, port=0, root=ROOT, blob_poll_interval=0.5, shutdown_timeout=10
            )
            stack.callback(runner.stop)
            started = runner.start()
        except (RuntimeError, RunnerError, OSError) as exc:
            print(f"python -m demo: the local stack did not start: {exc}", file=sys.stderr)
            return 2
        print(f"settings: {local.path}; stack: emulator {emulator.base_url}, functions {started.base_url}")
        target = DemoTarget(values=runner.settings, emulator_url=str(emulator.base_url), functions=started)
        report = run_demo(target, flows=args.flows, timeout=args.timeout, package=args.package)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # a TextIOWrapper here
    sys.exit(main())
