#!/usr/bin/env bash
# Builds pullwatch's container image with podman (there is no Docker engine here; see
# ../shared/container-image.md), on a Debian bookworm Python base made from Debian's own packages
# (no image registry is reachable). The base is made once and cached: its root filesystem as a
# tarball under ~/.cache/pullwatch, imported into podman's store when missing.
#
#   bash hack/build-image.sh [TAG]     # default tag localhost/pullwatch:test; prints the tag last
#
# The same Dockerfile builds on the official base: docker build --build-arg BASE=python:3.11-slim .
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/podman-env.sh

TAG="${1:-localhost/pullwatch:test}"
BASE=localhost/pullwatch-base:bookworm-python3
BASE_TAR="$CACHE_ROOT/base-bookworm-python3.tar"

log() { echo "[build-image] $*" >&2; }

if ! podman image exists "$BASE"; then
  if [ ! -s "$BASE_TAR" ]; then
    ensure_packages debootstrap
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/pullwatch-rootfs.XXXXXX")
    trap "rm -rf '$rootfs'" EXIT
    log "bootstrapping a Debian bookworm base with python3 (once; ~1 minute)"
    as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
      "$(debian_mirror)" >&2
    as_root rm -rf "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/var/lib/apt/lists"/*
    mkdir -p "$CACHE_ROOT"
    as_root tar -C "$rootfs" -cf "$BASE_TAR.tmp" .
    mv "$BASE_TAR.tmp" "$BASE_TAR"
  fi
  log "importing the cached base into podman"
  podman import "$BASE_TAR" "$BASE" >&2
fi

log "building $TAG"
podman build --network host -v /etc/ssl/certs:/etc/ssl/certs:ro --build-arg "BASE=$BASE" -t "$TAG" . >&2
echo "$TAG"
