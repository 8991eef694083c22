# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-all lint bench lock

install: $(VENV)/.installed

# constraints.txt pins every package to the versions the suite last passed
# with, so a fresh install is the tested environment, not whatever PyPI holds
# that day. `make lock` re-resolves pyproject.toml's ranges from scratch.
PIP_VERSION ?= 26.3
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install 'pip==$(PIP_VERSION)'
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev]'
	touch $@

LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install 'pip==$(PIP_VERSION)'
	$(LOCK_VENV)/bin/python -m pip install '.[dev]'
	{ echo "# Exact versions behind 'make install' (pip -c). Regenerate with 'make lock',"; \
	  echo "# then 'python -m fedmed.deploy.image_requirements --write' and 'make test'."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude pip --exclude fedmed; } > constraints.txt
	rm -rf $(LOCK_VENV)

demo: install
	$(BIN)/fedmed demo

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m "slow or not slow"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
