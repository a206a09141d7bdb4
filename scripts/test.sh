#!/usr/bin/env bash
# The whole test suite: unit, snapshot and CLI tests, process-level tests with a fake
# docker, and real builds + verification on local Docker daemons (set up here if the
# machine has none). A Docker test that finds no daemon fails; it never skips.
#   scripts/test.sh          everything (installs and starts what the Docker tests need)
#   scripts/test.sh --fast   only the tests that need no Docker (about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
fast=(--lib --bins --test cli --test fake_docker --test hostile --test catalogue --test architecture --test report --test multiarch --test events --test docs --test buildx)
if [ "${1:-}" = --fast ]; then
  exec cargo test --locked "${fast[@]}" -- --test-threads 2
fi
start=$SECONDS
scripts/setup-test-env.sh
scripts/setup-browser.sh
echo "test: setup done in $((SECONDS - start))s"
cargo test --locked --no-run --lib --bins --tests 2>&1 | grep -v '^ *Executable' || true
# The two longest Docker tests spend most of their time waiting on one core (the
# arm64 build under QEMU) or on downloads and layer commits (PyTorch's 2.5 GB of
# wheels): each runs in a lane of its own beside the rest; their output comes last.
slow=(multiarch_e2e frameworks_e2e)
pids=() logs=()
for t in "${slow[@]}"; do
  log=$(mktemp "/tmp/image-matrix-test-$t.XXXXXX")
  cargo test --locked --test "$t" -- --nocapture >"$log" 2>&1 &
  pids+=($!) logs+=("$log")
done
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
others=(--lib --bins)
for t in tests/*.rs; do
  name=$(basename "$t" .rs)
  [[ " ${slow[*]} " == *" $name "* ]] || others+=(--test "$name")
done
status=0
cargo test --locked "${others[@]}" -- --test-threads 2 || status=$?
for i in "${!slow[@]}"; do
  echo "test: waiting for ${slow[$i]} (running since the start; log ${logs[$i]})"
  wait "${pids[$i]}" || status=$?
  cat "${logs[$i]}"
  echo "test: ${slow[$i]} done at $((SECONDS - start))s"
done
echo "test: all done in $((SECONDS - start))s"
exit "$status"
