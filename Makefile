# Two commands do everything on a fresh machine:  make run  |  make test
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

NODE_STAMP := node_modules/.installed

.PHONY: setup run test unit bench soak fuzz mutate tools services clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

# Real services the stack and tests use: redis-server (Debian) and Azurite (npm).
$(NODE_STAMP): package.json
	npm install --no-fund --no-audit --loglevel=error
	@touch $@

SPA_STAMP := clients/spa/dist/index.html
$(SPA_STAMP): clients/spa/package.json clients/spa/index.html clients/spa/src/main.js
	cd clients/spa && npm install --no-fund --no-audit --loglevel=error && npx vite build --logLevel warn

# Debian packages: redis-server (L2 cache tests) and chromium (the SPA's browser test).
services: $(NODE_STAMP) $(SPA_STAMP)
	@command -v redis-server >/dev/null && command -v chromium >/dev/null || { \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server chromium; }

setup: $(STAMP) services

# Debian packages the benchmarks need: a real load generator, and callgrind for instruction counts.
tools:
	@command -v wrk >/dev/null && command -v valgrind >/dev/null || { \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk valgrind; }

# func start with Azurite, the emulators and the SPA; flags for `python -m devstack up`: make run ARGS="--host-port 7072"
run: setup
	$(PY) -m devstack up $(ARGS)

test: setup
	$(PY) -m pytest

unit: setup
	$(PY) -m pytest tests/unit

bench: setup tools
	$(PY) bench/emulator_obo.py
	$(PY) bench/cache_memory.py
	$(PY) bench/cache_memory.py --default-caps
	$(PY) bench/middletier.py
	$(PY) bench/inprocess.py
	$(PY) bench/cold_start.py --runs 5

# Reliability over time (issue 18): 10 minutes of mixed traffic on two instances under scheduled faults.
soak: setup
	$(PY) bench/soak.py

fuzz: setup
	$(PY) bench/fuzz.py 500000

# Mutation testing (mutmut) of the security-critical modules; not part of `make test`.
# Writes bench/results/mutation.json. One module: `$(PY) bench/mutate.py bearer`.
mutate: setup
	$(PY) bench/mutate.py

clean:
	rm -rf $(VENV) .pytest_cache
