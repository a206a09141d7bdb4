//! Identity: what makes two builds the same image. A cell's identity (its input hash)
//! is SHA256 over what decides the image's content: every rendered context file that
//! reaches the image, the base image's resolved digest and the installers' SHA256. It is
//! never the names the image is published under (repository, tags: the rendered context
//! names neither, and the labels that do come with the build) nor how its inputs are
//! fetched (mirrors, proxies, CA bundles): a new repository or tag template retags, a
//! new mirror rebuilds nothing.
//!
//! `matrix build` labels each image with its identity and skips a cell whose image has
//! it; `plan --diff` compares it with the one a previous manifest recorded. Identities of
//! earlier schemes are recognised ([`Identity::is`]), so that a new tool version moves
//! no tag whose inputs did not change.

use sha2::{Digest, Sha256};

use super::{
    framework, write_installer_table, Bytes, Cell, Context, Renderer, Rendering, APT_MIRROR,
    LOCALE_DEBIAN, LOCALE_UBUNTU, STATIC_FILES,
};
use crate::plan::base::OsFamily;
use crate::plan::hex;

/// What decides a Miniconda cell's files but for its Dockerfile and installer table:
/// its variant (by address, held by [`Renderer::variants`] from the frame's first
/// cell on), its Python, its OS family and whether its Miniconda has the terms gate.
pub(super) type FrameKey = (usize, crate::plan::version::PyVersion, OsFamily, bool);

/// A Miniconda cell's identity message ([`input_hash`]) with the digests of its two
/// own files left to fill in. Every other file of such a cell is decided by the
/// settings and the [`FrameKey`] (see [`Renderer::files`]), so 10,000 cells need a few
/// hundred frames, and a cell's identity is its Dockerfile, its installer table and
/// one pass of SHA256 over the frame, with nothing rendered, sorted or freed per file.
#[derive(Debug)]
pub(super) struct Frame {
    msg: Vec<u8>,
    /// Where the Dockerfile's and `conda/installers.txt`'s digests go.
    dockerfile_at: usize,
    installers_at: usize,
}

