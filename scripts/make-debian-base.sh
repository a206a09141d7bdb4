#!/usr/bin/env bash
# Build a local Debian base image for the tests (Docker Hub is out of reach here).
# It is a plain `debootstrap --variant=minbase` Debian plus python3-venv: the stand-in
# Miniconda installer (tests/standin) borrows the base's Python, where the real
# installer would bring its own.
# Usage: [SUITE=bookworm] [ARCH=amd64|arm64] scripts/make-debian-base.sh [IMAGE]
#   (default image-matrix-test/debian:bookworm; the engine is DOCKER_HOST's)
# A foreign ARCH needs QEMU user-mode emulation (qemu-user-static + binfmt-support):
# debootstrap's second stage runs the target's own binaries. Such an image is loaded
# as a docker archive whose config names its architecture (docker import records the
# daemon's own), so that `docker build --platform linux/arm64` accepts it.
set -euo pipefail
image=${1:-image-matrix-test/debian:bookworm}
suite=${SUITE:-bookworm}
host_arch=$(dpkg --print-architecture)
arch=${ARCH:-$host_arch}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "make-debian-base: $image already exists"; exit 0
fi
dir=$(mktemp -d /tmp/image-matrix-rootfs.XXXXXX)
trap 'rm -rf "$dir" "$dir.log" "$dir.img"' EXIT
debootstrap --arch="$arch" --variant=minbase --include=python3-venv "$suite" "$dir" "$mirror" >"$dir.log" 2>&1 || {
  echo "make-debian-base: debootstrap failed; last lines of $dir.log:" >&2; tail -n 20 "$dir.log" >&2; exit 1; }
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin
if [ "$arch" = "$host_arch" ]; then
  tar -C "$dir" -c . | docker import --change 'CMD ["bash"]' - "$image" >/dev/null
else
  img="$dir.img"; mkdir -p "$img"
  tar -C "$dir" --numeric-owner -cf "$img/layer.tar" .
  diff_id="sha256:$(sha256sum "$img/layer.tar" | cut -d' ' -f1)"
  printf '{"architecture":"%s","os":"linux","config":{"Cmd":["bash"],"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},"rootfs":{"type":"layers","diff_ids":["%s"]},"history":[{"created_by":"debootstrap --arch=%s --variant=minbase --include=python3-venv %s"}]}' \
    "$arch" "$diff_id" "$arch" "$suite" > "$img/config.json"
  printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$image" > "$img/manifest.json"
  tar -C "$img" -c manifest.json config.json layer.tar | docker load >/dev/null
fi
echo "make-debian-base: made $image for linux/$(docker image inspect -f '{{.Architecture}}' "$image") ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
