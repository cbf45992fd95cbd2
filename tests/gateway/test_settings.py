"""A bad setting stops start-up with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from claude_gateway.pricing import shipped
from claude_gateway.settings import SettingsError, load_settings


def run_serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "claude_gateway", "serve", "--port", "1"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestStartupValidation:
    @pytest.mark.parametrize(
        ("variable", "value", "expected"),
        [
            ("RATE_LIMIT", "10/minit", "RATE_LIMIT: '10/minit' is not a valid limit"),
            ("COUNT_TOKENS_RATE_LIMIT", "lots", "COUNT_TOKENS_RATE_LIMIT: 'lots' is not a valid limit"),
            ("MODELS_RATE_LIMIT", "0/minute", "MODELS_RATE_LIMIT: '0/minute': a limit's amount must be at least 1"),
            ("UPSTREAM_TIMEOUT_S", "soon", "UPSTREAM_TIMEOUT_S: 'soon'"),
            ("MAX_TOKENS_LIMIT", "0", "MAX_TOKENS_LIMIT: '0'"),
            ("LOG_FORMAT", "xml", "LOG_FORMAT: 'xml'"),
            ("REDIS_URL", "http://cache:6379", "REDIS_URL: expected a redis://"),
            ("CORS_ORIGINS", "example.com", "CORS_ORIGINS: 'example.com' is not an origin"),
            ("UPSTREAM_HTTP_CLIENT", "curl", "UPSTREAM_HTTP_CLIENT: 'curl': Input should be 'builtin' or 'aiohttp'"),
            ("BUDGET_USD_DAY", "-5", "BUDGET_USD_DAY: '-5': an amount of USD must be a non-negative number"),
            ("BUDGET_USD_MONTH", "lots", "BUDGET_USD_MONTH: 'lots' is not an amount of USD"),
            ("PRICES_FILE", "/nonexistent/prices.yaml", "PRICES_FILE: cannot read '/nonexistent/prices.yaml'"),
            ("METRICS_PORT", "70000", "METRICS_PORT: '70000'"),
            ("METRICS_PORT", "1", "METRICS_PORT: 1 is the app's port too"),
            ("FORWARDED_ALLOW_IPS", "10.0.0.1/8", "FORWARDED_ALLOW_IPS: '10.0.0.1/8' is not an IP address or network"),
            ("FORWARDED_ALLOW_IPS", "ingress", "FORWARDED_ALLOW_IPS: 'ingress' is not an IP address or network"),
        ],
    )
    def test_serve_refuses_a_bad_value_in_one_line(self, variable: str, value: str, expected: str) -> None:
        result = run_serve({variable: value})
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert expected in lines[0]
        assert "Traceback" not in result.stderr

    def test_secrets_are_not_echoed(self) -> None:
        result = run_serve({"REDIS_URL": "http://user:hunter2-secret@cache:6379"})
        assert result.returncode == 2
        assert "hunter2-secret" not in result.stderr

    def test_a_bad_prices_file_stops_start_up_naming_the_entry(self, tmp_path: Path) -> None:
        path = tmp_path / "prices.yaml"
        path.write_text("models:\n  claude-sonnet-4-6:\n    input: 3\n    outptu: 15\n")
        result = run_serve({"PRICES_FILE": str(path)})
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"PRICES_FILE: '{path}': models.claude-sonnet-4-6: unknown field 'outptu'" in lines[0]

    def test_admin_keys_are_secrets(self) -> None:
        settings = load_settings(admin_api_keys="cgw-admin-one-4d2e, cgw-admin-two-9a7c")
        assert [key.get_secret_value() for key in settings.admin_api_keys] == [
            "cgw-admin-one-4d2e",
            "cgw-admin-two-9a7c",
        ]
        assert "cgw-admin-one" not in repr(settings)

    def test_budgets_are_decimal_dollars(self) -> None:
        settings = load_settings(budget_usd_day="0.05", budget_usd_month="$400")
        assert (settings.budget_usd_day, settings.budget_usd_month) == (Decimal("0.05"), Decimal(400))

    def test_defaults_are_those_of_the_interface(self) -> None:
        settings = load_settings()
        assert str(settings.rate_limit[0]) == "10 per 1 minute"
        assert settings.upstream_timeout_s == 30
        assert settings.max_message_chars == 10_000
        assert settings.max_tokens_limit == 8192
        assert settings.default_model == "claude-sonnet-4-6"
        assert settings.health_model == "claude-haiku-4-5-20251001"
        assert (settings.log_level, settings.log_format) == ("info", "json")
        assert settings.price_table is shipped()
        assert (settings.budget_usd_day, settings.budget_usd_month, settings.admin_api_keys) == (None, None, [])
        assert [str(item) for item in settings.count_tokens_rate_limit] == ["600 per 1 minute"]
        assert [str(item) for item in settings.models_rate_limit] == ["600 per 1 minute"]

    def test_several_limits_separated_by_semicolons(self) -> None:
        settings = load_settings(rate_limit="10/minute;500/day", token_rate_limit="200000/minute")
        assert [str(item) for item in settings.rate_limit] == ["10 per 1 minute", "500 per 1 day"]
        assert settings.token_rate_limit[0].amount == 200_000

    def test_load_settings_raises_one_line(self) -> None:
        with pytest.raises(SettingsError, match=r"^RATE_LIMIT: '0/minute'"):
            load_settings(rate_limit="0/minute")
