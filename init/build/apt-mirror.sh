#!/bin/bash
# Point the base's apt sources at a mirror root that has Debian's and Ubuntu's layouts
# (/debian, /debian-security, /ubuntu, /ubuntu-ports), as TUNA, USTC and Aliyun do.
# Usage: apt-mirror.sh MIRROR_ROOT [APT_DIR]   (APT_DIR defaults to /etc/apt)
set -euo pipefail
root=${1:?mirror root}
apt_dir=${2:-/etc/apt}
shopt -s nullglob
for f in "$apt_dir/sources.list" "$apt_dir"/sources.list.d/*.list "$apt_dir"/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  sed -i -E \
    -e "s#https?://(deb|security)\.debian\.org/debian-security#${root}/debian-security#g" \
    -e "s#https?://deb\.debian\.org/debian#${root}/debian#g" \
    -e "s#https?://([a-z]+\.)?(archive|security)\.ubuntu\.com/ubuntu#${root}/ubuntu#g" \
    -e "s#https?://ports\.ubuntu\.com/ubuntu-ports#${root}/ubuntu-ports#g" \
    "$f"
done
