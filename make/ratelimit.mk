# The rate limiter's own tests. Included by the Makefile (`make help` lists the targets).
# They start their own redis-servers on free ports (never 6379); without redis-server they skip, or fail when CI=true.

.PHONY: test-ratelimit

test-ratelimit: $(STAMP) ## rate limiter tests: bursts across pools and processes, refunds, Redis killed and hung
	$(BIN)/python -m pytest tests/ratelimit $(PYTEST_ARGS)
