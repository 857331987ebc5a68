"""Settings declared once: each field's type, default, bounds, description and environment variable.

A `Declared` model is filled one of two ways:
- `from_environment(environ)`: each field from the variable named by its `validation_alias` (and a
  secret from the file named by `<VARIABLE>_FILE`, for Kubernetes secrets mounted as files), read by
  pydantic-settings. Fields without a variable are never read from the environment.
- `from_table(table)`: from a table of the routing file, keyed by field name.

Values are never echoed in errors (`hide_input_in_errors`), and secrets are `SecretStr`. One reader
treats every secret alike, wherever it comes from: surrounding whitespace is dropped (files end with a
newline; Tencent refuses a padded key with a signature failure that hides the cause).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, ClassVar, Final, Self, Union, get_args, get_origin

from pydantic import BeforeValidator, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from backends.base import Billing
from common.files import SECRET_FILE_LIMIT, UnreadableFile, read_text_file

__all__ = [
    "BUDGET_KEY_PATTERN",
    "BackendOptions",
    "Declared",
    "Secret",
    "attempts",
    "budget_key",
    "describe_errors",
    "is_secret",
    "rate_budget",
    "secret_values",
    "unreadable",
    "variable",
]


class _UnreadableFile(str):
    """Stands for a `<VARIABLE>_FILE` that could not be read, so validation reports it with the rest."""

    __slots__ = ()


def unreadable(problem: str) -> str:
    """A secret's stand-in when its source could not be read: validation reports `problem` for it."""
    return _UnreadableFile(problem)


def _read_secret(value: object) -> object:
    if isinstance(value, _UnreadableFile):
        raise ValueError(str(value))
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise ValueError("is empty")
    return value


# A secret: never shown in a repr or a message; its variable may name a file holding it instead.
Secret = Annotated[SecretStr, BeforeValidator(_read_secret)]


def variable(field: FieldInfo) -> str | None:
    """The environment variable a field is read from, if any."""
    alias = field.validation_alias
    return alias if isinstance(alias, str) else None


def is_secret(field: FieldInfo) -> bool:
    """A `Secret`, or an optional one."""
    members = get_args(field.annotation) if get_origin(field.annotation) in (Union, UnionType) else ()
    return any(get_args(m)[:1] == (SecretStr,) or m is SecretStr for m in (field.annotation, *members))


class _DeclaredVariables(PydanticBaseSettingsSource):
    """A settings source (pydantic-settings' public extension point): the declared variables only, from a
    given mapping rather than the process's environment. An empty or blank variable is not set. Values
    stay text, never decoded as JSON: a field holding several values parses its own spelling of them
    (`NoDecode` and a `BeforeValidator`, as `MODERATION_FETCH_ALLOW_NETWORKS`)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = variable(field)
        if name is None:
            return None, field_name, False
        if is_secret(field) and self._environ.get(f"{name}_FILE", "").strip():
            return _read_secret_file(name, Path(self._environ[f"{name}_FILE"].strip())), name, False
        value = self._environ.get(name)
        return (value if value is not None and value.strip() else None), name, False

    def __call__(self) -> dict[str, Any]:
        found = (self.get_field_value(field, key) for key, field in self.settings_cls.model_fields.items())
        return {name: value for value, name, _ in found if value is not None}


def _read_secret_file(name: str, path: Path) -> str:
    try:
        return read_text_file(path, SECRET_FILE_LIMIT).strip()
    except UnreadableFile as problem:
        return unreadable(f"cannot read {name}_FILE ({problem})")


class Declared(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
        str_strip_whitespace=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what is passed in: the environment is read by `from_environment`, explicitly.
        return (init_settings,)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Self:
        """ValidationError (locations are variable names) if a variable is invalid."""
        return cls(**_DeclaredVariables(cls, environ)())

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> Self:
        """ValidationError (locations are keys) if the table is invalid."""
        return cls.model_validate(dict(table), by_alias=False, by_name=True)

    @classmethod
    def secret_fields(cls) -> tuple[str, ...]:
        return tuple(name for name, field in cls.model_fields.items() if is_secret(field))

    @classmethod
    def keys_by_variable(cls) -> dict[str, str]:
        """Each variable's key in a table."""
        return {name: key for key, field in cls.model_fields.items() if (name := variable(field))}


