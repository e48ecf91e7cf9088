"""``python -m ops check``: are the settings valid, and does every dependency answer with them?

Reuses the app's readiness probes (``shared.pipelines.health.check_readiness``), so what it reports is what
``/api/health/ready`` reports, preceded by a ``settings`` check that lists every configuration problem.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ops.common import ConfigurationError, load_settings, open_context
from shared.pipelines.health import Check, check_readiness

EXIT_OK, EXIT_FAILING, EXIT_BAD_SETTINGS = 0, 1, 2


def format_check(check: Check) -> str:
    """``OK   name          detail (12 ms)``: one line per check."""
    return f"{'OK' if check.ok else 'FAIL':<4} {check.name:<13} {check.detail} ({check.milliseconds} ms)"


def run_checks(settings_path: str | None) -> tuple[list[Check], list[str]]:
    """Every check (stopping after ``settings`` when they are invalid) and the configuration problems."""
    started = time.perf_counter()
    try:
        settings = load_settings(settings_path)
    except ConfigurationError as exc:
        count = len(exc.problems)
        detail = f"{count} problem{'s' if count != 1 else ''}"
        return [Check("settings", False, detail, _ms(started))], list(exc.problems)
    valid = Check("settings", True, f"valid (D365 {settings.d365.base_url})", _ms(started))
    context = open_context(settings)
    try:
        return [valid, *check_readiness(context).checks], []
    finally:
        context.close()


def check(settings_path: str | None, *, as_json: bool) -> int:
    checks, problems = run_checks(settings_path)
    ok = all(c.ok for c in checks)
    if as_json:
        document: dict[str, Any] = {"status": "ok" if ok else "failing", "checks": [_dict(c) for c in checks]}
        if problems:
            document["problems"] = problems
        print(json.dumps(document, indent=2))
    else:
        for item in checks:
            print(format_check(item))
        for problem in problems:
            print(f"     - {problem}")
    if problems:
        return EXIT_BAD_SETTINGS
    return EXIT_OK if ok else EXIT_FAILING


def _dict(check: Check) -> dict[str, Any]:
    return {"name": check.name, "ok": check.ok, "detail": check.detail, "milliseconds": check.milliseconds}


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