impl Renderer<'_> {
    /// A cell's identity ([`input_hash`]) without writing its context: the files that
    /// decide it, none of the transport-only ones (the plan document, an extra CA
    /// bundle read from disk), so that outputs describing many builds (bake) stay
    /// cheap.
    pub fn identity(&self, c: &Cell, base_digests: &[&str]) -> String {
        if c.is_layer() {
            return input_hash(&self.files(c, false), c, base_digests);
        }
        let frame = self.frame(c);
        let (d, i) = (frame.dockerfile_at, frame.installers_at);
        if d == 0 || i <= d {
            // not the files a Miniconda context has: hash them as they are
            return input_hash(&self.files(c, false), c, base_digests);
        }
        // one buffer per thread, used again, not two new Strings per cell
        thread_local! {
            static TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let (dockerfile, installers) = TEXT.with_borrow_mut(|text| {
            text.clear();
            self.write_dockerfile(c, text, Rendering::Current);
            let dockerfile: [u8; 32] = Sha256::digest(&text).into();
            text.clear();
            write_installer_table(c, text);
            (dockerfile, <[u8; 32]>::from(Sha256::digest(&text)))
        });
        // the frame's files are in path order: the Dockerfile's digest comes first
        let mut h = Sha256::new();
        h.update(&frame.msg[..d]);
        h.update(dockerfile);
        h.update(&frame.msg[d + 32..i]);
        h.update(installers);
        h.update(&frame.msg[i + 32..]);
        identity_tail(&mut h, c, base_digests);
        hex(&h.finalize())
    }

    /// The identity frame of a Miniconda cell, made from the first cell that needs it
    /// (whose files also put its variant into [`Renderer::variants`]).
    fn frame(&self, c: &Cell) -> std::sync::Arc<Frame> {
        let key = (
            std::sync::Arc::as_ptr(&c.variant) as usize,
            c.python,
            c.base.os.family,
            c.miniconda.has_tos_gate(),
        );
        let lock = || {
            self.frames
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(f) = lock().get(&key) {
            return f.clone();
        }
        let ctx = self.files(c, false);
        let (mut dockerfile_at, mut installers_at) = (0, 0);
        let msg = identity_message(IDENTITY_SCHEME, &ctx, |path, at| match path {
            "Dockerfile" => dockerfile_at = at,
            "conda/installers.txt" => installers_at = at,
            _ => {}
        });
        let frame = std::sync::Arc::new(Frame {
            msg,
            dockerfile_at,
            installers_at,
        });
        lock().entry(key).or_insert(frame).clone()
    }
}

/// What a base resolves to when no engine has it and it cannot be pulled: the cell
/// is still built (and `docker build` says why the base is missing).
pub const UNRESOLVED: &str = "unresolved";

/// Files that decide how things are fetched, not what the image holds: the plan
/// document, the installer's mirrors (its SHA256 pins the bytes) and an extra CA
/// bundle (trusted during the build only). They are left out of a cell's identity, so
/// that a new mirror port or proxy certificate rebuilds nothing.
pub fn transport_only(path: &str) -> bool {
    path == "cell.json" || path == "conda/mirrors.txt" || path.ends_with("/extra-ca.pem")
}

/// The first bytes of every identity of the current scheme (version 3): each file
/// enters as its path, mode and SHA256, not its bytes, so that the files every cell
/// shares (most of a context's 27 KB) are hashed once per process rather than once per
/// cell. Scheme 3 hashes as scheme 2 did, over contexts that name no repository or tag
/// (see [`Rendering`]).
const IDENTITY_SCHEME: &[u8] = b"image-matrix identity 3\0";
/// The first bytes of an identity of scheme 2 (tool versions from 2026-11-29 to
/// 2026-12-07), whose contexts named the image's repository and tag.
const IDENTITY_SCHEME_2: &[u8] = b"image-matrix identity 2\0";

/// A cell's identity: SHA256 over everything that decides the image's content —
/// every context file that reaches the image (path, mode and the SHA256 of its bytes),
/// the base image's resolved digest and the installer's SHA256 (which stands in for the
/// installer's bytes). Tags and transport settings are not part of it.
///
/// A tag group's members share one identity, over every member's base digest and
/// installer: one platform's base moving rebuilds them all, so that the platforms
/// behind one tag never come from different nights.
pub fn input_hash(ctx: &Context, c: &Cell, base_digests: &[&str]) -> String {
    hash_of(IDENTITY_SCHEME, ctx, c, base_digests)
}

/// [`input_hash`] under the scheme whose first bytes are `scheme`.
fn hash_of(scheme: &[u8], ctx: &Context, c: &Cell, base_digests: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(identity_message(scheme, ctx, |_, _| {}));
    identity_tail(&mut h, c, base_digests);
    hex(&h.finalize())
}

/// The files' part of an identity, gathered to be hashed in one go (three small
/// updates a file cost more than the hashing itself); `at` hears where each file's
/// digest is written.
fn identity_message(scheme: &[u8], ctx: &Context, mut at: impl FnMut(&str, usize)) -> Vec<u8> {
    let mut msg = Vec::with_capacity(scheme.len() + ctx.files.len() * 72);
    msg.extend_from_slice(scheme);
    for f in ctx.files.iter().filter(|f| !transport_only(&f.path)) {
        msg.extend_from_slice(f.path.as_bytes());
        msg.extend_from_slice(&[0, u8::from(f.executable), 0]);
        at(&f.path, msg.len());
        msg.extend_from_slice(&file_digest(&f.bytes));
    }
    msg
}

/// The identity images built before scheme 2 carry (tool versions up to 2026-11-29):
/// the inputs of scheme 2 (a context rendered as [`Rendering::Scheme2`]), each file's
/// bytes hashed in line. `matrix build` and `plan --diff` accept it for an image or
/// manifest that has it, so that a new tool version moves no tag whose inputs did not
/// change.
pub fn legacy_input_hash(ctx: &Context, c: &Cell, base_digests: &[&str]) -> String {
    let mut h = Sha256::new();
    for f in ctx.files.iter().filter(|f| !transport_only(&f.path)) {
        h.update(f.path.as_bytes());
        h.update([0, u8::from(f.executable), 0]);
        h.update((f.bytes.len() as u64).to_le_bytes());
        h.update(&f.bytes);
    }
    identity_tail(&mut h, c, base_digests);
    hex(&h.finalize())
}

/// A cell's identity under the current scheme and the earlier ones: `matrix build`
/// labels with the current one and takes any of them as current, so that upgrading the
/// tool rebuilds nothing whose inputs did not change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub hash: String,
    /// Scheme 2's, over the context as it rendered it (with the names).
    pub scheme2: String,
    /// Scheme 1's ([`legacy_input_hash`]), over the same context as scheme 2's.
    pub legacy: String,
}

/// What an identity covers besides the cell's files and installers.
#[derive(Clone, Copy)]
pub enum Over<'a> {
    /// The resolved digests of its bases (a tag group's members have one each).
    Bases(&'a [&'a str]),
    /// A framework image's parent's identity (which covers the bases).
    Parent(&'a Identity),
}

