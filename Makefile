# rawws: `make run` starts the chat, `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 3490

.PHONY: run echo test bench bench-quick bench-refs bench-backplane clean conformance conformance-quick fuzz

# pip also builds rawws/_speedups.c, the optional C masking, when a C compiler is there.
$(STAMP): pyproject.toml setup.py rawws/_speedups.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m chat --host $(HOST) --port $(PORT)

echo: $(STAMP)
	$(PY) -m rawws.echo --host $(HOST) --port 9001

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# Benchmarks (benchmarks/, docs/performance.md): rawws beside websockets, aiohttp,
# picows and Node's ws. The references go into .bench-venv and benchmarks/node,
# never into rawws's dependencies; one that cannot be installed is skipped.
BENCH_VENV  := .bench-venv
BENCH_STAMP := $(BENCH_VENV)/.installed
LOADGEN     := build/loadgen

$(BENCH_STAMP):
	-$(PYTHON) -m venv $(BENCH_VENV)
	-$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	-$(BENCH_VENV)/bin/python -m pip install --quiet websockets aiohttp picows redis \
	    || echo "bench: some references did not install; they will be reported as skipped"
	mkdir -p $(BENCH_VENV) && touch $(BENCH_STAMP)

# With OpenSSL (libssl-dev) for the TLS cases; without it they are skipped.
$(LOADGEN): benchmarks/loadgen/loadgen.c
	mkdir -p build
	gcc -O2 -Wall -Wextra -DWITH_TLS -o $@ $< -lssl -lcrypto 2>/dev/null \
	    || gcc -O2 -Wall -Wextra -o $@ $<

bench-refs: $(BENCH_STAMP)
	-@if command -v npm >/dev/null 2>&1; then \
	    cd benchmarks/node && npm install --no-audit --no-fund --loglevel=error; \
	else echo "bench: no npm, so Node's ws will be reported as skipped"; fi

bench: $(STAMP) $(LOADGEN) bench-refs
	$(PY) -m benchmarks $(BENCH_ARGS)

bench-quick: $(STAMP) $(LOADGEN) bench-refs
	$(PY) -m benchmarks --quick $(BENCH_ARGS)

# The chat's fan-out through the Redis backplane, 2 workers, beside one process
# (benchmarks/backplane.py, docs/scaling.md); needs Debian's redis-server.
bench-backplane: $(STAMP) $(LOADGEN) $(BENCH_STAMP)
	$(PY) -m benchmarks.backplane

# The parser fuzz tests, long: FUZZ_SEEDS seeds, each test up to FUZZ_SECONDS
# per seed (about 18 x 6 x 5 s = 9 minutes by default); `make test` runs them briefly.
FUZZ_SEEDS   ?= 6
FUZZ_SECONDS ?= 5
fuzz: $(STAMP)
	FUZZ_SEEDS=$(FUZZ_SEEDS) FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_ITERATIONS=10000000 \
	    $(PY) -m pytest -q --timeout=0 tests/test_fuzz.py tests/test_fuzz_handshake.py \
	        tests/test_resp_fuzz.py

# Autobahn|Testsuite, server and client side, over ws:// then wss:// (docs/conformance.md);
# installs it when missing.
conformance: $(STAMP)
	bash tools/autobahn/install.sh
	$(PY) tools/autobahn/run.py --mode full

conformance-quick: $(STAMP)
	bash tools/autobahn/install.sh
	$(PY) tools/autobahn/run.py --mode quick

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info rawws/_speedups*.so
