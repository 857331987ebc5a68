# Set-up is idempotent: every target that needs the environment depends on it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROTO_DIR := protos
PROTOS := $(wildcard $(PROTO_DIR)/moderation/v1/*.proto)
GENERATED := $(PROTOS:.proto=_pb2.py)
STAMP := $(VENV)/.installed

# Debian's CJK font: the tests render Chinese text for the embedded backend's OCR.
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc

.PHONY: run test proto lint bench soak system-deps settings-table clean

run: $(STAMP) $(GENERATED)
	$(BIN)/python -m service

test: $(STAMP) $(GENERATED) system-deps
	$(BIN)/python -m pytest

proto: $(GENERATED)

lint: $(STAMP) $(GENERATED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) $(GENERATED) system-deps
	$(BIN)/python -m bench

soak: $(STAMP) $(GENERATED)
	$(BIN)/python -m bench.soak

# The README's settings tables, generated from the declarations (a unit test fails when they drift).
settings-table: $(STAMP) $(GENERATED)
	$(BIN)/python -m service.settings_table

system-deps:
	@test -f $(CJK_FONT) || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq fonts-wqy-microhei; \
		else echo "install Debian's fonts-wqy-microhei (sudo apt-get install fonts-wqy-microhei)"; exit 1; fi; }

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# grpcio-tools ships the well-known protos; googleapis-common-protos ships google/rpc/*.proto;
# mypy-protobuf types both the messages and the service stubs.
$(PROTO_DIR)/%_pb2.py: $(PROTO_DIR)/%.proto $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -I$(PROTO_DIR) \
		-I$$($(BIN)/python -c 'import google.rpc, os; print(os.path.dirname(os.path.dirname(google.rpc.__path__[0])))') \
		--python_out=$(PROTO_DIR) --grpc_python_out=$(PROTO_DIR) \
		--mypy_out=$(PROTO_DIR) --mypy_grpc_out=$(PROTO_DIR) $<

clean:
	rm -rf $(VENV) $(GENERATED) $(PROTOS:.proto=_pb2.pyi) $(PROTOS:.proto=_pb2_grpc.py) $(PROTOS:.proto=_pb2_grpc.pyi)
