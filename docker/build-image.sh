#!/usr/bin/env bash
# Build one of the project's images in the running Docker engine, on its Dockerfile's official
# base (BASE_IMAGE's default), or, only where that cannot be pulled (no registry), on the
# stand-in of docker/standin/python-base.sh. Prints the build time and the image size.
#
#   docker/build-image.sh trainer  [TAG]   recommend_task/Dockerfile  (recsys-trainer:dev)
#   docker/build-image.sh emulator [TAG]   docker/emulators/Dockerfile (recsys-bigquery-emulator:local)
#   docker/build-image.sh airflow  [TAG]   docker/airflow/Dockerfile   (recsys-airflow:local)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    trainer) context=recommend_task; dockerfile=$context/Dockerfile; tag=${2:-recsys-trainer:dev} ;;
    emulator) context=docker/emulators; dockerfile=$context/Dockerfile; tag=${2:-recsys-bigquery-emulator:local} ;;
    airflow) context=.; dockerfile=docker/airflow/Dockerfile; tag=${2:-recsys-airflow:local} ;;
    *) echo "usage: $0 trainer|emulator|airflow [TAG]" >&2; exit 2 ;;
esac
official=$(sed -n 's/^ARG BASE_IMAGE=//p' "$dockerfile")
[ -n "$official" ] || { echo "ERROR: $dockerfile has no ARG BASE_IMAGE=<official image>" >&2; exit 1; }

if docker image inspect "$official" >/dev/null 2>&1 || timeout 60 docker pull -q "$official" >/dev/null 2>&1; then
    base=$official
else
    echo "build-image: $official cannot be pulled here; using a stand-in base (docker/standin/)" >&2
    case $official in
        python:*-slim) base=$(docker/standin/python-base.sh "$(echo "$official" | sed 's/^python:\(.*\)-slim$/\1/')") ;;
        apache/airflow:3.3.2-python3.11) base=$(docker/standin/airflow-base.sh) ;;
        *) echo "ERROR: no stand-in for $official" >&2; exit 1 ;;
    esac
fi
start=$(date +%s)
docker build -q --network host --build-arg "BASE_IMAGE=$base" -t "$tag" -f "$dockerfile" "$context" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "build-image: $tag on $base in $(( $(date +%s) - start ))s, $(( size / 1000000 )) MB"
