//! Rendering: a planned cell → a complete, self-contained `docker build` context.
//!
//! The templates (`dockerfiles/`) and the files baked into the image (`init/`) are
//! compiled into the binary, so a context renders the same wherever the tool runs.
//! Only validated values reach the context: the Dockerfile gets the base reference
//! and label values; everything else goes into `*.env` files whose values are
//! single-quoted and read by build scripts that quote every expansion.
//!
//! Contexts name no repository or tag (the labels that do come with the build, see
//! [`build_labels`]), and are deterministic: the same cell renders byte-identical
//! files, which is what makes a cell's identity ([`identity`]: its input hash, and so
//! incremental nightlies) work.

use std::borrow::Cow;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::settings::{PasswordPolicy, Settings};
use crate::labels;
use crate::plan::base::OsFamily;
use crate::plan::fast::FastMap;
use crate::plan::{stack, Cell, Variant};

pub mod archive;
pub mod cache;
mod custom;
pub mod examples;
mod framework;
pub mod identity;

use identity::{Frame, FrameKey};

/// How a context is rendered: as it is built, naming no repository or tag, or as
/// identity schemes 1 and 2 rendered it, with the names the image is published under
/// (its title and tag group as labels in the Dockerfile, a framework image's parent
/// tag as the default of `PARENT`, the repository in the root password's salt). The
/// second is only hashed, to recognise the identities images and manifests of those
/// schemes carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rendering {
    Current,
    Scheme2,
}

const DOCKERFILE: &str = include_str!("../dockerfiles/Dockerfile.in");

/// (path in the context, template text, executable). Statics, not constants: each
/// text has one address, by which [`identity::file_digest`] finds its hash.
static STATIC_FILES: &[(&str, &str, bool)] = &[
    (
        "system/setup-system.sh",
        include_str!("../init/build/setup-system.sh"),
        true,
    ),
    (
        "conda/install-conda.sh",
        include_str!("../init/build/install-conda.sh"),
        true,
    ),
    (
        "variant/install-variant.sh",
        include_str!("../init/build/install-variant.sh"),
        true,
    ),
    (
        "image/finalize.sh",
        include_str!("../init/build/finalize.sh"),
        true,
    ),
    (
        "image/init/boot/boot.sh",
        include_str!("../init/boot/boot.sh"),
        true,
    ),
    (
        "image/init/bin/run-sshd",
        include_str!("../init/bin/run-sshd"),
        true,
    ),
    (
        "image/init/bin/run-jupyter",
        include_str!("../init/bin/run-jupyter"),
        true,
    ),
    (
        "image/init/bin/run-tensorboard",
        include_str!("../init/bin/run-tensorboard"),
        true,
    ),
    (
        "image/init/bin/healthcheck",
        include_str!("../init/bin/healthcheck"),
        true,
    ),
    (
        "image/init/bin/motd",
        include_str!("../init/bin/motd"),
        true,
    ),
    (
        "image/init/bin/shutdown",
        include_str!("../init/bin/shutdown"),
        true,
    ),
    (
        "image/init/etc/profile.sh",
        include_str!("../init/etc/profile.sh"),
        false,
    ),
    (
        "image/init/supervisor/image-matrix.conf",
        include_str!("../init/supervisor/image-matrix.conf"),
        false,
    ),
];
static LOCALE_DEBIAN: &str = include_str!("../init/build/locale-debian.sh");
static APT_MIRROR: &str = include_str!("../init/build/apt-mirror.sh");
static LOCALE_UBUNTU: &str = include_str!("../init/build/locale-ubuntu.sh");

#[derive(Debug, Clone)]
pub struct File {
    /// Compiled in for all but the extra CA bundles' paths.
    pub path: Cow<'static, str>,
    pub bytes: Bytes,
    pub executable: bool,
}

/// A file's bytes, and where they come from: most of a context's are compiled into
/// the binary or made once per matrix, and each of those is hashed once, not once per
/// cell ([`identity::file_digest`]).
#[derive(Debug, Clone)]
pub enum Bytes {
    /// Compiled into the binary (the scripts, the configuration files).
    Static(&'static [u8]),
    /// Made once by a [`Renderer`] and shared by the cells that have it (the files of
    /// the settings, of a Python, of a variant), with its SHA256.
    Shared(std::sync::Arc<Shared>),
    /// The cell's own.
    Owned(Vec<u8>),
}

/// Bytes every cell of a matrix shares, and their SHA256.
#[derive(Debug)]
pub struct Shared {
    bytes: Vec<u8>,
    digest: [u8; 32],
}

impl Shared {
    fn new(text: String) -> std::sync::Arc<Self> {
        let bytes = text.into_bytes();
        std::sync::Arc::new(Shared {
            digest: Sha256::digest(&bytes).into(),
            bytes,
        })
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Static(b) => b,
            Bytes::Shared(s) => &s.bytes,
            Bytes::Owned(v) => v,
        }
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<&'static str> for Bytes {
    fn from(t: &'static str) -> Self {
        Bytes::Static(t.as_bytes())
    }
}

impl From<String> for Bytes {
    fn from(t: String) -> Self {
        Bytes::Owned(t.into_bytes())
    }
}

impl From<Cow<'static, str>> for Bytes {
    fn from(t: Cow<'static, str>) -> Self {
        match t {
            Cow::Borrowed(t) => t.into(),
            Cow::Owned(t) => t.into(),
        }
    }
}

