# Ruta — the two commands a new user runs are `make demo` and `make test`.
# Every target that needs the environment depends on `install`, which is a no-op when current.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTOS := $(wildcard proto/ruta/v1/*.proto)
GENERATED := $(patsubst proto/%.proto,%_pb2.py,$(PROTOS))

.PHONY: install proto test lint format demo bench soak clean

install: .stamp-install proto .stamp-node .stamp-debian

.stamp-install: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[postgres,soap,dev]'
	touch $@

proto: .stamp-install .stamp-proto

# The first-service tutorial's Node.js client (docs/guides/first-service.md, run by
# tests/e2e/test_first_service.py): Node.js and npm from Debian where missing, and the npm
# packages the tutorial installs, fetched once into npm's cache (the test installs them from it).
# The browser tests' accessibility check (tests/browser.py) injects axe-core from BROWSER_JS.
NODE_PACKAGES := @grpc/grpc-js@1.14.7 @grpc/proto-loader@0.8.1
BROWSER_NODE_PACKAGES := axe-core@4.14.1
BROWSER_JS := $(VENV)/browser-js
.stamp-node: Makefile
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	npm install --prefix $(VENV)/node-cache --no-audit --no-fund --no-save --silent $(NODE_PACKAGES)
	npm install --prefix $(BROWSER_JS) --no-audit --no-fund --no-save --silent $(BROWSER_NODE_PACKAGES)
	touch $@

# Debian packages the tests need, as command:package: systemd-analyze checks deploy/systemd
# (tests/deploy); chromium is the browser Playwright drives in the console tests (tests/browser.py;
# Playwright downloads no browser of its own); valgrind's callgrind counts the benchmark's
# instructions per exchange (python -m bench --instructions). Installed only when missing (a no-op where they are
# present); without root it says what to install.
DEBIAN_NEEDS := systemd-analyze:systemd chromium:chromium valgrind:valgrind
.stamp-debian: Makefile
	@missing=""; for need in $(DEBIAN_NEEDS); do \
	  command -v $${need%%:*} >/dev/null || missing="$$missing $${need#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "make install: install the Debian packages$$missing for the tests"; fi; fi
	touch $@

# Generated code lives in ruta/v1/ and is not committed (docs/adr/0001-generated-code-at-install.md).
.stamp-proto: $(PROTOS) .stamp-install
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -Iproto \
	  --python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. $(PROTOS)
	touch $@

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy ruta registry security_server adapters gateway sandbox tests $(wildcard bench/*.py)
	$(BIN)/lint-imports --no-logo

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: install
	$(BIN)/python -m sandbox.demo

bench: install
	$(BIN)/python -m bench

# Not in CI: the two-server bed at moderate load for SOAK_SECONDS (default 600); a table on stdout,
# samples.csv and soak.svg in SOAK_OUT (default soak-report/). See tests/faults/soak.py.
soak: install
	$(BIN)/python -m tests.faults.soak

clean:
	rm -rf $(VENV) .stamp-* ruta/v1/*_pb2*.py ruta/v1/*_pb2*.pyi .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
