#!/usr/bin/env bash
# Start a Docker daemon for tests when none answers, with the bridge off so that
# containers can only reach loopback through --network host.
# Usage: scripts/start-dockerd.sh [DATA_ROOT]   (writes its pid to $DATA_ROOT.pid)
set -euo pipefail
if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "start-dockerd: a daemon already answers"; exit 0
fi
root=${1:-/var/lib/docker}
log=${DOCKERD_LOG:-/tmp/image-matrix-dockerd.log}
dockerd --bridge=none --iptables=false --data-root "$root" >"$log" 2>&1 &
echo $! >"$root.pid"
for _ in $(seq 1 60); do
  if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    echo "start-dockerd: daemon $(docker version --format '{{.Server.Version}}') up (log: $log)"; exit 0
  fi
  sleep 0.5
done
echo "start-dockerd: daemon did not answer within 30 s; last log lines:" >&2
tail -n 20 "$log" >&2
exit 1