impl From<&std::sync::Arc<Shared>> for Bytes {
    fn from(s: &std::sync::Arc<Shared>) -> Self {
        Bytes::Shared(s.clone())
    }
}

#[derive(Debug, Clone)]
pub struct Context {
    pub files: Vec<File>,
    /// Pre-downloaded installers to place at `conda/local/<file>` (linked or copied).
    pub local_installers: Vec<PathBuf>,
}

fn env_file(pairs: &[(&str, String)]) -> String {
    let mut s =
        String::from("# Rendered by image-matrix; values are validated and single-quoted.\n");
    for (k, v) in pairs {
        s.push_str(&format!("{k}={}\n", crate::shell::quoted(v)));
    }
    s
}

fn lines(items: &[String]) -> String {
    items.iter().map(|i| format!("{i}\n")).collect()
}

fn language_of(locale: &str) -> String {
    let base = locale.split('.').next().unwrap_or(locale);
    let lang = base.split('_').next().unwrap_or(base);
    format!("{base}:{lang}")
}

/// The crypt(3) SHA-512 hash of a fixed password. The salt is derived from the
/// password so that renders stay deterministic (and not from the repository, which is
/// not part of the image's identity; scheme 2 salted with it: `repository` is that
/// scheme's, see [`Rendering::Scheme2`]).
fn password_hash(password: &str, repository: Option<&str>) -> String {
    const SALT_CHARS: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let seed = match repository {
        Some(r) => format!("image-matrix salt\0{r}\0{password}"),
        None => format!("image-matrix salt\0{password}"),
    };
    let digest = Sha256::digest(seed.as_bytes());
    let salt: String = digest
        .iter()
        .take(16)
        .map(|b| SALT_CHARS[usize::from(*b) % SALT_CHARS.len()] as char)
        .collect();
    let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT).unwrap_or_default();
    let hash = sha_crypt::sha512_crypt_b64(password.as_bytes(), salt.as_bytes(), &params)
        .unwrap_or_default();
    format!("$6${salt}${hash}")
}

/// The files of a context, as they are added.
struct Files(Vec<File>);

impl Default for Files {
    /// Room for a Miniconda context's files (about 30).
    fn default() -> Self {
        Files(Vec::with_capacity(40))
    }
}

impl Files {
    fn add(
        &mut self,
        path: impl Into<Cow<'static, str>>,
        bytes: impl Into<Bytes>,
        executable: bool,
    ) {
        self.0.push(File {
            path: path.into(),
            bytes: bytes.into(),
            executable,
        });
    }
}

/// Render one cell's build context (for many cells, [`Renderer`] does the shared work
/// once).
pub fn render(s: &Settings, c: &Cell) -> Context {
    Renderer::new(s).render(c)
}

/// Renders the contexts of one matrix's cells. The files that depend on the settings
/// alone (or on them and the OS family, or on the Miniconda release's terms gate) are
/// made once, here, not once per cell: a fixed root password's SHA-512 crypt hash
/// alone takes about 2 ms, which made 10,000 cells 20 s.
pub struct Renderer<'s> {
    s: &'s Settings,
    /// `system/system.env` for a Debian and an Ubuntu base.
    system_env: [std::sync::Arc<Shared>; 2],
    system_apt: std::sync::Arc<Shared>,
    channels: std::sync::Arc<Shared>,
    overrides: std::sync::Arc<Shared>,
    /// `conda/conda.env` and `image/init/etc/defaults.env` without and with the
    /// Anaconda terms gate.
    conda_env: [std::sync::Arc<Shared>; 2],
    defaults_env: [std::sync::Arc<Shared>; 2],
    password_hash: Option<std::sync::Arc<Shared>>,
    /// The same as scheme 2 salted it (with the repository), made when first asked for.
    password_hash_scheme2: std::sync::OnceLock<Option<std::sync::Arc<Shared>>>,
    language: String,
    /// The extra CA bundle's text, read once (transport only: not part of identity).
    extra_ca: Option<std::sync::Arc<Shared>>,
    /// `conda/pip-packages.txt` by Python version, as cells ask for it.
    common_pip: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Shared>>>,
    /// A variant's files by variant and Python, as cells ask for them (10,000 cells
    /// may have 500 pairs). Keyed by the variant's address: each entry holds the
    /// variant, so that no other can take its address while the renderer lives.
    variants: std::sync::Mutex<VariantMemo>,
    /// Identity frames ([`Frame`]) by what decides them.
    frames: std::sync::Mutex<FastMap<FrameKey, std::sync::Arc<Frame>>>,
}

