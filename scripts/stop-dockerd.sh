#!/usr/bin/env bash
# Stop the daemons scripts/start-dockerd.sh started, and only those: each recorded PID
# must still be a dockerd process (a PID reused by something else is left alone).
# Usage: scripts/stop-dockerd.sh [DATA_ROOT]   one daemon (default /var/lib/docker)
#        scripts/stop-dockerd.sh --all         every daemon the tests started
set -euo pipefail
stop() { # DATA_ROOT
  local mark="$1.started-by-image-matrix" pid
  [ -f "$mark" ] || { echo "stop-dockerd: no daemon was started by image-matrix with data root $1"; return 0; }
  pid=$(cat "$mark")
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    echo "stop-dockerd: stopped dockerd (pid $pid, data root $1)"
  else
    echo "stop-dockerd: pid $pid is no longer dockerd; nothing to stop"
  fi
  rm -f "$mark"
}
if [ "${1:-}" = --all ]; then
  for mark in /var/lib/docker.started-by-image-matrix /var/lib/image-matrix-*.started-by-image-matrix; do
    [ -f "$mark" ] && stop "${mark%.started-by-image-matrix}"
  done
  exit 0
fi
stop "${1:-/var/lib/docker}"
