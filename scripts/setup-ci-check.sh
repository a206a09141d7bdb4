#!/usr/bin/env bash
# What tests/ci_examples.rs needs: jq (the example workflow's plan step uses it, as
# GitHub's runners have it) and check-jsonschema, to validate the CI examples
# (examples/github-workflow*.yml, examples/gitlab-ci.yml and a generated GitLab child
# pipeline) against the schemas GitHub's and GitLab's own editors use (bundled with it:
# --builtin-schema vendor.github-workflows and vendor.gitlab-ci). Installed from the
# Python package index into a virtual environment of its own,
# /usr/local/lib/image-matrix/check-jsonschema (IMAGE_MATRIX_CHECK_JSONSCHEMA_VENV
# elsewhere), so the system's Python packages are not touched. Idempotent: a second
# run finds it and says so. HTTPS to the package index may go through a proxy whose
# CA only the system bundle trusts: pip is told to use that bundle unless PIP_CERT
# names another.
set -euo pipefail
apt_install() { # PACKAGE...
  if [ "$(id -u)" != 0 ]; then echo "setup-ci-check: need root to install $*" >&2; exit 1; fi
  local log; log=$(mktemp /tmp/image-matrix-apt.XXXXXX)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; } >"$log" 2>&1; then
    echo "setup-ci-check: apt-get failed; its output:" >&2; cat "$log" >&2; rm -f "$log"; exit 1
  fi
  rm -f "$log"
}
command -v jq >/dev/null 2>&1 || { echo "setup-ci-check: installing jq (apt)"; apt_install jq; }
venv=${IMAGE_MATRIX_CHECK_JSONSCHEMA_VENV:-/usr/local/lib/image-matrix/check-jsonschema}
bin=$venv/bin/check-jsonschema
version=0.39.0
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$version"; then
  echo "setup-ci-check: $("$bin" --version) is there ($bin)"
  exit 0
fi
t=$SECONDS
echo "setup-ci-check: installing check-jsonschema $version in $venv ..."
python=$(command -v python3 || true)
if [ -z "$python" ] || ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c 'import ensurepip' 2>/dev/null; then
  apt_install python3 python3-venv
  python=$(command -v python3)
fi
mkdir -p "$(dirname "$venv")"
# a half-made environment from a killed run is made again
rm -rf "$venv"
"$python" -m venv "$venv"
cert=()
if [ -z "${PIP_CERT:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cert=(--cert /etc/ssl/certs/ca-certificates.crt)
fi
log=$(mktemp /tmp/image-matrix-pip.XXXXXX)
if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "${cert[@]}" "check-jsonschema==$version" >"$log" 2>&1; then
  echo "setup-ci-check: pip failed; its output:" >&2; cat "$log" >&2; rm -f "$log"; rm -rf "$venv"; exit 1
fi
rm -f "$log"
"$bin" --version >/dev/null || { echo "setup-ci-check: $bin does not run" >&2; exit 1; }
echo "setup-ci-check: $("$bin" --version) installed in $((SECONDS - t))s ($bin)"