type VariantMemo =
    FastMap<(usize, crate::plan::version::PyVersion), (std::sync::Arc<Variant>, VariantFiles)>;

impl<'s> Renderer<'s> {
    pub fn new(s: &'s Settings) -> Self {
        let gated = |gate: bool| {
            (
                Shared::new(conda_env(s, gate)),
                Shared::new(defaults_env(s, tos_choice(s, gate), password_policy(s))),
            )
        };
        let ((c0, d0), (c1, d1)) = (gated(false), gated(true));
        Renderer {
            s,
            system_env: [
                Shared::new(system_env(s, OsFamily::Debian)),
                Shared::new(system_env(s, OsFamily::Ubuntu)),
            ],
            system_apt: Shared::new(system_apt(s)),
            channels: Shared::new(lines(&s.sources.conda_channels)),
            overrides: Shared::new(overrides_json(&s.runtime.locale)),
            conda_env: [c0, c1],
            defaults_env: [d0, d1],
            password_hash: match &s.runtime.root_password {
                PasswordPolicy::Fixed { password } => {
                    Some(Shared::new(format!("{}\n", password_hash(password, None))))
                }
                _ => None,
            },
            language: language_of(&s.runtime.locale),
            extra_ca: s
                .sources
                .ca_bundle
                .as_ref()
                .and_then(|ca| fs::read_to_string(ca).ok())
                .map(Shared::new),
            common_pip: Default::default(),
            variants: Default::default(),
            frames: Default::default(),
            password_hash_scheme2: Default::default(),
        }
    }

    /// The package index the contexts' pip uses.
    pub fn package_index(&self) -> &str {
        self.s.sources.package_index()
    }

    pub fn render(&self, c: &Cell) -> Context {
        self.files(c, true)
    }

    /// The context's files; with `transport`, also those that only decide how things
    /// are fetched ([`identity::transport_only`]). A Miniconda cell's files other than the
    /// Dockerfile and `conda/installers.txt` must depend on the settings and the cell's
    /// [`FrameKey`] alone: [`Renderer::identity`] takes them from a frame made for
    /// another cell (`identities_from_frames_are_those_of_the_files` checks it).
    fn files(&self, c: &Cell, transport: bool) -> Context {
        self.files_as(c, transport, Rendering::Current)
    }

    /// [`Renderer::files`] as `rendering` has them.
    fn files_as(&self, c: &Cell, transport: bool, rendering: Rendering) -> Context {
        let mut files = Files::default();
        let extra_ca = self.extra_ca.as_ref().filter(|_| transport);
        if let Some(f) = &c.framework {
            for (path, text, x) in framework::files(c, f, extra_ca, rendering) {
                files.add(path, text, x);
            }
            return finish(files, c, Vec::new(), transport);
        }
        if let Some(l) = &c.custom {
            for (path, text, x) in custom::files(c, l, extra_ca) {
                files.add(path, text, x);
            }
            return finish(files, c, Vec::new(), transport);
        }
        files.add("Dockerfile", self.dockerfile(c, rendering), false);
        for (path, text, x) in STATIC_FILES {
            files.add(*path, *text, *x);
        }
        self.system_files(&mut files, c);
        self.conda_files(&mut files, c, transport);
        let [pip, unpinned, apt] = self.variant_files(c);
        files.add("variant/pip-packages.txt", &pip, false);
        files.add("variant/unpinned.txt", &unpinned, false);
        files.add("image/apt-packages.txt", &apt, false);
        self.image_files(&mut files, c, rendering);
        if let Some(pem) = extra_ca {
            for stage in ["system", "conda", "variant"] {
                files.add(format!("{stage}/extra-ca.pem"), pem, false);
            }
        }
        let installers = c
            .context_installers()
            .filter_map(|(_, i)| i.local.clone())
            .collect();
        finish(files, c, installers, transport)
    }
}

/// The context with its `cell.json`, files in path order.
fn finish(mut files: Files, c: &Cell, local_installers: Vec<PathBuf>, transport: bool) -> Context {
    if transport {
        let cell_json = crate::plan::output::cell_doc(c);
        files.add(
            "cell.json",
            format!(
                "{}\n",
                serde_json::to_string_pretty(&cell_json).unwrap_or_default()
            ),
            false,
        );
    }
    let mut files = files.0;
    // paths are unique
    files.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    Context {
        files,
        local_installers,
    }
}

