#!/bin/bash
# Build step of a user-defined family's image: its apt, conda and pip packages, its
# script and its services, in one layer on top of its parent image. The lists come
# from the plan (one item per line); the extra CA (a proxy's) is trusted for this
# step only and leaves with the step's folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=$(cat "$here/name")
export PATH="/opt/miniconda3/bin:$PATH"
say() { echo "image-matrix: family $name: $*"; }
if [ -f "$here/extra-ca.pem" ]; then
  cat /etc/ssl/certs/ca-certificates.crt "$here/extra-ca.pem" > "$here/trust.pem"
  export PIP_CERT="$here/trust.pem" SSL_CERT_FILE="$here/trust.pem" REQUESTS_CA_BUNDLE="$here/trust.pem"
  export CONDA_SSL_VERIFY="$here/trust.pem"
fi

if [ -s "$here/apt.txt" ]; then
  say "apt packages: $(tr '\n' ' ' < "$here/apt.txt")"
  apt-get update -qq
  xargs -a "$here/apt.txt" apt-get install -y -qq --no-install-recommends
  apt-get clean
  rm -rf /var/lib/apt/lists/*
fi

if [ -s "$here/conda.txt" ]; then
  channels=()
  while read -r ch; do
    [ -n "$ch" ] && channels+=(-c "$ch")
  done < "$here/conda-channels.txt"
  say "conda packages: $(tr '\n' ' ' < "$here/conda.txt")"
  xargs -a "$here/conda.txt" conda install -y --override-channels "${channels[@]}"
  conda clean -afy >/dev/null
fi

if [ -s "$here/requirements.txt" ]; then
  installed=0
  while read -r url; do
    [ -n "$url" ] || continue
    say "pip packages: $(tr '\n' ' ' < "$here/requirements.txt")from $url"
    if pip install --no-cache-dir --progress-bar off --index-url "$url" -r "$here/requirements.txt"; then
      installed=1
      break
    fi
    echo "image-matrix: $url failed; trying the next index" >&2
  done < "$here/index-urls.txt"
  if [ "$installed" != 1 ]; then
    echo "image-matrix: family $name: no index could install its pip packages" >&2
    exit 1
  fi
fi

if [ -f "$here/script.sh" ]; then
  say "running its script"
  (cd /root && bash "$here/script.sh")
fi

# services: each under supervisord, beside the image's own
dest="/init/family/$name"
rm -rf "$dest"
if [ -d "$here/services" ]; then
  mkdir -p "$dest"
  cp -r "$here/services" "$dest/"
  chmod 755 "$dest"/services/*
  cp "$here/supervisor.conf" "/etc/supervisor/conf.d/family-$name.conf"
fi

# the recorded versions gain the layer's pip packages, and the parent's packages this
# layer moved say their new version (read by image-matrix into the manifest)
python - /etc/image-matrix/versions.json "$here/packages.txt" <<'PY'
import json, sys
from importlib import metadata
path, names = sys.argv[1], sys.argv[2]
v = json.load(open(path))
wanted = set(v) | {l.strip() for l in open(names) if l.strip()}
for name in sorted(wanted):
    try:
        v[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
json.dump(v, open(path, "w"), sort_keys=True)
PY
echo "image-matrix-versions: $(tr -d '\n' < /etc/image-matrix/versions.json)"
