#!/usr/bin/env bash
# `make test`'s suites, one process each (the DAG tests configure Airflow and the environment for
# themselves and run once per end of the supported Airflow range; the browser test starts a whole
# stack of its own).
#
# Lanes run side by side, because each suite keeps about one core busy and CI machines have two
# or more: lane 1 runs the trainer suite; lane 2 the DAG suite on the newest Airflow, then the
# browser suite; lane 3 the DAG suite on the oldest supported Airflow, then the Docker tests,
# once their images are built. The suites share nothing: each starts its emulators and stacks on
# free ports in directories of its own. A lane stops at its first failing suite; the script fails
# if any suite failed. Each suite's output is printed whole when it ends (live pytest outputs
# would interleave), with its time.
#
# The Docker tests' images take minutes to build where the machine-wide Docker cache is empty
# (debootstrap, pip and uv downloads: mostly waiting on the network), so the engine is started
# first and the images are built in the background while the other suites run; the Docker tests
# then find them built. Everything started here (lanes, image builds, the engine if this script
# started it) is stopped at the end, whatever happens. Usage (the Makefile passes the
# interpreters): tests/run-suites.sh TRAINER_PY AIRFLOW_PY AIRFLOW_OLD_PY
set -euo pipefail
cd "$(dirname "$0")/.."
TRAINER_PY=$1 AIRFLOW_PY=$2 AIRFLOW_OLD_PY=$3
PYTEST=(-m pytest -q -p no:cacheprovider)
LOGS=.local/test-logs
mkdir -p "$LOGS"
rm -f "$LOGS/summary" "$LOGS/suites" "$LOGS"/*.xml
PREPARE_LOG=$LOGS/docker-images.log
PREPARE_STATUS=$LOGS/docker-images.status
prepare_pid=""
engine_ours=""
lanes=()

cleanup() {
    for pid in "${lanes[@]}" $prepare_pid; do kill -- "-$pid" 2>/dev/null || true; done
    if [ -n "$engine_ours" ]; then docker/engine/engine.sh stop || exit 1; fi
}
trap cleanup EXIT

# suite NAME DIR PYTHON ARGS...: one pytest process in DIR, its output to $LOGS/NAME.log, printed
# when it ends, its JUnit report to $LOGS/NAME.xml (read by tests/cited_tests.py at the end).
suite() {
    local name=$1 dir=$2 python=$3 started rc=0
    shift 3
    started=$(date +%s)
    echo "suite $name: started"
    echo "$name $dir" | flock "$LOGS" tee -a "$LOGS/suites" >/dev/null
    local report=$PWD/$LOGS/$name.xml
    (cd "$dir" && "$python" "${PYTEST[@]}" --junitxml="$report" -o junit_family=xunit1 "$@") \
        >"$LOGS/$name.log" 2>&1 || rc=$?
    local verdict
    verdict="$([ $rc = 0 ] && echo passed || echo "FAILED (exit $rc)") in $(( $(date +%s) - started ))s"
    echo "$name: $verdict" >>"$LOGS/summary"
    { echo "===== suite $name: $verdict ====="
      cat "$LOGS/$name.log"; } | flock "$LOGS" cat  # one suite's output at a time
    return $rc
}

# Waits for the background image build (a lane cannot `wait` for a process it did not start: the
# build records its exit status in a file).
docker_images_ready() {
    [ -z "$prepare_pid" ] && return 0
    while [ ! -s "$PREPARE_STATUS" ] && kill -0 "$prepare_pid" 2>/dev/null; do sleep 2; done
    flock "$LOGS" cat "$PREPARE_LOG"
    [ "$(cat "$PREPARE_STATUS" 2>/dev/null)" = 0 ] ||
        { echo "docker-images: FAILED" >>"$LOGS/summary"
          echo "ERROR: building the Docker tests' images failed (above)" >&2; return 1; }
}

if [ "${RECSYS_SKIP_DOCKER_TESTS:-}" != 1 ]; then
    # Without an engine the Docker tests fail later with the reason; nothing to prepare here.
    if started=$(docker/engine/engine.sh start 2>&1); then
        echo "$started"
        case $started in *"using the engine already running"*) ;; *) engine_ours=1 ;; esac
        echo "building the Docker tests' images in the background (log: $PREPARE_LOG)"
        rm -f "$PREPARE_STATUS"
        setsid bash -c 'docker/prepare-test-images.sh; echo $? >"$0"' "$PREPARE_STATUS" >"$PREPARE_LOG" 2>&1 &
        prepare_pid=$!
    fi
fi

# Tuning off (recommend_train's `tune` default, train_task's mode) in every suite and in the stacks
# they start: the tuning tests set it per run, the others check models of today's settings.
export RECSYS_TUNE=off

# Each lane in its own process group, so that cleanup stops whatever it started. The trainer
# suite, the longest, has a lane to itself; the Docker tests follow the oldest Airflow's DAG suite
# in the third lane, by which time their images are built.
set -m
( suite trainer recommend_task "$TRAINER_PY" tests ) &
lanes+=($!)
( suite dags-airflow-newest . "$AIRFLOW_PY" tests/dags &&
  suite local . "$AIRFLOW_PY" tests/local ) &
lanes+=($!)
( suite dags-airflow-oldest . "$AIRFLOW_OLD_PY" tests/dags &&
  docker_images_ready && suite docker . "$AIRFLOW_PY" tests/docker ) &
lanes+=($!)
set +m

failed=0
for pid in "${lanes[@]}"; do wait "$pid" || failed=1; done
lanes=()
# CI systems often show only the end of a log: the verdicts, and the end of each failed suite's
# output again, come last.
echo "===== suites ====="
cat "$LOGS/summary" 2>/dev/null || true
if [ "$failed" != 0 ]; then
    for log in $(sed -n 's/^\([^:]*\): FAILED.*/\1/p' "$LOGS/summary" 2>/dev/null); do
        echo "===== the end of suite $log's output ====="
        grep -nE '^(FAILED|ERROR) ' "$LOGS/$log.log" || true
        tail -n 60 "$LOGS/$log.log"
    done
    echo "ERROR: a suite failed (its output is above)" >&2
    exit 1
fi
echo "every suite passed"
# docs/comparison.md's proof is this run's: every test it cites ran here and passed.
"$AIRFLOW_PY" tests/cited_tests.py "$LOGS"
