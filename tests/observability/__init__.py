"""Tests of observability/: alert rules, dashboards, runbooks and the OpenTelemetry Collector example."""
