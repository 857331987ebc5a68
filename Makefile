# Set-up is idempotent: every target that needs the environment depends on it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTO_DIR := protos
PROTOS := $(wildcard $(PROTO_DIR)/moderation/v1/*.proto)
GENERATED := $(PROTOS:.proto=_pb2.py)
STAMP := $(VENV)/.installed
# --- Lock files: what make, CI and the image install (`make lock` rewrites them from pyproject.toml).
# The runtime (the gateway with its extras local, fleet and otlp) is what `make run` and the image get;
# dev adds the test, lint and docs tools, pinned within the runtime's versions.
RUNTIME_LOCK := requirements/runtime.txt
DEV_LOCK := requirements/dev.txt
RUNTIME_STAMP := $(VENV)/.runtime
# protoc and its mypy plugin, for `make run` too: a tool environment of their own, outside the runtime.
PROTOC_VENV := build/protoc
PROTOC_STAMP := $(PROTOC_VENV)/.installed
PIP_COMPILE_FLAGS := --quiet --strip-extras --no-emit-index-url --no-emit-find-links --no-emit-trusted-host
CLIENT_WHEELS := build/client-wheel
LOCK_CLIENT := --find-links $(CLIENT_WHEELS) --unsafe-package moderation-client
# --- End of the lock files.
# buf ships through npm (package.json pins it); `npm ci` installs it exactly as package-lock.json says.
NODE_STAMP := node_modules/.installed
BUF := node_modules/.bin/buf
# The contract as buf checks it: every version's protos, compiled into an image by the same protoc that
# generates the code (the Buf Schema Registry, where buf would fetch googleapis, is out of reach).
CONTRACT_PROTOS := $(wildcard $(PROTO_DIR)/moderation/*/*.proto)
CONTRACT_BUILD := build/contract.binpb
# The released contract, frozen: `buf breaking` compares against it; only `make contract-image` rewrites it.
CONTRACT_IMAGE := contract/moderation.binpb

# Debian's CJK font: the tests render Chinese text for the embedded backend's OCR.
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
# Debian's Redis: the fleet tests and bench start their own on loopback (the package's service is not used).
# Debian's faketime runs a fleet test's replica with its clock seconds off.
REDIS_SERVER := redis-server
# Debian's container and monitoring tools: the image is built and run with podman on runc, its test base
# made with mmdebstrap; the alert rules are checked by promtool and the dashboard's queries by prometheus.
DEPLOY_TOOLS := podman runc mmdebstrap prometheus

# The container image. BASE_IMAGE empty: the Dockerfile's default (the official Python 3.11 slim image).
IMAGE ?= moderation-gateway:dev
BASE_IMAGE ?=
IMAGE_BUILD := build/image
# runc, since crun needs cgroup v2; file and process limits within any host's own.
PODMAN_FLAGS := --runtime runc
PODMAN_LIMITS := --ulimit nofile=1024:1024 --ulimit nproc=1024:1024

.PHONY: run test test-fast proto lint bench bench-docs soak system-deps settings-table docs docs-reference lock clean image image-test

# On loopback unless MODERATION_LISTEN (or MODERATION_METRICS_LISTEN) says otherwise: no TLS or
# authentication is configured here. The image and the manifests listen on every interface.
# exec: the gateway replaces the shell, so a signal to it (SIGTERM, Ctrl-C) reaches the gateway itself.
run: $(RUNTIME_STAMP)
	export MODERATION_LISTEN="$${MODERATION_LISTEN:-127.0.0.1:50051}" \
		MODERATION_METRICS_LISTEN="$${MODERATION_METRICS_LISTEN:-127.0.0.1:9464}"; \
	exec $(BIN)/python -m service

# Two workers, each test file on one of them: most tests wait on processes, timers and sockets rather
# than the CPU, and the suite took 13 min on one worker, 6.5 on two (measured on this 2-core machine).
TEST_WORKERS ?= 2

