# liveresource: `make run` starts the server, `make test` runs every test.
# Both create the virtualenv and install pinned dependencies on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BUF_VERSION := 1.75.0
BUF    := .tools/node_modules/.bin/buf
PROTOS := $(wildcard protos/liveresource/v1/*.proto)
# The database of `make run-pg`: a local PostgreSQL (created if missing).
PG_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/liveresource

.PHONY: run run-dev run-pg test lint gen check-gen bench clean lock venv

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# Regenerate Python code from protos/ (committed; tests fail when stale).
gen: $(STAMP)
	scripts/gen_protos.sh $(BIN)

# Fails if generated/ differs from what the protos produce.
check-gen: $(STAMP)
	rm -rf .gen-check && scripts/gen_protos.sh $(BIN) .gen-check >/dev/null
	diff -r -x __pycache__ .gen-check/liveresource generated/liveresource
	rm -rf .gen-check

run: $(STAMP)
	$(BIN)/python -m server

# The server on PostgreSQL instead of the embedded SQLite file.
run-pg: $(STAMP)
	$(BIN)/python scripts/create_pg_database.py $(PG_URL)
	$(BIN)/python -m server --database-url $(PG_URL)

# Every test; those that use a database run on SQLite and on PostgreSQL (at
# LIVERESOURCE_TEST_PG_URL, default postgresql://postgres@127.0.0.1:5432). Without a
# PostgreSQL its tests are skipped, unless CI is set: then they fail.
test: $(STAMP)
	$(BIN)/python -m pytest

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

lint: $(STAMP) $(BUF)
	$(BIN)/ruff check server client_sdk tests scripts bench
	$(BIN)/ruff format --check server client_sdk tests scripts bench
	$(BIN)/mypy
	$(BUF) lint protos

bench: $(STAMP)
	$(BIN)/python -m bench

# Re-pin every installed package after changing pyproject.toml.
lock: $(STAMP)
	( echo "# Exact versions of every package (transitive ones included) that CI tested."; \
	  echo "# Regenerate with \`make lock\` after changing pyproject.toml."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^liveresource' ) > requirements.lock

clean:
	rm -rf $(VENV) .tools .gen-check .pytest_cache .mypy_cache .ruff_cache data build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
