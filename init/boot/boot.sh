#!/bin/bash
# Container entry point. Everything it needs is in the image: nothing is downloaded, so
# the container boots and serves with no network at all. It prepares credentials and
# settings, then hands PID 1 to supervisord, which stops every service on SIGTERM.
set -euo pipefail
log() { echo "[boot] $*"; }
. /init/etc/defaults.env

export SSH_PORT="${SSH_PORT:-$DEFAULT_SSH_PORT}"
export JUPYTER_PORT="${JUPYTER_PORT:-$DEFAULT_JUPYTER_PORT}"
export TENSORBOARD_PORT="${TENSORBOARD_PORT:-$DEFAULT_TENSORBOARD_PORT}"
export TENSORBOARD_BIND="${TENSORBOARD_BIND:-$DEFAULT_TENSORBOARD_BIND}"
for p in SSH_PORT JUPYTER_PORT TENSORBOARD_PORT; do
  v=${!p}
  if ! [[ "$v" =~ ^[0-9]+$ ]] || [ "$v" -lt 1 ] || [ "$v" -gt 65535 ]; then
    echo "[boot] $p=$v is not a port number (1-65535)" >&2; exit 64
  fi
done
case "$TENSORBOARD_BIND" in
  all|localhost) ;;
  *) echo "[boot] TENSORBOARD_BIND=$TENSORBOARD_BIND is not a bind policy (expected all or localhost)" >&2; exit 64 ;;
esac

state=/var/lib/image-matrix
mkdir -p "$state"
first_boot=0
[ -f "$state/initialized" ] || first_boot=1

# SSH host keys: made here, once per container, so no two containers share them. The
# RSA key takes a moment, so it is made while the other services start; run-sshd waits
# for the marker.
hostkeys_ready=/run/image-matrix-hostkeys
rm -f "$hostkeys_ready"
mkdir -p /run
if ! ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1; then
  (ssh-keygen -A >/dev/null && touch "$hostkeys_ready" && log "generated SSH host keys") &
else
  touch "$hostkeys_ready"
fi

# Root password, in order: ROOT_PASSWORD_FILE, /etc/sync_passwd (platform sync, removed
# after use), ROOT_PASSWORD, then the image's policy. chpasswd reads it from stdin, so
# it never shows in a process list.
set_password() { printf 'root:%s\n' "$1" | chpasswd; }
if [ -n "${ROOT_PASSWORD_FILE:-}" ]; then
  [ -r "$ROOT_PASSWORD_FILE" ] || { echo "[boot] ROOT_PASSWORD_FILE=$ROOT_PASSWORD_FILE is not readable" >&2; exit 64; }
  set_password "$(head -n1 "$ROOT_PASSWORD_FILE")"
  log "root password set from ROOT_PASSWORD_FILE"
elif [ -s /etc/sync_passwd ]; then
  set_password "$(head -n1 /etc/sync_passwd)"
  rm -f /etc/sync_passwd
  log "root password set from /etc/sync_passwd (file removed)"
elif [ -n "${ROOT_PASSWORD:-}" ]; then
  set_password "$ROOT_PASSWORD"
  log "root password set from ROOT_PASSWORD"
elif [ "$first_boot" = 1 ]; then
  case "$ROOT_PASSWORD_POLICY" in
    random)
      pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=' | head -c 20)
      set_password "$pw"
      (umask 077; printf '%s\n' "$pw" > /root/.root-password)
      log "root password (shown once; also in /root/.root-password): $pw"
      ;;
    fixed)
      printf 'root:%s\n' "$(cat /init/etc/root-password.hash)" | chpasswd -e
      log "root password set from the image's fixed-password policy"
      ;;
    disabled)
      passwd -l root >/dev/null
      log "root password login disabled; use SSH_AUTHORIZED_KEYS"
      ;;
  esac
fi
unset ROOT_PASSWORD

# Public keys.
keys="${SSH_AUTHORIZED_KEYS:-}"
if [ -n "${SSH_AUTHORIZED_KEYS_FILE:-}" ] && [ -r "$SSH_AUTHORIZED_KEYS_FILE" ]; then
  keys="$keys"$'\n'"$(cat "$SSH_AUTHORIZED_KEYS_FILE")"
fi
if [ -n "${keys//[$'\n' ]/}" ]; then
  install -d -m 700 /root/.ssh
  touch /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys
  while IFS= read -r k; do
    [ -n "$k" ] && ! grep -qxF -- "$k" /root/.ssh/authorized_keys && printf '%s\n' "$k" >> /root/.ssh/authorized_keys
  done <<< "$keys"
  log "authorized SSH keys installed"
fi
unset SSH_AUTHORIZED_KEYS

# Jupyter token: JUPYTER_TOKEN or JUPYTER_TOKEN_FILE from the user, otherwise a random
# one made on first boot and printed once. Never empty: an empty token turns
# authentication off.
if [ -z "${JUPYTER_TOKEN:-}" ] && [ -z "${JUPYTER_TOKEN_FILE:-}" ]; then
  tokfile=/root/.jupyter/token
  if [ ! -s "$tokfile" ]; then
    mkdir -p /root/.jupyter
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$tokfile")
    log "Jupyter token (shown once; also in $tokfile): $(cat "$tokfile")"
  fi
  export JUPYTER_TOKEN_FILE="$tokfile"
elif [ -n "${JUPYTER_TOKEN_FILE:-}" ] && [ ! -s "$JUPYTER_TOKEN_FILE" ]; then
  echo "[boot] JUPYTER_TOKEN_FILE=$JUPYTER_TOKEN_FILE is missing or empty; refusing to start Jupyter without a token" >&2
  exit 64
fi

# SSH sessions start with a clean environment; PAM reads /etc/environment, so the
# settings a login needs are written there (an allow-list: no credentials).
{
  for v in PATH LANG LANGUAGE TZ LD_LIBRARY_PATH CUDA_VERSION NVIDIA_VISIBLE_DEVICES NVIDIA_DRIVER_CAPABILITIES NV_CUDA_LIB_VERSION CONDA_DIR; do
    [ -n "${!v:-}" ] && printf '%s="%s"\n' "$v" "${!v}"
  done
} > /etc/environment

mkdir -p "$TENSORBOARD_LOGDIR"
# What TensorBoard listens on, for the MOTD of SSH sessions (which do not inherit this
# environment): both values were checked above.
printf 'TENSORBOARD_BIND=%s\nTENSORBOARD_PORT=%s\n' "$TENSORBOARD_BIND" "$TENSORBOARD_PORT" > "$state/tensorboard.env"
touch "$state/initialized"
if [ "$TENSORBOARD_BIND" = all ]; then
  tb_where="on $TENSORBOARD_PORT$TENSORBOARD_PREFIX (all interfaces, no authentication: TENSORBOARD_BIND=localhost closes it)"
else
  tb_where="on 127.0.0.1:$TENSORBOARD_PORT$TENSORBOARD_PREFIX (no authentication; reach it with ssh -L)"
fi
log "starting sshd on $SSH_PORT, JupyterLab on $JUPYTER_PORT$JUPYTER_BASE_URL, TensorBoard $tb_where"
exec /usr/bin/supervisord -n -c /etc/supervisor/supervisord.conf
