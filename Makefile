# The two commands of the README: `make run` and `make test`. Everything else is a step of those.

# The interpreter for .venv: python3 when it is 3.11 or newer, else the newest python3.1x on the
# PATH that is. `make run PYTHON=/path/to/python3.12` overrides.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in python3 python3.19 python3.18 python3.17 python3.16 python3.15 \
	python3.14 python3.13 python3.12 python3.11; do $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	>/dev/null 2>&1 && { echo $$p; break; }; done)
endif
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-debian13 lint typecheck unit bench clean FORCE

# A .venv made by another interpreter than the one chosen now is made again.
ifneq ($(wildcard $(STAMP)),)
ifneq ($(PYTHON),)
ifneq ($(shell $(BIN)/python -c 'import sys; print(sys.version)' 2>&1),$(shell $(PYTHON) -c 'import sys; print(sys.version)' 2>&1))
$(STAMP): FORCE
endif
endif
endif

$(STAMP): pyproject.toml
	@$(if $(PYTHON),$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1,false) || \
	{ echo "make: needs Python 3.11 or newer (3.11 to 3.13 are supported): $(if $(PYTHON),PYTHON=$(PYTHON) is older or does not run,found no python3 or python3.1x on the PATH that is); install one, or name it with PYTHON=/path/to/python3" >&2; exit 1; }
	@$(PYTHON) -c 'import ensurepip' >/dev/null 2>&1 || \
	{ echo "make: $(PYTHON) has no venv module; on Debian and Ubuntu: apt-get install $$($(PYTHON) -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])')" >&2; exit 1; }
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

.env:
	cp .env.example .env

run: $(STAMP) .env
	$(BIN)/sms-bot shell

lint: $(STAMP)
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --no-cache --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest
	$(MAKE) --no-print-directory test-debian13

# The unit tests again on Debian 13's Python 3.13, in a cached debootstrapped root under Docker.
test-debian13:
	tests/debian/run-unit

unit: $(STAMP)
	$(BIN)/pytest tests/unit

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