/// The keys the Dockerfile template fills in, as `{{NAME}}` ([`Renderer::dockerfile`]
/// has a value for each).
#[derive(Clone, Copy)]
enum Key {
    Context,
    Base,
    OsSlug,
    Locale,
    Language,
    Timezone,
    Title,
    Python,
    Miniconda,
    Cuda,
    Cudnn,
    Variant,
    CellLabels,
}

const DOCKERFILE_KEYS: [(&str, Key); 13] = [
    ("CONTEXT", Key::Context),
    ("BASE", Key::Base),
    ("OS_SLUG", Key::OsSlug),
    ("LOCALE", Key::Locale),
    ("LANGUAGE", Key::Language),
    ("TIMEZONE", Key::Timezone),
    ("SCHEME_2_TITLE", Key::Title),
    ("PYTHON", Key::Python),
    ("MINICONDA", Key::Miniconda),
    ("CUDA", Key::Cuda),
    ("CUDNN", Key::Cudnn),
    ("VARIANT", Key::Variant),
    ("CELL_LABELS", Key::CellLabels),
];

/// A piece of the Dockerfile template: text as it stands, or the value of a key.
enum Piece {
    Text(&'static str),
    Key(Key),
}

/// The template cut at its `{{KEY}}`s, once per process. A `{{` that opens no known
/// key stays text.
fn dockerfile_pieces() -> &'static [Piece] {
    static PIECES: std::sync::OnceLock<Vec<Piece>> = std::sync::OnceLock::new();
    PIECES.get_or_init(|| {
        let mut out = Vec::new();
        let mut rest = DOCKERFILE;
        while let Some(open) = rest.find("{{") {
            let after = &rest[open + 2..];
            let key = after.find("}}").and_then(|close| {
                DOCKERFILE_KEYS
                    .iter()
                    .find(|(name, _)| *name == &after[..close])
                    .map(|(_, k)| (*k, close))
            });
            match key {
                Some((k, close)) => {
                    out.push(Piece::Text(&rest[..open]));
                    out.push(Piece::Key(k));
                    rest = &after[close + 2..];
                }
                None => {
                    out.push(Piece::Text(&rest[..open + 2]));
                    rest = after;
                }
            }
        }
        out.push(Piece::Text(rest));
        out
    })
}

impl Renderer<'_> {
    /// The Dockerfile: the template with the cell's validated values (which hold no
    /// `{{`, so filling it in one pass is the same as key by key), each written
    /// straight into it.
    fn dockerfile(&self, c: &Cell, rendering: Rendering) -> String {
        let mut out = String::with_capacity(DOCKERFILE.len() + 1024);
        self.write_dockerfile(c, &mut out, rendering);
        out
    }

    /// The Dockerfile names no repository or tag: those labels come with the build
    /// ([`build_labels`]). As scheme 2 rendered it, it did.
    fn write_dockerfile(&self, c: &Cell, out: &mut String, rendering: Rendering) {
        use std::fmt::Write as _;
        let s = self.s;
        let cuda = c.base.cuda.as_ref();
        for piece in dockerfile_pieces() {
            let k = match piece {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Key(k) => *k,
            };
            // writing to a String cannot fail
            match k {
                Key::Base => out.push_str(&c.base.reference),
                Key::Locale => out.push_str(&s.runtime.locale),
                Key::Language => out.push_str(&self.language),
                Key::Timezone => out.push_str(&s.runtime.timezone),
                // the coordinates hold both as they print
                Key::Python => out.push_str(&c.coord.python),
                Key::Miniconda => out.push_str(&c.coord.miniconda),
                Key::Cudnn => {
                    out.push_str(cuda.and_then(|x| x.cudnn.as_deref()).unwrap_or_default());
                }
                Key::Variant => out.push_str(&c.variant.name),
                Key::Context => match &c.group {
                    Some(g) if rendering == Rendering::Scheme2 => {
                        let _ = write!(out, "tag group {} ({})", g.name, platforms(c));
                    }
                    Some(g) => {
                        out.push_str("the tag group of cells ");
                        for (i, m) in g.members.iter().enumerate() {
                            if i > 0 {
                                out.push_str(", ");
                            }
                            out.push_str(&m.id);
                        }
                    }
                    None => {
                        out.push_str("cell ");
                        out.push_str(&c.id);
                    }
                },
                Key::OsSlug => {
                    let _ = write!(out, "{}", c.base.os);
                }
                Key::Title => {
                    if rendering == Rendering::Scheme2 {
                        let _ = write!(
                            out,
                            "{}=\"{}\" \\\n      ",
                            labels::TITLE,
                            title(&s.repository, c)
                        );
                    }
                }
                Key::Cuda => {
                    if let Some(x) = cuda {
                        let _ = write!(out, "{}", x.version);
                    }
                }
                Key::CellLabels => {
                    let _ = write_cell_labels(out, c, rendering);
                }
            }
        }
    }
}

