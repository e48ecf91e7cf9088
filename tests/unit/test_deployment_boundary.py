"""The deployed app (function_app.py, blueprints/, shared/) must not need development-only code."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOYED = [
    ROOT / "function_app.py",
    *sorted((ROOT / "blueprints").rglob("*.py")),
    *sorted((ROOT / "shared").rglob("*.py")),
]
# Top-level modules the deployed code may import: the stdlib, requirements.txt and the app's own packages.
# ``azurefunctions`` is the SDK-type blob binding (azurefunctions-extensions-bindings-blob); ``isal`` the
# optional fast deflate of the package builder.
RUNTIME_PACKAGES = {"azure", "azurefunctions", "isal", "requests", "urllib3", "shared", "blueprints"}
DEV_ONLY = ("emulator", "localstack", "runner", "ops", "tests", "bench", "demo")


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_deployed_code_imports_only_runtime_dependencies() -> None:
    offenders = {}
    for path in DEPLOYED:
        extra = {
            name
            for name in imported_top_levels(path)
            if name not in sys.stdlib_module_names and name not in RUNTIME_PACKAGES
        }
        if extra:
            offenders[str(path.relative_to(ROOT))] = sorted(extra)
    assert offenders == {}


def test_funcignore_keeps_development_code_out_of_the_deployment() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".funcignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for name in (*DEV_ONLY, "requirements-dev.txt", "local.settings.json", "node_modules", ".venv"):
        assert name in ignored, f"{name} would be deployed"
    for name in ("function_app.py", "shared", "blueprints", "host.json", "requirements.txt"):
        assert name not in ignored, f"{name} must be deployed"


def test_runtime_requirements_hold_only_runtime_packages() -> None:
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    names = {line.split(">")[0].split("=")[0].split("<")[0].strip().lower() for line in lines if line}
    assert names == {
        "azure-functions",
        "azure-identity",
        "azure-keyvault-secrets",
        "azure-storage-blob",
        "azurefunctions-extensions-bindings-blob",
        "isal",
        "requests",
    }
