"""The deployed app's functions as the host indexes them, for tests that call a function body directly.

``FunctionApp.get_functions()`` may run once per app object: newer azure-functions releases validate unique
names on every call, and a second call on the same object raises. Other code in the test process (the
runner's discovery) indexes ``function_app.app`` itself, so this indexes a fresh app object of its own, once
per process, and leaves another fresh, unindexed one behind.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from typing import Any


@cache
def deployed_functions() -> dict[str, Callable[..., Any]]:
    """Function name → user function of ``function_app.app`` (indexed once per process)."""
    import function_app

    app = importlib.reload(function_app).app
    functions = {str(f.get_function_name()): f.get_user_function() for f in app.get_functions()}
    importlib.reload(function_app)
    return functions
