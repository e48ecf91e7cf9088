"""Generic reading of app settings: typed getters that collect problems, masked secrets, one error for all.

:class:`SettingsReader` turns an environment mapping into typed values and resolves Key Vault references
through a :class:`~shared.keyvault.SecretSource`; it records problems instead of raising, so one
:class:`ConfigurationError` lists them all. Secret-typed values are :class:`Secret` objects (masked repr).
Sections (the app's own in ``settings_sections``, and features') implement :class:`SettingsSection`.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, Self
from urllib.parse import urlsplit

from shared.keyvault import (
    InvalidKeyVaultReferenceError,
    KeyVaultError,
    KeyVaultReference,
    SecretSource,
    is_loopback_host,
    parse_key_vault_reference,
)
from shared.redact import MASK, redact_text

__all__ = ["ConfigurationError", "Secret", "SettingsReader", "SettingsSection"]


class ConfigurationError(Exception):
    """Every configuration problem found, one ``NAME: what is wrong / expected`` line each."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"Invalid configuration ({count} problem{'s' if count != 1 else ''}):\n{lines}")


class Secret:
    """A secret setting value: masked in repr/str/logs; ``reveal()`` returns it.

    A Key Vault-backed secret asks its source on every ``reveal()``; the source's TTL cache keeps that
    cheap and makes a rotated secret visible after ``KEY_VAULT_CACHE_SECONDS``.
    """

    __slots__ = ("_reference", "_source", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._reference: KeyVaultReference | None = None
        self._source: SecretSource | None = None

    @classmethod
    def from_reference(cls, reference: KeyVaultReference, source: SecretSource, value: str) -> Secret:
        """A secret re-read from ``source`` on each reveal (``value`` is the one read at start-up)."""
        secret = cls(value)
        secret._reference, secret._source = reference, source
        return secret

    @property
    def reference(self) -> KeyVaultReference | None:
        """Where the value comes from, when it is Key Vault-backed."""
        return self._reference

    def reveal(self) -> str:
        """The plain value; only hand it to the API that needs it."""
        if self._source is not None and self._reference is not None:
            return self._source.resolve(self._reference)
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        """Key Vault-backed secrets are equal by reference, literal ones by value (constant-time)."""
        if not isinstance(other, Secret):
            return NotImplemented
        if self._reference is not None or other._reference is not None:
            return self._reference == other._reference
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._reference) if self._reference is not None else hash(Secret)

    def __reduce__(self) -> Any:
        raise TypeError("Secret values are not picklable")


_CONTAINER_NAME = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]\Z")


