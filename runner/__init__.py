"""Local runner: serves the function app's HTTP, timer and blob triggers on the local stack like the host.

Development-only (kept out of the deployment by .funcignore); the app never imports it. Library use:

    local = load_local_settings(root=ROOT)
    apply_to_environment(local.values)          # before importing the app, as Core Tools does
    app = load_app("function_app:app", root=ROOT)
    runner = Runner(app, settings=os.environ, port=7071, app_root=ROOT)
    print(runner.start().describe())
    runner.serve_forever()                      # or runner.stop(timeout) from another thread

See docs/runner.md for what is supported and how it maps to the Functions host.
"""

from runner.discovery import Discovery, FunctionSpec, Skipped, discover, load_app
from runner.host import Runner, RunnerError
from runner.info import BlobInfo, HttpInfo, StartedInfo, TimerInfo
from runner.logs import configure_logging
from runner.settings import LocalSettings, SettingsError, apply_to_environment, load_local_settings

__all__ = [
    "BlobInfo",
    "Discovery",
    "FunctionSpec",
    "HttpInfo",
    "LocalSettings",
    "Runner",
    "RunnerError",
    "SettingsError",
    "Skipped",
    "StartedInfo",
    "TimerInfo",
    "apply_to_environment",
    "configure_logging",
    "discover",
    "load_app",
    "load_local_settings",
]