impl Identity {
    /// Of a cell whose context `ctx` is rendered (by `r`).
    pub fn of(r: &Renderer, ctx: &Context, c: &Cell, over: Over) -> Self {
        let named = r.files_as(c, false, Rendering::Scheme2);
        match over {
            Over::Bases(d) => Identity {
                hash: input_hash(ctx, c, d),
                scheme2: hash_of(IDENTITY_SCHEME_2, &named, c, d),
                legacy: legacy_input_hash(&named, c, d),
            },
            Over::Parent(p) => Identity {
                hash: input_hash(ctx, c, &[&p.hash]),
                scheme2: hash_of(IDENTITY_SCHEME_2, &named, c, &[&p.scheme2]),
                legacy: legacy_input_hash(&named, c, &[&p.legacy]),
            },
        }
    }

    /// Whether a recorded hash (an image's label, a manifest's field) names it.
    pub fn is(&self, recorded: &str) -> bool {
        recorded == self.hash || self.earlier(recorded).is_some()
    }

    /// The identity of an earlier scheme that `recorded` is, if it is one.
    pub fn earlier(&self, recorded: &str) -> Option<&str> {
        [&self.scheme2, &self.legacy]
            .into_iter()
            .find(|h| h.as_str() == recorded)
            .map(String::as_str)
    }
}

/// What follows the files in either scheme: the bases and installers.
fn identity_tail(h: &mut Sha256, c: &Cell, base_digests: &[&str]) {
    h.update(c.base.reference.as_bytes());
    for d in base_digests {
        h.update([0]);
        h.update(d.as_bytes());
    }
    for (_, i) in c.context_installers() {
        h.update([0]);
        h.update(i.sha256.as_bytes());
    }
}

