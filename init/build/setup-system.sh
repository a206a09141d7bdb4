#!/bin/bash
# Build step 1 (stage `system`): OS packages, timezone, locale, sshd defaults.
# Reads system.env and apt-packages.txt rendered beside it by image-matrix.
set -euo pipefail
here=$(dirname "$0")
# shellcheck source=/dev/null
. "$here/system.env"

# Documentation, man pages (no man reader is installed) and message catalogues other
# than Chinese and English are not installed: about 70 MB less, nothing a user of the
# image reads. Copyright files stay.
cat > /etc/dpkg/dpkg.cfg.d/image-matrix-slim <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-include /usr/share/locale/zh*
path-include /usr/share/locale/en*
DPKG

# A mirror (kept in the image), and an extra CA bundle for an https mirror or a proxy
# (trusted for this step only, never added to the image's trust store).
if [ -n "${APT_MIRROR:-}" ]; then bash "$here/apt-mirror.sh" "$APT_MIRROR"; fi
apt_opts=()
if [ -f "$here/extra-ca.pem" ]; then
  cat /etc/ssl/certs/ca-certificates.crt "$here/extra-ca.pem" > "$here/trust.pem" 2>/dev/null \
    || cp "$here/extra-ca.pem" "$here/trust.pem"
  apt_opts=(-o "Acquire::https::CaInfo=$here/trust.pem")
fi

mapfile -t packages < "$here/apt-packages.txt"
apt-get "${apt_opts[@]}" update
apt-get "${apt_opts[@]}" install -y --no-install-recommends "${packages[@]}"

# Timezone: TIMEZONE is set before it is used (the seed linked an empty $TZ).
ln -snf "/usr/share/zoneinfo/$TIMEZONE" /etc/localtime
echo "$TIMEZONE" > /etc/timezone
test -f "/usr/share/zoneinfo/$TIMEZONE"

# Locale: the OS-specific way (locale.sh is rendered per OS family), then the default
# for PAM sessions (SSH logins start with a clean environment and read this file).
bash "$here/locale.sh"
update-locale "LANG=$LOCALE" "LANGUAGE=$LANGUAGE"
locale -a | grep -qix "${LOCALE/UTF-8/utf8}"

# sshd: host keys are made per container at first start, never baked in.
rm -f /etc/ssh/ssh_host_*
mkdir -p /run/sshd /etc/ssh/sshd_config.d
if ! grep -q '^Include /etc/ssh/sshd_config.d/' /etc/ssh/sshd_config; then
  sed -i '1i Include /etc/ssh/sshd_config.d/*.conf' /etc/ssh/sshd_config
fi
cat > /etc/ssh/sshd_config.d/10-image-matrix.conf <<'CONF'
PermitRootLogin yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PrintMotd no
ClientAliveInterval 60
ClientAliveCountMax 3
CONF
# The distribution's legal notice would print before our MOTD on every login.
: > /etc/motd

apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
