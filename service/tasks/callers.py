"""Callbacks per caller: an authenticated caller's own webhook secrets and the private networks its
callbacks may reach, from `MODERATION_CALLBACK_CALLERS_FILE` (TOML, a table per caller):

    [uploads]
    secrets_file = "/run/secrets/uploads-webhooks"   # whsec_ secrets, newest first; re-read on change
    allowed_networks = ["10.1.0.0/16"]              # besides MODERATION_CALLBACK_ALLOWED_NETWORKS

A caller without a table, and every call with authentication off, has the gateway's own.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path

from backends.fetch import IPNetwork
from service.tasks.egress import CallbackEgress
from service.tasks.model import hashed_caller
from service.tasks.signing import SecretError, SecretSource, parse_secrets

__all__ = ["CallbackPolicies", "CallerCallbacks", "CallersFileError", "load_callers"]

KEYS = frozenset({"secrets_file", "allowed_networks"})


class CallersFileError(ValueError):
    """Everything wrong with the file, one problem a line (no secret quoted)."""


@dataclass(frozen=True)
class CallerCallbacks:
    secrets_file: Path | None
    allowed_networks: tuple[IPNetwork, ...]


def load_callers(path: Path) -> dict[str, CallerCallbacks]:
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as problem:
        raise CallersFileError(f"cannot read it: {type(problem).__name__}") from None
    problems: list[str] = []
    callers = {}
    for caller, table in document.items():
        if not isinstance(table, dict):
            problems.append(f"{caller}: must be a table")
            continue
        problems += [f"{caller}.{key}: unknown key" for key in sorted(set(table) - KEYS)]
        secrets_file = table.get("secrets_file")
        if secrets_file is not None:
            secrets_file = path.parent / str(secrets_file)
            try:
                parse_secrets(secrets_file.read_text())
            except (OSError, UnicodeDecodeError, SecretError) as problem:
                problems.append(f"{caller}.secrets_file: {problem}")
        networks = []
        for network in table.get("allowed_networks", []):
            try:
                networks.append(ipaddress.ip_network(str(network), strict=False))
            except ValueError:
                problems.append(
                    f"{caller}.allowed_networks: {network!r} is not a network such as 10.1.0.0/16"
                )
        callers[caller] = CallerCallbacks(secrets_file, tuple(networks))
    if problems:
        raise CallersFileError("\n".join(problems))
    return callers


class CallbackPolicies:
    """Whose secrets sign a task's callback, and which egress (which networks) carries it."""

    def __init__(
        self,
        secrets: SecretSource,
        egress: CallbackEgress,
        *,
        allowed_networks: tuple[IPNetwork, ...],
        allow_http: bool,
        callers: dict[str, CallerCallbacks],
    ) -> None:
        self._secrets = secrets
        self._egress = egress
        # By hashed_caller(): a task keeps its caller only hashed.
        self._own_secrets = {
            hashed_caller(caller): SecretSource((), entry.secrets_file)
            for caller, entry in callers.items()
            if entry.secrets_file is not None
        }
        self._own_egress = {
            hashed_caller(caller): CallbackEgress(
                allowed_networks=(*allowed_networks, *entry.allowed_networks), allow_http=allow_http
            )
            for caller, entry in callers.items()
            if entry.allowed_networks
        }

    def secrets(self, caller: str) -> SecretSource:
        """`caller`: hashed_caller() of the authenticated caller, or "" without authentication."""
        return self._own_secrets.get(caller, self._secrets)

    def egress(self, caller: str) -> CallbackEgress:
        return self._own_egress.get(caller, self._egress)

    async def aclose(self) -> None:
        for egress in (self._egress, *self._own_egress.values()):
            await egress.aclose()