fn platforms(c: &Cell) -> String {
    c.group.as_ref().map_or_else(
        || c.platform().to_string(),
        |g| {
            g.members
                .iter()
                .map(|m| m.platform.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        },
    )
}

/// Labels that name one cell and its installer, each after a line break. A tag
/// group's members share one context, so theirs come from `matrix build` (`--label`,
/// see [`build_labels`]); scheme 2 named the group here.
fn write_cell_labels(out: &mut String, c: &Cell, rendering: Rendering) -> std::fmt::Result {
    use std::fmt::Write as _;
    let group;
    let pairs: &[(&str, &str)] = match &c.group {
        Some(g) if rendering == Rendering::Scheme2 => {
            group = [(labels::GROUP, g.name.as_str())];
            &group
        }
        Some(_) => &[],
        None => &cell_labels(c),
    };
    for (k, v) in pairs {
        write!(out, " \\\n      {k}=\"{v}\"")?;
    }
    Ok(())
}

/// The image's title: its repository and its tag (a tag group's shared one) or, for a
/// cell of its own, its id.
fn title(repository: &str, c: &Cell) -> String {
    let name = c.group.as_ref().map_or(c.id.as_str(), |g| g.name.as_str());
    format!("{repository} {name}")
}

/// The labels naming the cell and its installer.
fn cell_labels(c: &Cell) -> [(&'static str, &str); 3] {
    [
        (labels::CELL, c.id.as_str()),
        (labels::INSTALLER, c.installer.file.as_str()),
        (labels::INSTALLER_SHA256, c.installer.sha256.as_str()),
    ]
}

/// The labels `matrix build` passes with `docker build --label`: those naming the cell
/// and its installer (a tag group's shared Dockerfile cannot hold them) and those naming
/// where the image is published, its title and its tag group: they are not part of its
/// identity, so a new repository or tag template retags, and rebuilds nothing.
pub fn build_labels<'c>(repository: &str, c: &'c Cell) -> Vec<(&'static str, Cow<'c, str>)> {
    let mut out: Vec<(&'static str, Cow<'c, str>)> = cell_labels(c)
        .into_iter()
        .map(|(k, v)| (k, Cow::Borrowed(v)))
        .collect();
    out.push((labels::TITLE, Cow::Owned(title(repository, c))));
    if let Some(g) = &c.group {
        out.push((labels::GROUP, Cow::Borrowed(g.name.as_str())));
    }
    out
}

/// Stage 1, the OS layer: packages, locale, timezone.
fn system_env(s: &Settings, family: OsFamily) -> String {
    let rt = &s.runtime;
    env_file(&[
        ("OS_FAMILY", format!("{family:?}").to_lowercase()),
        ("LOCALE", rt.locale.clone()),
        ("LANGUAGE", language_of(&rt.locale)),
        ("TIMEZONE", rt.timezone.clone()),
        (
            "APT_MIRROR",
            s.sources.apt_mirror.clone().unwrap_or_default(),
        ),
    ])
}

fn system_apt(s: &Settings) -> String {
    let required = crate::config::settings::REQUIRED_APT;
    let mut apt: Vec<String> = required.iter().map(|p| (*p).to_string()).collect();
    apt.extend(
        s.apt
            .iter()
            .filter(|p| !required.contains(&p.as_str()))
            .cloned(),
    );
    lines(&apt)
}

/// JupyterLab's settings overrides: the UI language from the locale, a dark terminal.
fn overrides_json(locale: &str) -> String {
    let lang = locale.split('.').next().unwrap_or("zh_CN");
    let overrides = serde_json::json!({
        "@jupyterlab/translation-extension:plugin": { "locale": lang },
        "@jupyterlab/terminal-extension:plugin": { "theme": "dark" },
    });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&overrides).unwrap_or_default()
    )
}

fn conda_env(s: &Settings, gate: bool) -> String {
    let tos = if gate { "1" } else { "0" };
    env_file(&[
        ("PIP_INDEX", s.sources.pip_index.clone().unwrap_or_default()),
        ("TOS_GATE", tos.into()),
        ("CONDA_TOS", tos_choice(s, gate).into()),
    ])
}

fn password_policy(s: &Settings) -> &'static str {
    match &s.runtime.root_password {
        PasswordPolicy::Random => "random",
        PasswordPolicy::Disabled => "disabled",
        PasswordPolicy::Fixed { .. } => "fixed",
    }
}

