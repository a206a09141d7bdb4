#!/usr/bin/env bash
# The whole test suite: unit, snapshot and CLI tests, process-level tests with a fake
# docker, and real builds + verification on local Docker daemons (set up here if the
# machine has none). A Docker test that finds no daemon fails; it never skips.
#   scripts/test.sh          everything (installs and starts what the Docker tests need)
#   scripts/test.sh --fast   only the tests that need no Docker (about a minute)
# The arm64 test spends most of its time in one QEMU-emulated build, on one core; it
# runs beside the others rather than after them (its output is shown at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
fast=(--lib --bins --test cli --test fake_docker --test hostile --test catalogue --test architecture --test report --test multiarch --test events --test docs)
if [ "${1:-}" = --fast ]; then
  exec cargo test --locked "${fast[@]}" -- --test-threads 2
fi
start=$SECONDS
scripts/setup-test-env.sh
scripts/setup-browser.sh
echo "test: setup done in $((SECONDS - start))s"
cargo test --locked --no-run --lib --bins --tests 2>&1 | grep -v '^ *Executable' || true
slow=multiarch_e2e
log=$(mktemp /tmp/image-matrix-test-$slow.XXXXXX)
cargo test --locked --test "$slow" -- --nocapture >"$log" 2>&1 &
bg=$!
trap 'kill "$bg" 2>/dev/null || true' INT TERM
others=(--lib --bins)
for t in tests/*.rs; do
  name=$(basename "$t" .rs)
  [ "$name" = "$slow" ] || others+=(--test "$name")
done
status=0
cargo test --locked "${others[@]}" -- --test-threads 2 || status=$?
echo "test: waiting for $slow (running since the start; log $log)"
wait "$bg" || status=$?
cat "$log"
echo "test: all done in $((SECONDS - start))s"
exit "$status"
