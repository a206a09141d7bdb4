#!/usr/bin/env bash
# Extra local Docker engines for tests and benchmarks: one more dockerd per NAME, with
# its own data root, exec root (hence its own containerd), socket and pid file, the
# bridge off like the main daemon. Base images are copied in from the main daemon.
#
#   scripts/engine.sh start NAME [--fresh]   start (--fresh: empty data root first);
#                                            prints the engine's DOCKER_HOST
#   scripts/engine.sh kill NAME              SIGKILL the daemon only (an engine dying)
#   scripts/engine.sh freeze NAME            SIGSTOP the daemon (an engine that hangs:
#                                            connections open, nothing answers)
#   scripts/engine.sh stop NAME [--wipe]     stop it and everything it started
#   scripts/engine.sh host NAME              print its DOCKER_HOST
#
# ENGINE_CPUS=0 pins an engine (and every build it runs) to those CPUs, so that two
# engines on one machine can stand in for two build hosts in benchmarks.
set -euo pipefail
cmd=${1:?usage: engine.sh start|kill|freeze|stop|host NAME}
name=${2:?engine name}
case "$name" in *[!a-z0-9_-]*) echo "engine.sh: bad name $name" >&2; exit 2 ;; esac
data=/var/lib/image-matrix-engines/$name
run=/run/image-matrix-engines/$name
sock=/run/image-matrix-engines/$name.sock
pidfile=/run/image-matrix-engines/$name.pid
host=unix://$sock
# ENGINE_BASES="" copies none (an engine that holds other builds of those names)
bases=${ENGINE_BASES-image-matrix-test/debian:bookworm image-matrix-test/debian:12}

answers() { DOCKER_HOST=$host docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# Every process of this engine: dockerd, its containerd and the shims, found by the
# paths only they use.
pids() { pgrep -f -- "image-matrix-engines/$name[/. ]|image-matrix-engines/$name\$" || true; }

unmount_all() {
  # a killed daemon leaves overlay and netns mounts behind; undo them deepest first
  awk -v a="$data" -v b="$run" '$2 ~ "^"a || $2 ~ "^"b {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

stop() {
  local p; p=$(pids)
  if [ -n "$p" ]; then
    # shellcheck disable=SC2086
    kill -CONT $p 2>/dev/null || true
    # shellcheck disable=SC2086
    kill -TERM $p 2>/dev/null || true
    for _ in $(seq 1 40); do [ -z "$(pids)" ] && break; sleep 0.25; done
    p=$(pids)
    # shellcheck disable=SC2086
    [ -n "$p" ] && kill -KILL $p 2>/dev/null || true
  fi
  unmount_all
  rm -f "$sock" "$pidfile"
}

case "$cmd" in
  host) echo "$host" ;;
  kill)
    [ -f "$pidfile" ] && kill -KILL "$(cat "$pidfile")" 2>/dev/null || true ;;
  freeze)
    [ -f "$pidfile" ] && kill -STOP "$(cat "$pidfile")" ;;
  stop)
    stop
    if [ "${3:-}" = --wipe ]; then rm -rf "$data" "$run"; fi ;;
  start)
    if [ "${3:-}" = --fresh ]; then stop; rm -rf "$data" "$run"; fi
    if ! answers; then
      stop
      # the exec root is runtime state only; stale pid files there can stall containerd
      rm -rf "$run"
      mkdir -p "$data" "$run"
      pin=()
      if [ -n "${ENGINE_CPUS:-}" ]; then pin=(taskset -c "$ENGINE_CPUS"); fi
      "${pin[@]}" dockerd --bridge=none --iptables=false \
        --data-root "$data" --exec-root "$run" -H "$host" --pidfile "$pidfile" \
        >"/tmp/image-matrix-engine-$name.log" 2>&1 &
      for _ in $(seq 1 60); do answers && break; sleep 0.5; done
      if ! answers; then
        echo "engine.sh: $name did not answer within 30 s:" >&2
        tail -n 20 "/tmp/image-matrix-engine-$name.log" >&2
        exit 1
      fi
    fi
    missing=()
    for b in $bases; do
      DOCKER_HOST=$host docker image inspect "$b" >/dev/null 2>&1 || missing+=("$b")
    done
    if [ ${#missing[@]} -gt 0 ]; then
      docker save "${missing[@]}" | DOCKER_HOST=$host docker load -q >/dev/null
    fi
    echo "$host" ;;
  *) echo "engine.sh: unknown command $cmd" >&2; exit 2 ;;
esac
