# The benchmarks (bench/README.md). Included by the Makefile, whose `bench` target runs `python -m bench $(BENCH_ARGS)`.
# Variables from the Makefile: BIN (.venv/bin), STAMP (the install stamp).

.PHONY: bench-deps bench-smoke bench-profile

# `make bench` needs wrk (Debian), matplotlib and py-spy (PyPI) besides the gateway's own dependencies.
bench: bench-deps

bench-deps: $(STAMP) ## wrk (apt-get, as root), matplotlib and py-spy (pip) for `make bench`, when missing
	@command -v wrk >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk; \
		else echo "make bench needs wrk: sudo apt-get install -y wrk"; exit 1; fi; }
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install --quiet matplotlib
	@test -x $(BIN)/py-spy || $(BIN)/python -m pip install --quiet py-spy

bench-smoke: bench-deps ## the benchmark harness end to end on tiny loads (checks it runs; its figures mean nothing)
	$(BIN)/python -m bench --smoke $(BENCH_ARGS)

bench-profile: bench-deps ## only the py-spy profiles of the gateway and the reference under load (about 1.5 min)
	$(BIN)/python -m bench --profile-only $(BENCH_ARGS)
