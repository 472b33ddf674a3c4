# The two commands every user and CI need: `make demo` and `make test` (see README.md).
# Everything is installed from lock files into virtualenvs under .venv/ by uv, offline from
# everything but the package registries, with compiled bytecode: machines and CI systems that set
# PYTHONDONTWRITEBYTECODE=1 would otherwise compile every import from source in every process
# (measured: `make up` 110 s to a healthy UI without, 46 s with).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON311 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.11*/bin/python3.11) $(shell command -v python3.11))
PYTHON313 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) $(shell command -v python3.13))
UV_VERSION := 0.13.8
CHROMIUM ?= /usr/bin/chromium

VENV := .venv
UV := $(VENV)/tools/bin/uv
TRAINER_PY := $(abspath $(VENV)/trainer/bin/python)
EMULATORS := $(PYTHON311) docker/emulators/emulators.py
export UV_PYTHON_DOWNLOADS := never
SYNC := $(UV) pip sync -q --compile-bytecode

# The supported Airflow range is 3.1 (Cloud Composer 3's Airflow 3 line) to 3.3. The DAG tests run
# at both ends: .venv/airflow (requirements.txt, the newest) and .venv/airflow-3.1 (its own lock).
AIRFLOW_OLD := airflow-3.1
# No package newer than Cloud Composer's composer-3-airflow-3.1.8-build.3 (2026-08-05) could be in it.
AIRFLOW_OLD_EXCLUDE_NEWER := 2026-08-06

# The DAG run's logical date; it works on the events of the day before.
DEMO_DATE ?= 2026-11-30
DEMO_DIR := .local/demo
DEMO_BUCKET := recsys-artifacts

.PHONY: help venvs test dag-tests demo up down bench bench-scale lint lock clean image docker-engine docker-engine-stop cloud-smoke audit

help:
	@echo "make demo   seed synthetic events and run both DAGs through Airflow on local emulators"
	@echo "make test   run every test (starts and stops its own emulators)"
	@echo "make dag-tests  the DAG tests that need no emulator, on Airflow 3.1 and 3.3 (the DAG-side Cloud Build)"
	@echo "make cloud-smoke PROJECT=... REGION=...  every step once on Vertex AI in a real project (your credentials)"
	@echo "make up     Airflow UI + scheduler on this machine (no Docker), emulators seeded"
	@echo "make down   stop everything make up started (WIPE=1 also deletes its data)"
	@echo "make bench  10M events through both DAGs against the floor, trainer step figures, the tuning search's cost and gain, start-up and parse times, the Recommender page's data endpoint"
	@echo "make bench-scale  pipeline time at 1M, 3M, 10M and 100M events, and predict in 1, 2 and 4 shards"
	@echo "make image  build the trainer, BigQuery emulator and Airflow images (a Docker engine must run: make docker-engine)"
	@echo "make lint   ruff"
	@echo "make lock   re-resolve the lock files after editing a requirements file"
	@echo "make audit  pip-audit over every lock file (SERVICE=osv to ask OSV); not part of make test"

$(UV):
	@test -n "$(PYTHON311)" || { echo "ERROR: python3.11 not found (set PYTHON311=...)"; exit 1; }
	$(PYTHON311) -m venv $(VENV)/tools
	$(VENV)/tools/bin/pip install -q uv==$(UV_VERSION)

$(VENV)/trainer/.installed: recommend_task/requirements-dev.lock recommend_task/pyproject.toml | $(UV)
	$(UV) venv -q --allow-existing -p $(PYTHON311) $(VENV)/trainer
	$(SYNC) -p $(VENV)/trainer/bin/python recommend_task/requirements-dev.lock
	$(UV) pip install -q --compile-bytecode -p $(VENV)/trainer/bin/python --no-deps -e recommend_task
	touch $@

