# Alert rules, dashboards and runbooks (observability/). Included by the Makefile (`make help` lists the targets).
# promtool comes from Debian's prometheus package; the tests in tests/observability skip without it, or fail when CI=true.

PROMTOOL ?= promtool
OBSERVABILITY_RULES := $(wildcard observability/alerts/*.rules.yaml)
RULES_RENDERER := observability/alerts/render.py
OBSERVABILITY_RULE_TESTS := $(wildcard observability/alerts/tests/*_test.yaml)
DASHBOARD_GENERATOR := observability/dashboards/generate.py

.PHONY: tools-observability lint-observability test-observability dashboards rules

tools-observability: ## install promtool (Debian's prometheus package) when it is missing; needs root and apt
	@command -v $(PROMTOOL) >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else \
		echo "promtool is missing: install Debian's (or Ubuntu's) prometheus package, or put promtool on PATH"; exit 1; \
	fi

lint-observability: $(STAMP) ## promtool check + unit tests of the alert rules; rules and dashboards match their sources
	$(BIN)/python $(RULES_RENDERER) --check
	$(PROMTOOL) check rules $(OBSERVABILITY_RULES)
	$(PROMTOOL) test rules $(OBSERVABILITY_RULE_TESTS)
	$(BIN)/python $(DASHBOARD_GENERATOR) --check
	$(BIN)/ruff check $(DASHBOARD_GENERATOR)
	$(BIN)/ruff format --check $(DASHBOARD_GENERATOR)
	$(BIN)/mypy --strict $(DASHBOARD_GENERATOR)
	$(BIN)/ruff check $(RULES_RENDERER)
	$(BIN)/ruff format --check $(RULES_RENDERER)
	$(BIN)/mypy --strict $(RULES_RENDERER)

test-observability: $(STAMP) ## the observability tests only (tests/observability): rules, dashboards, runbooks
	$(BIN)/python -m pytest tests/observability $(PYTEST_ARGS)

dashboards: $(STAMP) ## rewrite observability/dashboards/*.json from observability/dashboards/generate.py
	$(BIN)/python $(DASHBOARD_GENERATOR)

rules: $(STAMP) ## rewrite observability/alerts/claude-gateway.rules.yaml from its template and parameters.yaml
	$(BIN)/python $(RULES_RENDERER)
