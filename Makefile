# dhtwisted: `make run` starts a node, `make test` runs the whole suite.
# Both create .venv and install the project into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
CONFIG ?= etc/node.ini
SOURCES := setup.py pyproject.toml README.md $(shell find dhtwisted twisted -name '*.py' -o -name '*.html' 2>/dev/null)

.PHONY: install run test trial lint proto sim chaos bench bench-quick redis mimalloc browser certs clean

# The venv with the dependencies (rebuilt when setup.py changes).
$(VENV)/.deps: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '.[test,proto,lint]'
	touch $@

# The project itself, installed as a user would (not editable, so that
# twistd finds twisted/plugins the way it will after `pip install .`).
# (build/ goes first: a wheel takes in whatever an earlier build left there,
# such as the extension of a module no longer compiled)
$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	rm -rf build
	$(PY) -m pip install --quiet --no-deps --force-reinstall .
	$(PY) -c 'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed mimalloc
	$(BIN)/twistd -n dht --config $(CONFIG)

# pytest imports dhtwisted as installed (--import-mode=append, and not
# `python -m`, which would put the source tree first): the compiled write
# path (see setup.py); trial runs the same tests on the source, plain Python.
test: $(VENV)/.installed browser mimalloc
	DHTWISTED_TEST_INSTALLED=1 $(PY) -b $(BIN)/pytest -p no:cacheprovider --import-mode=append -rs tests

trial: $(VENV)/.installed browser mimalloc
	$(PY) -b -m twisted.trial --random=0 tests

# the deterministic simulation over many seeds (the suite runs 300)
SEEDS ?= 1000
sim: $(VENV)/.installed
	PYTHONHASHSEED=0 $(PY) -m tests.sim --seeds $(SEEDS)

# chaos against 5 real nodes on 127.0.0.1-127.0.0.5 (the suite runs 15 s)
DURATION ?= 120
chaos: $(VENV)/.installed mimalloc
	$(PY) -m tests.chaos --duration $(DURATION)

# redis-server and redis-benchmark, from Debian, when missing
redis:
	@command -v redis-benchmark >/dev/null && command -v redis-server >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    redis-server redis-tools >/dev/null; }

# mimalloc, from Debian, when missing: the nodes' memory allocator
# ([node] allocator = mimalloc, the default; without it they run on Python's)
mimalloc:
	@$(PYTHON) -c 'import ctypes.util, sys; sys.exit(not ctypes.util.find_library("mimalloc"))' || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    libmimalloc2.0 >/dev/null; } || \
	  echo "mimalloc not installed: nodes run on Python's allocator (see [node] allocator)"

# a throwaway CA and certificates for nodes 0-9 and a client, in certs/
# (see README, Security: mutual TLS)
certs: $(VENV)/.installed
	$(BIN)/dht-certs --out certs 0 1 2 3 4 5 6 7 8 9

# Debian's chromium, headless, for the status page test, when missing
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

$(VENV)/.bench: $(VENV)/.deps
	$(PY) -m pip install --quiet 'matplotlib>=3.7'
	touch $@

# dhtwisted beside redis-server: table, results/bench-*.json and .png
bench: redis mimalloc $(VENV)/.installed $(VENV)/.bench
	$(BIN)/dht-bench

# a tiny run that only proves the benchmark works (CI)
bench-quick: redis mimalloc $(VENV)/.installed
	$(BIN)/dht-bench --quick --out results/quick

lint: $(VENV)/.deps
	$(BIN)/ruff check dhtwisted tests twisted setup.py

proto: $(VENV)/.deps
	$(PY) -m grpc_tools.protoc -Iproto --python_out=dhtwisted/_proto proto/dht.proto

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp .pytest_cache