$(VENV)/emulators/.installed: docker/emulators/requirements.lock | $(UV)
	@test -n "$(PYTHON313)" || { echo "ERROR: python3.13 not found (set PYTHON313=...)"; exit 1; }
	$(UV) venv -q --allow-existing -p $(PYTHON313) $(VENV)/emulators
	$(SYNC) -p $(VENV)/emulators/bin/python docker/emulators/requirements.lock
	touch $@

$(VENV)/airflow/.installed: requirements-dev.lock | $(UV)
	$(UV) venv -q --allow-existing -p $(PYTHON311) $(VENV)/airflow
	$(SYNC) -p $(VENV)/airflow/bin/python requirements-dev.lock
	touch $@

$(VENV)/$(AIRFLOW_OLD)/.installed: requirements-$(AIRFLOW_OLD).lock | $(UV)
	$(UV) venv -q --allow-existing -p $(PYTHON311) $(VENV)/$(AIRFLOW_OLD)
	$(SYNC) -p $(VENV)/$(AIRFLOW_OLD)/bin/python requirements-$(AIRFLOW_OLD).lock
	touch $@

venvs: $(VENV)/trainer/.installed $(VENV)/emulators/.installed $(VENV)/airflow/.installed \
	$(VENV)/$(AIRFLOW_OLD)/.installed

