# Set-up is idempotent: every target that needs the environment depends on it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTO_DIR := protos
PROTOS := $(wildcard $(PROTO_DIR)/moderation/v1/*.proto)
GENERATED := $(PROTOS:.proto=_pb2.py)
STAMP := $(VENV)/.installed
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

.PHONY: run test proto lint bench soak system-deps settings-table clean image image-test

run: $(STAMP) $(GENERATED)
	$(BIN)/python -m service

test: $(STAMP) $(GENERATED) system-deps $(NODE_STAMP)
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory image-test

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

soak: $(STAMP) $(GENERATED)
	$(BIN)/python -m bench.soak

# The README's settings tables, generated from the declarations (a unit test fails when they drift).
settings-table: $(STAMP) $(GENERATED)
	$(BIN)/python -m service.settings_table

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
image: system-deps
	$(PYTHON) deploy/image/pip_secrets.py $(IMAGE_BUILD)
	podman $(PODMAN_FLAGS) build $(PODMAN_LIMITS) --network host --tag $(IMAGE) \
		$(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
		--build-arg REVISION=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown) \
		--secret id=pip.conf,src=$(IMAGE_BUILD)/pip.conf --secret id=ca.crt,src=$(IMAGE_BUILD)/ca.crt .
	@podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' $(IMAGE)

# No registry is reachable here: the image is built on a Debian base made from Debian's packages
# (cached under build/image/), then run and probed by tests/test_deploy_image.py.
image-test: $(STAMP) $(GENERATED) system-deps
	base=$$(deploy/image/debian-base.sh $(IMAGE_BUILD)) && $(MAKE) --no-print-directory image BASE_IMAGE=$$base
	MODERATION_TEST_IMAGE=$(IMAGE) $(BIN)/python -m pytest -q tests/test_deploy_image.py

# The client is its own distribution (client/), which the gateway requires by name: one pip call
# installs both, so pip takes it from client/ (where its build generates moderation.v1's stubs from
# $(PROTOS)), never from an index.
$(STAMP): pyproject.toml client/pyproject.toml client/setup.py $(PROTOS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./client -e '.[dev]'
	@# A venv made before the split: replacing the old gateway, which listed bin/moderate, deletes the
	@# script the client has just installed.
	test -x $(BIN)/moderate || $(BIN)/python -m pip install --quiet --force-reinstall --no-deps -e ./client
	touch $@

# grpcio-tools ships the well-known protos; googleapis-common-protos ships google/rpc/*.proto.
PROTOC = $(BIN)/python -m grpc_tools.protoc -I$(PROTO_DIR) \
	-I$$($(BIN)/python -c 'import google.rpc, os; print(os.path.dirname(os.path.dirname(google.rpc.__path__[0])))')

# mypy-protobuf types both the messages and the service stubs.
$(PROTO_DIR)/%_pb2.py: $(PROTO_DIR)/%.proto $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PROTOC) \
		--python_out=$(PROTO_DIR) --grpc_python_out=$(PROTO_DIR) \
		--mypy_out=$(PROTO_DIR) --mypy_grpc_out=$(PROTO_DIR) $<

clean:
	rm -rf $(VENV) $(GENERATED) $(PROTOS:.proto=_pb2.pyi) $(PROTOS:.proto=_pb2_grpc.py) $(PROTOS:.proto=_pb2_grpc.pyi)
	rm -rf client/generated client/build client/*.egg-info
	rm -rf node_modules $(CONTRACT_BUILD)

# The image is rebuilt on every check (it takes a fraction of a second): a deleted .proto would leave no
# newer prerequisite behind, and the check would pass on a stale image.
.PHONY: contract-check contract-image $(CONTRACT_BUILD)

# buf lint (STANDARD) and buf breaking (FILE) on the contract, rules and exceptions in buf.yaml.
contract-check: $(NODE_STAMP) $(CONTRACT_BUILD)
	$(BUF) lint $(CONTRACT_BUILD) --config buf.yaml
	$(BUF) breaking $(CONTRACT_BUILD) --against $(CONTRACT_IMAGE) --config buf.yaml

# Imports included, so buf needs nothing else to read the image; source info, so findings carry
# file:line and `buf:lint:ignore` comments in the protos are seen.
$(CONTRACT_BUILD): $(STAMP)
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
