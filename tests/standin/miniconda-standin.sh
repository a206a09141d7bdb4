#!/bin/bash
# STAND-IN for a Miniconda installer, used only by image-matrix's tests and local demo,
# because Anaconda's servers are out of reach here. It takes the real installer's
# command line (-b -p PREFIX) and, like the real one, leaves PREFIX/bin/{python,pip,conda}.
# Unlike the real one it brings no Python of its own: it makes a venv from the base
# image's python3.X, where X comes from the file name it is saved under
# (Miniconda3-py311_24.5.0-0-Linux-x86_64.sh → 3.11), and fails if the base lacks it.
set -euo pipefail
prefix=""
while getopts "bp:uf" opt; do
  case "$opt" in
    b|u|f) ;;
    p) prefix=$OPTARG ;;
    *) echo "usage: $0 -b -p PREFIX" >&2; exit 2 ;;
  esac
done
[ -n "$prefix" ] || { echo "usage: $0 -b -p PREFIX" >&2; exit 2; }
name=$(basename "$0")
digits=${name#Miniconda3-py}; digits=${digits%%_*}
release=${name#*_}; release=${release%-Linux-*}
case "$digits" in
  [0-9][0-9]*)
    want="${digits:0:1}.${digits:1}"
    py=$(command -v "python$want" || true)
    if [ -z "$py" ]; then
      echo "stand-in: this base image has no python$want (the stand-in borrows the base's Python)" >&2
      exit 1
    fi ;;
  *)
    # Saved under another name (the seed's Dockerfile uses /tmp/miniconda.sh): use python3.
    py=$(command -v python3 || true); release=unknown
    [ -n "$py" ] || { echo "stand-in: this base image has no python3" >&2; exit 1; }
    want=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])') ;;
esac
"$py" -m venv "$prefix"
cat > "$prefix/bin/conda" <<CONDA
#!/bin/bash
# STAND-IN conda: answers the few commands image builds use.
prefix="$prefix"
release="$release"
CONDA
cat >> "$prefix/bin/conda" <<'CONDA'
case "${1:-}" in
  --version|-V) echo "conda $release (stand-in)" ;;
  init)
    rc="$HOME/.bashrc"
    grep -q '>>> conda initialize >>>' "$rc" 2>/dev/null || cat >> "$rc" <<RC
# >>> conda initialize >>> (stand-in)
export PATH="$prefix/bin:\$PATH"
# <<< conda initialize <<<
RC
    ;;
  clean) echo "stand-in conda: nothing to clean" ;;
  config) shift; echo "stand-in conda config $*" >> "$prefix/.condarc-standin.log" ;;
  tos) shift; echo "stand-in conda tos $*" >> "$prefix/.tos-standin.log" ;;
  info) echo "stand-in conda $release at $prefix" ;;
  *) echo "stand-in conda: '${1:-}' is not supported by the stand-in" >&2; exit 1 ;;
esac
CONDA
chmod 755 "$prefix/bin/conda"
echo "stand-in Miniconda $release (Python $want) installed in $prefix"
