#!/usr/bin/env bash
# Remove what earlier test runs left on one daemon (DOCKER_HOST, or the default one):
# a test that was killed never reaches its own clean-up, and 754 MB images (5.7 GB for
# a PyTorch one) left by each such run fill the disk of a machine that runs the suite
# nightly. Every Docker test works in a repository of its own named
# image-matrix-<test>-<pid>, some behind a loopback registry (127.0.0.1:<port>/); its
# images are found by tag and by the io.image-matrix.repository label each build sets
# (when a tag moves, the image it left is untagged but still labelled). Then the
# daemon's dangling images go (unreferenced by definition), and BuildKit's cache is
# trimmed to 8 GB. Images of any other repository are left alone.
# Usage: [DOCKER_HOST=...] scripts/remove-test-leftovers.sh
set -euo pipefail
ours='^([0-9.]+:[0-9]+/)?image-matrix-[a-z0-9-]+-[0-9]+/'

# stopped containers made from a test's image (run --rm leaves none, unless killed), and
# dead ones (a build killed mid-step leaves its step's container so)
containers=$(docker ps -aq --filter status=exited --filter status=created --filter status=dead)
stale_containers=()
for c in $containers; do
  labels=$(docker container inspect --format '{{json .Config.Labels}}' "$c" 2>/dev/null || true)
  repo=$(printf '%s' "$labels" | grep -o '"io.image-matrix.repository":"[^"]*"' | cut -d'"' -f4 || true)
  if [ -n "$repo" ] && [[ "$repo/" =~ $ours ]]; then stale_containers+=("$c"); fi
done
if [ ${#stale_containers[@]} -gt 0 ]; then docker rm -f "${stale_containers[@]}" >/dev/null 2>&1 || true; fi

# images: a test's tags (removing a tag deletes the image only when no other tag
# names it, so a base a test tagged under its own name stays), then the untagged
# images its builds labelled
mapfile -t stale < <(docker image ls --format '{{.Repository}}:{{.Tag}}' | grep -E "$ours" | grep -v ':<none>$' || true)
labelled=$(docker image ls -q --filter dangling=true --filter label=io.image-matrix.repository | sort -u)
if [ -n "$labelled" ]; then
  # shellcheck disable=SC2086
  mapfile -t -O "${#stale[@]}" stale < <(docker image inspect --format '{{.Id}} {{index .Config.Labels "io.image-matrix.repository"}}' $labelled |
    awk -v re="$ours" '($2 "/") ~ re {print $1}')
fi
removed=0
# an image another one is built FROM goes after its children: a few rounds
for _ in 1 2 3 4; do
  [ ${#stale[@]} -gt 0 ] || break
  left=()
  for ref in "${stale[@]}"; do
    if docker rmi "$ref" >/dev/null 2>&1; then removed=$((removed + 1))
    elif docker image inspect "$ref" >/dev/null 2>&1; then left+=("$ref"); fi
  done
  [ ${#left[@]} -lt ${#stale[@]} ] || break
  stale=("${left[@]+"${left[@]}"}")
done
echo "remove-test-leftovers: ${#stale_containers[@]} containers and $removed images or tags of earlier test runs removed${stale[0]:+ (${#stale[@]} could not be: ${stale[*]})}"
docker image prune -f | tail -n 1 | sed 's/^/remove-test-leftovers: dangling images: /'
if docker builder prune --help 2>&1 | grep -q -- --keep-storage; then
  # trimming is housekeeping: a cache it cannot read (a daemon killed mid-build can
  # leave a record whose snapshot is gone) is reported, and the tests still run
  if trimmed=$(docker builder prune -f --keep-storage 8GB 2>&1); then
    printf '%s\n' "$trimmed" | tail -n 1 | sed 's/^/remove-test-leftovers: build cache: /'
  else
    echo "remove-test-leftovers: warning: the build cache could not be trimmed ($(printf '%s' "$trimmed" | tail -n 1)); if builds fail on it too, stop the daemon and remove its buildkit directory (the build cache only)" >&2
  fi
fi
