#!/usr/bin/env bash
# Make this machine ready for the Docker tests, from scratch if need be: packages
# (docker.io, debootstrap, sshpass + openssh-client, docker-registry for push tests),
# a daemon (bridge off: containers only reach loopback through --network host), and
# the local Debian base image. Idempotent; safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v sshpass >/dev/null 2>&1 || need+=(sshpass)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  if [ "$(id -u)" != 0 ]; then echo "setup: need root to install ${need[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
"$here/start-dockerd.sh"
"$here/make-debian-base.sh" image-matrix-test/debian:bookworm
docker tag image-matrix-test/debian:bookworm image-matrix-test/debian:12