/// Stage 3's runtime defaults (ports, paths, password policy).
fn defaults_env(s: &Settings, tos: &str, policy: &str) -> String {
    let rt = &s.runtime;
    env_file(&[
        ("DEFAULT_SSH_PORT", rt.ssh_port.to_string()),
        ("DEFAULT_JUPYTER_PORT", rt.jupyter_port.to_string()),
        ("DEFAULT_TENSORBOARD_PORT", rt.tensorboard_port.to_string()),
        ("DEFAULT_TENSORBOARD_BIND", rt.tensorboard_bind.clone()),
        ("JUPYTER_BASE_URL", rt.jupyter_base_url.clone()),
        ("TENSORBOARD_PREFIX", rt.tensorboard_prefix.clone()),
        ("TENSORBOARD_LOGDIR", rt.tensorboard_logdir.clone()),
        ("ROOT_PASSWORD_POLICY", policy.to_string()),
        ("CONDA_TOS", tos.into()),
    ])
}

impl Renderer<'_> {
    fn system_files(&self, files: &mut Files, c: &Cell) {
        let family = match c.base.os.family {
            OsFamily::Debian => 0,
            OsFamily::Ubuntu => 1,
        };
        files.add("system/system.env", &self.system_env[family], false);
        files.add("system/apt-packages.txt", &self.system_apt, false);
        files.add("system/apt-mirror.sh", APT_MIRROR, true);
        let locale_script = match c.base.os.family {
            OsFamily::Debian => LOCALE_DEBIAN,
            OsFamily::Ubuntu => LOCALE_UBUNTU,
        };
        files.add("system/locale.sh", locale_script, true);
    }

    /// Stage 2, Miniconda and the common Python stack; with `transport`, the
    /// installers' mirrors too.
    fn conda_files(&self, files: &mut Files, c: &Cell, transport: bool) {
        use std::fmt::Write as _;
        let gate = usize::from(c.miniconda.has_tos_gate());
        files.add("conda/conda.env", &self.conda_env[gate], false);
        files.add("conda/installers.txt", installer_table(c), false);
        if transport {
            let mut mirrors = String::new();
            for (arch, i) in c.context_installers() {
                for u in &i.urls {
                    let _ = writeln!(mirrors, "{arch} {u}");
                }
            }
            files.add("conda/mirrors.txt", mirrors, false);
        }
        // the common stack as this cell's Python installs it (markers resolved)
        let py = &c.coord.python;
        let pip = {
            let mut memo = self
                .common_pip
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match memo.get(py) {
                Some(pip) => pip.clone(),
                None => {
                    let pip = Shared::new(lines(&stack::common_for(&self.s.pip, py, &[])));
                    memo.insert(py.clone(), pip.clone());
                    pip
                }
            }
        };
        files.add("conda/pip-packages.txt", &pip, false);
        files.add("conda/conda-channels.txt", &self.channels, false);
        files.add("conda/overrides.json", &self.overrides, false);
    }

    fn variant_files(&self, c: &Cell) -> VariantFiles {
        let key = (std::sync::Arc::as_ptr(&c.variant) as usize, c.python);
        let mut memo = self
            .variants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        memo.entry(key)
            .or_insert_with(|| {
                let texts = variant_texts(&c.variant, &c.coord.python);
                (c.variant.clone(), texts)
            })
            .1
            .clone()
    }

    fn image_files(&self, files: &mut Files, c: &Cell, rendering: Rendering) {
        let password_hash = match rendering {
            Rendering::Current => &self.password_hash,
            Rendering::Scheme2 => {
                self.password_hash_scheme2
                    .get_or_init(|| match &self.s.runtime.root_password {
                        PasswordPolicy::Fixed { password } => Some(Shared::new(format!(
                            "{}\n",
                            password_hash(password, Some(&self.s.repository))
                        ))),
                        _ => None,
                    })
            }
        };
        if let Some(hash) = password_hash {
            files.add("image/init/etc/root-password.hash", hash, false);
        }
        let gate = usize::from(c.miniconda.has_tos_gate());
        files.add(
            "image/init/etc/defaults.env",
            &self.defaults_env[gate],
            false,
        );
    }
}

/// `conda/installers.txt`: one installer per platform the context builds for, chosen
/// by `uname -m`.
fn installer_table(c: &Cell) -> String {
    let mut table = String::with_capacity(128);
    write_installer_table(c, &mut table);
    table
}

fn write_installer_table(c: &Cell, out: &mut String) {
    for (arch, i) in c.context_installers() {
        for part in [arch, " ", &i.file, " ", &i.sha256, "\n"] {
            out.push_str(part);
        }
    }
}

