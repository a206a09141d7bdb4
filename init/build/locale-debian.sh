#!/bin/bash
# Debian's locale-gen ignores its arguments and reads /etc/locale.gen.
set -euo pipefail
. "$(dirname "$0")/system.env"
entry="$LOCALE UTF-8"
if grep -q "^# *$entry" /etc/locale.gen; then
  sed -i "s/^# *$entry/$entry/" /etc/locale.gen
elif ! grep -q "^$entry" /etc/locale.gen; then
  echo "$entry" >> /etc/locale.gen
fi
locale-gen
