#!/usr/bin/env bash
# Build the trainer image (recommend_task/Dockerfile) as TAG (default recsys-trainer:dev) in the
# running Docker engine, on the official python:3.11-slim base, or, only where that cannot be
# pulled (no registry), on the stand-in of docker/standin/python-base.sh. Prints the cold build
# time and the image size.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-recsys-trainer:dev}
OFFICIAL=python:3.11-slim

if docker image inspect "$OFFICIAL" >/dev/null 2>&1 || timeout 60 docker pull -q "$OFFICIAL" >/dev/null 2>&1; then
    base=$OFFICIAL
else
    echo "build-trainer: $OFFICIAL cannot be pulled here; using a stand-in base (docker/standin/)" >&2
    base=$(docker/standin/python-base.sh)
fi
start=$(date +%s)
docker build -q --network host --build-arg "BASE_IMAGE=$base" -t "$TAG" recommend_task >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$TAG")
echo "build-trainer: $TAG on $base in $(( $(date +%s) - start ))s, $(( size / 1000000 )) MB"
