#!/usr/bin/env bash
# The nightly job, runnable on any machine with Docker and no registry access: the
# local Debian base (made with debootstrap) and the STAND-IN Miniconda installer served
# from a loopback mirror stand in for nvidia/cuda and Anaconda's servers. It builds
# and verifies the cells of examples/local.yaml.tmpl into out/local/.
# With registry access, the real nightly is: matrix build -j 4 --verify --push --keep 3
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
port=${MIRROR_PORT:-38471}
downloads=${IMAGE_MATRIX_DOWNLOAD_CACHE:-$HOME/.cache/image-matrix/downloads}
cat <<MSG
nightly-local: what this does
  - installs docker.io, debootstrap, sshpass, openssh-client and docker-registry with apt if missing
  - starts a Docker daemon (bridge off) if none answers, and leaves it running
    (stop it with scripts/stop-dockerd.sh)
  - installs qemu-user-static and binfmt-support, registers arm64 emulation, and starts a
    second daemon, the arm engine (stop it with scripts/engine.sh stop arm)
  - makes the local Debian base images with debootstrap if missing (about a minute each,
    once; the arm64 one about 4 minutes, under emulation)
  - builds the tool (cargo build --release; the first time takes a few minutes)
  - serves the stand-in installer on 127.0.0.1:$port while it runs
  - keeps what the builds download (installers, wheels, Debian packages) in
    $downloads, served to them on 127.0.0.1:38473 while it runs
    (matrix build --download-cache), so a rebuild does not fetch them again
  - builds and verifies the cells of examples/local.yaml.tmpl (the arm64 cell under
    emulation: about 10 minutes the first night): manifest, logs and report.html in
    out/local/, images tagged image-matrix-local/miniconda:*; images no longer used by
    the last 2 runs are pruned
MSG
scripts/setup-test-env.sh
t=$SECONDS; echo "nightly-local: building the tool ..."
cargo build --release --locked -q
echo "nightly-local: done in $((SECONDS - t))s"
mirror_dir=$(mktemp -d /tmp/image-matrix-mirror.XXXXXX)
read -r port sha < <(MIRROR_PORT=$port scripts/standin-mirror.sh "$mirror_dir" Miniconda3-py311_24.5.0-0-Linux-x86_64.sh Miniconda3-py311_24.5.0-0-Linux-aarch64.sh)
trap 'kill "$(cat "$mirror_dir/server.pid")" 2>/dev/null || true; rm -rf "$mirror_dir"' EXIT
mkdir -p out/local
sed -e "s/@PORT@/$port/g" -e "s/@SHA256@/$sha/g" -e "s|@CA@|${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}|g" \
  examples/local.yaml.tmpl > out/local/matrix.yaml
./target/release/matrix -f out/local/matrix.yaml plan
t=$SECONDS; echo "nightly-local: building and verifying (progress below) ..."
./target/release/matrix -f out/local/matrix.yaml build -j 2 --verify --keep 2 --download-cache "$downloads" -o out/local "$@" || status=$?
echo "nightly-local: build done in $((SECONDS - t))s"
cat <<DONE
nightly-local: finished in $((SECONDS - start))s (exit ${status:-0})
  report:   out/local/report.html (and report.md)
  manifest: out/local/manifest.json, logs in out/local/logs/
  matrix:   out/local/matrix.yaml; what the next night would change:
              target/release/matrix -f out/local/matrix.yaml plan --diff out/local/manifest.json
            (\`matrix\` instead of target/release/matrix once \`cargo install --locked --path .\`
            has put it on PATH; a bare \`matrix plan\` plans the shipped matrix.yaml)
  daemon:   still running; scripts/stop-dockerd.sh stops it if this script started it
DONE
exit "${status:-0}"
