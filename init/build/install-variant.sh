#!/bin/bash
# Build step 3 (final stage): the variant's extra pip packages, in their own layer on
# top of the shared Miniconda layers, so cells differing only by variant share those.
# They install under the common stack's versions (/etc/image-matrix/constraints.txt),
# so a variant's pandas cannot quietly move numpy; packages the variant overrides on
# purpose (unpinned.txt) are left out of the constraints.
set -euo pipefail
here=$(dirname "$0")
if [ -s "$here/pip-packages.txt" ]; then
  export PATH="/opt/miniconda3/bin:$PATH"
  if [ -f "$here/extra-ca.pem" ]; then
    cat /etc/ssl/certs/ca-certificates.crt "$here/extra-ca.pem" > "$here/trust.pem"
    export PIP_CERT="$here/trust.pem" SSL_CERT_FILE="$here/trust.pem"
  fi
  python - /etc/image-matrix/constraints.txt "$here/unpinned.txt" > "$here/constraints.txt" <<'PY'
import re, sys
def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()
drop = {norm(l.strip()) for l in open(sys.argv[2]) if l.strip()}
for line in open(sys.argv[1]):
    name = re.split(r"[=<>!~ ;@\[]", line.strip(), maxsplit=1)[0]
    if name and norm(name) not in drop:
        print(line.rstrip())
PY
  pip install --no-cache-dir -c "$here/constraints.txt" -r "$here/pip-packages.txt"
fi
