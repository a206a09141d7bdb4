#!/bin/bash
# Build step 3 (final stage): the variant's extra pip packages, in their own layer on
# top of the shared Miniconda layers, so cells differing only by variant share those.
set -euo pipefail
here=$(dirname "$0")
mapfile -t pip_packages < "$here/pip-packages.txt"
if [ "${#pip_packages[@]}" -gt 0 ]; then
  export PATH="/opt/miniconda3/bin:$PATH"
  if [ -f "$here/extra-ca.pem" ]; then
    cat /etc/ssl/certs/ca-certificates.crt "$here/extra-ca.pem" > "$here/trust.pem"
    export PIP_CERT="$here/trust.pem" SSL_CERT_FILE="$here/trust.pem"
  fi
  pip install --no-cache-dir "${pip_packages[@]}"
fi
