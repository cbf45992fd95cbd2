"""Client keys: where they come from, how a request presents one, and how it is checked.

A request presents its key in `X-API-Key` or as `Authorization: Bearer <key>` (today's official SDKs send the
latter). Keys come from `VALID_API_KEYS` and from `API_KEYS_FILE` (docs/CONTRACTS.md), the file re-read by a
background task when it changes. Only sha256 digests are held in memory; a presented key is hashed and its digest
looked up, then confirmed with `hmac.compare_digest`, so the comparison takes the same time whatever the key.

Each key carries its limits, its policy (`policy.Policy`: allowed models, largest `max_tokens`, betas, costlier
features) and its spend budget (`budgets.Budget`), all from its keys-file entry (docs/CONTRACTS.md). Keys in
`ADMIN_API_KEYS` are never client keys: presented to a client route they get 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from limits import RateLimitItem

from claude_gateway.budgets import NO_BUDGET, Budget, BudgetError, default_budget, parse_budget
from claude_gateway.errors import ClientError, MissingKey, UnknownKey
from claude_gateway.logs import get_logger
from claude_gateway.policy import ALLOW_ALL, Policy, PolicyError, parse_policy
from claude_gateway.settings import Settings, parse_limits

log = get_logger("claude_gateway.auth")

# How often the keys file is looked at; a rotation takes effect within this.
KEYS_FILE_POLL_S = 1.0
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NO_DIGEST = bytes(32)


class AdminKeyRefused(ClientError):
    """An admin key (`ADMIN_API_KEYS`) presented to a client route: admin keys are never client keys."""

    status_code = 403
    anthropic_type = "permission_error"
    default_message = "Admin keys cannot be used as client keys"


@dataclass(frozen=True, slots=True)
class ClientKey:
    """An authenticated client: its name (what logs and metrics see), its limits, its policy and its budget."""

    name: str
    request_limits: tuple[RateLimitItem, ...] = field(default=())
    token_limits: tuple[RateLimitItem, ...] = field(default=())
    policy: Policy = ALLOW_ALL
    budget: Budget = NO_BUDGET


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def short_name(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]


class KeysFileError(ValueError):
    """The keys file is malformed; the message names the entry, never a key."""


def parse_keys_file(text: str, settings: Settings) -> dict[bytes, ClientKey]:
    try:
        data: Any = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError:
        try:
            data = json.loads(text)
        except ValueError:
            raise KeysFileError("not valid YAML or JSON") from None
    entries = data.get("keys") if isinstance(data, Mapping) else data
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise KeysFileError("expected a list under `keys`")
    keys: dict[bytes, ClientKey] = {}
    names: set[str] = set()
    budget = default_budget(settings)
    for index, entry in enumerate(entries):
        where = f"entry {index}"
        if not isinstance(entry, Mapping):
            raise KeysFileError(f"{where}: expected a mapping")
        name = str(entry.get("name", ""))
        if not _NAME.match(name):
            raise KeysFileError(f"{where}: `name` must match {_NAME.pattern}")
        if name in names:
            raise KeysFileError(f"{where}: duplicate name {name!r}")
        names.add(name)
        if entry.get("key"):
            key_digest = digest(str(entry["key"]))
        elif isinstance(entry.get("sha256"), str) and _HEX_SHA256.match(entry["sha256"].lower()):
            key_digest = bytes.fromhex(entry["sha256"].lower())
        else:
            raise KeysFileError(f"{where} ({name}): give `key` or a 64-hex-digit `sha256`")
        try:
            request_limits = parse_limits(entry["rate_limit"]) if "rate_limit" in entry else settings.rate_limit
            token_limits = (
                parse_limits(entry["token_rate_limit"]) if "token_rate_limit" in entry else settings.token_rate_limit
            )
            policy = parse_policy(entry)
            key_budget = parse_budget(entry, budget)
        except (ValueError, PolicyError, BudgetError) as exc:
            raise KeysFileError(f"{where} ({name}): {exc}") from None
        keys[key_digest] = ClientKey(name, tuple(request_limits), tuple(token_limits), policy, key_budget)
    return keys


class KeyStore:
    """Every valid key's digest -> its client. Swapped whole on reload, so readers never see half a file."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._env_keys: dict[bytes, ClientKey] = {
            digest(secret.get_secret_value()): ClientKey(
                short_name(secret.get_secret_value()),
                tuple(settings.rate_limit),
                tuple(settings.token_rate_limit),
                budget=default_budget(settings),
            )
            for secret in settings.valid_api_keys
        }
        self._admin_digests = frozenset(digest(secret.get_secret_value()) for secret in settings.admin_api_keys)
        self._keys: dict[bytes, tuple[bytes, ClientKey]] = {}
        self._install({})
        self._file_stamp: tuple[float, int] | None = None
        self._watcher: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def names(self) -> Iterable[str]:
        return (client.name for _, client in self._keys.values())

    @property
    def clients(self) -> Iterable[ClientKey]:
        """Every configured client (for the admin usage view)."""
        return (client for _, client in self._keys.values())

    def _install(self, file_keys: dict[bytes, ClientKey]) -> None:
        merged = {**self._env_keys, **file_keys}
        self._keys = {key_digest: (key_digest, client) for key_digest, client in merged.items()}

    def authenticate(self, presented: str | None) -> ClientKey:
        if not presented:
            raise MissingKey()
        key_digest = digest(presented)
        if key_digest in self._admin_digests:
            raise AdminKeyRefused()
        # The dict lookup can only reveal something about a digest, which says nothing about the key; the final
        # comparison is constant-time all the same, against a stand-in when the digest is unknown.
        stored, client = self._keys.get(key_digest, (_NO_DIGEST, None))
        if not hmac.compare_digest(key_digest, stored) or client is None:
            raise UnknownKey()
        return client

    def is_admin(self, presented: str | None) -> bool:
        """Whether `presented` is one of `ADMIN_API_KEYS` (for the admin views)."""
        return bool(presented) and digest(presented or "") in self._admin_digests

    # -- the keys file

    def load_file_now(self) -> None:
        """Read the keys file synchronously: at start-up only, where a bad file must stop the process."""
        path = self._settings.api_keys_file
        if path is None:
            return
        self._apply(path.read_text(encoding="utf-8"), _stamp(path))

    async def reload_if_changed(self) -> bool:
        path = self._settings.api_keys_file
        if path is None:
            return False
        try:
            stamp = await asyncio.to_thread(_stamp, path)
            if stamp == self._file_stamp:
                return False
            text = await asyncio.to_thread(path.read_text, encoding="utf-8")
            self._apply(text, stamp)
        except (OSError, KeysFileError) as exc:
            # Keep serving with the keys we have: a half-written or broken file must not lock every client out.
            log.warning("keys file not reloaded; keeping the previous keys", extra={"reason": str(exc)})
            return False
        log.info("keys file reloaded", extra={"clients": len(self._keys)})
        return True

    def _apply(self, text: str, stamp: tuple[float, int]) -> None:
        self._install(parse_keys_file(text, self._settings))
        self._file_stamp = stamp

    def start_watching(self) -> None:
        if self._settings.api_keys_file is not None and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="keys-file-watcher")

    async def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(KEYS_FILE_POLL_S)
            await self.reload_if_changed()


def _stamp(path: Path) -> tuple[float, int]:
    info = os.stat(path)
    return (info.st_mtime, info.st_size)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from `X-API-Key`, else from `Authorization: Bearer`."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None
