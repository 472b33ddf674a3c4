#!/usr/bin/env bash
# Builds every image the Docker tests use, in the running engine, so that they find them built:
# the project's three images (docker/build-image.sh: official bases, else stand-ins) and, where
# the compose file's official service images cannot be pulled, their stand-ins
# (tests/docker/compose.standin.yaml). Prints each build's time and size. The tests build
# whatever is missing themselves: this only moves the work earlier (tests/run-suites.sh runs it
# in the background while the other suites run).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
for kind in trainer emulator airflow; do
    docker/build-image.sh "$kind"
done
pullable() { docker image inspect "$1" >/dev/null 2>&1 || timeout 120 docker pull -q "$1" >/dev/null 2>&1; }
pullable postgres:16 || docker/standin/service-image.sh postgres >/dev/null
pullable fsouza/fake-gcs-server:1.52.2 || docker/standin/service-image.sh fake-gcs-server >/dev/null
echo "prepare-test-images: done in $(( $(date +%s) - start ))s"
