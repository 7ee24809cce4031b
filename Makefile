# stylecast: `make serve` and `make test` work on a fresh clone.
PY ?= python3
VENV := .venv
PEERS := .venv-peers
EDGE := .venv-edge
BIN := $(VENV)/bin
PORT ?= 50051
METRICS_PORT ?= 9090

.PHONY: serve test bench bench-peers bench-memory bench-startup bench-model train eval-model proto clean help prometheus-tools

help:
	@echo "make serve | test | bench | bench-peers | bench-memory | bench-startup | bench-model | train | eval-model | proto"

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Edge install: LiteRT only, no TensorFlow.
$(VENV)/.serve-stamp: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[litert,video]"
	touch $@

# Everything the suite, training and export need.
$(VENV)/.dev-stamp: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[litert,tf,onnx,video,dev]"
	touch $@ $(VENV)/.serve-stamp

serve: $(VENV)/.serve-stamp
	$(BIN)/stylecast serve --port $(PORT) --metrics-port $(METRICS_PORT)

# Debian's prometheus + promtool for the metrics tests; installed only when missing (root or sudo).
prometheus-tools:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends prometheus; \
	else echo "prometheus/promtool missing and no apt-get: the Prometheus tests will skip"; fi

test: $(VENV)/.dev-stamp prometheus-tools
	$(BIN)/python -m pytest -q -ra

bench: $(VENV)/.dev-stamp $(PEERS)/.stamp
	$(BIN)/python -m benchmarks.serving
	$(BIN)/python -m benchmarks.metrics_cost
	$(BIN)/python -m benchmarks.transport
	$(BIN)/python -m benchmarks.peers --peer-python $(PEERS)/bin/python

# NVIDIA Triton for bench-peers, in a venv of its own (not a project dependency): PyTriton bundles
# tritonserver (Linux x86-64, glibc >= 2.35; numpy < 2).  stylecast goes in without its
# dependencies so that Triton's Python model runs the same backend, conversions and codecs.
$(PEERS)/.stamp: pyproject.toml
	$(PY) -m venv $(PEERS)
	$(PEERS)/bin/pip install -q --upgrade pip
	$(PEERS)/bin/pip install -q "nvidia-pytriton==0.7.0" "tritonclient[grpc]>=2.50" "grpcio-status>=1.85.1" "ai-edge-litert>=2.3.0" "pillow>=10.0"
	$(PEERS)/bin/pip install -q --no-deps -e .
	touch $@

# stylecast next to Triton on the same model and worker layout, alternating order over two rounds.
bench-peers: $(VENV)/.dev-stamp $(PEERS)/.stamp
	$(BIN)/python -m benchmarks.peers --peer-python $(PEERS)/bin/python

# Resident memory of `stylecast serve` from an edge install (LiteRT and video only, no TensorFlow).
$(EDGE)/.stamp: pyproject.toml
	$(PY) -m venv $(EDGE)
	$(EDGE)/bin/pip install -q --upgrade pip
	$(EDGE)/bin/pip install -q -e ".[litert,video]"
	touch $@

bench-memory: $(EDGE)/.stamp
	$(EDGE)/bin/python -m benchmarks.memory

# exec of `stylecast serve` → first stylized frame, and → last artifact of the load order active.
bench-startup: $(VENV)/.dev-stamp
	$(BIN)/python -m benchmarks.startup

bench-model: $(VENV)/.dev-stamp
	$(BIN)/python -m stylecast.model.bench

# Distil the built-in model from the Magenta teacher in ../shared/assets (hours on 2 cores;
# resumes from runs/distill and model/checkpoints), then export it as the built-in package.
train: $(VENV)/.dev-stamp
	$(BIN)/python -m stylecast.model.distill
	$(BIN)/stylecast model export model/checkpoints -o model/builtin --name stylecast-small --version 4

# content/val x held-out styles at 384², built-in next to the teacher; writes the contact sheet.
eval-model: $(VENV)/.dev-stamp
	$(BIN)/python -m stylecast.model.evaluate --sheet model/contact_sheet.png

proto: $(VENV)/.dev-stamp
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos \
		--grpc_python_out=protos protos/stylecast/v1/*.proto

clean:
	rm -rf $(VENV) $(PEERS) $(EDGE) build *.egg-info
