#!/usr/bin/env bash
# `make test`'s suites, one process each (the DAG tests configure Airflow and the environment for
# themselves and run once per end of the supported Airflow range; the browser test starts a whole
# stack of its own). Stops at the first failing suite.
#
# The Docker tests' images take minutes to build where the machine-wide Docker cache is empty
# (debootstrap, pip and uv downloads: mostly waiting on the network), so the engine is started
# first and the images are built in the background while the other suites run; the Docker tests
# then find them built. The engine is stopped at the end if this script started it, whatever
# happens. Usage (the Makefile passes the interpreters): tests/run-suites.sh TRAINER_PY AIRFLOW_PY
# AIRFLOW_OLD_PY
set -euo pipefail
cd "$(dirname "$0")/.."
TRAINER_PY=$1 AIRFLOW_PY=$2 AIRFLOW_OLD_PY=$3
PYTEST=(-m pytest -q -p no:cacheprovider)
mkdir -p .local
PREPARE_LOG=.local/docker-images.log
prepare_pid=""
engine_ours=""

cleanup() {
    [ -n "$prepare_pid" ] && kill -- "-$prepare_pid" 2>/dev/null || true
    if [ -n "$engine_ours" ]; then docker/engine/engine.sh stop || exit 1; fi
}
trap cleanup EXIT

if [ "${RECSYS_SKIP_DOCKER_TESTS:-}" != 1 ]; then
    # Without an engine the Docker tests fail later with the reason; nothing to prepare here.
    if started=$(docker/engine/engine.sh start 2>&1); then
        echo "$started"
        case $started in *"using the engine already running"*) ;; *) engine_ours=1 ;; esac
        echo "building the Docker tests' images in the background (log: $PREPARE_LOG)"
        setsid docker/prepare-test-images.sh >"$PREPARE_LOG" 2>&1 &
        prepare_pid=$!
    fi
fi

(cd recommend_task && "$TRAINER_PY" "${PYTEST[@]}" tests)
"$AIRFLOW_PY" "${PYTEST[@]}" tests/dags
"$AIRFLOW_OLD_PY" "${PYTEST[@]}" tests/dags
"$AIRFLOW_PY" "${PYTEST[@]}" tests/local

if [ -n "$prepare_pid" ]; then
    prepared=0
    wait "$prepare_pid" || prepared=$?
    prepare_pid=""
    cat "$PREPARE_LOG"
    [ "$prepared" = 0 ] || { echo "ERROR: building the Docker tests' images failed (above)" >&2; exit 1; }
fi
"$AIRFLOW_PY" "${PYTEST[@]}" tests/docker
