#!/usr/bin/env bash
# Build the ipvs_fast image on a machine that reaches no image registry.
#
#   deploy/docker/build.sh [--save FILE] [extra docker build args...]
#
# Uses BUILDER_IMAGE / RUNTIME_IMAGE (default: the official
# python:3.11-slim-bookworm) when the local engine has them. Otherwise it
# makes a local base instead -- Debian bookworm, `debootstrap
# --variant=minbase` with python3, from this machine's own apt mirror, then
# `docker import` -- and builds from that. Nothing is pulled.
#
# Package registries are reached with this machine's own configuration,
# handed to the build as secrets (never written into an image layer):
# pip's settings (index, extra index, proxy, CA bundle) and apt's Acquire::
# proxy settings. HTTP(S)_PROXY/NO_PROXY pass through as build args.
#
# Environment: DOCKER (client, default docker; it must have BuildKit, e.g.
# Debian's docker.io), IMAGE (default ipvs-fast-exporter), BUILDER_IMAGE,
# RUNTIME_IMAGE, IPVS_FAST_CACHE (where the base tarball is kept, default
# /var/lib/ipvs-fast). The local base needs root and debootstrap.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DOCKER=${DOCKER:-docker}
IMAGE=${IMAGE:-ipvs-fast-exporter}
OFFICIAL=python:3.11-slim-bookworm
BUILDER_IMAGE=${BUILDER_IMAGE:-$OFFICIAL}
RUNTIME_IMAGE=${RUNTIME_IMAGE:-$OFFICIAL}
CACHE=${IPVS_FAST_CACHE:-/var/lib/ipvs-fast}
LOCAL_BASE=ipvs-fast-base:bookworm
SAVE=""
if [ "${1:-}" = "--save" ]; then SAVE=$2; shift 2; fi

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml")
REVISION=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
SOURCE=$(git -C "$ROOT" config --get remote.origin.url 2>/dev/null || true)
case "$SOURCE" in https://*) ;; *) SOURCE="" ;; esac

have_image() { "$DOCKER" image inspect "$1" > /dev/null 2>&1; }

# The Debian mirror this machine's apt uses for bookworm.
apt_mirror() {
    apt-get indextargets --format '$(SITE) $(RELEASE) $(IDENTIFIER)' 2>/dev/null \
        | awk '$2 == "bookworm" && $3 == "Packages" { print $1; exit }'
}

# bookworm minbase + python3, as a tarball in $CACHE (made once, ~1 min).
make_local_base() {
    local tarball=$CACHE/bookworm-minbase-python3.tar.gz
    if [ ! -s "$tarball" ]; then
        command -v debootstrap > /dev/null || { echo "build.sh: needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
        local mirror; mirror=$(apt_mirror)
        mkdir -p "$CACHE"
        local dir; dir=$(mktemp -d "$CACHE/rootfs.XXXXXX")
        trap 'rm -rf "$dir"' EXIT
        echo "build.sh: debootstrap --variant=minbase bookworm from ${mirror:-the default mirror}" >&2
        debootstrap --variant=minbase --include=python3 bookworm "$dir" ${mirror:+"$mirror"} \
            > "$CACHE/debootstrap.log" 2>&1 || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
        # what the official slim images leave out too
        rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
               "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/locale/*
        tar -C "$dir" --numeric-owner -czf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$dir"
        trap - EXIT
    fi
    echo "build.sh: docker import $tarball as $LOCAL_BASE" >&2
    "$DOCKER" import -c 'CMD ["/bin/bash"]' "$tarball" "$LOCAL_BASE" > /dev/null
}

if ! have_image "$BUILDER_IMAGE" || ! have_image "$RUNTIME_IMAGE"; then
    have_image "$LOCAL_BASE" || make_local_base
    have_image "$BUILDER_IMAGE" || BUILDER_IMAGE=$LOCAL_BASE
    have_image "$RUNTIME_IMAGE" || RUNTIME_IMAGE=$LOCAL_BASE
fi

# Registry configuration for the build, as secrets.
SECRETS=$(mktemp -d)
trap 'rm -rf "$SECRETS"' EXIT
"$ROOT/deploy/docker/registry-config.sh" "$SECRETS"
SECRET_ARGS=(--secret "id=pip.conf,src=$SECRETS/pip.conf" --secret "id=apt.conf,src=$SECRETS/apt.conf")
[ -f "$SECRETS/pip-cert" ] && SECRET_ARGS+=(--secret "id=pip-cert,src=$SECRETS/pip-cert")
PROXY_ARGS=()
for v in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    [ -n "${!v:-}" ] && PROXY_ARGS+=(--build-arg "$v")
done

echo "build.sh: building $IMAGE:$VERSION (builder $BUILDER_IMAGE, runtime $RUNTIME_IMAGE)" >&2
# --network host: the build reaches registries the way this machine does (an
# engine without a bridge network, as the tests run it, works too).
DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain \
    --build-arg "BUILDER_IMAGE=$BUILDER_IMAGE" --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE" \
    --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" --build-arg "SOURCE=$SOURCE" \
    "${PROXY_ARGS[@]}" "${SECRET_ARGS[@]}" \
    -t "$IMAGE:$VERSION" -t "$IMAGE:latest" "$@" "$ROOT"
if [ -n "$SAVE" ]; then
    "$DOCKER" save -o "$SAVE.tmp" "$IMAGE:$VERSION" "$IMAGE:latest"
    mv "$SAVE.tmp" "$SAVE"
    echo "build.sh: saved $IMAGE:$VERSION to $SAVE" >&2
fi
