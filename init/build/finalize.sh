#!/bin/bash
# Build step 4 (final stage): boot files, shell setup, the variant's apt packages.
set -euo pipefail
here=$(dirname "$0")

mapfile -t packages < "$here/apt-packages.txt"
if [ "${#packages[@]}" -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
  apt-get clean
  rm -rf /var/lib/apt/lists/*
fi

rm -rf /init
cp -r "$here/init" /init
chmod 755 /init/boot/*.sh /init/bin/*
if [ -f /init/etc/root-password.hash ]; then chmod 600 /init/etc/root-password.hash; fi
cp /init/supervisor/image-matrix.conf /etc/supervisor/conf.d/image-matrix.conf
ln -sf /init/bin/shutdown /usr/local/bin/shutdown

# Login shells (SSH) get conda on PATH and the MOTD; `conda init` covers interactive bash.
cp /init/etc/profile.sh /etc/profile.d/zz-image-matrix.sh
/opt/miniconda3/bin/conda init bash >/dev/null
grep -q 'image-matrix: login' /root/.bashrc || cat >> /root/.bashrc <<'RC'
# image-matrix: login defaults (PATH, MOTD) for non-login interactive shells too
[ -f /etc/profile.d/zz-image-matrix.sh ] && . /etc/profile.d/zz-image-matrix.sh
RC

. /init/etc/defaults.env
mkdir -p "$TENSORBOARD_LOGDIR" /root/.jupyter /var/lib/image-matrix

# The versions a user asks about ("which image had numpy 1.26?"), read by image-matrix
# after the build into the manifest and the image's labels.
mkdir -p /etc/image-matrix
/opt/miniconda3/bin/python - > /etc/image-matrix/versions.json <<'PY'
import json, platform, subprocess
from importlib import metadata
v = {"python": platform.python_version()}
for name in ("jupyterlab", "tensorboard", "numpy", "pandas", "torch", "torchvision",
             "torchaudio", "tensorflow"):
    try:
        v[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
try:
    out = subprocess.run(["/opt/miniconda3/bin/conda", "--version"],
                         capture_output=True, text=True, check=False).stdout.split()
    if len(out) > 1:
        v["conda"] = out[1]
except OSError:
    pass
print(json.dumps(v, sort_keys=True))
PY
# ...and printed for image-matrix to take from the build's output (one line, after a
# marker), so that it need not start the fresh image to read the file
echo "image-matrix-versions: $(tr -d '\n' < /etc/image-matrix/versions.json)"
