#!/usr/bin/env bash
# A Docker engine for the tests and `make` targets that need one.
#
#   docker/engine/engine.sh start    use the running engine, or start one (installing Debian's
#                                    docker.io first if needed; root only)
#   docker/engine/engine.sh stop     stop the engine `start` started (never one it found running)
#   docker/engine/engine.sh status
#
# An engine started here has no default bridge, no iptables rules and no IP forwarding: no
# container can reach anything beyond this machine (containers use --network host or none).
# Its data root lives in a machine-wide cache outside the clone (RECSYS_DOCKER_CACHE, default
# /var/cache/recsys-docker), so a second run on the same machine reuses images and layers.
set -euo pipefail

CACHE=${RECSYS_DOCKER_CACHE:-/var/cache/recsys-docker}
STATE=$CACHE/engine
SOCK=${RECSYS_DOCKER_SOCK:-/var/run/docker.sock}
START_TIMEOUT_S=${RECSYS_DOCKER_START_TIMEOUT_S:-90}

die() { echo "ERROR: docker engine: $*" >&2; exit 1; }

running() { DOCKER_HOST=unix://$SOCK docker info >/dev/null 2>&1; }

# dockerd leaves the host network namespace bind-mounted in its exec root (netns/default) when
# it exits; a stopped engine must leave nothing mounted.
unmount_exec_root() {
    awk -v root="$STATE/exec/" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r \
        | xargs -r -n1 umount -l || true
}

# The data root outlives the engine (to keep images and build cache), so a run killed mid-test
# leaves its containers, networks and volumes there; an engine we just started serves no one
# else yet, so they are removed before anyone uses it. Images and build cache stay.
remove_leftovers() {
    local d=(env "DOCKER_HOST=unix://$SOCK" docker) ids
    ids=$("${d[@]}" ps -aq)
    [ -z "$ids" ] || { echo "docker engine: removing $(wc -w <<<"$ids") container(s) left by an earlier run"; \
        "${d[@]}" rm -f -v $ids >/dev/null; }
    ids=$("${d[@]}" network ls -q --filter type=custom)
    [ -z "$ids" ] || { echo "docker engine: removing $(wc -w <<<"$ids") network(s) left by an earlier run"; \
        "${d[@]}" network rm $ids >/dev/null; }
    ids=$("${d[@]}" volume ls -q)
    [ -z "$ids" ] || { echo "docker engine: removing $(wc -w <<<"$ids") volume(s) left by an earlier run"; \
        "${d[@]}" volume rm -f $ids >/dev/null; }
}

start() {
    if running; then
        echo "docker engine: using the engine already running at unix://$SOCK"
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "none running at unix://$SOCK and not root, so none can be started here: \
start Docker (Docker Desktop, or systemctl start docker on Linux) and re-run"
    if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
        echo "docker engine: installing Debian's docker.io"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
    fi
    [ -d /sys/fs/cgroup ] || die "no cgroups on this machine: dockerd cannot run here"
    mkdir -p "$STATE" "$CACHE/data"
    rm -f "$STATE/pid"
    unmount_exec_root  # left by an engine that died
    echo "docker engine: starting dockerd (data root $CACHE/data, no bridge, no iptables, no IP forwarding)"
    setsid dockerd --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
        --data-root "$CACHE/data" --exec-root "$STATE/exec" -H "unix://$SOCK" \
        --pidfile "$STATE/pid" >"$STATE/dockerd.log" 2>&1 < /dev/null &
    echo $! >"$STATE/started-by-us"
    for _ in $(seq "$START_TIMEOUT_S"); do
        running && { remove_leftovers; echo "docker engine: up"; return 0; }
        kill -0 "$(cat "$STATE/started-by-us")" 2>/dev/null || break
        sleep 1
    done
    tail -5 "$STATE/dockerd.log" >&2 || true
    stop >/dev/null 2>&1 || true
    die "dockerd did not come up within ${START_TIMEOUT_S}s (log: $STATE/dockerd.log)"
}

stop() {
    [ -f "$STATE/started-by-us" ] || { echo "docker engine: nothing started here to stop"; return 0; }
    local pid
    pid=$(cat "$STATE/started-by-us")
    # A marker left by a run that died must not make us kill whatever reused its pid.
    if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
        # Containers first, so none outlives the engine's shutdown timeout.
        DOCKER_HOST=unix://$SOCK docker ps -q | xargs -r env DOCKER_HOST=unix://$SOCK docker rm -f -v >/dev/null || true
        kill "$pid"
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    # dockerd stops its containerd as it exits; give that its own moment.
    for _ in $(seq 15); do pgrep -f -- "$STATE/exec" >/dev/null || break; sleep 1; done
    unmount_exec_root
    rm -f "$STATE/started-by-us"
    if pgrep -f -- "$STATE/exec" >/dev/null || grep -q " $STATE/exec/" /proc/mounts; then
        die "stopped, but a process or mount of it is left (pgrep -af $STATE/exec; grep $STATE /proc/mounts)"
    fi
    echo "docker engine: stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) if running; then echo "running at unix://$SOCK"; else echo "not running"; exit 1; fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
