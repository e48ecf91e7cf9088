"""The blob triggers' source follows its app setting when the host indexes the app (a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shared.trigger_source import blob_trigger_source

ROOT = Path(__file__).resolve().parents[2]
SHOW_SOURCES = """
import json, function_app
print(json.dumps({str(f.get_function_name()): b.get_dict_repr().get("source")
                  for f in function_app.app.get_functions() for b in f.get_bindings()
                  if b.get_dict_repr().get("type") == "blobTrigger"}))
"""


def indexed_sources(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_BLOB_SOURCE")} | settings
    done = subprocess.run(
        [sys.executable, "-c", SHOW_SOURCES], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_polling_is_the_default_for_both_blob_triggers() -> None:
    assert indexed_sources() == {
        "business_events_process": "LogsAndContainerScan",
        "import_inbound_file": "LogsAndContainerScan",
    }


def test_each_trigger_follows_its_own_setting() -> None:
    assert indexed_sources(IMPORT_BLOB_SOURCE="EventGrid") == {
        "business_events_process": "LogsAndContainerScan",
        "import_inbound_file": "EventGrid",
    }
    assert indexed_sources(BUSINESS_EVENTS_BLOB_SOURCE="eventgrid", IMPORT_BLOB_SOURCE="EventGrid") == {
        "business_events_process": "EventGrid",
        "import_inbound_file": "EventGrid",
    }


def test_an_unknown_value_falls_back_to_polling_instead_of_failing_the_app() -> None:
    assert blob_trigger_source("X", {"X": "Queue"}) == "LogsAndContainerScan"
    assert blob_trigger_source("X", {"X": " EVENTGRID "}) == "EventGrid"
