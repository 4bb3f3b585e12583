# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The specification's Node event consumer runs in the tests, on Node.js from the venv.
NODE_DIR  := tests/e2e/node
NODE_DEPS := $(NODE_DIR)/node_modules/.installed

.PHONY: run test lint typecheck unit bench image clean

run: $(STAMP)
	$(BIN)/prsm up

test: $(STAMP) $(NODE_DEPS) lint typecheck
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench deploy
	$(BIN)/ruff format --check src tests bench deploy

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	cd bench && ../$(BIN)/python engine_speed.py
	cd bench && ../$(BIN)/python api_throughput.py
	cd bench && ../$(BIN)/python jobs_throughput.py
	cd bench && ../$(BIN)/python service_client_overhead.py
	cd bench && ../$(BIN)/python gateway_throughput.py

# The container image, built here from Debian packages and local wheels (deploy/image/build).
image: $(STAMP)
	deploy/image/build

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-installs whenever pyproject.toml changes. The first build of llama-cpp-python compiles
# llama.cpp (about 5 minutes on 2 cores); later installs reuse the wheel from pip's cache.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

$(NODE_DEPS): $(NODE_DIR)/package-lock.json $(STAMP)
	cd $(NODE_DIR) && PATH="$(CURDIR)/$(BIN):$$PATH" npm ci --no-audit --no-fund --loglevel=error
	@touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .prsm $(NODE_DIR)/node_modules
