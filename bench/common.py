"""What every benchmark shares: the local emulator, the real client stack, results and small statistics.

The client stack is the production path: ``Settings.from_env`` (client-secret mode against the emulator's
Entra authority, its CA trusted through ``TLS_CA_BUNDLE``) → ``AppContext.from_settings`` →
``D365TokenProvider`` + ``D365Transport`` + ``ODataClient``. Nothing here asserts timings: benchmarks
compute ratios against a baseline measured in the same run and report PASS/FAIL against a target.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localstack.processes import EmulatorInfo, run_emulator
from shared.context import AppContext
from shared.settings import Settings

__all__ = [
    "EMULATOR_ENV",
    "Result",
    "app_env",
    "build_context",
    "child_env",
    "counted_statuses",
    "emulator",
    "emulator_from_env",
    "fmt_rate",
    "machine",
    "median",
    "peak_rss_mib",
    "rate",
]

#: Child processes find the parent's emulator through this variable (the ready line's JSON).
EMULATOR_ENV = "BENCH_EMULATOR"


@dataclass
class Result:
    """One benchmark measure: ours against a baseline (or a bound), with the target it must meet."""

    name: str
    measure: str  # what the ratio is, e.g. "records/s ours ÷ plain requests"
    ours: str  # human-readable figures for the table
    baseline: str
    ratio: float
    target: float
    higher_is_better: bool = True
    details: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    @property
    def target_text(self) -> str:
        return f"{'≥' if self.higher_is_better else '≤'} {self.target:g}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measure": self.measure,
            "ours": self.ours,
            "baseline": self.baseline,
            "ratio": round(self.ratio, 4),
            "target": self.target_text,
            "passed": self.passed,
            "details": self.details,
        }


@contextmanager
def emulator(echo: bool = False) -> Iterator[EmulatorInfo]:
    """A fresh emulator process on free loopback ports, its data in a temporary directory."""
    # warning level: the emulator logs to stderr, and a drained pipe still costs it CPU per line
    with (
        tempfile.TemporaryDirectory(prefix="bench-emulator-") as data_dir,
        run_emulator(Path(data_dir), "--log-level", "warning", echo=echo) as info,
    ):
        yield info


def emulator_from_env() -> EmulatorInfo:
    """The emulator a parent benchmark started (for ``--child`` processes)."""
    raw = os.environ.get(EMULATOR_ENV)
    if not raw:
        raise SystemExit(f"{EMULATOR_ENV} is not set: child mode is started by the benchmark itself")
    return EmulatorInfo(json.loads(raw))


def child_env(emu: EmulatorInfo) -> dict[str, str]:
    """The environment for a child process that talks to ``emu``."""
    return {**os.environ, EMULATOR_ENV: json.dumps(emu.raw)}


def app_env(emu: EmulatorInfo, **extra: str) -> dict[str, str]:
    """App settings for the emulator's seeded app registration (client-secret mode, as in production)."""
    return {
        "D365_BASE_URL": emu.base_url,
        "D365_AUTH_MODE": "client_secret",
        "D365_CLIENT_ID": emu.client_id,
        "D365_TENANT_ID": emu.tenant_id,
        "D365_CLIENT_SECRET": emu.client_secret,
        "D365_AUTHORITY_HOST": emu.authority_host,
        "TLS_CA_BUNDLE": emu.ca_file,
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        **extra,
    }


def build_context(emu: EmulatorInfo, **extra: str) -> AppContext:
    """The app's own context (settings → token provider → transport → OData client) for ``emu``."""
    return AppContext.from_settings(Settings.from_env(app_env(emu, **extra)))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def peak_rss_mib() -> float:
    """Peak resident set size of this process image so far, in MiB.

    Linux: ``VmHWM`` from /proc/self/status. It is what ``ru_maxrss`` reports for a process that was
    started directly, but ``ru_maxrss`` survives ``exec``: a child forked from a big parent inherits
    the parent's high-water mark and would report it instead of its own. Elsewhere ``ru_maxrss``.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def machine() -> dict[str, str]:
    cpus = os.cpu_count() or 0
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "cpus": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus),
    }


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def fmt_rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.2f} {unit}"


def counted_statuses(emu: EmulatorInfo, family: str = "odata") -> Mapping[str, int]:
    """The emulator's never-trimmed answer counters of one API family (status → count)."""
    counters = emu.admin("GET", "counters")
    families: dict[str, dict[str, int]] = counters.get("families", {})
    return {str(k): int(v) for k, v in families.get(family, {}).items()}
