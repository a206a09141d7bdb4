#!/usr/bin/env bash
# A throw-away image registry on loopback for the push tests (Debian's docker-registry,
# i.e. distribution v2), storing under DIR. Prints its port; pid in DIR/registry.pid.
# Docker pushes to 127.0.0.0/8 over plain HTTP without extra configuration. It listens
# only on 127.0.0.1 and has no users: a test fixture, not a registry to keep.
# Usage: scripts/local-registry.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir/storage"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
echo $! >"$dir/registry.pid"
for _ in $(seq 1 50); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; then echo "$port"; exit 0; fi
  sleep 0.1
done
echo "local-registry: no answer on 127.0.0.1:$port; log:" >&2
cat "$dir/registry.log" >&2
exit 1
