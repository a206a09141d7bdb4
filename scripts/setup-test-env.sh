#!/usr/bin/env bash
# Make this machine ready for the Docker tests, from scratch if need be: packages
# (docker.io, debootstrap, sshpass + openssh-client, docker-registry for push tests),
# a daemon (bridge off: containers only reach loopback through --network host, left
# running; scripts/stop-dockerd.sh stops it), and the local Debian base images
# (bookworm, and trixie for Python 3.13). Idempotent; says what each phase does and how
# long it took.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
phase() { # NAME COMMAND...
  local t=$SECONDS; echo "setup: $1 ..."
  shift; "$@"
  echo "setup: done in $((SECONDS - t))s"
}
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v sshpass >/dev/null 2>&1 || need+=(sshpass)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
install() {
  if [ "$(id -u)" != 0 ]; then echo "setup: need root to install ${need[*]}" >&2; exit 1; fi
  local log; log=$(mktemp /tmp/image-matrix-apt.XXXXXX)
  # apt's and debconf's chatter goes to a log, shown only if something fails
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$log" 2>&1; then
    echo "setup: apt-get failed; its output:" >&2; cat "$log" >&2; rm -f "$log"; exit 1
  fi
  rm -f "$log"
}
if [ ${#need[@]} -gt 0 ]; then phase "installing ${need[*]} (apt)" install; fi
"$here/start-dockerd.sh"
base() { # IMAGE SUITE
  if docker image inspect "$1" >/dev/null 2>&1; then echo "setup: $1 is there"; return; fi
  phase "making $1 with debootstrap (about a minute)" env SUITE="$2" "$here/make-debian-base.sh" "$1"
}
base image-matrix-test/debian:bookworm bookworm
docker tag image-matrix-test/debian:bookworm image-matrix-test/debian:12
# trixie's system Python is 3.13: the base of the Python 3.13 cell
base image-matrix-test/debian:trixie trixie