/// The SHA256 of a file's bytes. The texts compiled into the binary are hashed once per
/// process and found by address and length, those a renderer shares carry theirs, and
/// a cell's own are hashed as they come.
fn file_digest(bytes: &Bytes) -> [u8; 32] {
    static COMPILED_IN: std::sync::OnceLock<Vec<(&'static [u8], [u8; 32])>> =
        std::sync::OnceLock::new();
    let known = COMPILED_IN.get_or_init(|| {
        STATIC_FILES
            .iter()
            .map(|(_, text, _)| *text)
            .chain([LOCALE_DEBIAN, LOCALE_UBUNTU, APT_MIRROR, framework::INSTALL])
            .map(|t| (t.as_bytes(), Sha256::digest(t.as_bytes()).into()))
            .collect()
    });
    match bytes {
        Bytes::Shared(s) => s.digest,
        Bytes::Static(b) => match known.iter().find(|(k, _)| std::ptr::eq(*k, *b)) {
            Some((_, d)) => *d,
            None => Sha256::digest(b).into(),
        },
        Bytes::Owned(v) => Sha256::digest(v).into(),
    }
}

/// Hashes of the context's parts: the Dockerfile and each top-level directory.
pub fn part_hashes(ctx: &Context) -> std::collections::BTreeMap<String, String> {
    let mut parts: std::collections::BTreeMap<String, Sha256> = std::collections::BTreeMap::new();
    for f in ctx.files.iter().filter(|f| !transport_only(&f.path)) {
        let part = f.path.split('/').next().unwrap_or("").to_string();
        let h = parts.entry(part).or_default();
        h.update(f.path.as_bytes());
        h.update([0, u8::from(f.executable)]);
        h.update(&f.bytes);
    }
    parts
        .into_iter()
        .map(|(k, h)| (k, hex(&h.finalize())))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::tests::group_plan;
    use super::super::{render, File};
    use super::*;

    /// Scheme 2 hashes each file's SHA256 (those compiled in are looked up, by address,
    /// from a table made once): the same bytes owned rather than borrowed give the same
    /// identity, one changed byte of a compiled-in file another, and the legacy hash
    /// keeps the byte layout earlier versions labelled images with.
    #[test]
    fn identities_of_both_schemes_cover_every_byte() {
        let p = group_plan();
        let c = &p.cells[0];
        let ctx = render(&p.settings, c);
        let digests = ["sha256:amd", "sha256:arm"];
        let owned = Context {
            files: ctx
                .files
                .iter()
                .map(|f| File {
                    bytes: Bytes::Owned(f.bytes.to_vec()),
                    ..f.clone()
                })
                .collect(),
            local_installers: Vec::new(),
        };
        assert!(ctx
            .files
            .iter()
            .any(|f| matches!(f.bytes, Bytes::Static(_))));
        assert!(ctx
            .files
            .iter()
            .any(|f| matches!(f.bytes, Bytes::Shared(_))));
        assert_eq!(
            input_hash(&ctx, c, &digests),
            input_hash(&owned, c, &digests)
        );
        let mut edited = owned.clone();
        let boot = edited
            .files
            .iter_mut()
            .find(|f| f.path == "image/init/boot/boot.sh")
            .unwrap();
        boot.bytes = Bytes::Owned([&*boot.bytes, b"\n"].concat());
        assert_ne!(
            input_hash(&ctx, c, &digests),
            input_hash(&edited, c, &digests)
        );
        assert_ne!(
            legacy_input_hash(&ctx, c, &digests),
            legacy_input_hash(&edited, c, &digests)
        );
        // the legacy layout, written out: path, 0, mode, 0, length, bytes per file,
        // then the base, its digests and the installers
        let mut bytes = Vec::new();
        for f in ctx.files.iter().filter(|f| !transport_only(&f.path)) {
            bytes.extend(f.path.as_bytes());
            bytes.extend([0, u8::from(f.executable), 0]);
            bytes.extend((f.bytes.len() as u64).to_le_bytes());
            bytes.extend(f.bytes.iter());
        }
        bytes.extend(b"ubuntu:22.04\0sha256:amd\0sha256:arm");
        for (_, i) in c.context_installers() {
            bytes.push(0);
            bytes.extend(i.sha256.as_bytes());
        }
        assert_eq!(
            legacy_input_hash(&ctx, c, &digests),
            hex(&Sha256::digest(&bytes))
        );
        let id = Identity::of(&Renderer::new(&p.settings), &ctx, c, Over::Bases(&digests));
        assert_ne!(id.hash, id.legacy);
        assert_ne!(id.hash, id.scheme2);
        assert!(id.is(&id.hash) && id.is(&id.scheme2) && id.is(&id.legacy));
        assert!(!id.is("sha256:other"));
        assert_eq!(id.earlier(&id.hash), None);
    }

    fn plan_of(text: &str) -> crate::plan::Plan {
        crate::plan::plan_text(
            text,
            "m.yaml",
            Path::new("."),
            &crate::plan::PlanOptions {
                date: "20260101".into(),
            },
        )
        .unwrap()
    }

    /// Two cells of their own with a fixed root password, and a tag group.
    const SINGLE: &str = "version: 1\nimage: {repository: registry.example/ml/miniconda}\nbases: [ubuntu:22.04]\npython: [\"3.11\", \"3.12\"]\nruntime: {root_password: {fixed: pw}}\n";
    const GROUP: &str = "version: 1\nimage: {repository: registry.example/ml/miniconda}\nbases: [ubuntu:22.04]\npython: [\"3.11\"]\nplatforms: [linux/amd64, linux/arm64]\n";

    /// Images and manifests of schemes 1 and 2 keep being recognised: these are the
    /// identities the tool of scheme 2 (at f408be4) computed for these cells, as its
    /// `input_hash` and `legacy_input_hash`.
    #[test]
    fn identities_of_earlier_schemes_are_those_earlier_versions_computed() {
        let golden = [
            (
                "py3.11-ubuntu22.04-amd64",
                "96e9e9c0258110467a1e1ae118198ed959c231cda1fc36c28da8818c38af916b",
                "3f73e03a837c9309ced4370b43dce4addffe789eda62c4c2d8c07458832dfde1",
            ),
            (
                "py3.12-ubuntu22.04-amd64",
                "3ebddd7252e953977c897ebbdfc9cd3cf23e33e219c0e4a5008f121ab1657811",
                "2478fd5589b12376e1fb3f50be8277875af64205df08c16cfbeab0af7e611c19",
            ),
            (
                "py3.11-ubuntu22.04-amd64",
                "e2fbdb778346a60b7386d398b4b33ea5ca620abeaa34b1af0a402fd735e368bf",
                "63f33b39cb343ac5891344b6ff0b6a3db5e8441f06410490c558720db8ccadf2",
            ),
            (
                "py3.11-ubuntu22.04-arm64",
                "e2fbdb778346a60b7386d398b4b33ea5ca620abeaa34b1af0a402fd735e368bf",
                "63f33b39cb343ac5891344b6ff0b6a3db5e8441f06410490c558720db8ccadf2",
            ),
        ];
        let (single, group) = (plan_of(SINGLE), plan_of(GROUP));
        let cells = single.cells.iter().map(|c| (&single, c));
        let cells = cells.chain(group.cells.iter().map(|c| (&group, c)));
        let digests = ["sha256:amd", "sha256:arm"];
        let mut n = 0;
        for ((p, c), (id, scheme2, legacy)) in cells.zip(golden) {
            assert_eq!(c.id, id);
            let r = Renderer::new(&p.settings);
            let identity = Identity::of(&r, &r.render(c), c, Over::Bases(&digests));
            assert_eq!(identity.scheme2, scheme2, "{id}");
            assert_eq!(identity.legacy, legacy, "{id}");
            assert_ne!(identity.hash, scheme2, "{id}");
            n += 1;
        }
        assert_eq!(n, 4);
    }

    /// The names an image is published under are not part of its identity: another
    /// repository, another tag template (of cells of their own and of a tag group)
    /// leave every identity as it was, and the context names neither. Scheme 2's
    /// identities held them.
    #[test]
    fn names_are_not_part_of_the_identity() {
        let renamed = |text: &str| {
            text.replace(
                "image: {repository: registry.example/ml/miniconda}",
                "image: {repository: mirror.example:5000/team/images, tag: \"t{python}x{base}\"}",
            )
        };
        let digests = ["sha256:amd", "sha256:arm"];
        for text in [SINGLE, GROUP] {
            let (before, after) = (plan_of(text), plan_of(&renamed(text)));
            let (r, r2) = (
                Renderer::new(&before.settings),
                Renderer::new(&after.settings),
            );
            for (c, c2) in before.cells.iter().zip(&after.cells) {
                assert_eq!(c.id, c2.id);
                assert_ne!(c.tags, c2.tags);
                let (a, b) = (r.render(c), r2.render(c2));
                let id = Identity::of(&r, &a, c, Over::Bases(&digests));
                let id2 = Identity::of(&r2, &b, c2, Over::Bases(&digests));
                assert_eq!(id.hash, id2.hash, "{}", c.id);
                assert_eq!(r2.identity(c2, &digests), id2.hash, "{}", c.id);
                assert_ne!(id.scheme2, id2.scheme2, "{}", c.id);
                assert_eq!(part_hashes(&a), part_hashes(&b), "{}", c.id);
                for f in b.files.iter().filter(|f| !transport_only(&f.path)) {
                    let text = String::from_utf8_lossy(&f.bytes);
                    let tag = crate::reference::split(&c2.tags[0]).1.unwrap();
                    for name in ["mirror.example", "team/images", tag] {
                        assert!(!text.contains(name), "{} names {name}", f.path);
                    }
                }
            }
        }
    }

    /// A Miniconda cell's identity comes from a frame made for the first cell with its
    /// variant, Python, OS family and terms gate: it must be the identity of its own
    /// files. Debian and Ubuntu bases, Miniconda with and without the gate, one Python
    /// at two releases, two variants and a tag group share frames here wherever they
    /// may.
    #[test]
    fn identities_from_frames_are_those_of_the_files() {
        let text = "version: 1
image: {tag: \"c{miniconda}-py{python}-{base}-{variant}\"}
bases: [ubuntu:22.04, debian:bookworm]
platforms: [linux/amd64, linux/arm64]
python: [\"3.11\", \"3.12\"]
runtime: {root_password: {fixed: pw}}
variants:
  - {name: plain}
  - {name: extra, pip: [rich], apt: [vim]}
include:
  - {base: \"debian:bookworm\", python: \"3.12\", miniconda: \"25.1.1-0\", variant: plain}
  - {base: \"ubuntu:22.04\", python: \"3.12\", miniconda: \"25.1.1-0\", variant: plain, platform: linux/amd64}
";
        let p = crate::plan::plan_text(
            text,
            "m.yaml",
            Path::new("."),
            &crate::plan::PlanOptions {
                date: "20260101".into(),
            },
        )
        .unwrap();
        let r = Renderer::new(&p.settings);
        let gates: std::collections::BTreeSet<bool> =
            p.cells.iter().map(|c| c.miniconda.has_tos_gate()).collect();
        assert_eq!(gates.len(), 2, "both sides of the terms gate");
        let digests = ["sha256:one", "sha256:two"];
        // twice: the second round takes every frame from the memo
        for _ in 0..2 {
            for c in &p.cells {
                let files = r.files(c, false);
                assert_eq!(
                    r.identity(c, &digests),
                    input_hash(&files, c, &digests),
                    "{}",
                    c.id
                );
            }
        }
        assert!(r.frames.lock().unwrap().len() < p.cells.len());
    }
}
