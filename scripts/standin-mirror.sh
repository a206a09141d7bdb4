#!/usr/bin/env bash
# Serve the STAND-IN Miniconda installer (tests/standin) from a loopback HTTP mirror,
# under the real installer names given as arguments. Prints "PORT SHA256".
# Usage: scripts/standin-mirror.sh DIR NAME...   (pid in DIR/server.pid; stop with kill)
# MIRROR_PORT picks the port (if free); otherwise a free one is chosen.
set -euo pipefail
dir=$1; shift
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$dir"
for name in "$@"; do
  cp "$here/tests/standin/miniconda-standin.sh" "$dir/$name"
done
port=$(python3 - "${MIRROR_PORT:-0}" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
PY
)
python3 -m http.server --bind 127.0.0.1 --directory "$dir" "$port" >"$dir/server.log" 2>&1 &
echo $! > "$dir/server.pid"
for _ in $(seq 1 50); do
  if curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then break; fi
  sleep 0.1
done
echo "$port $(sha256sum "$here/tests/standin/miniconda-standin.sh" | cut -d' ' -f1)"
