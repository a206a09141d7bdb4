#!/usr/bin/env bash
# The nightly job, runnable on any machine with Docker and no registry access: the
# local Debian base (made with debootstrap) and the STAND-IN Miniconda installer served
# from a loopback mirror stand in for nvidia/cuda and Anaconda's servers. It builds
# and verifies the cells of examples/local.yaml.tmpl and leaves out/local/manifest.json.
# With registry access, the real nightly is: matrix build -j 4 --verify --push
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
cargo build --release --locked -q
mirror_dir=$(mktemp -d /tmp/image-matrix-mirror.XXXXXX)
read -r port sha < <(scripts/standin-mirror.sh "$mirror_dir" Miniconda3-py311_24.5.0-0-Linux-x86_64.sh)
trap 'kill "$(cat "$mirror_dir/server.pid")" 2>/dev/null || true; rm -rf "$mirror_dir"' EXIT
mkdir -p out/local
sed -e "s/@PORT@/$port/g" -e "s/@SHA256@/$sha/g" -e "s|@CA@|${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}|g" \
  examples/local.yaml.tmpl > out/local/matrix.yaml
./target/release/matrix -f out/local/matrix.yaml plan
./target/release/matrix -f out/local/matrix.yaml build -j 2 --verify -o out/local "$@"
