//! The shape of `matrix.yaml` as types, for its JSON Schema (`matrix schema matrix`,
//! `schemas/matrix.schema.json`, which editors use through the yaml-language-server
//! modeline). The walker in [`crate::config::raw`] is what reads the file (with
//! positions for every error); these types only describe it, and a test keeps their
//! keys equal to the keys the walker accepts.
#![allow(dead_code)]

use schemars::JsonSchema;

/// `matrix.yaml`, version 1: the axes of the image matrix and how its images are
/// built, tagged and published.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Matrix {
    /// The schema version of this file: `1`.
    #[schemars(range(min = 1, max = 1))]
    version: u8,
    image: Option<Image>,
    /// Base images: `nvidia/cuda:TAG`, `ubuntu:22.04`, `debian:12` (or a codename), or
    /// any other image with the OS it is built on.
    bases: Vec<Base>,
    /// Python versions, quoted (`"3.10"`; an unquoted 3.10 is the number 3.1).
    python: Vec<Python>,
    /// The Miniconda release of every Python without its own (`"24.5.0-0"`).
    miniconda: Option<Version>,
    /// Docker platforms; cells that differ only in platform share their tags (one
    /// image index per tag).
    platforms: Option<Vec<Platform>>,
    /// Package sets; each is a value of the `variant` axis.
    variants: Option<Vec<Variant>>,
    /// Extra cells outside the cross product.
    include: Option<Vec<Include>>,
    /// Cells to leave out, each with its reason.
    exclude: Option<Vec<Rule>>,
    /// Installers the catalogue lacks, or another SHA256 for one it has.
    installers: Option<Vec<Installer>>,
    sources: Option<Sources>,
    packages: Option<Packages>,
    runtime: Option<Runtime>,
    build: Option<Build>,
    /// A registry cache for builders that start empty (needs BuildKit).
    cache: Option<Cache>,
    /// Where to build; `--engine` replaces the list.
    engines: Option<Vec<Engine>>,
    limits: Option<Limits>,
    /// PyTorch releases (`"2.5.1"`): each adds a PyTorch image on every Miniconda cell,
    /// built `FROM` it, with the matching torchvision and torchaudio.
    pytorch: Option<FrameworkAxis>,
    /// TensorFlow releases (`"2.17.0"`): each adds a TensorFlow image on every
    /// Miniconda cell.
    tensorflow: Option<FrameworkAxis>,
    /// Image families of your own: each a layer on a parent (the Miniconda images, a
    /// framework's, or another family's), multiplied over its own releases.
    families: Option<Vec<Family>>,
}

/// A user-defined image family.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Family {
    /// A lowercase word (`yolo`): the `family` coordinate, the id suffix and the
    /// placeholder its descendants' tags may use for its release.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]{0,31}$"))]
    name: String,
    /// What it builds on: `miniconda` (default), `pytorch`, `tensorflow` or another
    /// family's name.
    parent: Option<String>,
    /// Its images' repository (default: its name).
    repository: Option<String>,
    /// Its tag template: every placeholder of `image.tag`, `{version}`, the parent
    /// framework's (`{torch}`, `{cuda_wheel}`) and each ancestor family's name.
    tag: Option<String>,
    /// Its releases, each one image per parent image (`{version}` in its fields).
    versions: Option<Vec<String>>,
    /// pip requirements of its layer.
    pip: Option<Vec<String>>,
    /// Indexes pip installs from, tried in order (default `sources.pip_index`).
    index_urls: Option<Vec<String>>,
    /// conda packages of its layer.
    conda: Option<Vec<String>>,
    /// Channels for them (default `sources.conda_channels`).
    conda_channels: Option<Vec<String>>,
    /// apt packages of its layer.
    apt: Option<Vec<String>>,
    /// Environment of its images (no secrets: anyone who pulls an image reads it).
    env: Option<std::collections::BTreeMap<String, String>>,
    /// A bash script beside the matrix, run as root in the layer.
    script: Option<String>,
    /// Services run under the image's supervisor.
    services: Option<Vec<FamilyService>>,
    /// What `verify` checks on its images.
    checks: Option<Vec<FamilyCheck>>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FamilyService {
    name: String,
    /// Run by bash; its port is in `$PORT_ENV`.
    command: String,
    #[schemars(range(min = 1, max = 65535))]
    port: u16,
    /// The variable that moves the port (default `NAME_PORT`).
    port_env: Option<String>,
}