/// The files a variant decides for one Python: stage 3's packages (`variant/`: its
/// own, installed under constraints made from the common stack so that a variant
/// cannot silently move a common pin, except for the packages it deliberately
/// overrides) and the image's apt packages.
fn variant_texts(v: &Variant, py: &str) -> VariantFiles {
    let mut pip = stack::variant_for(&v.pip, py);
    pip.extend(stack::variant_for(&v.overrides, py));
    [
        Shared::new(lines(&pip)),
        Shared::new(lines(&stack::overridden(&v.overrides))),
        Shared::new(lines(&v.apt)),
    ]
}

/// `variant/pip-packages.txt`, `variant/unpinned.txt`, `image/apt-packages.txt`.
type VariantFiles = [std::sync::Arc<Shared>; 3];

/// What the image does about Anaconda's channel terms: `none` (no gate: Miniconda
/// before 25, or mirror channels only), `accepted` (at build time, by the matrix's
/// choice) or `user` (left to the image's users; the MOTD says how).
fn tos_choice(s: &Settings, gate: bool) -> &'static str {
    let anaconda = s.sources.conda_channels.is_empty()
        || s.sources
            .conda_channels
            .iter()
            .any(|ch| ch == "defaults" || ch.contains("repo.anaconda.com"));
    if !gate || !anaconda {
        "none"
    } else if s.sources.conda_tos == crate::config::settings::CondaTos::Accept {
        "accepted"
    } else {
        "user"
    }
}

