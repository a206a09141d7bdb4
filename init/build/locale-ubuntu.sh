#!/bin/bash
# Ubuntu's locale-gen takes the locale name and records it in /var/lib/locales/supported.d.
set -euo pipefail
. "$(dirname "$0")/system.env"
locale-gen "$LOCALE"
