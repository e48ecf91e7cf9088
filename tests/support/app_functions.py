"""The deployed app's functions as the host indexes them, for tests that call a function body directly.

``FunctionApp.get_functions()`` may run once per app object: azure-functions 2.x validates unique names on
every call and the second call on the same object raises. So the deployed ``function_app.app`` is indexed
once per process here, and every test shares the result.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any


@cache
def deployed_functions() -> dict[str, Callable[..., Any]]:
    """Function name → user function of ``function_app.app`` (indexed once per process)."""
    import function_app

    return {str(f.get_function_name()): f.get_user_function() for f in function_app.app.get_functions()}
