#!/usr/bin/env bash
# The arm64 part of the test machine: QEMU user-mode emulation registered with
# binfmt_misc (the F flag, which containers need), the "arm" engine (a second daemon,
# scripts/engine.sh; an engine's image store keeps one platform per name) and on it
# the arm64 build of image-matrix-test/debian:bookworm, made with debootstrap under
# emulation when it is missing (about 3 minutes on 2 cores). Only tests/multiarch_e2e.rs
# needs it, so scripts/test.sh runs this beside the compile and the other tests instead
# of before them. Needs the packages scripts/setup-test-env.sh installs (it calls this
# too unless SETUP_ARM_BASE=later). Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/phase.sh"
emulation() {
  local bf=/proc/sys/fs/binfmt_misc
  [ -e "$bf/register" ] || mount -t binfmt_misc binfmt_misc "$bf"
  [ -e "$bf/qemu-aarch64" ] || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
  if ! { grep -qx enabled "$bf/qemu-aarch64" && grep -q '^flags: .*F' "$bf/qemu-aarch64"; } 2>/dev/null; then
    echo "setup: no enabled qemu-aarch64 handler with the F flag in $bf" >&2; exit 1
  fi
}
phase "registering arm64 emulation (qemu-aarch64, binfmt_misc)" emulation
arm=$(ENGINE_BASES="" "$here/engine.sh" start arm)
if DOCKER_HOST=$arm docker image inspect image-matrix-test/debian:bookworm >/dev/null 2>&1; then
  echo "setup: the arm engine's image-matrix-test/debian:bookworm is there"
else
  phase "making the arm64 image-matrix-test/debian:bookworm with debootstrap under emulation (about 3 minutes)" \
    env DOCKER_HOST=$arm ARCH=arm64 SUITE=bookworm "$here/make-debian-base.sh" image-matrix-test/debian:bookworm
fi
# what killed test runs left behind on this engine (a run's own images go when its
# tests end; see tests/common)
DOCKER_HOST=$arm "$here/remove-test-leftovers.sh"
