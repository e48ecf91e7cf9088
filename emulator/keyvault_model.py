"""State and rules of the local Key Vault (secrets only): versions, soft delete, backups, access policies.

HTTP lives in ``emulator.keyvault``; this module knows nothing about requests (moto's models/responses split).
Errors carry Azure's wire code and message so the routes only serialise them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

RECOVERY_LEVEL = "Recoverable+Purgeable"
RECOVERABLE_DAYS = 90
VAULT_NAME = "emulator"  # used only in Azure-shaped messages ("... on key vault 'emulator;location=local'")
VAULT_LOCATION = "local"
SECRET_PERMISSIONS = ("get", "list", "set", "delete", "recover", "backup", "restore", "purge")

_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
_BACKUP_PREFIX = "EMULATOR-KV-BACKUP-1."
_NOT_FOUND_HELP = (
    "If you recently deleted this secret you may be able to recover it using the correct recovery command. "
    "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)


class KeyVaultError(Exception):
    """An Azure-shaped failure: ``{"error": {"code", "message", "innererror"?: {"code"}}}`` with a status."""

    def __init__(self, status: int, code: str, message: str, inner_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner_code = inner_code

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner_code:
            error["innererror"] = {"code": self.inner_code}
        return {"error": error}


def bad_parameter(message: str) -> KeyVaultError:
    return KeyVaultError(400, "BadParameter", message)


def secret_not_found(name: str, version: str | None = None) -> KeyVaultError:
    what = f"{name}/{version}" if version else name
    return KeyVaultError(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {what} was not found in this key vault. {_NOT_FOUND_HELP}",
    )


def deleted_secret_not_found(name: str) -> KeyVaultError:
    # UNCONFIRMED wording; the code matches the live secret case.
    return KeyVaultError(404, "SecretNotFound", f"Deleted Secret not found: {name}")


def validate_name(name: str) -> None:
    """Secret names are 1-127 letters, digits and dashes (Azure rejects anything else with 400)."""
    if not _NAME.match(name):
        raise bad_parameter(f"The request URI contains an invalid name: {name}")


@dataclass(frozen=True)
class SecretVersion:
    """One immutable value of a secret plus its (patchable) properties."""

    name: str
    version: str
    value: str
    content_type: str | None = None
    tags: Mapping[str, str] | None = None
    enabled: bool = True
    not_before: int | None = None
    expires: int | None = None
    created: int = 0
    updated: int = 0


@dataclass(frozen=True)
class DeletedSecret:
    """The newest version of a soft-deleted secret plus the deletion dates."""

    latest: SecretVersion
    deleted_date: int
    scheduled_purge_date: int


@dataclass
class _Secret:
    versions: list[SecretVersion]  # creation order; the last one is the current version
    deleted_date: int | None = None

    @property
    def latest(self) -> SecretVersion:
        return self.versions[-1]

    def as_deleted(self) -> DeletedSecret:
        deleted = self.deleted_date or 0
        return DeletedSecret(self.latest, deleted, deleted + RECOVERABLE_DAYS * 86400)


@dataclass(frozen=True)
class Caller:
    """Who is calling, from the validated token (``appid``/``azp``, ``oid``, ``tid`` claims)."""

    app_id: str
    object_id: str
    tenant_id: str

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Caller:
        app_id = str(claims.get("appid") or claims.get("azp") or "")
        object_id, tenant_id = str(claims.get("oid") or ""), str(claims.get("tid") or "")
        return cls(app_id=app_id, object_id=object_id, tenant_id=tenant_id)


@dataclass(frozen=True)
class AccessPolicy:
    """One vault access-policy entry (Azure's ``accessPolicies[]``, secrets permissions only).

    ``object_id`` is matched against the token's ``oid``; as an emulator convenience it also matches the
    token's ``appid``, so tests can grant by client id without knowing the service principal's object id.
    """

    object_id: str
    secrets: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AccessPolicy:
        object_id = data.get("objectId") or data.get("applicationId")
        if not isinstance(object_id, str) or not object_id:
            raise bad_parameter("An access policy needs an 'objectId'.")
        permissions = data.get("permissions") or {}
        secrets = permissions.get("secrets", []) if isinstance(permissions, Mapping) else []
        if not isinstance(secrets, list) or not all(isinstance(p, str) for p in secrets):
            raise bad_parameter("'permissions.secrets' must be a list of strings.")
        granted = {p.lower() for p in secrets}
        if "all" in granted:
            granted = set(SECRET_PERMISSIONS)
        unknown = granted - set(SECRET_PERMISSIONS)
        if unknown:
            raise bad_parameter(f"Unknown secret permissions: {', '.join(sorted(unknown))}")
        return cls(object_id=object_id, secrets=frozenset(granted))

    def to_json(self) -> dict[str, Any]:
        return {"objectId": self.object_id, "permissions": {"secrets": sorted(self.secrets)}}

    def matches(self, caller: Caller) -> bool:
        return self.object_id.lower() in {caller.object_id.lower(), caller.app_id.lower()}


class KeyVault:
    """In-memory secrets store of one emulator process; every public method is thread-safe.

    Names are case-insensitive as in Azure (the first spelling is kept). Soft delete is on, like every vault
    created since 2020: a deleted secret moves to the deleted collection (``recoveryLevel``
    ``Recoverable+Purgeable``, 90 days) until it is recovered or purged; it is never purged automatically.
    ``exp``/``nbf`` are stored and returned but, as in Azure, not enforced for secrets.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._active: dict[str, _Secret] = {}
        self._deleted: dict[str, _Secret] = {}
        self._policies: tuple[AccessPolicy, ...] | None = None

    def reset(self) -> None:
        """Forget every secret (live and deleted) and lift any access restriction."""
        with self._lock:
            self._active.clear()
            self._deleted.clear()
            self._policies = None

    def _now(self) -> int:
        return int(self._clock())

    # -- live secrets ---------------------------------------------------------------------------------------

    def set_secret(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
        enabled: bool = True,
        not_before: int | None = None,
        expires: int | None = None,
    ) -> SecretVersion:
        """Add a new version (a fresh 32-hex id) and make it the current one."""
        validate_name(name)
        key = name.lower()
        now = self._now()
        with self._lock:
            if key in self._deleted:
                raise KeyVaultError(
                    409,
                    "Conflict",
                    f"Secret {name} is currently in a deleted but recoverable state, and its name cannot be "
                    "reused; in this state, the secret can only be recovered or purged.",
                    "ObjectIsDeletedButRecoverable",
                )
            existing = self._active.get(key)
            stored_name = existing.latest.name if existing else name
            version = SecretVersion(
                name=stored_name,
                version=uuid.uuid4().hex,
                value=value,
                content_type=content_type,
                tags=dict(tags) if tags is not None else None,
                enabled=enabled,
                not_before=not_before,
                expires=expires,
                created=now,
                updated=now,
            )
            if existing:
                existing.versions.append(version)
            else:
                self._active[key] = _Secret([version])
            return version

    def get_secret(
        self, name: str, version: str | None = None, *, allow_disabled: bool = False
    ) -> SecretVersion:
        """The current (or a given) version; a disabled one is refused with 403 unless ``allow_disabled``."""
        with self._lock:
            found = self._find_version(name, version)
        if not found.enabled and not allow_disabled:
            raise KeyVaultError(
                403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled"
            )
        return found

    def update_secret(
        self,
        name: str,
        version: str | None = None,
        *,
        content_type: str | None = None,
        tags: Mapping[str, str] | None = None,
        enabled: bool | None = None,
        not_before: int | None = None,
        expires: int | None = None,
    ) -> SecretVersion:
        """Patch the properties of one version (``None`` keeps a property; the value never changes)."""
        with self._lock:
            current = self._find_version(name, version)
            changes: dict[str, Any] = {"updated": self._now()}
            if content_type is not None:
                changes["content_type"] = content_type
            if tags is not None:
                changes["tags"] = dict(tags)
            if enabled is not None:
                changes["enabled"] = enabled
            if not_before is not None:
                changes["not_before"] = not_before
            if expires is not None:
                changes["expires"] = expires
            patched = replace(current, **changes)
            versions = self._active[name.lower()].versions
            versions[versions.index(current)] = patched
            return patched

    def list_secrets(self) -> list[SecretVersion]:
        """The current version of every live secret, by name."""
        with self._lock:
            return [self._active[key].latest for key in sorted(self._active)]

    def list_versions(self, name: str) -> list[SecretVersion]:
        """Every version of a live secret (oldest first); empty when the name is unknown, as in Azure."""
        with self._lock:
            secret = self._active.get(name.lower())
            return list(secret.versions) if secret else []

    def names(self) -> list[str]:
        with self._lock:
            return [self._active[key].latest.name for key in sorted(self._active)]

    # -- soft delete ----------------------------------------------------------------------------------------

    def delete_secret(self, name: str) -> DeletedSecret:
        """Move every version to the deleted collection (recoverable until purged)."""
        key = name.lower()
        with self._lock:
            secret = self._active.pop(key, None)
            if secret is None:
                raise secret_not_found(name)
            secret.deleted_date = self._now()
            self._deleted[key] = secret
            return secret.as_deleted()

    def get_deleted(self, name: str) -> DeletedSecret:
        with self._lock:
            secret = self._deleted.get(name.lower())
            if secret is None:
                raise deleted_secret_not_found(name)
            return secret.as_deleted()

    def list_deleted(self) -> list[DeletedSecret]:
        with self._lock:
            return [self._deleted[key].as_deleted() for key in sorted(self._deleted)]

    def deleted_names(self) -> list[str]:
        with self._lock:
            return [self._deleted[key].latest.name for key in sorted(self._deleted)]

    def recover_deleted(self, name: str) -> SecretVersion:
        key = name.lower()
        with self._lock:
            secret = self._deleted.pop(key, None)
            if secret is None:
                raise deleted_secret_not_found(name)
            secret.deleted_date = None
            self._active[key] = secret
            return secret.latest

    def purge_deleted(self, name: str) -> None:
        with self._lock:
            if self._deleted.pop(name.lower(), None) is None:
                raise deleted_secret_not_found(name)

    def purge(self, name: str) -> bool:
        """Admin: forget a name entirely, live or deleted; True when something was removed."""
        key = name.lower()
        with self._lock:
            removed_active = self._active.pop(key, None) is not None
            removed_deleted = self._deleted.pop(key, None) is not None
            return removed_active or removed_deleted

    # -- backup / restore -----------------------------------------------------------------------------------

    def backup(self, name: str) -> str:
        """An opaque blob holding every version (Azure's is encrypted; this one is plain base64url JSON)."""
        with self._lock:
            secret = self._active.get(name.lower())
            if secret is None:
                raise secret_not_found(name)
            payload = [_version_to_dict(v) for v in secret.versions]
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(_BACKUP_PREFIX.encode() + raw).decode().rstrip("=")

    def restore(self, blob: str) -> SecretVersion:
        try:
            raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
            if not raw.startswith(_BACKUP_PREFIX.encode()):
                raise ValueError("not an emulator backup")
            versions = [_version_from_dict(item) for item in json.loads(raw[len(_BACKUP_PREFIX) :])]
            if not versions:
                raise ValueError("empty backup")
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            raise bad_parameter("Backup blob contains invalid or corrupt data.") from exc
        key = versions[0].name.lower()
        with self._lock:
            if key in self._active or key in self._deleted:
                raise KeyVaultError(409, "Conflict", f"Secret {versions[0].name} already exists.")
            self._active[key] = _Secret(versions)
            return versions[-1]

    # -- access policies ------------------------------------------------------------------------------------

    def set_access_policies(self, policies: Iterable[AccessPolicy] | None) -> None:
        """``None`` (the default) lets every token of the tenant do everything; a list restricts."""
        with self._lock:
            self._policies = tuple(policies) if policies is not None else None

    def access_policies(self) -> tuple[AccessPolicy, ...] | None:
        with self._lock:
            return self._policies

    def check_access(self, caller: Caller, permission: str) -> None:
        """Raise Azure's 403 ``AccessDenied`` when no policy grants ``permission`` to the caller."""
        with self._lock:
            policies = self._policies
        if policies is None:
            return
        if any(p.matches(caller) and permission in p.secrets for p in policies):
            return
        raise KeyVaultError(
            403,
            "Forbidden",
            f"The user, group or application 'appid={caller.app_id};oid={caller.object_id};"
            f"iss=https://sts.windows.net/{caller.tenant_id}/' does not have secrets {permission} permission "
            f"on key vault '{VAULT_NAME};location={VAULT_LOCATION}'. "
            "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
            "AccessDenied",
        )

    # -- helpers --------------------------------------------------------------------------------------------

    def _find_version(self, name: str, version: str | None) -> SecretVersion:
        secret = self._active.get(name.lower())
        if secret is None:
            raise secret_not_found(name, version)
        if not version:
            return secret.latest
        for candidate in secret.versions:
            if candidate.version == version.lower():
                return candidate
        raise secret_not_found(name, version)


def _version_to_dict(version: SecretVersion) -> dict[str, Any]:
    return {
        "name": version.name,
        "version": version.version,
        "value": version.value,
        "contentType": version.content_type,
        "tags": dict(version.tags) if version.tags is not None else None,
        "enabled": version.enabled,
        "nbf": version.not_before,
        "exp": version.expires,
        "created": version.created,
        "updated": version.updated,
    }


def _version_from_dict(data: Mapping[str, Any]) -> SecretVersion:
    validate_name(str(data["name"]))
    return SecretVersion(
        name=str(data["name"]),
        version=str(data["version"]),
        value=str(data["value"]),
        content_type=data.get("contentType"),
        tags=data.get("tags"),
        enabled=bool(data.get("enabled", True)),
        not_before=data.get("nbf"),
        expires=data.get("exp"),
        created=int(data["created"]),
        updated=int(data["updated"]),
    )