test: $(STAMP) $(GENERATED) system-deps $(NODE_STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile
	$(MAKE) --no-print-directory image-test

# The unit tier only (tests/unit/: one module in-process, no server or process), in well under a minute;
# `make test` runs it with the integration and system tiers (pyproject.toml's markers).
test-fast: $(STAMP) $(GENERATED)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m unit

proto: $(GENERATED)

lint: $(STAMP) $(GENERATED) $(NODE_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory contract-check

# GNU make takes `--only` as its own option, so the bench's arguments come as variables
# (`make bench ONLY=fleet RUNS=3`, QUICK=1) or after `--` (`make bench -- --only fleet --runs 3`).
BENCH_ARGS := $(if $(ONLY),--only $(ONLY)) $(if $(RUNS),--runs $(RUNS)) $(if $(QUICK),--quick)
ifeq (bench,$(firstword $(MAKECMDGOALS)))
BENCH_WORDS := $(wordlist 2,$(words $(MAKECMDGOALS)),$(MAKECMDGOALS))
BENCH_ARGS += $(BENCH_WORDS)
# The words after `bench` are the bench's arguments, not targets.
$(eval $(BENCH_WORDS):;@:)
endif

bench: $(STAMP) $(GENERATED) system-deps
	$(BIN)/python -m bench $(BENCH_ARGS)

# The benchmark pages: run the sections (ONLY, RUNS, QUICK as for bench; by default the two the plots
# draw, three runs each), write their JSON under docs/benchmarks/results/ (`--json`), then regenerate
# docs/benchmarks/index.md and its plots from it.
BENCH_RESULTS := docs/benchmarks/results
BENCH_DOCS_ONLY := efficiency,fleet
bench-docs: $(STAMP) $(GENERATED) system-deps
	$(BIN)/python -m bench --only $(or $(ONLY),$(BENCH_DOCS_ONLY)) --runs $(or $(RUNS),3) $(if $(QUICK),--quick) \
		--json $(BENCH_RESULTS)
	$(BIN)/python -m docsgen.benchmarks

soak: $(STAMP) $(GENERATED)
	$(BIN)/python -m bench.soak

# The docs' generated reference pages (settings, routing keys, errors, metrics, CLI, proto API), from the
# declarations; a test fails when they drift. `settings-table` is its old name.
docs-reference settings-table: $(STAMP) $(GENERATED)
	$(BIN)/python -m docsgen

# The docs site, built into site/ as the tests build it (--strict: a broken link fails).
docs: $(STAMP) $(GENERATED)
	$(BIN)/mkdocs build --strict

system-deps:
	@test -f $(CJK_FONT) || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq fonts-wqy-microhei; \
		else echo "install Debian's fonts-wqy-microhei (sudo apt-get install fonts-wqy-microhei)"; exit 1; fi; }
	@command -v $(REDIS_SERVER) >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server; \
		else echo "install Debian's redis-server (sudo apt-get install redis-server)"; exit 1; fi; }
	@for tool in $(DEPLOY_TOOLS); do command -v $$tool >/dev/null || PATH="$$PATH:/usr/sbin" command -v $$tool \
		>/dev/null || missing="$$missing $$tool"; done; test -z "$$missing" || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
		else echo "install Debian's$$missing (sudo apt-get install$$missing)"; exit 1; fi; }
	@command -v faketime >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq faketime; \
		else echo "install Debian's faketime (sudo apt-get install faketime)"; exit 1; fi; }

# The build machine's pip configuration and CA bundle go in as build secrets, never into a layer.
# With no BASE_IMAGE, the Dockerfile's default base when a registry gives it (within 60 s), else a
# Debian 12 base made here from Debian's packages by mmdebstrap, saying so. Then the image's size and what
# takes it.
DEFAULT_BASE_IMAGE := docker.io/library/python:3.11-slim-bookworm
# Prints the name of a Debian 12 base it builds with mmdebstrap (cached under build/image/).
DEBIAN_BASE := deploy/image/debian-base.sh
image: system-deps
	$(PYTHON) deploy/image/pip_secrets.py $(IMAGE_BUILD)
	@base="$(BASE_IMAGE)"; \
	if [ -z "$$base" ] && ! podman image exists $(DEFAULT_BASE_IMAGE) && \
		! timeout 60 podman pull --quiet $(DEFAULT_BASE_IMAGE) >/dev/null 2>&1; then \
		echo "make image: no registry reachable for $(DEFAULT_BASE_IMAGE); building on a Debian 12 base made by mmdebstrap from Debian's packages"; \
		base=$$($(DEBIAN_BASE) $(IMAGE_BUILD)) || exit 1; fi; \
	set -x; podman $(PODMAN_FLAGS) build $(PODMAN_LIMITS) --network host --tag $(IMAGE) \
		$${base:+--build-arg BASE_IMAGE=$$base} \
		--build-arg REVISION=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown) \
		--secret id=pip.conf,src=$(IMAGE_BUILD)/pip.conf --secret id=ca.crt,src=$(IMAGE_BUILD)/ca.crt .
	@podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' $(IMAGE)
	@echo "what takes the space (MB):"
	@podman $(PODMAN_FLAGS) run $(PODMAN_LIMITS) --rm --entrypoint sh $(IMAGE) -c \
		'du -sm /usr /opt/venv; du -sm /opt/venv/lib/python3*/site-packages/* | sort -rn | head -12'

# No registry is reachable here: the image is built on a Debian base made from Debian's packages
# (cached under build/image/), then run and probed by tests/test_deploy_image.py.
image-test: $(STAMP) $(GENERATED) system-deps
	base=$$($(DEBIAN_BASE) $(IMAGE_BUILD)) && $(MAKE) --no-print-directory image BASE_IMAGE=$$base
	MODERATION_TEST_IMAGE=$(IMAGE) $(BIN)/python -m pytest -q tests/test_deploy_image.py

