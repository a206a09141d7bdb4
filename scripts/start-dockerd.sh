#!/usr/bin/env bash
# Start a Docker daemon for tests when none answers, with the bridge off so that
# containers can only reach loopback through --network host. Only a daemon started
# here is recorded (in $DATA_ROOT.started-by-image-matrix), so that
# scripts/stop-dockerd.sh stops what the tests started and nothing else.
# Usage: scripts/start-dockerd.sh [DATA_ROOT]   the default daemon (/var/run/docker.sock)
#        scripts/start-dockerd.sh --name NAME   a second daemon of its own, at
#          unix:///run/image-matrix-NAME/docker.sock with /var/lib/image-matrix-NAME
#          (the multi-platform tests give arm64 its own engine this way)
set -euo pipefail
args=(--bridge=none --iptables=false)
if [ "${1:-}" = --name ]; then
  name=$2
  run=/run/image-matrix-$name
  root=/var/lib/image-matrix-$name
  export DOCKER_HOST=unix://$run/docker.sock
  mkdir -p "$run"
  args+=(--ip-masq=false --exec-root "$run/exec" --pidfile "$run/docker.pid" -H "$DOCKER_HOST")
  log=${DOCKERD_LOG:-/tmp/image-matrix-dockerd-$name.log}
  what="daemon $name at $DOCKER_HOST"
else
  root=${1:-/var/lib/docker}
  log=${DOCKERD_LOG:-/tmp/image-matrix-dockerd.log}
  what="daemon"
fi
if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  echo "start-dockerd: a $what already answers; leaving it alone"; exit 0
fi
dockerd "${args[@]}" --data-root "$root" >"$log" 2>&1 &
pid=$!
echo "$pid" >"$root.started-by-image-matrix"
for _ in $(seq 1 60); do
  if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    echo "start-dockerd: $what $(docker version --format '{{.Server.Version}}') up, pid $pid (log: $log; stop it with scripts/stop-dockerd.sh)"; exit 0
  fi
  sleep 0.5
done
echo "start-dockerd: $what did not answer within 30 s; last log lines:" >&2
tail -n 20 "$log" >&2
exit 1