# A fleet budget's name in Redis.
BUDGET_KEY_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,128}$"
DEFAULT_QPS: Final = 100
DEFAULT_ATTEMPTS: Final = 3


def rate_budget(variable: str | None = None) -> Any:
    """The `qps` field of a type's options, read from `variable` when the type is the single backend."""
    return Field(
        DEFAULT_QPS,
        ge=1,
        # A budget past this is a typo, and would pace nothing.
        le=100_000,
        validation_alias=variable,
        description="the backend account's request budget per second, spent by the rate governor for "
        "unary and streaming calls together.",
    )


def attempts(variable: str | None = None) -> Any:
    """The `max_attempts` field of a type's options (a route's `attempts` overrides it)."""
    return Field(
        DEFAULT_ATTEMPTS,
        ge=1,
        le=10,
        validation_alias=variable,
        description="backend calls per request, retries included.",
    )


def budget_key(variable: str | None = None) -> Any:
    """The `budget_key` field of a type's options: fleet mode's name of the budget it spends."""
    return Field(
        None,
        pattern=BUDGET_KEY_PATTERN,
        validation_alias=variable,
        description="fleet mode: the backend's budget in Redis, so several keys of one account share one "
        "budget.",
        json_schema_extra={"default_text": "a hash of the account it spends"},
    )


class BackendOptions(Declared):
    """The options of a backend type: its own, and those every type declares (under its own variables):
    its rate budget, its attempts per call, its fleet budget key, and whether and at what price its
    calls are billed (`billing`)."""

    # A routing-file table takes these from the type's variables when it does not give them itself
    # (an account's budget, its attempts, its price are the account's wherever it is routed).
    TABLE_INHERITS: ClassVar[tuple[str, ...]] = ("qps", "max_attempts", "price_per_10k")

    qps: int = rate_budget()
    max_attempts: int = attempts()
    budget_key: str | None = budget_key()

    def account(self) -> str | None:
        """What identifies the remote account whose rate budget these options spend (such as an API key
        id), or None for a backend without one. Fleet mode hashes it into the default budget key."""
        return None

    def billing(self) -> Billing | None:
        """What a call costs, for a type whose provider bills per call; None for one that does not."""
        return None

    @classmethod
    def inherited(cls, environ: Mapping[str, str]) -> dict[str, str]:
        """The values a table takes from the environment (`TABLE_INHERITS`), by key."""
        fields = ((key, cls.model_fields.get(key)) for key in cls.TABLE_INHERITS)
        named = {key: name for key, field in fields if field is not None and (name := variable(field))}
        return {key: environ[name] for key, name in named.items() if environ.get(name, "").strip()}


def secret_values(model: Declared) -> tuple[str, ...]:
    """Every secret a model holds, for the log filter that redacts them."""
    values = (getattr(model, name) for name in type(model).secret_fields())
    return tuple(v.get_secret_value() for v in values if isinstance(v, SecretStr) and v.get_secret_value())


# Pydantic's wording where it reads oddly in a configuration problem.
_PLAIN_MESSAGES = {"missing": "is required", "extra_forbidden": "unknown key"}


def describe_errors(error: ValidationError, where: str = "", *, keys: Mapping[str, str] = {}) -> list[str]:
    """One line per problem, `where` first; never the value (it may be a secret).

    `keys` renames locations: pydantic names a missing field by its variable, a table by its key.
    """
    problems = []
    for detail in error.errors(include_url=False, include_input=False, include_context=False):
        location = ".".join(keys.get(str(part), str(part)) for part in detail["loc"])
        message = _PLAIN_MESSAGES.get(detail["type"]) or detail["msg"].removeprefix("Value error, ")
        prefix = " ".join(part for part in (where, location) if part)
        problems.append(f"{prefix}: {message}" if prefix else message)
    return problems
