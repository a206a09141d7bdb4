#!/usr/bin/env bash
# The whole test suite: unit, snapshot and CLI tests, process-level tests with a fake
# docker, and real builds + verification on local Docker daemons (set up here if the
# machine has none). A Docker test that finds no daemon fails; it never skips.
#   scripts/test.sh          everything (installs and starts what the Docker tests need)
#   scripts/test.sh --fast   only the tests that need no Docker (about a minute)
# Both install check-jsonschema and jq first (scripts/setup-ci-check.sh) for tests/ci_examples.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
fast=(--lib --bins --test cli --test fake_docker --test hostile --test catalogue --test architecture --test report --test multiarch --test events --test docs --test buildx --test ci_examples)
# check-jsonschema (and jq) for tests/ci_examples.rs, in both modes
scripts/setup-ci-check.sh
if [ "${1:-}" = --fast ]; then
  exec cargo test --locked "${fast[@]}" -- --test-threads 2
fi
start=$SECONDS
# the arm64 base (minutes of debootstrap under QEMU, and only multiarch_e2e needs it)
# is made beside the compile and the other tests, and that test's lane waits for it
SETUP_ARM_BASE=later scripts/setup-test-env.sh
arm_log=$(mktemp /tmp/image-matrix-test-arm-base.XXXXXX)
arm_rc="$arm_log.rc"
( rc=0; scripts/setup-arm-base.sh || rc=$?; echo "$rc" >"$arm_rc" ) >"$arm_log" 2>&1 &
arm_setup=$!
scripts/setup-browser.sh
echo "test: setup done in $((SECONDS - start))s (the arm64 base goes on beside the rest; log $arm_log)"
# Room on the disk that holds the images: a full run's own images, build cache and
# target directory took 19 GB more at their peak than at its start (a clean clone's
# .ci/run, 2026-11-29), and a disk that fills mid-run fails builds far from the cause.
need_gb=32
docker_root=$(docker info --format '{{.DockerRootDir}}')
free_gb() { df -P -BG "$docker_root" | awk 'NR == 2 {sub("G", "", $4); print $4}'; }
at_start=$(free_gb)
if [ "$at_start" -lt "$need_gb" ]; then
  echo "test: only ${at_start} GB free on the file system of $docker_root; a full run needs about ${need_gb} GB." >&2
  echo "test: what Docker holds there ('docker system prune' frees what no image or container uses):" >&2
  docker system df >&2
  exit 1
fi
lowest=$(mktemp /tmp/image-matrix-test-disk.XXXXXX)
echo "$at_start" >"$lowest"
( while sleep 5; do f=$(free_gb); [ "$f" -lt "$(cat "$lowest")" ] && echo "$f" >"$lowest"; done ) &
sampler=$!
trap 'kill "$sampler" "$arm_setup" 2>/dev/null || true' EXIT
cargo test --locked --no-run --lib --bins --tests 2>&1 | grep -v '^ *Executable' || true
# The two longest Docker tests spend most of their time waiting on one core (the arm64
# build under QEMU) or on downloads and layer commits (PyTorch's 2.5 GB of wheels):
# each runs in a lane of its own beside the rest (a lane may hold several test
# binaries, run one after another); their output comes last. Measured on clean
# clones' `.ci/run` (2026-11-29): these two lanes, 1,966 s and 2,025 s; the engines and
# pip-resolution tests moved after frameworks_e2e (whose lane is otherwise idle from
# 700 s), 2,013 s, every test slower by as much as the move saved (buildx_e2e 350 →
# 469 s, nightly_e2e 560 → 755 s); a third lane beside these (with other load), 3,032 s. The 2 cores are
# the limit, not the order.
#
# The registry and package-resolution tests wait on a registry and the package index
# more than on the cores, and went from the main sequence (the long pole: 1,475 s of
# tests against lanes of 943 s and 917 s in a fresh machine's `.ci/run`, 2026-12-08)
# into the lanes. The multiarch lane first waits for the arm64 base.
lanes=("multiarch_e2e registry" "frameworks_e2e families_e2e pip_resolve")
# A lane: its tests one binary after another, all of them run even when one fails.
lane() { # TEST...
  local t args=() rc=0
  for t in "$@"; do args+=(--test "$t"); done
  if [[ " $* " == *" multiarch_e2e "* ]]; then
    while [ ! -s "$arm_rc" ]; do sleep 2; done
    echo "test: the arm64 base, made beside the other tests:"
    cat "$arm_log"
    [ "$(cat "$arm_rc")" = 0 ] || { echo "test: scripts/setup-arm-base.sh failed" >&2; rc=1; }
  fi
  cargo test --locked --no-fail-fast "${args[@]}" -- --nocapture || rc=$?
  return "$rc"
}
pids=() logs=()
for l in "${lanes[@]}"; do
  log=$(mktemp "/tmp/image-matrix-test-${l// /+}.XXXXXX")
  # shellcheck disable=SC2086 # a lane is a list of test names
  lane $l >"$log" 2>&1 &
  pids+=($!) logs+=("$log")
done
trap 'kill "${pids[@]}" "$sampler" "$arm_setup" 2>/dev/null || true' INT TERM EXIT
others=(--lib --bins)
for t in tests/*.rs; do
  name=$(basename "$t" .rs)
  [[ " ${lanes[*]} " == *" $name "* ]] || others+=(--test "$name")
done
status=0
# --no-fail-fast: one run names every failing test, not only the first
cargo test --locked --no-fail-fast "${others[@]}" -- --test-threads 2 || status=$?
echo "test: the rest done at $((SECONDS - start))s"
for i in "${!lanes[@]}"; do
  echo "test: waiting for ${lanes[$i]} (running since the start; log ${logs[$i]})"
  wait "${pids[$i]}" || status=$?
  cat "${logs[$i]}"
  echo "test: ${lanes[$i]} done at $((SECONDS - start))s"
done
kill "$sampler" 2>/dev/null || true
echo "test: disk: ${at_start} GB free at the start, $(cat "$lowest") GB at the lowest, $(free_gb) GB at the end ($docker_root)"
rm -f "$lowest" "$arm_log" "$arm_rc"
echo "test: all done in $((SECONDS - start))s"
exit "$status"