/// `run: COMMAND` (its output must contain `expect`), or `service: NAME` (a GET of
/// `path` answers 200 with `expect` in its body, or the port accepts connections).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FamilyCheck {
    run: Option<String>,
    service: Option<String>,
    path: Option<String>,
    expect: Option<String>,
}

/// A framework axis: its releases, or a mapping with them and the layer's extra pip
/// packages.
#[derive(JsonSchema)]
#[serde(untagged)]
pub enum FrameworkAxis {
    Releases(Vec<Version>),
    WithExtras(FrameworkLayer),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FrameworkLayer {
    /// The releases, each one image per Miniconda cell.
    versions: Vec<Version>,
    /// More pip requirements installed in the same layer with the framework
    /// (`tensorrt==8.6.1`), part of the image's identity; a PyTorch layer from the
    /// variant indexes takes them from the package index too.
    extra_pip: Option<Vec<String>>,
}

/// A quoted version: `"3.11"`, `"24.5.0-0"`.
#[derive(JsonSchema)]
pub struct Version(#[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)*(-[0-9]+)?$"))] String);

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Image {
    /// The repository of every tag (`registry.example/ml/conda`); push publishes only there.
    repository: Option<String>,
    /// The primary tag's template, e.g. `conda3-python{python}-{base}`.
    tag: Option<String>,
    /// More tags per image; `{tag}` is the primary tag, `{date}` the build date.
    aliases: Option<Vec<String>>,
    /// The cells that also get `latest`.
    latest: Option<Rule>,
    /// The PyTorch images' tag template; `{torch}`, `{cuda_wheel}` and every
    /// placeholder of `tag` (default `pytorch{torch}-python{python}-{base}`).
    pytorch_tag: Option<String>,
    /// The TensorFlow images' tag template; `{tf}`, `{cuda_wheel}` and every
    /// placeholder of `tag` (default `tensorflow{tf}-python{python}-{base}`).
    tensorflow_tag: Option<String>,
    /// The PyTorch images' own repository (default: `repository`), e.g. `pytorch`.
    pytorch_repository: Option<String>,
    /// The TensorFlow images' own repository (default: `repository`).
    tensorflow_repository: Option<String>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
pub enum Base {
    /// A reference whose OS the planner knows (nvidia/cuda, ubuntu, debian).
    Reference(String),
    Other(OtherBase),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct OtherBase {
    image: String,
    /// `ubuntu22.04`, `debian12`…
    os: Option<String>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
pub enum Python {
    Version(Version),
    WithMiniconda(PythonRelease),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PythonRelease {
    version: Version,
    /// Its Miniconda release, when not the matrix's.
    miniconda: Option<Version>,
}

#[derive(JsonSchema)]
pub enum Platform {
    #[serde(rename = "linux/amd64")]
    Amd64,
    #[serde(rename = "linux/arm64")]
    Arm64,
    #[serde(rename = "linux/ppc64le")]
    Ppc64le,
    #[serde(rename = "linux/s390x")]
    S390x,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Variant {
    name: String,
    /// pip requirements, installed under the common stack's versions.
    pip: Option<Vec<String>>,
    /// apt packages.
    apt: Option<Vec<String>>,
    /// Requirements that replace a common pin on purpose (`numpy>=2`).
    #[serde(rename = "override")]
    overrides: Option<Vec<String>>,
}

/// A cell to add: the coordinates that define it.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Include {
    base: Option<String>,
    python: Option<String>,
    miniconda: Option<String>,
    platform: Option<String>,
    variant: Option<String>,
}

/// A selector: every key given must match (globs `*`, `?`; versions also by prefix).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Rule {
    python: Option<String>,
    base: Option<String>,
    /// A CUDA version, or `none` for CPU bases.
    cuda: Option<String>,
    cudnn: Option<String>,
    flavor: Option<String>,
    os: Option<String>,
    platform: Option<String>,
    arch: Option<String>,
    variant: Option<String>,
    miniconda: Option<String>,
    /// `pytorch`, `tensorflow`, or `none` for a Miniconda image.
    framework: Option<String>,
    /// A PyTorch release (`none` for images without PyTorch).
    torch: Option<String>,
    /// A TensorFlow release.
    tf: Option<String>,
    /// A framework wheel variant: `cu124`, `cpu`.
    cuda_wheel: Option<String>,
    /// A user-defined family (`none` for Miniconda and framework images).
    family: Option<String>,
    /// Why (in `exclude`: shown by plan and recorded in the manifest).
    reason: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Installer {
    /// `Miniconda3-py311_24.5.0-0-Linux-x86_64.sh`
    file: String,
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    sha256: String,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Sources {
    /// Base URLs the installers are fetched from, in order (the SHA256 is checked).
    installer_mirrors: Option<Vec<String>>,
    /// A directory of pre-downloaded installers.
    installer_dir: Option<String>,
    /// pip's index URL in the image.
    pip_index: Option<String>,
    /// conda channels (mirrors) in the image.
    conda_channels: Option<Vec<String>>,
    /// An extra CA bundle trusted during the build only (a corporate proxy).
    ca_bundle: Option<String>,
    /// Where `nvidia/cuda` images come from (a mirror).
    cuda_registry: Option<String>,
    /// A Debian/Ubuntu archive mirror for apt.
    apt_mirror: Option<String>,
    /// Anaconda's channel terms: left to the image's users, or accepted at build time.
    conda_tos: Option<CondaTos>,
    /// Where PyTorch wheels come from: roots of PyTorch's per-variant indexes
    /// (default `["https://download.pytorch.org/whl/"]`), or `pypi` for the package
    /// index, which serves one build per release.
    pytorch_index: Option<TorchIndex>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
pub enum TorchIndex {
    /// `pypi`
    Word(String),
    Roots(Vec<String>),
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CondaTos {
    User,
    Accept,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Packages {
    /// apt packages added to the required ones.
    apt: Option<Vec<String>>,
    /// The common Python stack; a requirement may carry a marker on the Python version.
    pip: Option<Vec<String>>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Runtime {
    root_password: Option<RootPassword>,
    ssh_port: Option<Port>,
    jupyter_port: Option<Port>,
    tensorboard_port: Option<Port>,
    /// JupyterLab's base URL (`/jupyter`).
    jupyter_base_url: Option<String>,
    /// TensorBoard's path prefix (`/monitor`).
    tensorboard_prefix: Option<String>,
    tensorboard_logdir: Option<String>,
    /// `all` (reachable through `-p 6006:6006`; no authentication) or `localhost`.
    tensorboard_bind: Option<Bind>,
    /// An IANA zone (`Asia/Shanghai`).
    timezone: Option<String>,
    /// A glibc locale (`zh_CN.UTF-8`).
    locale: Option<String>,
}

#[derive(JsonSchema)]
pub struct Port(#[schemars(range(min = 1, max = 65535))] u16);

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bind {
    All,
    Localhost,
}

#[derive(JsonSchema)]
#[serde(untagged)]
pub enum RootPassword {
    /// `random` (made per container, printed once) or `disabled`.
    Policy(PasswordPolicy),
    Fixed(FixedPassword),
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PasswordPolicy {
    Random,
    Disabled,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FixedPassword {
    /// Stored in the image as a SHA-512 crypt hash, never in clear.
    fixed: String,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Build {
    /// `docker build --network` (`host` on a daemon without a bridge).
    network: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Engine {
    name: String,
    /// A DOCKER_HOST URL (`unix://`, `tcp://`, `ssh://`…); or give `context`.
    host: Option<String>,
    /// A docker context name.
    context: Option<String>,
    #[schemars(range(min = 1, max = 256))]
    jobs: Option<u16>,
    /// What it builds, natively or emulated; by default its own platform and, on this
    /// host, those binfmt emulates.
    platforms: Option<Vec<Platform>>,
    /// An existing buildx builder to build on with `--builder buildx` (a multi-node or
    /// Kubernetes builder); by default the engine's own BuildKit.
    buildx_builder: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Cache {
    /// Cache sources: `registry` (each cell's published tag) or image references
    /// (`{tag}` is the cell's tag); one or a list.
    from: Option<OneOrMany>,
    /// Write BuildKit's inline cache metadata into every image (default `true` once
    /// `cache:` is given).
    inline: Option<bool>,
}

#[derive(JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Limits {
    /// Refuse a plan of more cells (default 1000).
    max_cells: Option<u64>,
}
