#!/usr/bin/env bash
# Make this machine ready for the Docker tests, from scratch if need be: packages
# (docker.io, debootstrap, sshpass + openssh-client, docker-registry, apache2-utils
# (htpasswd) and skopeo for push and publish tests,
# qemu-user-static + binfmt-support for arm64), a daemon (bridge off: containers only
# reach loopback through --network host, left running; scripts/stop-dockerd.sh
# stops it), the local Debian base images (bookworm, and trixie for Python 3.13), and
# a second daemon, the "arm" engine (scripts/engine.sh; stop it with
# `scripts/engine.sh stop arm`), holding an arm64 bookworm base run under QEMU; and
# Docker's buildx plugin (Debian's docker-buildx, fetched alone; see below).
# Idempotent; says what each phase does and how long it took.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/phase.sh"
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v sshpass >/dev/null 2>&1 || need+=(sshpass)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
# a registry that requires a login (htpasswd), and a client we did not write (skopeo)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
# arm64 under emulation: QEMU user mode, registered with binfmt_misc
[ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v update-binfmts >/dev/null 2>&1 || need+=(binfmt-support)
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

# buildx: Debian's docker-buildx from the forky suite. Trixie's 0.13 builds, but its
# bake drops a target's `network` and has no --allow, so bake's RUN steps cannot get
# the host network on a daemon with the bridge off; 0.18 and later can. Only that one
# package is fetched, with a private apt state and source list (the system's sources
# are not touched). Its plugin goes into a Docker config directory of the tests' own,
# not where every docker client looks: with buildx in sight, a plain `docker build`
# on the 28.x client (and `--builder auto`) would switch to buildx for every other
# test and script too. The buildx tests and `bench -- bake` set DOCKER_CONFIG to it;
# so can you (`export DOCKER_CONFIG=/usr/local/lib/image-matrix/docker`).
buildx_config=/usr/local/lib/image-matrix/docker
buildx_plugin=$buildx_config/cli-plugins/docker-buildx
buildx_ok() {
  local v; v=$(DOCKER_CONFIG=$buildx_config docker buildx version 2>/dev/null | awk '{print $2}'); v=${v#v}; v=${v%%+*}
  [ -n "$v" ] && [ "$(printf '%s\n0.18.0\n' "$v" | sort -V | head -n1)" = 0.18.0 ]
}
fetch_buildx() {
  if [ "$(id -u)" != 0 ]; then echo "setup: need root to install $buildx_plugin" >&2; exit 1; fi
  local tmp log; tmp=$(mktemp -d /tmp/image-matrix-buildx.XXXXXX); log=$tmp/apt.log
  mkdir -p "$tmp/state/lists/partial" "$tmp/cache/archives/partial" "$tmp/x"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian forky main" >"$tmp/forky.list"
  local o=(-qq -o Dir::Etc::SourceList="$tmp/forky.list" -o Dir::Etc::SourceParts=/dev/null
    -o Dir::State="$tmp/state" -o Dir::Cache="$tmp/cache" -o APT::Sandbox::User=root
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
    -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
    -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false)
  if ! { apt-get "${o[@]}" update && (cd "$tmp" && apt-get "${o[@]}" download docker-buildx) &&
         dpkg-deb -x "$tmp"/docker-buildx_*.deb "$tmp/x"; } >"$log" 2>&1; then
    echo "setup: fetching docker-buildx failed; its output:" >&2; cat "$log" >&2; rm -rf "$tmp"; exit 1
  fi
  # `command`: this script has an install() of its own (the apt packages)
  command install -D -m 755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-buildx" "$buildx_plugin"
  rm -rf "$tmp"
  buildx_ok || { echo "setup: $buildx_plugin does not answer as buildx 0.18 or later" >&2; exit 1; }
}
if buildx_ok; then echo "setup: $(DOCKER_CONFIG=$buildx_config docker buildx version) is there ($buildx_plugin)"; else
  phase "installing the buildx plugin (Debian forky's docker-buildx) in $buildx_plugin" fetch_buildx
fi
"$here/start-dockerd.sh"
base() { # IMAGE SUITE
  if docker image inspect "$1" >/dev/null 2>&1; then echo "setup: $1 is there"; return; fi
  phase "making $1 with debootstrap (about a minute)" env SUITE="$2" "$here/make-debian-base.sh" "$1"
}
base image-matrix-test/debian:bookworm bookworm
docker tag image-matrix-test/debian:bookworm image-matrix-test/debian:12
# trixie's system Python is 3.13: the base of the Python 3.13 cell
base image-matrix-test/debian:trixie trixie

# arm64: emulation, the "arm" engine and its arm64 base (scripts/setup-arm-base.sh);
# SETUP_ARM_BASE=later leaves them to the caller (scripts/test.sh makes them beside the
# compile, in the lane of the one test that needs them)
if [ "${SETUP_ARM_BASE:-}" != later ]; then
  "$here/setup-arm-base.sh"
fi

# what killed test runs left behind (a run's own images go when its tests end; see
# tests/common)
"$here/remove-test-leftovers.sh"