class SettingsReader:
    """Reads typed values from an environment mapping and collects problems instead of raising.

    Values that are Key Vault references are resolved through ``secrets``; with ``secrets=None`` a
    reference is itself reported as a problem (used for the few settings needed to reach Key Vault).
    Non-secret values may be echoed (redacted, shortened) in messages; secret values never are.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        secrets: SecretSource | None = None,
        vault_url: str | None = None,
    ) -> None:
        self.env = env
        self.secrets = secrets
        self.vault_url = vault_url
        self._problems: dict[str, str] = {}

    @property
    def problems(self) -> list[str]:
        return [f"{name}: {message}" for name, message in self._problems.items()]

    def problem(self, name: str, message: str) -> None:
        """Record a problem (the first one per setting name is kept)."""
        self._problems.setdefault(name, message)

    def raise_for_problems(self) -> None:
        if self._problems:
            raise ConfigurationError(self.problems)

    def is_reference(self, name: str) -> bool:
        try:
            return parse_key_vault_reference(self.env.get(name)) is not None
        except InvalidKeyVaultReferenceError:
            return True

    def merge(self, other: SettingsReader) -> None:
        """Take over the problems another reader found (they come first in the message)."""
        self._problems = {**other._problems, **self._problems}

    def lookup(
        self, name: str, *, strip: bool = True, references: bool = True
    ) -> tuple[str | None, KeyVaultReference | None]:
        """(value, reference) of ``name``: blank counts as unset; a reference is resolved (or reported).

        ``references=False`` refuses references for settings that are needed to reach Key Vault.
        """
        raw = self.env.get(name)
        if raw is None or not raw.strip():
            return None, None
        try:
            reference = parse_key_vault_reference(raw, vault_url=self.vault_url)
        except InvalidKeyVaultReferenceError as exc:
            self.problem(name, f"malformed Key Vault reference: {exc}")
            return None, None
        if reference is None:
            return (raw.strip() if strip else raw), None
        if self.secrets is None or not references:
            self.problem(name, "cannot be a Key Vault reference (it is needed to reach Key Vault)")
            return None, None
        try:
            value = self.secrets.resolve(reference)
        except KeyVaultError as exc:
            self.problem(name, f"Key Vault reference could not be resolved: {exc}")
            return None, None
        except Exception as exc:
            detail = redact_text(str(exc))[:300]
            self.problem(
                name,
                f"Key Vault reference to vault {reference.vault_host} could not be resolved: "
                f"{type(exc).__name__}: {detail}",
            )
            return None, None
        value = value.strip() if strip else value
        return (value or None), reference

    def _missing(self, name: str, expected: str) -> None:
        if name not in self._problems:
            self.problem(name, f"missing; expected {expected}")

    def _bad(self, name: str, value: str, expected: str) -> None:
        shown = redact_text(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        self.problem(name, f"{shown!r} is not valid; expected {expected}")

    # -- typed getters

    def text(self, name: str, *, default: str | None = None, references: bool = True) -> str | None:
        value, _ = self.lookup(name, references=references)
        return default if value is None else value

    def required(self, name: str, expected: str) -> str:
        value, _ = self.lookup(name)
        if value is None:
            self._missing(name, expected)
            return ""
        return value

    def secret(self, name: str, *, required: str | None = None) -> Secret | None:
        """A :class:`Secret`; ``required`` is the 'expected ...' text when the setting must be present."""
        value, reference = self.lookup(name, strip=False)
        if value is None:
            if required:
                self._missing(name, required)
            return None
        if reference is not None and self.secrets is not None:
            return Secret.from_reference(reference, self.secrets, value)
        return Secret(value)

    def choice(self, name: str, options: Iterable[str], default: str) -> str:
        allowed = tuple(options)
        value = self.text(name)
        if value is None:
            return default
        if value.lower() not in allowed:
            self._bad(name, value, "one of " + ", ".join(allowed))
            return default
        return value.lower()

    def url(
        self, name: str, *, required: bool = False, expected: str, https_only: bool = False
    ) -> str | None:
        """An absolute URL, lowercased host, no trailing slash; http only for loopback unless https_only."""
        value = self.required(name, expected) if required else self.text(name)
        if not value:
            return None
        parts = urlsplit(value)
        scheme_ok = parts.scheme == "https" or (
            parts.scheme == "http" and not https_only and is_loopback_host(parts.hostname)
        )
        if not scheme_ok or not parts.hostname or "@" in parts.netloc or parts.query or parts.fragment:
            self._bad(name, value, expected)
            return None
        return f"{parts.scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"

    def number(
        self,
        name: str,
        default: float,
        *,
        minimum: float = 0.0,
        maximum: float | None = None,
        above: bool = False,
    ) -> float:
        """A float; ``above`` makes ``minimum`` exclusive."""
        value = self.text(name)
        if value is None:
            return default
        bound = f"> {minimum:g}" if above else f">= {minimum:g}"
        expected = f"a number of seconds {bound}" + (f" and <= {maximum:g}" if maximum is not None else "")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        low_ok = number > minimum if above else number >= minimum
        if not math.isfinite(number) or not low_ok or (maximum is not None and number > maximum):
            self._bad(name, value, expected)
            return default
        return number

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        found = self.optional_integer(name, minimum=minimum, maximum=maximum)
        return default if found is None else found

    def optional_integer(self, name: str, *, minimum: int, maximum: int) -> int | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if not minimum <= number <= maximum:
            self._bad(name, value, f"a whole number from {minimum} to {maximum}")
            return None
        return number

    def container(self, name: str, default: str) -> str:
        """A blob container name (3-63 lower-case letters, digits, single hyphens)."""
        value = self.text(name, default=default) or default
        if not _CONTAINER_NAME.match(value):
            self.problem(name, f"{value!r} is not a container name (3-63 lower-case letters, digits, '-')")
            return default
        return value

    def json_objects(self, name: str) -> list[dict[str, Any]]:
        """A JSON list of objects (one object alone counts as a list of one); [] when unset."""
        raw = self.text(name)
        if raw is None:
            return []
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            self.problem(name, f"is not valid JSON ({exc.msg} at position {exc.pos}); expected a JSON list")
            return []
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.problem(name, "expected a JSON list of objects")
            return []
        return value

    def file(
        self, name: str, *, expected: str, must_contain: bytes | None = None, references: bool = True
    ) -> str | None:
        """Path of a readable file (optionally containing ``must_contain``)."""
        value = self.text(name, references=references)
        if value is None:
            return None
        path = Path(value).expanduser()
        try:
            content = path.read_bytes()
        except OSError:
            self.problem(name, f"file {value!r} cannot be read; expected {expected}")
            return None
        if must_contain is not None and must_contain not in content:
            self.problem(name, f"file {value!r} is not {expected}")
            return None
        return str(path)


_CONTAINER_NAME = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]\Z")


class JsonFields:
    """Typed access to one JSON object inside a setting (a route, an activity...); each problem is reported
    on the reader as ``where: message`` (e.g. ``IMPORT_ROUTES[2]: 'execute' must be true or false``)."""

    def __init__(
        self, reader: SettingsReader, where: str, item: dict[str, Any], known: Iterable[str] | None = None
    ) -> None:
        self.reader, self.where, self.item = reader, where, item
        if known is not None:
            self.unknown(set(known))

    def problem(self, message: str) -> None:
        self.reader.problem(self.where, message)

    def unknown(self, known: set[str]) -> None:
        extra = sorted(set(self.item) - known)
        if extra:
            self.problem(f"unknown key(s) {', '.join(extra)}; known: {', '.join(sorted(known))}")

    def text(self, key: str, default: str = "", *, required: bool = False) -> str:
        value = self.item.get(key, default)
        if not isinstance(value, str) or (required and not value.strip()):
            self.problem(f"{key!r} must be a{' non-empty' if required else ''} string")
            return default
        return value.strip()

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.text(key, default).lower()
        if value not in options:
            self.problem(f"{key!r} must be one of {', '.join(options)}")
            return default
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.item.get(key, default)
        if not isinstance(value, bool):
            self.problem(f"{key!r} must be true or false")
            return default
        return value

    def whole(self, key: str, default: int, minimum: int, maximum: int) -> int:
        value = self.item.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            self.problem(f"{key!r} must be a whole number from {minimum} to {maximum}")
            return default
        return value


class SettingsSection(Protocol):
    """A feature's settings: a frozen dataclass that knows how to read itself."""

    @classmethod
    def from_reader(cls, reader: SettingsReader) -> Self: ...
