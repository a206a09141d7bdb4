#!/usr/bin/env bash
# Stop the daemon scripts/start-dockerd.sh started, and only that one: the recorded
# PID must still be a dockerd process (a PID reused by something else is left alone),
# and it must have been started for this IMAGE_MATRIX_DAEMON_OWNER (none: one started
# without an owner), so that a CI run does not stop the daemon a nightly left running.
# Usage: scripts/stop-dockerd.sh [DATA_ROOT]
set -euo pipefail
root=${1:-/var/lib/docker}
mark="$root.started-by-image-matrix"
[ -f "$mark" ] || { echo "stop-dockerd: no daemon was started by image-matrix here"; exit 0; }
pid=$(sed -n 1p "$mark")
owner=$(sed -n 2p "$mark")
if [ "$owner" != "${IMAGE_MATRIX_DAEMON_OWNER:-}" ]; then
  echo "stop-dockerd: the daemon (pid $pid) was started for ${owner:-no owner}, not for ${IMAGE_MATRIX_DAEMON_OWNER:-no owner}; leaving it running"
  exit 0
fi
if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  echo "stop-dockerd: stopped dockerd (pid $pid)"
else
  echo "stop-dockerd: pid $pid is no longer dockerd; nothing to stop"
fi
rm -f "$mark"
