//! The download cache of BuildKit builds. Every build step the tool renders
//! (`RUN bash /tmp/image-matrix/…`) gets a cache mount at [`TARGET`], where pip keeps
//! its cache (`PIP_CACHE_DIR`: the files the index allows to be cached, which PyPI's
//! are) and the Miniconda step keeps installers by SHA256 (checked again on every use). The mount lives in the builder across builds and
//! nights, so a night whose base was republished downloads nothing it downloaded
//! before, and cells that share wheels fetch them once.
//!
//! This is how a context is sent, not what it is: the steps are rewritten here, when a
//! BuildKit build is sent, and nowhere else. A cell's identity is that of the rendered
//! context (a cache never changes what is installed: the pins and SHA256 are the
//! same), so images built before it existed stay current; the legacy builder, which has
//! no cache mounts, gets the context as rendered, and `--no-cache` builds without it.
//! Nothing of the cache reaches an image: it is a mount, gone when the step ends.
//!
//! The rewriting finds fixed lines of the step scripts; a test fails when a script no
//! longer has one, so that an edit cannot silently turn the cache off.

use super::{Bytes, Context};

/// Where the cache is mounted during a step.
pub const TARGET: &str = "/var/cache/image-matrix";

/// The build steps the tool renders begin so.
const STEP: &str = "RUN bash /tmp/image-matrix/";

/// pip without its cache, as every step script calls it.
const PIP_NO_CACHE: &str = "pip install --no-cache-dir ";

/// The Miniconda step: where it takes a pre-downloaded installer, and where it runs it.
const CONDA_SCRIPT: &str = "conda/install-conda.sh";
const TAKE_LOCAL: &str = "if [ -f \"$here/local/$INSTALLER_FILE\" ]; then\n";
const RUN_INSTALLER: &str = "bash \"$installer\" -b -p \"$prefix\"\n";

/// Before the step looks for a pre-downloaded installer: a cached copy whose SHA256 is
/// the planned one becomes one (the step checks it again, as it checks any); one that
/// is not is dropped, and the mirrors are asked.
const FROM_CACHE: &str =
    "# image-matrix's BuildKit download cache: a cached installer is a pre-downloaded one\n\
cached=\"$IMAGE_MATRIX_CACHE/installers/$INSTALLER_SHA256\"\n\
mkdir -p \"$IMAGE_MATRIX_CACHE/installers\" \"$here/local\"\n\
if [ -f \"$cached\" ] && [ ! -f \"$here/local/$INSTALLER_FILE\" ]; then\n\
  if [ \"$(sha256sum \"$cached\" | cut -d' ' -f1)\" = \"$INSTALLER_SHA256\" ] && cp \"$cached\" \"$here/local/$INSTALLER_FILE\"; then\n\
    echo \"image-matrix: $INSTALLER_FILE from the download cache (SHA256 checked)\"\n\
  else\n\
    echo \"image-matrix: the download cache's $INSTALLER_FILE is not the planned one; asking the mirrors\" >&2\n\
    rm -f \"$cached\" \"$here/local/$INSTALLER_FILE\"\n\
  fi\n\
fi\n";

/// Once the installer is checked: it is kept for the next build, under a name of its
/// own first (parallel builds share the cache, and PIDs repeat across containers). A
/// cache that cannot keep it does not fail the build.
const INTO_CACHE: &str = "(keep=$(mktemp \"$cached.XXXXXX\") && cp \"$installer\" \"$keep\" && mv -f \"$keep\" \"$cached\") || echo \"image-matrix: the download cache could not keep $INSTALLER_FILE\" >&2\n";

/// The context with the download cache mounted in each of its steps.
pub fn mounted(mut ctx: Context) -> Context {
    for f in &mut ctx.files {
        let rewritten = match f.path.as_ref() {
            "Dockerfile" => Some(dockerfile(&String::from_utf8_lossy(&f.bytes))),
            p if p.ends_with(".sh") => script(p, &String::from_utf8_lossy(&f.bytes)),
            _ => None,
        };
        if let Some(text) = rewritten {
            f.bytes = Bytes::Owned(text.into_bytes());
        }
    }
    ctx
}

