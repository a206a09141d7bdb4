#!/usr/bin/env bash
# Make this machine ready for the browser test of the HTML report
# (tests/report_browser.rs): Debian's Chromium, run headless, and a font for it to draw
# text with. Idempotent; safe to run again.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup-browser: installing ${need[*]}"
  if [ "$(id -u)" != 0 ]; then echo "setup-browser: need root to install ${need[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
/usr/bin/chromium --version >/dev/null 2>&1 || { echo "setup-browser: /usr/bin/chromium does not run" >&2; exit 1; }