# The development environment: the dev lock, then the gateway and the client distribution (client/, which
# the gateway requires by name: its build generates moderation.v1's stubs from $(PROTOS)), editable, with
# no dependencies of their own to resolve, so pip never looks the client up on an index.
$(STAMP): $(DEV_LOCK) pyproject.toml client/pyproject.toml client/setup.py $(PROTOS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e ./client -e .
	touch $@ $(RUNTIME_STAMP)

# The runtime only (`make run`): no test, lint or docs tools. A development environment has it already.
# Bytecode only for what the gateway imports (18 MB), written here whatever PYTHONDONTWRITEBYTECODE says
# so that no start compiles it (1.5-2.5 s a start): not pip's for every file of every package (63 MB,
# most never imported: onnxruntime's transformer tools, numpy's tests).
RUNTIME_IMPORTS := service.__main__ service.server backends.local.backend backends.local.models \
	backends.tencent.plugin backends.private service.policy.detectors
$(RUNTIME_STAMP): $(RUNTIME_LOCK) pyproject.toml client/pyproject.toml client/setup.py $(PROTOS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile -r $(RUNTIME_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e ./client -e .
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -c 'import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]' \
		$(RUNTIME_IMPORTS)
	touch $@

$(PROTOC_STAMP): $(DEV_LOCK)
	test -x $(PROTOC_VENV)/bin/python || $(PYTHON) -m venv $(PROTOC_VENV)
	$(PROTOC_VENV)/bin/python -m pip install --quiet -c $(DEV_LOCK) grpcio-tools mypy-protobuf googleapis-common-protos
	touch $@

# Both locks from pyproject.toml; run after changing a dependency, and commit them with it.
# The client distribution is built into a local wheel for the resolver (it is on no index), and left out
# of the locks (`--unsafe-package`): `make` and the image install it from client/, its dependencies pinned.
# So is the gateway itself, which the dev extra names: a lock holds no path of this checkout.
lock: $(STAMP)
	rm -rf $(CLIENT_WHEELS) && $(BIN)/pip wheel --quiet --no-deps -w $(CLIENT_WHEELS) ./client
	$(BIN)/pip-compile $(PIP_COMPILE_FLAGS) $(LOCK_CLIENT) --extra local --extra fleet --extra otlp \
		-o $(RUNTIME_LOCK) pyproject.toml
	$(BIN)/pip-compile $(PIP_COMPILE_FLAGS) $(LOCK_CLIENT) --unsafe-package moderation-gateway --extra dev \
		-c $(RUNTIME_LOCK) -o $(DEV_LOCK) pyproject.toml

# grpcio-tools ships the well-known protos; googleapis-common-protos ships google/rpc/*.proto.
PROTOC = $(PROTOC_VENV)/bin/python -m grpc_tools.protoc -I$(PROTO_DIR) \
	-I$$($(PROTOC_VENV)/bin/python -c 'import google.rpc, os; print(os.path.dirname(os.path.dirname(google.rpc.__path__[0])))')

# mypy-protobuf types both the messages and the service stubs.
$(PROTO_DIR)/%_pb2.py: $(PROTO_DIR)/%.proto $(PROTOC_STAMP)
	PATH="$(CURDIR)/$(PROTOC_VENV)/bin:$$PATH" $(PROTOC) \
		--python_out=$(PROTO_DIR) --grpc_python_out=$(PROTO_DIR) \
		--mypy_out=$(PROTO_DIR) --mypy_grpc_out=$(PROTO_DIR) $<

clean:
	rm -rf $(VENV) $(GENERATED) $(PROTOS:.proto=_pb2.pyi) $(PROTOS:.proto=_pb2_grpc.py) $(PROTOS:.proto=_pb2_grpc.pyi)
	rm -rf client/generated client/build client/*.egg-info
	rm -rf node_modules $(CONTRACT_BUILD) $(PROTOC_VENV) site

# The image is rebuilt on every check (it takes a fraction of a second): a deleted .proto would leave no
# newer prerequisite behind, and the check would pass on a stale image.
.PHONY: contract-check contract-image $(CONTRACT_BUILD)

# buf lint (STANDARD) and buf breaking (FILE) on the contract, rules and exceptions in buf.yaml.
contract-check: $(NODE_STAMP) $(CONTRACT_BUILD)
	$(BUF) lint $(CONTRACT_BUILD) --config buf.yaml
	$(BUF) breaking $(CONTRACT_BUILD) --against $(CONTRACT_IMAGE) --config buf.yaml

# Imports included, so buf needs nothing else to read the image; source info, so findings carry
# file:line and `buf:lint:ignore` comments in the protos are seen.
$(CONTRACT_BUILD): $(PROTOC_STAMP)
	mkdir -p $(@D)
	$(PROTOC) --include_imports --include_source_info -o $@ $(CONTRACT_PROTOS)

# Run only on purpose: when a new version (or a deliberate break) is released, in a commit saying why.
contract-image: $(CONTRACT_BUILD)
	mkdir -p $(dir $(CONTRACT_IMAGE))
	cp $(CONTRACT_BUILD) $(CONTRACT_IMAGE)

# buf's bin/ shim finds its platform package itself, so its install script is not needed.
$(NODE_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	touch $@
