#!/usr/bin/env bash
# A stand-in for the official python:X.Y-slim image, for machines that cannot pull from a
# registry. Users never need it: the Dockerfiles default to the official image and take this one
# only through their BASE_IMAGE build argument.
#
#   docker/standin/python-base.sh [3.11|3.13]   prints the stand-in's name, building it if missing
#
# What it is: Debian bookworm (debootstrap, minbase) with CPython X.Y in /usr/local as in the
# official image (this machine's own build of it, made on the same Debian release), and this
# machine's CA bundle, because outbound TLS here is re-signed by a machine-local CA: pip and apt
# inside `docker build` need it. The project's real Dockerfiles never carry that bundle.
# The root filesystem is cached outside the clone (RECSYS_DOCKER_CACHE) and reused.
set -euo pipefail

VERSION=${1:-3.11}
NAME=recsys-standin/python:$VERSION-slim
CACHE=${RECSYS_DOCKER_CACHE:-/var/cache/recsys-docker}
ROOTFS_TAR=$CACHE/standin/bookworm-minbase.tar
# The machine's CPython X.Y: PYTHON311 / PYTHON313 as in the Makefile, else pyenv's, else PATH's.
var=PYTHON${VERSION/./}
PYTHON=${!var:-$(ls -d "$HOME"/.pyenv/versions/"$VERSION"*/bin/python"$VERSION" 2>/dev/null | tail -1)}
PYTHON=${PYTHON:-$(command -v "python$VERSION")}
[ -x "$PYTHON" ] || { echo "ERROR: no python$VERSION on this machine to put in $NAME" >&2; exit 1; }
CA_BUNDLE=${RECSYS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
export DOCKER_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}

if docker image inspect "$NAME" >/dev/null 2>&1; then echo "$NAME"; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "ERROR: building $NAME needs root (debootstrap)" >&2; exit 1; }
start=$(date +%s)

mkdir -p "$CACHE/standin"
if [ ! -f "$ROOTFS_TAR" ]; then
    command -v debootstrap >/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    mirror=${mirror:-http://deb.debian.org/debian}
    dir=$(mktemp -d "$CACHE/standin.XXXXXX")
    echo "building the bookworm root filesystem from $mirror (about 90 s)" >&2
    # The shared libraries CPython's extension modules link against, as in the official image.
    debootstrap --variant=minbase \
        --include=ca-certificates,libssl3,libffi8,zlib1g,libbz2-1.0,liblzma5,libsqlite3-0,libreadline8,libncursesw6,libuuid1,libgdbm6,libexpat1 \
        bookworm "$dir/root" "$mirror" >"$dir/debootstrap.log" 2>&1 \
        || { tail -20 "$dir/debootstrap.log" >&2; exit 1; }
    rm -rf "$dir/root/var/cache/apt/archives/"*.deb "$dir/root/var/lib/apt/lists/"*
    tar -C "$dir/root" -cf "$ROOTFS_TAR.tmp" .
    mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    rm -rf "$dir"
fi

# CPython: this machine's X.Y (its prefix), without its site-packages, tests and caches, put in
# /usr/local like the official image's; pip from ensurepip.
prefix=$("$PYTHON" -c 'import sys; print(sys.base_prefix)')
version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
[ "$version" = "$VERSION" ] || { echo "ERROR: $PYTHON is $version, not $VERSION" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root"
tar -C "$work/root" -xf "$ROOTFS_TAR"
mkdir -p "$work/root/usr/local"
tar -C "$prefix" -cf - --exclude="lib/python$version/site-packages/*" --exclude="lib/python$version/test" \
    --exclude='__pycache__' --exclude='*.a' --exclude='share' bin include lib | tar -C "$work/root/usr/local" -xf -
echo "/usr/local/lib" >"$work/root/etc/ld.so.conf.d/usr-local.conf"
cp "$CA_BUNDLE" "$work/root/etc/ssl/certs/ca-certificates.crt"
# As Debian's official images: apt keeps no package caches in image layers.
cat >"$work/root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
chroot "$work/root" /sbin/ldconfig
chroot "$work/root" /usr/local/bin/python$version -m ensurepip --default-pip >/dev/null
for link in python python3 pip pip3; do
    target=python$version; case $link in pip*) target=pip$version ;; esac
    ln -sf "$target" "$work/root/usr/local/bin/$link"
done
chroot "$work/root" /usr/local/bin/python -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, uuid'

tar -C "$work/root" -c . | docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' - "$NAME" >/dev/null
echo "built $NAME in $(( $(date +%s) - start ))s" >&2
echo "$NAME"
