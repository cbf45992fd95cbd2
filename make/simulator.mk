# The Anthropic Messages API simulator. Included by the Makefile (`make help` lists the targets).
# Variables from the Makefile: BIN (.venv/bin), STAMP (the install stamp).

SSE_FIXTURES := tests/fixtures/sse

.PHONY: sse-fixtures test-simulator

sse-fixtures: $(STAMP) ## re-record the raw SSE fixtures in tests/fixtures/sse from the simulator
	$(BIN)/python -m claude_gateway.simulator.record $(SSE_FIXTURES)

test-simulator: $(STAMP) ## the simulator's own tests (tests/simulator)
	$(BIN)/python -m pytest tests/simulator $(PYTEST_ARGS)
