# Two commands do everything on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test lint slurm-up clean gpu-check gpu-wheels

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: pip takes these exact builds from the local disk when present.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/cnnfleet-train $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

# A real 2-node SLURM cluster on this machine for tests/test_slurm.py (root; installs Debian's
# slurm-wlm + munge on first use). Outside CI a failure only means those tests skip.
SLURM_LOG := $${TMPDIR:-/tmp}/cnnfleet-slurm-start.log
slurm-up:
	@if scripts/slurm/start-slurm.sh > $(SLURM_LOG) 2>&1; then echo "local SLURM cluster up (2 nodes)"; \
	elif [ "$$CI" = true ]; then cat $(SLURM_LOG); echo "CI needs the local SLURM cluster"; exit 1; \
	else echo "no local SLURM cluster (see $(SLURM_LOG)): SLURM tests will skip"; fi

# Two workers, one test file each at a time (--dist loadfile): a file's module and session fixtures
# are built once, and test_slurm.py's jobs run one after another on the one local cluster while the
# other worker trains. Most of a CLI test is single-threaded start-up or waiting on a job, so two
# workers nearly halve the wall time; tests/conftest.py gives each worker one intra-op thread so
# their training never oversubscribes the cores (the suite should stay under 20 minutes on 2 cores).
# Each test's time goes to logs/pytest.xml; scripts/test_times.py prints the slowest twenty and each
# file's total (README "Development"); tests/file_seconds.json, written from such a run, orders the files
# longest first (--no-loadscope-reorder keeps that order rather than xdist's by test count).
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder --junitxml=logs/pytest.xml
test: $(STAMP) lint slurm-up
	$(BIN)/pytest $(PYTEST_ARGS); status=$$?; \
	if [ -f logs/pytest.xml ]; then $(BIN)/python scripts/test_times.py logs/pytest.xml; fi; exit $$status

# The whole GPU proof in one command (scripts/gpu_check.py): GPU tests and figures into $(GPU_OUT).
# Runs with this checkout's .venv when there is one, else with the machine's python3 and .whl/ for
# what it lacks (a GPU machine without network: fill .whl/ first with `make gpu-wheels`).
GPU_OUT ?= logs/gpu-check
gpu-check:
	@if [ -x $(BIN)/python ]; then py=$(BIN)/python; else py=$(PYTHON); fi; \
	PYTHONUNBUFFERED=1 $$py scripts/gpu_check.py $(GPU_OUT) $(GPU_CHECK_ARGS)

gpu-wheels: $(STAMP)
	scripts/gpu-wheels.sh .whl 3.12

clean:
	rm -rf $(VENV) logs .pytest_cache .ruff_cache dist build
