#!/usr/bin/env bash
# `make demo`: seed synthetic events, run recommend_train then recommend_predict through Airflow
# (`airflow dags test`, RECSYS_RUNTIME=local), then recommend_feedback a day later on the next
# day's events, print the results read back from BigQuery and the Slack messages that were sent. Runs inside `emulators.py run`, which provides the emulators.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
logical_date=${1:?usage: demo.sh LOGICAL_DATE (e.g. 2026-11-30)}
run_date=$(date -u -d "$logical_date -1 day" +%F)   # the DAGs work on the day before
next_day=$(date -u -d "$logical_date" +%F)           # the served day's outcome, for recommend_feedback
state=${DEMO_DIR:-$repo/.local/demo}
trainer_py=$repo/.venv/trainer/bin/python
export PATH=$repo/.venv/airflow/bin:$PATH
export AIRFLOW_HOME=$state/airflow
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER=$repo/dags
export AIRFLOW__CORE__PLUGINS_FOLDER=$repo/plugins
export RECSYS_RUNTIME=local
export RECSYS_ARTIFACTS_URI=${RECSYS_ARTIFACTS_URI:-gs://recsys-artifacts/recsys}
export AIRFLOW_VAR_RECSYS_TRAINER_IMAGE=recsys-trainer:dev
export RECSYS_TRAINER_PYTHON=$trainer_py
mkdir -p "$AIRFLOW_HOME"
indent() { sed -u 's/^/    /'; }

slack_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
: > "$state/slack.jsonl"
python3 "$repo/docker/local/slack_receiver.py" --port "$slack_port" --out "$state/slack.jsonl" > "$state/slack.log" 2>&1 &
receiver=$!
trap 'kill $receiver 2>/dev/null || true' EXIT
export AIRFLOW_CONN_SLACK_RECSYS="{\"conn_type\": \"slackwebhook\", \"host\": \"http://127.0.0.1:$slack_port\", \"password\": \"/services/local/demo/token\"}"

echo "== seeding synthetic events (1% damaged rows) ending $next_day"
"$trainer_py" -m trainer.seed_events --end-date "$next_day" --days 31 --events 62000 --corrupt-fraction 0.01 2>&1 \
  | indent
echo "== airflow db migrate ($AIRFLOW_HOME)"
airflow db migrate > "$state/airflow-migrate.log" 2>&1 || { tail -20 "$state/airflow-migrate.log"; exit 1; }
feedback_at=$(date -u -d "$logical_date +1 day" +%F)T03:30:00+00:00  # measures $run_date on $next_day
for dag in recommend_train recommend_predict recommend_feedback; do
  at=${logical_date}T03:00:00+00:00
  [ "$dag" = recommend_feedback ] && at=$feedback_at
  echo "== airflow dags test $dag $at (log: $state/$dag.log)"
  airflow dags test "$dag" "$at" > "$state/$dag.log" 2>&1 || true
  { grep -E "trainer[.:a-z_]*: |ERROR:" "$state/$dag.log" || true; } \
    | sed -E 's/^.*(INFO|ERROR|WARNING) (trainer)/\1 \2/; s/ \[airflow\.task\..*$//' | indent
  if ! grep -q "state=success" "$state/$dag.log"; then
    echo "$dag did not succeed; see $state/$dag.log"; exit 1
  fi
  grep -oE "DagRun Finished: dag_id=$dag.*state=[a-z]+" "$state/$dag.log" | sed -E 's/.*(state=[a-z]+).*/    run finished: \1/'
done
"$trainer_py" -m trainer.report --run-date "$run_date" --users 3 --log-level WARNING
echo "Slack messages sent (loopback receiver):"
python3 -c 'import json,sys; [print("  -", json.loads(l)["text"].replace("\n", "\n    ")) for l in open(sys.argv[1])]' "$state/slack.jsonl"
