"""A CA bundle file that trusts the public roots plus one extra certificate (the local stack's)."""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
import threading
from pathlib import Path

__all__ = ["trust_bundle"]

_TRUST_FILES: dict[tuple[str, int, int], str] = {}
_TRUST_LOCK = threading.Lock()


def trust_bundle(extra_pem: str | None) -> str | None:
    """Path of a CA bundle = the usual public roots + ``extra_pem`` (None when there is nothing extra).

    ``connection_verify`` *replaces* the trusted roots, so the local stack's self-signed certificate is
    appended to the public ones: the app can then reach the local vault and real Azure hosts alike. The
    bundle is a private temp file per process (removed at exit), rebuilt when ``extra_pem`` changes.
    """
    if not extra_pem:
        return None
    stat = os.stat(extra_pem)
    key = (os.path.abspath(extra_pem), stat.st_mtime_ns, stat.st_size)
    with _TRUST_LOCK:
        if key not in _TRUST_FILES:
            from requests.utils import DEFAULT_CA_BUNDLE_PATH  # certifi's bundle: what requests trusts

            content = Path(DEFAULT_CA_BUNDLE_PATH).read_bytes() + b"\n" + Path(extra_pem).read_bytes()
            fd, path = tempfile.mkstemp(prefix="d365fo-trust-", suffix=".pem")
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            if not _TRUST_FILES:
                atexit.register(_remove_trust_files)
            _TRUST_FILES[key] = path
        return _TRUST_FILES[key]


def _remove_trust_files() -> None:
    for path in _TRUST_FILES.values():
        with contextlib.suppress(OSError):
            os.remove(path)
