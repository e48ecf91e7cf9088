"""App settings for a local run: local.settings.json Values (else the sample's), as the host reads them."""

from __future__ import annotations

import json
from pathlib import Path

from localstack.processes import ROOT


def settings_file(root: Path = ROOT) -> Path:
    """``local.settings.json`` when the user made one, else the committed working sample."""
    own = root / "local.settings.json"
    return own if own.exists() else root / "local.settings.sample.json"


def load_values(path: Path) -> dict[str, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("IsEncrypted"):
        raise SystemExit(f"{path}: IsEncrypted is true; local runs need plain values")
    values = data.get("Values") or {}
    if not isinstance(values, dict):
        raise SystemExit(f"{path}: 'Values' must be an object of strings")
    return {str(k): "" if v is None else str(v) for k, v in values.items()}