# Debian packages the local tests use: Chromium drives the browser test (Playwright's own
# browser download is not used), docker-compose validates the compose file (no engine needed).
COMPOSE_CLI := /usr/bin/docker-compose
define apt_install
	@if [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's $(1) for the local tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null; \
	else echo "ERROR: $@ missing: sudo apt-get install $(1)"; exit 1; fi
endef
$(CHROMIUM):
	$(call apt_install,chromium)
$(COMPOSE_CLI):
	$(call apt_install,docker-compose)

# One process per suite, in lanes side by side, the Docker tests' images built in the background
# meanwhile: tests/run-suites.sh.
test: venvs lint $(CHROMIUM) $(COMPOSE_CLI)
	RECSYS_CHROMIUM=$(CHROMIUM) tests/run-suites.sh $(TRAINER_PY) $(abspath $(VENV)/airflow/bin/python) \
		$(abspath $(VENV)/$(AIRFLOW_OLD)/bin/python)

# The DAG tests that need no emulator, Docker or browser, on both ends of the supported Airflow
# range: what the DAG-side Cloud Build (deploy/cloudbuild-dags.yaml) runs before delivering.
DAG_TESTS := tests/dags/test_dag_integrity.py tests/dags/test_params.py tests/dags/test_run_dates.py \
	tests/dags/test_runtime_contract.py tests/dags/test_supported_versions.py tests/dags/test_images.py \
	tests/dags/test_delivery.py tests/dags/test_cloud_smoke.py
dag-tests: $(VENV)/trainer/.installed $(VENV)/airflow/.installed $(VENV)/$(AIRFLOW_OLD)/.installed
	$(VENV)/$(AIRFLOW_OLD)/bin/python -m pytest -q -p no:cacheprovider $(DAG_TESTS)
	$(VENV)/airflow/bin/python -m pytest -q -p no:cacheprovider $(DAG_TESTS)

# pip-audit over every lock file with the reviewed ignore file (deploy/audit.py). Never part of
# `make test`: the advisory feed changes by itself. SERVICE=osv asks OSV instead of PyPI.
SERVICE ?= pypi
$(VENV)/audit/.installed: deploy/audit-requirements.txt | $(UV)
	$(UV) venv -q --allow-existing -p $(PYTHON311) $(VENV)/audit
	$(UV) pip install -q -p $(VENV)/audit/bin/python -r deploy/audit-requirements.txt
	touch $@
audit: $(VENV)/audit/.installed
	$(VENV)/audit/bin/python deploy/audit.py --service $(SERVICE)

# Every step once as a Vertex AI job in a real project, with your own credentials; deletes what it
# created (deploy/cloud_smoke.py; the IAM it needs: docs/operations.md). Never part of `make test`.
BUCKET ?= $(PROJECT)-recsys
SERVICE_ACCOUNT ?= recsys-trainer@$(PROJECT).iam.gserviceaccount.com
cloud-smoke: $(VENV)/airflow/.installed
	@test -n "$(PROJECT)" -a -n "$(REGION)" || { echo "ERROR: usage: make cloud-smoke PROJECT=... REGION=... [BUCKET=...] [SERVICE_ACCOUNT=...]"; exit 2; }
	$(VENV)/airflow/bin/python deploy/cloud_smoke.py --project $(PROJECT) --region $(REGION) \
		--bucket $(BUCKET) --service-account $(SERVICE_ACCOUNT)

# A Docker engine: the running one, else Debian's docker.io started with no bridge, iptables or IP
# forwarding (root only), its data in /var/cache/recsys-docker. The Docker tests start and stop
# it themselves.
docker-engine:
	docker/engine/engine.sh start

docker-engine-stop:
	docker/engine/engine.sh stop

image:
	docker/build-image.sh trainer
	docker/build-image.sh emulator
	docker/build-image.sh airflow

lint: venvs
	$(VENV)/trainer/bin/ruff check recommend_task docker dags plugins tests deploy benchmarks

demo: venvs
	rm -rf $(DEMO_DIR)
	$(EMULATORS) run --data-dir $(DEMO_DIR)/emulators --bucket $(DEMO_BUCKET) -- \
		env RECSYS_BQ_RETRY_DEADLINE_S=60 DEMO_DIR=$(abspath $(DEMO_DIR)) \
		docker/local/demo.sh $(DEMO_DATE)

up: venvs
	$(PYTHON311) docker/local/stack.py up

down:
	$(PYTHON311) docker/local/stack.py down $(if $(WIPE),--wipe)

# BENCH_EVENTS (default 10 million), BENCH_USERS, BENCH_ITEMS size the pipeline and tuning benchmarks.
bench: venvs
	$(VENV)/airflow/bin/python benchmarks/bench_airflow.py
	$(TRAINER_PY) benchmarks/bench_pipeline.py
	$(TRAINER_PY) benchmarks/bench_tuning.py
	$(TRAINER_PY) benchmarks/bench_long_id.py
	$(VENV)/airflow/bin/python benchmarks/bench_startup.py
	$(VENV)/airflow/bin/python benchmarks/bench_dag_processor.py --runtime vertex
	$(VENV)/airflow/bin/python benchmarks/bench_recommender_page.py

# Time against events at 1, 3, 10 and 100 million (growth should be linear), and predict in 1, 2, 4
# shards; MAX_EVENTS=10000000 leaves out the 100M point.
bench-scale: venvs
	$(VENV)/airflow/bin/python benchmarks/bench_scale.py $(if $(MAX_EVENTS),--max-events $(MAX_EVENTS))

lock: | $(UV)
	$(UV) pip compile -q --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --generate-hashes recommend_task/requirements.txt -o recommend_task/requirements.lock
	$(UV) pip compile -q --python-version 3.11 --python-platform x86_64-unknown-linux-gnu recommend_task/requirements-dev.txt -c recommend_task/requirements.lock -o recommend_task/requirements-dev.lock
	$(UV) pip compile -q --python-version 3.13 --python-platform x86_64-unknown-linux-gnu docker/emulators/requirements.txt -o docker/emulators/requirements.lock
	$(UV) pip compile -q --python-version 3.11 --python-platform x86_64-unknown-linux-gnu requirements.txt -o requirements.lock
	$(UV) pip compile -q --python-version 3.11 --python-platform x86_64-unknown-linux-gnu requirements-dev.txt -c requirements.lock -o requirements-dev.lock
	$(UV) pip compile -q --python-version 3.11 --python-platform x86_64-unknown-linux-gnu --exclude-newer $(AIRFLOW_OLD_EXCLUDE_NEWER) requirements-$(AIRFLOW_OLD).txt -o requirements-$(AIRFLOW_OLD).lock

clean: down
	-$(EMULATORS) stop --data-dir $(DEMO_DIR)/emulators
	rm -rf .local
