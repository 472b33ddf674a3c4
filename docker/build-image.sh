#!/usr/bin/env bash
# Build one of the project's images in the running Docker engine, on its Dockerfile's official
# base (BASE_IMAGE's default), or, only where that cannot be pulled (no registry), on the
# stand-in of docker/standin/python-base.sh. Prints the build time and the image size.
#
#   docker/build-image.sh trainer  [TAG]   recommend_task/Dockerfile  (recsys-trainer:dev)
#   docker/build-image.sh emulator [TAG]   docker/emulators/Dockerfile (recsys-bigquery-emulator:local)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    trainer) context=recommend_task; tag=${2:-recsys-trainer:dev} ;;
    emulator) context=docker/emulators; tag=${2:-recsys-bigquery-emulator:local} ;;
    *) echo "usage: $0 trainer|emulator [TAG]" >&2; exit 2 ;;
esac
official=$(sed -n 's/^ARG BASE_IMAGE=//p' "$context/Dockerfile")
[ -n "$official" ] || { echo "ERROR: $context/Dockerfile has no ARG BASE_IMAGE=<official image>" >&2; exit 1; }

if docker image inspect "$official" >/dev/null 2>&1 || timeout 60 docker pull -q "$official" >/dev/null 2>&1; then
    base=$official
else
    echo "build-image: $official cannot be pulled here; using a stand-in base (docker/standin/)" >&2
    version=$(echo "$official" | sed -n 's/^python:\([0-9.]*\)-slim$/\1/p')
    [ -n "$version" ] || { echo "ERROR: no stand-in for $official" >&2; exit 1; }
    base=$(docker/standin/python-base.sh "$version")
fi
start=$(date +%s)
docker build -q --network host --build-arg "BASE_IMAGE=$base" -t "$tag" "$context" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "build-image: $tag on $base in $(( $(date +%s) - start ))s, $(( size / 1000000 )) MB"
