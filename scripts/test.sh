#!/usr/bin/env bash
# The whole test suite: unit, snapshot and CLI tests, process-level tests with a fake
# docker, and real builds + verification on a local Docker daemon (set up here if the
# machine has none). A Docker test that finds no daemon fails; it never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
cargo test --locked --lib --bins --tests -- --test-threads 2
