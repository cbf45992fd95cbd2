# The background jobs' own tests. Included by the Makefile (`make help` lists the targets).
# They start a redis-server on a free port (never 6379) and the simulator in-process; without redis-server they skip,
# or fail when CI=true. Worker processes are started with `python -c` and ended by the tests themselves.

.PHONY: test-jobs

test-jobs: $(STAMP) ## background jobs tests: ARQ and in-process queues, retries, cancel, a worker killed mid-job
	$(BIN)/python -m pytest tests/jobs $(PYTEST_ARGS)
