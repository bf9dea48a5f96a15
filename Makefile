# Kartoteka: `make run` and `make test` are all a newcomer needs. `make help` lists the rest.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PICCOLO_CONF := core.piccolo_conf

# A server-mode test run (CI): PostgreSQL and Redis on this machine.
TEST_PG_URL ?= postgresql://postgres@127.0.0.1:5432/kartoteka_test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/14
TEST_AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/%2F

.DEFAULT_GOAL := help
.PHONY: help install run demo test test-server test-e2e lint format typecheck i18n clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install Kartoteka with its dependencies

run: $(STAMP) ## serve on http://127.0.0.1:8000 (embedded SQLite under ./var, jobs in-process)
	$(BIN)/kartoteka run

demo: $(STAMP) ## load a demo company into the database
	$(BIN)/kartoteka demo

test: $(STAMP) ## run the whole suite (embedded mode; installs Chromium for the browser tests)
	bash scripts/system-deps.sh
	$(BIN)/pytest -q

test-server: $(STAMP) ## the suite again on PostgreSQL + Redis, then the job tests on RabbitMQ
	bash scripts/check-services.sh
	KARTOTEKA_TEST_DATABASE_URL=$(TEST_PG_URL) KARTOTEKA_TEST_BROKER_URL=$(TEST_REDIS_URL) $(BIN)/pytest -q
	KARTOTEKA_TEST_DATABASE_URL=$(TEST_PG_URL) KARTOTEKA_TEST_BROKER_URL=$(TEST_AMQP_URL) $(BIN)/pytest -q tests/test_jobs.py -k server_broker

test-e2e: $(STAMP) ## only the end-to-end browser tests
	bash scripts/system-deps.sh
	$(BIN)/pytest -q -m e2e

.PHONY: test-appliance
test-appliance: $(STAMP) ## build the appliance image with podman, run it, back up and restore in it (root)
	bash scripts/appliance-test-deps.sh
	bash scripts/check-services.sh
	KARTOTEKA_TEST_APPLIANCE=1 $(BIN)/pytest -q -s -m appliance tests/test_appliance_image.py

.PHONY: bench
bench: bench-full bench-scope bench-backup ## every benchmark; BENCH_ARGS="--preset 100k" or "--engine sqlite --preset 100k" (default: PostgreSQL, 1M clients)

.PHONY: bench-full
bench-full: $(STAMP) ## issue 7's table: every page, search and write as manager and admin, p50/p95/p99, req/s, RSS
	bash scripts/system-deps.sh wrk
	$(BIN)/python -m bench.full $(BENCH_ARGS)

.PHONY: bench-backup
bench-backup: $(STAMP) ## time a backup and its verified restore at 1M clients on PostgreSQL
	$(BIN)/python -m bench.backup $(BENCH_ARGS)

.PHONY: bench-mail
bench-mail: $(STAMP) ## first sync of a 20,000-message mailbox (private Dovecot) and new-mail latency; BENCH_ARGS="--engine postgresql"
	$(BIN)/python -m bench.mail_sync $(BENCH_ARGS)

.PHONY: bench-telephony
bench-telephony: $(STAMP) ## screen-pop latency, AMI event in -> SSE pop-up out, 50 simultaneous calls; BENCH_ARGS="--mode server" (PostgreSQL + Redis)
	$(BIN)/python -m bench.telephony_popup $(BENCH_ARGS)

.PHONY: bench-scope
bench-scope: $(STAMP) ## time lists and search per role at 1M clients on PostgreSQL (bench/README.md)
	$(BIN)/python -m bench.scoped_lists $(BENCH_ARGS)

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## apply ruff formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy
	$(BIN)/mypy core plugins

# Each in-repo plugin keeps its own catalog in plugins/<name>/locale (merged over the core's).
PLUGIN_DIRS := $(patsubst %/__init__.py,%,$(wildcard plugins/*/__init__.py))

i18n: $(STAMP) ## extract strings and update the .po catalogs of the core and each plugin (then translate the new entries)
	$(BIN)/pybabel extract -F babel.cfg -o core/locale/messages.pot --no-location --omit-header -k lazy_gettext -k _l core themes
	$(BIN)/pybabel update -i core/locale/messages.pot -d core/locale --no-fuzzy-matching --no-wrap
	@for dir in $(PLUGIN_DIRS); do \
	  mkdir -p $$dir/locale && \
	  $(BIN)/pybabel extract -F babel.cfg -o $$dir/locale/messages.pot --no-location --omit-header -k lazy_gettext -k _l $$dir || exit 1; \
	  if [ -f $$dir/locale/ru/LC_MESSAGES/messages.po ]; then \
	    $(BIN)/pybabel update -i $$dir/locale/messages.pot -d $$dir/locale --no-fuzzy-matching --no-wrap || exit 1; \
	  else \
	    $(BIN)/pybabel init -i $$dir/locale/messages.pot -d $$dir/locale -l ru --no-wrap || exit 1; \
	  fi; \
	done

clean: ## remove the virtual environment (keeps ./var, your data)
	rm -rf $(VENV)
