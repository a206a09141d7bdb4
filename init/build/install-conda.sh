#!/bin/bash
# Build step 2 (stage `conda`): fetch the planned Miniconda installer, check its SHA256,
# install it in /opt/miniconda3, then the Python packages. Reads conda.env,
# installers.txt ("ARCH FILE SHA256", one line per platform the context builds for),
# mirrors.txt ("ARCH URL") and pip-packages.txt rendered beside it.
set -euo pipefail
here=$(dirname "$0")
# shellcheck source=/dev/null
. "$here/conda.env"
prefix=/opt/miniconda3

# The installer of the architecture this build runs as (natively or emulated).
arch=$(uname -m)
INSTALLER_FILE="" INSTALLER_SHA256=""
while read -r a file sum; do
  if [ "$a" = "$arch" ]; then INSTALLER_FILE=$file INSTALLER_SHA256=$sum; fi
done < "$here/installers.txt"
if [ -z "$INSTALLER_FILE" ]; then
  echo "image-matrix: this context has no installer for $arch (it has: $(cut -d' ' -f1 "$here/installers.txt" | tr '\n' ' '))" >&2
  exit 1
fi

# An extra CA bundle (corporate proxy) is trusted for this step only: it is never added
# to the image's trust store, and the step deletes it when done.
if [ -f "$here/extra-ca.pem" ]; then
  cat /etc/ssl/certs/ca-certificates.crt "$here/extra-ca.pem" > "$here/trust.pem"
  export SSL_CERT_FILE="$here/trust.pem" CURL_CA_BUNDLE="$here/trust.pem" \
         PIP_CERT="$here/trust.pem" REQUESTS_CA_BUNDLE="$here/trust.pem"
fi

installer="$here/$INSTALLER_FILE"
verify() { # file source
  local actual
  actual=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$actual" != "$INSTALLER_SHA256" ]; then
    echo "image-matrix: $INSTALLER_FILE from $2: SHA256 mismatch: expected $INSTALLER_SHA256, got $actual" >&2
    return 1
  fi
}
if [ -f "$here/local/$INSTALLER_FILE" ]; then
  verify "$here/local/$INSTALLER_FILE" "the local installer directory"
  mv "$here/local/$INSTALLER_FILE" "$installer"
else
  ok=0
  mapfile -t mirrors < <(awk -v a="$arch" '$1 == a { print $2 }' "$here/mirrors.txt")
  for url in "${mirrors[@]}"; do
    echo "image-matrix: fetching $url"
    if curl -fL --globoff --retry 3 --retry-delay 2 --retry-connrefused --connect-timeout 20 -sS -o "$installer" "$url"; then
      if verify "$installer" "$url"; then ok=1; break; fi
    else
      echo "image-matrix: $url failed; trying the next mirror" >&2
    fi
    rm -f "$installer"
  done
  if [ "$ok" != 1 ]; then
    echo "image-matrix: no mirror delivered $INSTALLER_FILE with SHA256 $INSTALLER_SHA256" >&2
    exit 1
  fi
fi

bash "$installer" -b -p "$prefix"
rm -f "$installer"
mkdir -p /etc/image-matrix
printf '%s %s\n' "$INSTALLER_FILE" "$INSTALLER_SHA256" > /etc/image-matrix/installer
export PATH="$prefix/bin:$PATH"
# Miniconda 25+ refuses unattended use of Anaconda's channels until its terms are
# accepted. The build's own conda calls accept them; the image's users do so themselves
# (the MOTD says how) unless the matrix chose `sources.conda_tos: accept`, which accepts
# them here for every user of the image.
if [ "$TOS_GATE" = 1 ]; then export CONDA_PLUGINS_AUTO_ACCEPT_TOS=true; fi
if [ "$CONDA_TOS" = accepted ]; then
  for ch in https://repo.anaconda.com/pkgs/main https://repo.anaconda.com/pkgs/r; do
    conda tos accept --override-channels --channel "$ch"
  done
fi

if [ -s "$here/conda-channels.txt" ]; then
  mapfile -t channels < "$here/conda-channels.txt"
  conda config --system --remove-key channels 2>/dev/null || true
  for ch in "${channels[@]}"; do conda config --system --append channels "$ch"; done
fi
if [ -n "$PIP_INDEX" ]; then
  printf '[global]\nindex-url = %s\n' "$PIP_INDEX" > "$prefix/pip.conf"
fi

# The common stack (its markers already resolved for this Python by image-matrix),
# then its exact versions as the constraints every variant installs under.
pip install --no-cache-dir -r "$here/pip-packages.txt"
mkdir -p /etc/image-matrix
pip list --format=freeze > /etc/image-matrix/constraints.txt

# JupyterLab defaults for every user of this environment: Chinese UI, dark terminal.
mkdir -p "$prefix/share/jupyter/lab/settings"
cp "$here/overrides.json" "$prefix/share/jupyter/lab/settings/overrides.json"

conda clean -afy
find "$prefix" -name '*.a' -path '*/lib/*' -delete 2>/dev/null || true
