# image-matrix: list an image's packages (run as `sh -c` in a container of it). Prints
# one section per source: a `@SOURCE` line, then one tab-separated line per package,
# or an `@error WHY` line. Read by src/sbom/parse.rs; no network, nothing written.
export LC_ALL=C
echo '@image-matrix-packages 1'
if [ -r /etc/os-release ]; then
  ( . /etc/os-release; printf '@os %s\t%s\n' "${ID:-}" "${VERSION_ID:-}" )
fi
echo '@dpkg'
if command -v dpkg-query >/dev/null 2>&1; then
  # status, name, version, architecture: only `ii` (installed) lines are packages
  dpkg-query -W -f '${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n' 2>/dev/null \
    || echo '@error dpkg-query failed'
else
  echo '@error no dpkg-query (not a Debian-based image)'
fi
py=$(command -v python 2>/dev/null || command -v python3 2>/dev/null)
if [ -z "$py" ]; then
  echo '@conda'; echo '@error no python on PATH'
  echo '@pip'; echo '@error no python on PATH'
else
  "$py" - <<'PY' || echo '@error python stopped before the end of the listing'
import glob, json, os, sys

def clean(s):
    return " ".join(str(s if s is not None else "").split())[:200]

print("@conda " + clean(sys.prefix))
meta = os.path.join(sys.prefix, "conda-meta")
if not os.path.isdir(meta):
    print("@error no conda-meta folder in %s (not a conda environment)" % clean(sys.prefix))
else:
    for f in sorted(glob.glob(os.path.join(meta, "*.json"))):
        try:
            with open(f) as fh:
                d = json.load(fh)
            print("\t".join(clean(d.get(k)) for k in ("name", "version", "build", "channel", "license")))
        except Exception as e:
            print("@warning %s: %s" % (os.path.basename(f), clean(e)))

print("@pip " + clean(sys.version.split()[0]))
try:
    from importlib import metadata
except ImportError:
    print("@error python %s has no importlib.metadata" % clean(sys.version.split()[0]))
    metadata = None

def licence(m):
    if m.get("License-Expression"):
        return m.get("License-Expression")
    named = [c.split("::")[-1].strip() for c in (m.get_all("Classifier") or [])
             if c.startswith("License ::") and c.count("::") >= 2]
    if named:
        return ", ".join(sorted(set(named)))
    text = (m.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 100 and text.upper() != "UNKNOWN":
        return text
    return ""

if metadata is not None:
    for d in metadata.distributions():
        try:
            m = d.metadata
            try:
                installer = (d.read_text("INSTALLER") or "").strip()
            except Exception:
                installer = ""
            print("\t".join(clean(x) for x in (m.get("Name"), m.get("Version"), installer, licence(m))))
        except Exception as e:
            print("@warning %s" % clean(e))

# dpkg's licences: only machine-readable copyright files (DEP-5) say them, in the
# paragraph of `Files: *`
print("@dpkg-licenses")
for p in sorted(glob.glob("/usr/share/doc/*/copyright")):
    try:
        with open(p, encoding="utf-8", errors="replace") as fh:
            text = fh.read(262144)
    except Exception:
        continue
    if not text.startswith("Format:"):
        continue
    for para in text.split("\n\n"):
        lines = para.splitlines()
        if not any(l.strip() == "Files: *" for l in lines):
            continue
        lic = [l[8:].strip() for l in lines if l.startswith("License:")]
        if lic and lic[0]:
            print("%s\t%s" % (os.path.basename(os.path.dirname(p)), clean(lic[0])))
        break
PY
fi
echo '@end'
