# Sourced by the setup scripts: `phase NAME COMMAND...` runs COMMAND between a line
# saying what it does and one saying how long it took.
phase() { # NAME COMMAND...
  local t=$SECONDS; echo "setup: $1 ..."
  shift; "$@"
  echo "setup: done in $((SECONDS - t))s"
}
