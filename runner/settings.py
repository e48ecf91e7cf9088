"""App settings the way Core Tools feeds them to the Functions host, plus the host.json bits the runner uses.

``local.settings.json`` ``Values`` (or ``local.settings.sample.json`` when there is no local file) become
environment variables before the app is imported. Precedence follows Core Tools: a variable already set
in the environment wins over the file, so ``FOO=x python -m runner`` overrides a local setting.
``IsEncrypted: true`` files are refused (only Core Tools holds the decryption key). Binding expressions
``%NAME%`` are resolved against the same settings.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AppliedSettings",
    "LocalSettings",
    "SettingsError",
    "apply_to_environment",
    "default_host_id",
    "is_disabled",
    "load_local_settings",
    "read_host_json",
    "resolve_expression",
    "route_prefix",
]

LOCAL_FILE = "local.settings.json"
SAMPLE_FILE = "local.settings.sample.json"
_EXPRESSION = re.compile(r"%([^%\s]+)%")


class SettingsError(Exception):
    """A settings file or a ``%NAME%`` expression the runner cannot use; the message says which and why."""


@dataclass(frozen=True)
class LocalSettings:
    """The parsed settings file: ``Values`` and the ``Host`` section (``LocalHttpPort``...)."""

    path: Path | None
    values: dict[str, str] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)

    @property
    def local_http_port(self) -> int | None:
        port = self.host.get("LocalHttpPort")
        return int(port) if port not in (None, "") else None


@dataclass(frozen=True)
class AppliedSettings:
    applied: tuple[str, ...]
    kept_from_environment: tuple[str, ...]


def load_local_settings(path: Path | None = None, *, root: Path) -> LocalSettings:
    """Read ``path``, else ``root/local.settings.json``, else the sample next to it, else nothing."""
    if path is None:
        candidates = [root / LOCAL_FILE, root / SAMPLE_FILE]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            return LocalSettings(None)
    elif not path.is_file():
        raise SettingsError(f"settings file {path} does not exist")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise SettingsError(f"{path}: expected a JSON object with a 'Values' section")
    if document.get("IsEncrypted") is True:
        raise SettingsError(
            f"{path}: IsEncrypted is true; the runner cannot decrypt it. Decrypt it with "
            "`func settings decrypt` or write the values in clear (local development only)."
        )
    raw_values = document.get("Values", {})
    if not isinstance(raw_values, dict):
        raise SettingsError(f"{path}: 'Values' must be an object of string settings")
    bad = sorted(k for k, v in raw_values.items() if not isinstance(v, str))
    if bad:
        raise SettingsError(f"{path}: Values must be strings; not a string: {', '.join(bad)}")
    host = document.get("Host", {})
    if not isinstance(host, dict):
        raise SettingsError(f"{path}: 'Host' must be an object")
    return LocalSettings(path, dict(raw_values), dict(host))


def apply_to_environment(
    values: Mapping[str, str], environ: MutableMapping[str, str] | None = None
) -> AppliedSettings:
    """Export settings to the environment, keeping variables that are already set (Core Tools' rule)."""
    target = os.environ if environ is None else environ
    applied, kept = [], []
    for name, value in values.items():
        if name in target:
            kept.append(name)
        else:
            target[name] = value
            applied.append(name)
    return AppliedSettings(tuple(applied), tuple(kept))


def resolve_expression(text: str, settings: Mapping[str, str], *, what: str = "value") -> str:
    """Replace every ``%NAME%`` with the setting ``NAME``; a missing setting is an error, as in the host."""

    def replace(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in settings:
            raise SettingsError(f"{what} {text!r} names the app setting {name!r}, which is not set")
        return settings[name]

    return _EXPRESSION.sub(replace, text)


def is_disabled(function_name: str, settings: Mapping[str, str]) -> bool:
    """The host's ``AzureWebJobs.<FunctionName>.Disabled`` setting (``true``/``1``)."""
    for name in (f"AzureWebJobs.{function_name}.Disabled", f"AzureWebJobs_{function_name}_Disabled"):
        if settings.get(name, "").strip().lower() in ("true", "1"):
            return True
    return False


def read_host_json(root: Path) -> dict[str, Any]:
    """The app's host.json (an empty object when there is none)."""
    path = root / "host.json"
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{path}: not valid JSON ({exc})") from exc
    return document if isinstance(document, dict) else {}


def route_prefix(host_json: Mapping[str, Any]) -> str:
    """``extensions.http.routePrefix`` (default ``api``; an empty string puts routes at the root)."""
    http = (host_json.get("extensions") or {}).get("http") or {}
    prefix = http.get("routePrefix", "api")
    return str(prefix).strip("/") if prefix is not None else "api"


def default_host_id(settings: Mapping[str, str], root: Path) -> str:
    """``AzureFunctionsWebHost__hostid``, else ``WEBSITE_SITE_NAME``, else the app folder's name."""
    raw = settings.get("AzureFunctionsWebHost__hostid") or settings.get("WEBSITE_SITE_NAME") or root.name
    cleaned = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:32].strip("-")
    return cleaned or "local-runner"