fn dockerfile(text: &str) -> String {
    text.replace(
        STEP,
        &format!(
            "RUN --mount=type=cache,id=image-matrix-downloads,target={TARGET} IMAGE_MATRIX_CACHE={TARGET} PIP_CACHE_DIR={TARGET}/pip bash /tmp/image-matrix/"
        ),
    )
}

/// A step script with pip's cache on (and, for the Miniconda step, the installer's);
/// None when it has nothing to rewrite.
fn script(path: &str, text: &str) -> Option<String> {
    let mut out = text.replace(PIP_NO_CACHE, "pip install ");
    if path == CONDA_SCRIPT {
        out = out
            .replacen(TAKE_LOCAL, &format!("{FROM_CACHE}{TAKE_LOCAL}"), 1)
            .replacen(RUN_INSTALLER, &format!("{INTO_CACHE}{RUN_INSTALLER}"), 1);
    }
    (out != text).then_some(out)
}

#[cfg(test)]
mod tests {
    use crate::plan::{plan_text, PlanOptions};

    fn text(f: &crate::render::File) -> String {
        String::from_utf8_lossy(&f.bytes).into_owned()
    }

    /// Every step of a Miniconda, framework and family context gets the mount; every
    /// pip call its cache; the Miniconda step takes and keeps installers; nothing else
    /// changes. Each rewrite finds its line (an edited script fails here).
    #[test]
    fn every_step_gets_the_cache_and_nothing_else_changes() {
        let p = plan_text(
            "version: 1\nimage: {tag: \"{python}-{variant}-{base}\", pytorch_tag: \"{torch}-{python}-{variant}-{base}\"}\nbases: [\"debian:12\"]\npython: [\"3.11\"]\nvariants: [{name: default}, {name: data, pip: [polars]}]\npytorch: [\"2.5.1\"]\nfamilies: [{name: tool, pip: [tqdm], tag: \"{python}-{variant}-{base}\"}]\n",
            "m.yaml",
            std::path::Path::new("."),
            &PlanOptions {
                date: "20260101".into(),
            },
        )
        .unwrap();
        let r = crate::render::Renderer::new(&p.settings);
        let (mut steps, mut pips, mut conda) = (0, 0, 0);
        for c in &p.cells {
            let plain = r.render(c);
            let cached = super::mounted(r.render(c));
            assert_eq!(plain.files.len(), cached.files.len());
            for (a, b) in plain.files.iter().zip(&cached.files) {
                assert_eq!(a.path, b.path);
                let (a_text, b_text) = (text(a), text(b));
                if a.path == "Dockerfile" {
                    for run in b_text.lines().filter(|l| l.starts_with("RUN ")) {
                        assert!(run.starts_with("RUN --mount=type=cache,id=image-matrix-downloads,target=/var/cache/image-matrix IMAGE_MATRIX_CACHE=/var/cache/image-matrix PIP_CACHE_DIR=/var/cache/image-matrix/pip bash /tmp/image-matrix/"), "{run}");
                        steps += 1;
                    }
                    continue;
                }
                let calls = a_text.matches("pip install --no-cache-dir ").count();
                pips += calls;
                assert!(!b_text.contains("--no-cache-dir"), "{}", a.path);
                assert_eq!(
                    b_text.matches("pip install ").count(),
                    a_text.matches("pip install ").count()
                );
                if a.path == super::CONDA_SCRIPT {
                    conda += 1;
                    assert!(
                        b_text.contains(super::FROM_CACHE) && b_text.contains(super::INTO_CACHE),
                        "{b_text}"
                    );
                    assert!(b_text.find(super::FROM_CACHE) < b_text.find(super::TAKE_LOCAL));
                    assert!(b_text.find(super::INTO_CACHE) < b_text.find(super::RUN_INSTALLER));
                } else if calls == 0 {
                    assert_eq!(a_text, b_text, "{}", a.path);
                }
            }
        }
        // two Miniconda cells (system, conda, variant, finalize), a PyTorch and a
        // family image on each (one step each)
        assert_eq!(steps, 12);
        // the common stack, the variant's packages, the framework's and the family's
        assert!(pips >= 8, "{pips}");
        assert_eq!(conda, 2);
    }
}
