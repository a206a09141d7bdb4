#!/usr/bin/env bash
# A throw-away image registry on loopback for the push tests (Debian's docker-registry,
# i.e. distribution v2), storing under DIR. Prints its port; pid in DIR/registry.pid.
# Docker pushes to 127.0.0.0/8 over plain HTTP without extra configuration. It listens
# only on 127.0.0.1: a test fixture, not a registry to keep. Without USER it has no
# users; with USER it requires that login (HTTP basic, htpasswd), the password read
# from the environment variable LOCAL_REGISTRY_PASSWORD (never from the command line).
# Usage: scripts/local-registry.sh DIR [USER]
set -euo pipefail
dir=$1
user=${2:-}
mkdir -p "$dir/storage"
auth=""
if [ -n "$user" ]; then
  : "${LOCAL_REGISTRY_PASSWORD:?set LOCAL_REGISTRY_PASSWORD to require a login}"
  printf '%s' "$LOCAL_REGISTRY_PASSWORD" | htpasswd -B -i -c "$dir/htpasswd" "$user" 2>/dev/null
  auth="auth:
  htpasswd:
    realm: image-matrix-test
    path: $dir/htpasswd"
fi
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
$auth
YAML
docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
echo $! >"$dir/registry.pid"
for _ in $(seq 1 50); do
  # 200 without users, 401 with: either way it answers
  code=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/" 2>/dev/null || true)
  if [ "$code" = 200 ] || [ "$code" = 401 ]; then echo "$port"; exit 0; fi
  sleep 0.1
done
echo "local-registry: no answer on 127.0.0.1:$port; log:" >&2
cat "$dir/registry.log" >&2
exit 1
