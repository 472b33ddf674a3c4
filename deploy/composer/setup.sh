#!/usr/bin/env bash
# One-time (and idempotent) set-up of a Cloud Composer 3 environment for the recommendation DAGs.
#
#   deploy/composer/setup.sh ENVIRONMENT REGION PROJECT BUCKET [ENV=prod] [BQ_LOCATION=US]
#
# BUCKET holds the artifacts (gs://BUCKET/recsys); the Vertex staging bucket is BUCKET-vertex-staging.
# What it does, in the order the DAGs need it:
#   1. PyPI packages: requirements-composer.txt (never pins Airflow or Composer's own providers);
#   2. environment variables: deploy/composer/environment.env, placeholders filled in;
#   3. the pools (docker/airflow/pools.json at the sizes of deploy/composer/pool-slots.env): the
#      writers' and the trainer jobs', before any DAG can queue a task in them;
#   4. Variables (deploy/composer/variables.json) and Connections (deploy/composer/connections.json):
#      uploaded to the environment bucket's data/ folder, then `airflow variables import` /
#      `airflow connections import` (existing ones are kept: --overwrite is never passed);
#   5. the artifacts bucket's lifecycle rules (deploy/gcs-lifecycle.json).
# No secret goes through here: the Slack webhook is the Secret Manager secret
# airflow-connections-slack_recsys (Composer's Secret Manager backend must be enabled), created by
#   printf '%s' '{"conn_type": "slackwebhook", "password": "/services/T…/B…/…"}' |
#     gcloud secrets create airflow-connections-slack_recsys --data-file=-
# The DAGs and plugins themselves are delivered by deploy/cloudbuild-dags.yaml.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 4 ] || { sed -n 4,6p "$0" >&2; exit 2; }
export ENVIRONMENT=$1 REGION=$2 PROJECT=$3 BUCKET=$4 ENV=${5:-prod} BQ_LOCATION=${6:-US}
composer=(gcloud composer environments --project "$PROJECT")
where=(--location "$REGION")

fill() {  # a template with its ${NAME} placeholders filled in; an unknown placeholder is an error
    python3 - "$1" <<'PY'
import os, re, sys
text = open(sys.argv[1]).read()
missing = sorted(set(re.findall(r"\$\{(\w+)\}", text)) - set(os.environ))
if missing:
    sys.exit(f"ERROR: {sys.argv[1]}: no value for {', '.join(missing)}")
print(re.sub(r"\$\{(\w+)\}", lambda m: os.environ[m.group(1)], text), end="")
PY
}

echo "1/5 PyPI packages"
"${composer[@]}" update "$ENVIRONMENT" "${where[@]}" --update-pypi-packages-from-file requirements-composer.txt \
    || echo "   (no change to apply, or see the message above)"

echo "2/5 environment variables"
# '@' separates the pairs (gcloud's ^@^ syntax): values hold commas (JSON) and colons (images).
pairs=$(fill deploy/composer/environment.env | grep -v '^\s*#' | grep -v '^\s*$' | paste -sd@)
"${composer[@]}" update "$ENVIRONMENT" "${where[@]}" --update-env-variables="^@^$pairs" \
    || echo "   (no change to apply, or see the message above)"

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fill deploy/composer/variables.json >"$tmp/variables.json"
fill deploy/composer/connections.json >"$tmp/connections.json"
python3 - docker/airflow/pools.json deploy/composer/pool-slots.env >"$tmp/pools.json" <<'PY'
import json, sys
pools = json.load(open(sys.argv[1]))
sizes = dict(line.strip().split("=", 1) for line in open(sys.argv[2])
             if line.strip() and not line.lstrip().startswith("#"))
if set(sizes) != set(pools):  # a pool left unsized, or a size for no pool, is a mistake
    sys.exit(f"ERROR: {sys.argv[2]} sizes {sorted(sizes)}, {sys.argv[1]} defines {sorted(pools)}")
for name, slots in sizes.items():
    pools[name]["slots"] = int(slots)
print(json.dumps(pools, indent=2))
PY
for file in pools.json variables.json connections.json; do
    "${composer[@]}" storage data import "$ENVIRONMENT" "${where[@]}" --source "$tmp/$file" --destination recsys
done
echo "3/5 pools"
"${composer[@]}" run "$ENVIRONMENT" "${where[@]}" pools -- import /home/airflow/gcs/data/recsys/pools.json
echo "4/5 Variables and Connections"
"${composer[@]}" run "$ENVIRONMENT" "${where[@]}" variables import -- /home/airflow/gcs/data/recsys/variables.json
"${composer[@]}" run "$ENVIRONMENT" "${where[@]}" connections import -- /home/airflow/gcs/data/recsys/connections.json

echo "5/5 lifecycle of gs://$BUCKET"
gcloud storage buckets update "gs://$BUCKET" --project "$PROJECT" --lifecycle-file=deploy/gcs-lifecycle.json
echo "done: now run the DAG-side Cloud Build (deploy/cloudbuild-dags.yaml) to deliver the DAGs"
