# Magnetiq task fleet. `make run` runs the fleet, `make test` passes the tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_VHOST ?= magnetiq_test
PROFILE ?= email

.DEFAULT_GOAL := help
.PHONY: bench help install run test test-unit test-integration chaos lint fmt typecheck check services \
        worker worker-email worker-bulk worker-booking worker-maintenance beat migrate topology clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the fleet with its test tools

run: $(STAMP) ## Migrate, declare the topology, run all workers + beat (+ SMTP sink)
	$(BIN)/magnetiq run

services: ## Make sure the test vhost exists on the local RabbitMQ
	@command -v rabbitmqctl >/dev/null && { \
	  rabbitmqctl -q list_vhosts 2>/dev/null | grep -qx '$(TEST_VHOST)' || rabbitmqctl -q add_vhost '$(TEST_VHOST)'; \
	  rabbitmqctl -q set_permissions -p '$(TEST_VHOST)' guest '.*' '.*' '.*'; } || true

test: $(STAMP) services ## Run every test against the local RabbitMQ, PostgreSQL and SMTP servers
	$(BIN)/python -m pytest --durations=25

test-unit: $(STAMP) ## Unit and contract tests only (no services needed)
	$(BIN)/python -m pytest tests/unit tests/contract

test-integration: $(STAMP) services ## Integration tests only
	$(BIN)/python -m pytest -m integration

chaos: $(STAMP) ## Fault harness: private RabbitMQ + PostgreSQL, real workers, faults, a table per case
	$(BIN)/python -m pytest tests/chaos --timeout 600

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP) ## Format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP) ## mypy --strict
	$(BIN)/mypy app routing workers

check: lint typecheck test ## Lint, type-check and test

migrate: $(STAMP) ## Create the database if missing and apply migrations
	$(BIN)/magnetiq db upgrade

topology: $(STAMP) ## Declare exchanges and queues on the broker
	$(BIN)/magnetiq topology apply

worker: $(STAMP) ## Run one worker: make worker PROFILE=email|bulk|booking|maintenance
	$(BIN)/python -m workers $(PROFILE)

worker-email: $(STAMP) ## Run the email worker (gevent)
	$(BIN)/python -m workers email

worker-bulk: $(STAMP) ## Run the bulk email worker (gevent, booking reminders)
	$(BIN)/python -m workers bulk

worker-booking: $(STAMP) ## Run the booking worker (prefork)
	$(BIN)/python -m workers booking

worker-maintenance: $(STAMP) ## Run the maintenance worker (prefork, one process)
	$(BIN)/python -m workers maintenance

beat: $(STAMP) ## Run the beat scheduler
	$(BIN)/python -m workers beat

BENCH_VHOST ?= magnetiq_bench
REPS ?= 1
bench: $(STAMP) ## Fleet vs plain Celery and the seed's Redis setup (table of ratios, appended to tests/bench/RESULTS.md); REPS=3 for medians
	@command -v rabbitmqctl >/dev/null && { \
	  rabbitmqctl -q list_vhosts 2>/dev/null | grep -qx '$(BENCH_VHOST)' || rabbitmqctl -q add_vhost '$(BENCH_VHOST)'; \
	  rabbitmqctl -q set_permissions -p '$(BENCH_VHOST)' guest '.*' '.*' '.*'; } || true
	$(BIN)/python -m tests.bench --reps $(REPS)

clean: ## Remove the virtualenv and local state
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
