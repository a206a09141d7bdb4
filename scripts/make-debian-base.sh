#!/usr/bin/env bash
# Build the local Debian base image the tests use (Docker Hub is out of reach here).
# It is a plain `debootstrap --variant=minbase` Debian plus python3-venv: the stand-in
# Miniconda installer (tests/standin) borrows the base's Python, where the real
# installer would bring its own.
# Usage: scripts/make-debian-base.sh [IMAGE]   (default image-matrix-test/debian:bookworm)
set -euo pipefail
image=${1:-image-matrix-test/debian:bookworm}
suite=${SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "make-debian-base: $image already exists"; exit 0
fi
dir=$(mktemp -d /tmp/image-matrix-rootfs.XXXXXX)
trap 'rm -rf "$dir" "$dir.log"' EXIT
debootstrap --variant=minbase --include=python3-venv "$suite" "$dir" "$mirror" >"$dir.log" 2>&1 || {
  echo "make-debian-base: debootstrap failed; last lines of $dir.log:" >&2; tail -n 20 "$dir.log" >&2; exit 1; }
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin
tar -C "$dir" -c . | docker import --change 'CMD ["bash"]' - "$image" >/dev/null
echo "make-debian-base: imported $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
