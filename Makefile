# Every target sets itself up: `make demo` and `make test` work from a fresh clone.
# torch is pinned in the same pip call as everything else: on these machines that takes the local CPU
# wheel, while an unpinned torch would pull a multi-GB CUDA build.

VENV      ?= .venv
PYTHON    ?= python3
TORCH     ?= torch==2.13.0
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.tcjepa-installed
FASHION   := /usr/share/datasets/fashion-mnist
JOBS      ?= 2
DEMO_OUT  ?= runs/demo

.PHONY: setup demo demo-quick test test-fast lint format bench fashion-mnist clean

setup: $(STAMP) fashion-mnist

# Reinstalls only when the project's dependencies change.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[dev]"
	@touch $@

# Real images for the Fashion-MNIST probe come from Debian's package (nothing is downloaded at run time).
# Without root or apt the rest of the project still works; the probe then says what to install.
fashion-mnist:
	@if [ -d $(FASHION) ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
		|| { $$SUDO apt-get update -qq >/dev/null 2>&1 && $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
		|| echo "warning: could not install Debian's dataset-fashion-mnist; the Fashion-MNIST probe will be skipped"; \
	else echo "warning: no apt-get; install Debian's dataset-fashion-mnist for the Fashion-MNIST probe"; fi

# The README's first command: pretrain TC-JEPA and I-JEPA on the embedded scenes, evaluate, write a report.
demo: setup
	$(BIN)/tcjepa demo --out $(DEMO_OUT)

demo-quick: setup
	$(BIN)/tcjepa demo --quick --out $(DEMO_OUT)-quick

# The README's second command (and what .ci/run calls).
test: setup
	$(BIN)/python -m pytest -n $(JOBS) -q

test-fast: setup
	$(BIN)/python -m pytest -n $(JOBS) -q -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The CPU benchmark of issue #3: step time of TC-JEPA vs I-JEPA and the analytic FLOP overhead.
bench: setup
	$(BIN)/tcjepa bench cpu-small --out benchmarks/cpu-small.jsonl
	$(BIN)/tcjepa bench vitb16-224 --flops-only --out benchmarks/flops-vitb16-224.jsonl

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
