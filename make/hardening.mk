# Hostile input, fuzzing, faults under load, drain and leaks (tests/hostile, tests/faults). Included by the Makefile.
# They start their own simulator, redis-server (on a free port) and `claude-gateway serve` processes on loopback.

.PHONY: test-hostile test-faults

test-hostile: $(STAMP) ## hostile input, schemathesis fuzzing of the OpenAPI document, slow clients, security checks
	$(BIN)/python -m pytest tests/hostile $(PYTEST_ARGS)

test-faults: $(STAMP) ## backpressure, retries, faults under load (worker kill, Redis restart, upstream faults), drain, leaks
	$(BIN)/python -m pytest tests/faults $(PYTEST_ARGS)
