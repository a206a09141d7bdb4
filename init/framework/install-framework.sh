#!/bin/bash
# Build step of a framework image (PyTorch, TensorFlow): its pinned packages, in one
# layer on top of its parent Miniconda image, from the indexes the plan chose, tried
# in order. The extra CA (a proxy's) is trusted for this step only.
set -euo pipefail
here=$(dirname "$0")
export PATH="/opt/miniconda3/bin:$PATH"
if [ -f "$here/extra-ca.pem" ]; then
  cat /etc/ssl/certs/ca-certificates.crt "$here/extra-ca.pem" > "$here/trust.pem"
  export PIP_CERT="$here/trust.pem" SSL_CERT_FILE="$here/trust.pem"
fi
installed=0
while read -r url; do
  [ -n "$url" ] || continue
  echo "image-matrix: installing $(tr '\n' ' ' < "$here/requirements.txt")from $url"
  if pip install --no-cache-dir --progress-bar off --index-url "$url" -r "$here/requirements.txt"; then
    installed=1
    break
  fi
  echo "image-matrix: $url failed; trying the next index" >&2
done < "$here/index-urls.txt"
if [ "$installed" != 1 ]; then
  echo "image-matrix: no index could install the framework" >&2
  exit 1
fi
# the recorded versions gain the framework's, and the parent's packages this layer moved
# (TensorFlow 2.21 moves numpy 1.26 to 2.x) say their new version (read by image-matrix
# into the manifest; the parent's record keeps the old one)
python - /etc/image-matrix/versions.json <<'PY'
import json, sys
from importlib import metadata
path = sys.argv[1]
v = json.load(open(path))
for name in sorted(set(v) | {"torch", "torchvision", "torchaudio", "tensorflow"}):
    try:
        v[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
json.dump(v, open(path, "w"), sort_keys=True)
PY
echo "image-matrix-versions: $(tr -d '\n' < /etc/image-matrix/versions.json)"
