#!/usr/bin/env bash
# The whole test suite: unit, snapshot and CLI tests, process-level tests with a fake
# docker, and real builds + verification on a local Docker daemon (set up here if the
# machine has none). A Docker test that finds no daemon fails; it never skips.
#   scripts/test.sh          everything (installs and starts what the Docker tests need)
#   scripts/test.sh --fast   only the tests that need no Docker (about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
fast=(--lib --bins --test cli --test fake_docker --test hostile --test catalogue --test architecture --test report --test events --test docs)
if [ "${1:-}" = --fast ]; then
  exec cargo test --locked "${fast[@]}" -- --test-threads 2
fi
scripts/setup-test-env.sh
scripts/setup-browser.sh
cargo test --locked --lib --bins --tests -- --test-threads 2