/// Remove the staging directories (`.NAME.XXXXXX`, see [`write`]) a killed run left
/// in `contexts`; returns how many. Only for a caller that holds the output folder's
/// lock: no other run can be writing there.
pub fn clean_staging(contexts: &Path) -> usize {
    let Ok(entries) = fs::read_dir(contexts) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let staging = name.starts_with('.')
            && name[1..].rsplit_once('.').is_some_and(|(cell, tail)| {
                !cell.is_empty()
                    && tail.len() == 6
                    && tail.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        let dir = e.file_type().is_ok_and(|t| t.is_dir());
        if staging && dir && fs::remove_dir_all(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// Write a context to `dir` atomically: into a sibling temp directory, then renamed
/// over any previous one, so a crash never leaves a half-written context.
pub fn write(ctx: &Context, dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("context");
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempdir_in(parent)?;
    for f in &ctx.files {
        let p = tmp.path().join(f.path.as_ref());
        if let Some(d) = p.parent() {
            fs::create_dir_all(d)?;
        }
        fs::write(&p, &f.bytes)?;
        fs::set_permissions(
            &p,
            fs::Permissions::from_mode(if f.executable { 0o755 } else { 0o644 }),
        )?;
    }
    for src in &ctx.local_installers {
        let local = tmp.path().join("conda/local");
        fs::create_dir_all(&local)?;
        let dst = local.join(src.file_name().unwrap_or_default());
        if fs::hard_link(src, &dst).is_err() {
            fs::copy(src, &dst)?;
        }
    }
    let staged = tmp.keep();
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::rename(&staged, dir).inspect_err(|_| {
        let _ = fs::remove_dir_all(&staged);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One Python on Ubuntu for two platforms: one tag group of two cells.
    pub(super) fn group_plan() -> crate::plan::Plan {
        crate::plan::plan_text(
            "version: 1\nbases: [ubuntu:22.04]\npython: [\"3.11\"]\nplatforms: [linux/amd64, linux/arm64]\n",
            "m.yaml",
            Path::new("."),
            &crate::plan::PlanOptions {
                date: "20260101".into(),
            },
        )
        .unwrap()
    }

    /// A tag group's members render one context (all but the plan document), which
    /// picks each platform's installer by `uname -m`, so one multi-platform build of it
    /// (bake) makes every member.
    #[test]
    fn a_tag_groups_members_share_one_context() {
        let p = group_plan();
        let [amd, arm] = [&p.cells[0], &p.cells[1]];
        assert_eq!(arm.platform(), "linux/arm64");
        let s = &p.settings;
        let (a, b) = (render(s, amd), render(s, arm));
        let body = |c: &Context| -> Vec<(String, Vec<u8>)> {
            c.files
                .iter()
                .filter(|f| f.path != "cell.json")
                .map(|f| (f.path.to_string(), f.bytes.to_vec()))
                .collect()
        };
        assert_eq!(body(&a), body(&b));
        let file = |c: &Context, path: &str| {
            String::from_utf8(
                c.files
                    .iter()
                    .find(|f| f.path == path)
                    .unwrap()
                    .bytes
                    .to_vec(),
            )
            .unwrap()
        };
        let installers = file(&a, "conda/installers.txt");
        assert!(installers.contains("x86_64 Miniconda3-py311_24.5.0-0-Linux-x86_64.sh "));
        assert!(installers.contains("aarch64 Miniconda3-py311_24.5.0-0-Linux-aarch64.sh "));
        assert!(!file(&a, "Dockerfile").contains(&format!("{}=", labels::CELL)));
        // ... and one identity, over both platforms' bases
        let digests = ["sha256:amd", "sha256:arm"];
        assert_eq!(
            identity::input_hash(&a, amd, &digests),
            identity::input_hash(&b, arm, &digests)
        );
        assert_ne!(
            identity::input_hash(&a, amd, &digests),
            identity::input_hash(&a, amd, &["sha256:amd", "sha256:arm-moved"])
        );
        // the cell's own labels, its title and its group come with the build
        let labels = build_labels("r", arm);
        assert!(labels.contains(&(labels::CELL, arm.id.as_str().into())));
        let group = &arm.group.as_ref().unwrap().name;
        assert!(labels.contains(&(labels::GROUP, group.into())));
        assert!(labels.contains(&(labels::TITLE, format!("r {group}").into())));
        assert!(!file(&a, "Dockerfile").contains(group.as_str()));
    }

    /// The template spells its label names as text: they must be those of [`labels`].
    #[test]
    fn the_templates_label_names_are_those_of_the_labels_module() {
        let names: Vec<&str> = DOCKERFILE
            .lines()
            .filter_map(|l| {
                l.trim_start()
                    .trim_start_matches("LABEL ")
                    .trim_start_matches("{{SCHEME_2_TITLE}}")
                    .split_once("=\"")
            })
            .map(|(k, _)| k)
            .collect();
        assert_eq!(names, labels::IN_DOCKERFILE);
    }

    /// Every file under init/ reaches the context: a new boot helper that is not wired
    /// into STATIC_FILES would otherwise be missing from every image.
    #[test]
    fn every_init_file_is_rendered() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("init");
        let mut missing = Vec::new();
        for dir in ["boot", "bin", "etc", "supervisor", "build"] {
            for e in fs::read_dir(root.join(dir)).unwrap() {
                let name = e.unwrap().file_name().into_string().unwrap();
                let rel = format!("../init/{dir}/{name}");
                let text = fs::read_to_string(root.join(dir).join(&name)).unwrap();
                let known = STATIC_FILES.iter().any(|(_, t, _)| *t == text)
                    || text == LOCALE_DEBIAN
                    || text == APT_MIRROR
                    || text == LOCALE_UBUNTU;
                if !known {
                    missing.push(rel);
                }
            }
        }
        assert!(
            missing.is_empty(),
            "not rendered into contexts: {missing:?}"
        );
    }

    #[test]
    fn password_hashes_are_crypt_sha512_and_deterministic() {
        let a = password_hash("123456", None);
        assert!(a.starts_with("$6$") && a.len() > 90, "{a}");
        assert_eq!(a, password_hash("123456", None));
        assert_ne!(a, password_hash("123457", None));
        // scheme 2 salted with the repository
        assert_ne!(a, password_hash("123456", Some("miniconda")));
    }

    /// The mirror script on sources files as Debian (deb822) and Ubuntu (one-line)
    /// bases ship them.
    #[test]
    fn apt_mirror_rewrites_debian_and_ubuntu_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("sources.list.d");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("debian.sources"), "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n").unwrap();
        fs::write(dir.path().join("sources.list"), "deb http://archive.ubuntu.com/ubuntu/ jammy main\ndeb http://security.ubuntu.com/ubuntu/ jammy-security main\ndeb http://ports.ubuntu.com/ubuntu-ports/ jammy main\n").unwrap();
        let script = dir.path().join("apt-mirror.sh");
        fs::write(&script, APT_MIRROR).unwrap();
        let ok = std::process::Command::new("bash")
            .arg(&script)
            .arg("https://mirrors.tuna.tsinghua.edu.cn")
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let deb = fs::read_to_string(d.join("debian.sources")).unwrap();
        assert!(
            deb.contains("URIs: https://mirrors.tuna.tsinghua.edu.cn/debian\n"),
            "{deb}"
        );
        assert!(
            deb.contains("URIs: https://mirrors.tuna.tsinghua.edu.cn/debian-security\n"),
            "{deb}"
        );
        let ubu = fs::read_to_string(dir.path().join("sources.list")).unwrap();
        assert_eq!(
            ubu,
            "deb https://mirrors.tuna.tsinghua.edu.cn/ubuntu/ jammy main\ndeb https://mirrors.tuna.tsinghua.edu.cn/ubuntu/ jammy-security main\ndeb https://mirrors.tuna.tsinghua.edu.cn/ubuntu-ports/ jammy main\n"
        );
    }

    #[test]
    fn env_files_quote_every_value() {
        let s = env_file(&[("A", "plain".into()), ("B", "has space".into())]);
        assert!(
            s.contains("A='plain'\n") && s.contains("B='has space'\n"),
            "{s}"
        );
    }
}
