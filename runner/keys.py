"""Function keys kept where the host's blob secret storage keeps them, and the auth-level check.

``azure-webjobs-secrets/<host-id>/host.json`` holds the master key and the host function keys
(``default``); ``azure-webjobs-secrets/<host-id>/<function>.json`` the function's own keys. Each is
created once with a conditional write, so several runners and every restart share the same keys; a
runner that loses the creation race reads the winner's keys. Keys are read at start: a key added to a
blob by hand is seen after a restart.

Auth levels: ``anonymous`` needs nothing; ``function`` takes the function's keys, any host key or the
master key; ``admin`` only the master key. A key arrives in ``x-functions-key`` or ``?code=``.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from runner.storage import SECRETS_CONTAINER, ensure_container, read_json, write_json

__all__ = ["HostKeys", "KeyStoreError", "load_or_create_keys", "new_key"]


class KeyStoreError(Exception):
    """Stored keys the runner cannot use (encrypted by a real host, malformed)."""


def new_key() -> str:
    return secrets.token_urlsafe(40)


@dataclass(frozen=True)
class HostKeys:
    master: str
    host_keys: Mapping[str, str]
    function_keys: Mapping[str, Mapping[str, str]]  # lower-cased function name -> key name -> value

    def keys_for(self, function_name: str) -> Mapping[str, str]:
        return self.function_keys.get(function_name.lower(), {})

    def authorize(self, function_name: str, auth_level: str, presented: str | None) -> bool:
        level = auth_level.lower()
        if level == "anonymous":
            return True
        if not presented:
            return False
        if _matches(presented, [self.master]):
            return True
        if level == "admin":
            return False
        return _matches(presented, [*self.host_keys.values(), *self.keys_for(function_name).values()])


def _matches(presented: str, candidates: Iterable[str]) -> bool:
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(presented.encode(), candidate.encode())
    return found


def _key(name: str) -> dict[str, Any]:
    return {"name": name, "value": new_key(), "encrypted": False}


def _value(entry: Any, where: str) -> tuple[str, str]:
    if not isinstance(entry, dict) or "value" not in entry:
        raise KeyStoreError(f"{where}: malformed key entry")
    if entry.get("encrypted"):
        raise KeyStoreError(
            f"{where}: key {entry.get('name')!r} is encrypted by a Functions host; the runner cannot read "
            "it. Use a different host id (AzureFunctionsWebHost__hostid) or delete the secrets blob."
        )
    return str(entry.get("name", "default")), str(entry["value"])


def _load_or_create(service: BlobServiceClient, path: str, fresh: dict[str, Any]) -> Any:
    blob = service.get_blob_client(SECRETS_CONTAINER, path)
    document, _ = read_json(blob)
    if document is not None:
        return document
    try:
        write_json(blob, fresh, create_only=True)
    except ResourceExistsError:
        document, _ = read_json(blob)
        return document
    return fresh


def load_or_create_keys(service: BlobServiceClient, host_id: str, function_names: Iterable[str]) -> HostKeys:
    """Read the host's and each function's keys, creating any that do not exist yet."""
    ensure_container(service, SECRETS_CONTAINER)
    host_doc = _load_or_create(
        service,
        f"{host_id}/host.json",
        {
            "masterKey": _key("_master"),
            "functionKeys": [_key("default")],
            "systemKeys": [],
            "source": "runner",
            "decryptionKeyId": "",
        },
    )
    _, master = _value(host_doc.get("masterKey"), f"{host_id}/host.json masterKey")
    host_keys = dict(_value(k, f"{host_id}/host.json") for k in host_doc.get("functionKeys", []))
    function_keys: dict[str, dict[str, str]] = {}
    for name in function_names:
        path = f"{host_id}/{name.lower()}.json"
        doc = _load_or_create(
            service, path, {"keys": [_key("default")], "source": "runner", "decryptionKeyId": ""}
        )
        function_keys[name.lower()] = dict(_value(k, path) for k in doc.get("keys", []))
    return HostKeys(master, host_keys, function_keys)
