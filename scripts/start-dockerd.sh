#!/usr/bin/env bash
# Start a Docker daemon for tests when none answers, with the bridge off so that
# containers can only reach loopback through --network host. Only a daemon started
# here is recorded (in $DATA_ROOT.started-by-image-matrix: its PID, then the
# IMAGE_MATRIX_DAEMON_OWNER it was started for, if any), so that
# scripts/stop-dockerd.sh stops what the tests started and nothing else: a CI run
# sets an owner of its own, and leaves alone a daemon the nightly script started.
# Usage: scripts/start-dockerd.sh [DATA_ROOT]
set -euo pipefail
if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "start-dockerd: a daemon already answers; leaving it alone"; exit 0
fi
root=${1:-/var/lib/docker}
log=${DOCKERD_LOG:-/tmp/image-matrix-dockerd.log}
dockerd --bridge=none --iptables=false --data-root "$root" >"$log" 2>&1 &
pid=$!
printf '%s\n%s\n' "$pid" "${IMAGE_MATRIX_DAEMON_OWNER:-}" >"$root.started-by-image-matrix"
for _ in $(seq 1 60); do
  if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    echo "start-dockerd: daemon $(docker version --format '{{.Server.Version}}') up, pid $pid (log: $log; stop it with scripts/stop-dockerd.sh)"; exit 0
  fi
  sleep 0.5
done
echo "start-dockerd: daemon did not answer within 30 s; last log lines:" >&2
tail -n 20 "$log" >&2
exit 1
