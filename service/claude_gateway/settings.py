"""The gateway's configuration: one `Settings`, read from the environment, loud on bad input.

A bad value stops start-up with one line naming the variable, e.g.
``RATE_LIMIT: '10/minit' is not a valid limit (expected e.g. 10/minute)``.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from limits import RateLimitItem, parse_many
from pydantic import (
    AnyUrl,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from claude_gateway.pricing import PricesError, PriceTable, load_prices_file, shipped
from claude_gateway.upstream.egress import EgressConfigError, EgressProxies


def parse_limits(value: Any) -> list[RateLimitItem]:
    """`10/minute;1000/day` -> rate limit items (the `limits` syntax, several separated by `;`)."""
    if isinstance(value, list):
        return value
    if value is None or str(value).strip() == "":
        return []
    text = str(value)
    try:
        items = parse_many(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid limit (expected e.g. 10/minute or 10/minute;500/day)") from None
    if any(item.amount < 1 for item in items):
        raise ValueError(f"{text!r}: a limit's amount must be at least 1")
    return items


def parse_csv(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    if value is None:
        return []
    return [part.strip() for part in str(value).split(",") if part.strip()]


def parse_forwarded_allow_ips(value: Any) -> list[str]:
    """`127.0.0.1,10.244.0.0/16`: IP addresses and networks, as Gunicorn checks them (a network's host bits unset);
    `*` trusts every peer."""
    entries = parse_csv(value)
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (expected e.g. 10.244.0.0/16)") from None
    return entries


def parse_bool(value: Any) -> Any:
    if isinstance(value, str) and value.strip() == "":
        return False
    return value


class PricesFile:
    """`PRICES_FILE`: its path and the table read from it (read once, at start-up; a bad file stops it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.table = load_prices_file(path)

    def __repr__(self) -> str:
        return f"PricesFile({str(self.path)!r})"


def parse_prices_file(value: Any) -> PricesFile | None:
    if value is None or isinstance(value, PricesFile):
        return value
    text = str(value).strip()
    if not text:
        return None
    try:
        return PricesFile(Path(text))
    except PricesError as exc:
        raise ValueError(str(exc)) from None


def parse_usd(value: Any) -> Decimal | None:
    """A non-negative amount of US dollars (`20`, `0.05`); empty is none."""
    if value is None or isinstance(value, Decimal):
        return value
    text = str(value).strip().removeprefix("$")
    if not text:
        return None
    try:
        amount = Decimal(text)
    except ArithmeticError:
        raise ValueError(f"{str(value)!r} is not an amount of USD (expected e.g. 20 or 0.05)") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{str(value)!r}: an amount of USD must be a non-negative number")
    return amount


Usd = Annotated[Decimal | None, BeforeValidator(parse_usd)]
RateLimits = Annotated[list[RateLimitItem], NoDecode, BeforeValidator(parse_limits)]
CsvList = Annotated[list[str], NoDecode, BeforeValidator(parse_csv)]
Flag = Annotated[bool, BeforeValidator(parse_bool)]


class Settings(BaseSettings):
    """Every environment variable the gateway reads (INTERFACE.md and docs/CONTRACTS.md)."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        arbitrary_types_allowed=True,
    )

    # -- upstream
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: AnyUrl | None = None
    upstream_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    upstream_max_retries: int = Field(default=2, ge=0, le=10)
    default_model: str = Field(default="claude-sonnet-4-6", min_length=1)
    health_model: str = Field(default="claude-haiku-4-5-20251001", min_length=1)
    # The HTTP client under UpstreamClient: our own on httptools, or aiohttp (docs/http-client.md compares them).
    upstream_http_client: Literal["builtin", "aiohttp"] = "builtin"

    # -- clients
    valid_api_keys: Annotated[list[SecretStr], NoDecode, BeforeValidator(parse_csv)] = Field(default_factory=list)
    # Keys of the admin views; never valid as client keys (a client route answers them 403).
    admin_api_keys: Annotated[list[SecretStr], NoDecode, BeforeValidator(parse_csv)] = Field(default_factory=list)
    api_keys_file: Path | None = None
    cors_origins: CsvList = Field(default_factory=list)

    # -- limits
    redis_url: SecretStr | None = None
    redis_timeout_s: float = Field(default=0.5, gt=0, le=30)
    rate_limit: RateLimits = Field(default_factory=lambda: parse_limits("10/minute"))
    token_rate_limit: RateLimits = Field(default_factory=list)
    # `POST /v1/messages/count_tokens`, per key, apart from RATE_LIMIT: clients (Claude Code, the SDKs' helpers) call
    # it before or between messages, and it costs nothing upstream; 10 a second per key bounds a runaway loop.
    count_tokens_rate_limit: RateLimits = Field(default_factory=lambda: parse_limits("600/minute"))
    # `GET /v1/models[/{id}]`, per key, apart from RATE_LIMIT: model pickers list them at start-up, often page by page.
    models_rate_limit: RateLimits = Field(default_factory=lambda: parse_limits("600/minute"))
    rate_limit_fail_mode: Literal["open", "closed"] = "open"
    # Output tokens a request reserves against token limits and budgets before it runs: min(max_tokens, this); the
    # reservation is settled to the real usage after, and a window may go into debt. 4096 covers a typical answer
    # (a chat reply, an agent's tool call or edit: a few hundred to a few thousand tokens) so most requests settle
    # by a refund, while an agent client's max_tokens of 32k-128k no longer holds 128k tokens per request.
    token_reserve_output: int = Field(default=4096, ge=1)

    # -- spend
    prices_file: Annotated[PricesFile | None, BeforeValidator(parse_prices_file)] = None
    # Default spend budgets per key, USD per UTC calendar day / month (the keys file sets them per key).
    budget_usd_day: Usd = None
    budget_usd_month: Usd = None

    # -- request bounds
    max_message_chars: int = Field(default=10_000, ge=1)
    max_tokens_limit: int = Field(default=8192, ge=1)
    max_document_chars: int = Field(default=1_000_000, ge=1)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # The largest `POST /v1/files` body, streamed to Anthropic (MAX_BODY_BYTES does not apply): Anthropic's own
    # 500 MB file limit, plus a MiB for the multipart framing, so that Anthropic is the judge of any real file. It
    # bounds a batch's creation body too, streamed the same way (Anthropic takes batches of up to 256 MB).
    files_max_bytes: int = Field(default=501 * 1024 * 1024, ge=1024)
    # From the end of a request's head to the end of its body, whether or not the app reads it (408 past it): a
    # client trickling its body would otherwise hold a connection and its memory for ever. 10 MB at 1 MB/s fits.
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    # A whole `POST /v1/files` upload or batch creation (FILES_MAX_BYTES) must arrive within this, from the end of its
    # head: 501 MiB at about 1 MiB/s. BODY_TIMEOUT_S is for the other routes' bodies, at most MAX_BODY_BYTES.
    files_upload_timeout_s: float = Field(default=600.0, gt=0, le=7200)
    max_inflight_upstream: int = Field(default=256, ge=1)
    backpressure_wait_s: float = Field(default=1.0, ge=0)

    # -- jobs
    job_result_ttl_s: int = Field(default=3600, ge=1)
    job_max_tries: int = Field(default=5, ge=1, le=100)
    # Per client key, UTF-8 bytes of /analyze documents in jobs not yet ended (`jobs.queued_bytes`): one client cannot
    # fill Redis. 16 MiB: 16 documents of the largest size in ASCII, 4 in the worst UTF-8; a 64 MB Redis holds three clients at their cap.
    jobs_max_queued_bytes_per_client: int = Field(default=16 * 1024 * 1024, ge=1)
    # The file `claude-gateway worker` touches from its event loop and `worker --check` reads (the chart: an emptyDir).
    worker_heartbeat_file: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "claude-gateway" / "worker-heartbeat"
    )

    # -- server
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    graceful_timeout_s: float = Field(default=600.0, ge=0)
    # `/metrics` and the deep `/health` answer on this port only (404 on PORT, which the Ingress routes); Prometheus's
    # default port for an exporter. `claude-gateway worker` serves its metrics here too.
    metrics_port: int = Field(default=9464, ge=1, le=65535)
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (Gunicorn's and uvicorn's `forwarded_allow_ips`):
    # the ingress controller's addresses. Anyone else could claim any client address or `https`.
    forwarded_allow_ips: Annotated[list[str], NoDecode, BeforeValidator(parse_forwarded_allow_ips)] = Field(
        default_factory=lambda: ["127.0.0.1"]
    )

    # -- exposure and telemetry
    expose_docs: Flag = False
    metrics_enabled: Flag = True
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["json", "text"] = "json"
    otel_instrumentation_genai_capture_message_content: Flag = False

    @field_validator("log_level", "log_format", "rate_limit_fail_mode", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r} is not an origin (expected e.g. https://app.example.com)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("anthropic_api_key")
    @classmethod
    def _empty_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value().strip() == "":
            return None
        return value

    @property
    def uses_redis(self) -> bool:
        return self.redis_url is not None

    @property
    def price_table(self) -> PriceTable:
        """`PRICES_FILE`'s table, else the one shipped with the gateway."""
        return self.prices_file.table if self.prices_file is not None else shipped()


class SettingsError(Exception):
    """A bad environment variable, rendered as one line naming it."""


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (plus `overrides`, for tests); raise `SettingsError` with one clear line."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, overrides)) from None
    try:
        # HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY: read by the upstream client as curl reads them (egress.py),
        # checked here so that a bad one stops start-up like any other setting.
        EgressProxies.from_environment()
    except EgressConfigError as exc:
        raise SettingsError(str(exc)) from None
    return settings


def describe_validation_error(exc: ValidationError, overrides: dict[str, Any]) -> str:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = field.upper()
        value = overrides.get(field, os.environ.get(name, os.environ.get(field)))
        message = str(error["msg"]).removeprefix("Value error, ")
        if name in {"ANTHROPIC_API_KEY", "VALID_API_KEYS", "ADMIN_API_KEYS", "REDIS_URL"}:
            lines.append(f"{name}: {message}")
        elif value is not None and repr(str(value)) not in message:
            lines.append(f"{name}: {str(value)!r}: {message}")
        else:
            lines.append(f"{name}: {message}")
    return "; ".join(lines)
