#!/usr/bin/env bash
# Prints the name of the stand-in for apache/airflow:3.3.2-python3.11, building it if missing
# (see docker/standin/airflow.Dockerfile). Users never need it.
set -euo pipefail
cd "$(dirname "$0")"
NAME=recsys-standin/airflow:3.3.2-python3.11
export DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}
if docker image inspect "$NAME" >/dev/null 2>&1; then echo "$NAME"; exit 0; fi
python_base=$(./python-base.sh 3.11)
start=$(date +%s)
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp airflow.Dockerfile "$context/Dockerfile"
cp ../../requirements.lock "$context/"
uv_version=$(sed -n 's/^UV_VERSION := //p' ../../Makefile)
docker build -q --network host --build-arg "PYTHON_BASE=$python_base" --build-arg "UV_VERSION=$uv_version" \
    -t "$NAME" "$context" >/dev/null
echo "built $NAME in $(( $(date +%s) - start ))s" >&2
echo "$NAME"
