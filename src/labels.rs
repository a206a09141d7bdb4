//! Every image label name the tool writes or reads, in one place: the names are an
//! interface (registries, `docker inspect`, `matrix verify`, `prune` and other tools
//! read them), so a name spelled twice is a name that can drift.
//!
//! Where a label's value comes from: the Dockerfile template (`dockerfiles/Dockerfile.in`
//! spells the names of [`IN_DOCKERFILE`] as text, and a test holds it to this list), a
//! framework image's Dockerfile (made from these constants), or `docker build --label`
//! (the names of a cell's builds, its identity and the run's OCI labels). Labels that
//! name where an image is published ([`TITLE`], [`GROUP`], [`REPOSITORY`]) only ever
//! come with the build, never from the context: they are not part of its identity.

/// The cell's identity (its input hash, see `render::identity`): `build` skips a cell whose image
/// has it.
pub const INPUT_HASH: &str = "io.image-matrix.input-hash";
/// The repository the image is built for (what `prune` looks for).
pub const REPOSITORY: &str = "io.image-matrix.repository";
/// The base image's resolved digest.
pub const BASE_DIGEST: &str = "io.image-matrix.base-digest";
/// The cell's id.
pub const CELL: &str = "io.image-matrix.cell";
/// The Miniconda installer's file name and its SHA256.
pub const INSTALLER: &str = "io.image-matrix.installer";
pub const INSTALLER_SHA256: &str = "io.image-matrix.installer-sha256";
/// A tag group's shared primary tag (without the repository).
pub const GROUP: &str = "io.image-matrix.group";
/// Prefix of `io.image-matrix.version.NAME`: the version of each package the image
/// holds, as its last build step recorded them.
pub const VERSION_PREFIX: &str = "io.image-matrix.version.";

/// The labels the Dockerfile template sets, from the cell's coordinates.
pub const PYTHON: &str = "io.image-matrix.python";
pub const MINICONDA: &str = "io.image-matrix.miniconda";
pub const CUDA: &str = "io.image-matrix.cuda";
pub const CUDNN: &str = "io.image-matrix.cudnn";
pub const OS: &str = "io.image-matrix.os";
pub const VARIANT: &str = "io.image-matrix.variant";
pub const BASE: &str = "io.image-matrix.base";
/// Every label name `dockerfiles/Dockerfile.in` spells, in its order.
pub const IN_DOCKERFILE: [&str; 7] = [PYTHON, MINICONDA, CUDA, CUDNN, OS, VARIANT, BASE];

/// A framework image's framework, its wheel, and the cell it is built on.
pub const FRAMEWORK: &str = "io.image-matrix.framework";
pub const FRAMEWORK_WHEEL: &str = "io.image-matrix.framework.wheel";
pub const PARENT: &str = "io.image-matrix.parent";
/// Prefix of `io.image-matrix.framework.PACKAGE`: a framework image's pinned versions.
pub const FRAMEWORK_VERSION_PREFIX: &str = "io.image-matrix.framework.";
/// Prefix of `io.image-matrix.family.NAME` (its release) and
/// `io.image-matrix.family.NAME.checks` (its services and checks, JSON): every
/// user-defined family on an image's way from its Miniconda cell.
pub const FAMILY_PREFIX: &str = "io.image-matrix.family.";
/// Suffix of a family's checks label.
pub const FAMILY_CHECKS_SUFFIX: &str = ".checks";

/// OCI annotations: the image's title (its repository and tag), when it was made, where
/// its recipe lives and which revision.
pub const TITLE: &str = "org.opencontainers.image.title";
pub const CREATED: &str = "org.opencontainers.image.created";
pub const SOURCE: &str = "org.opencontainers.image.source";
pub const REVISION: &str = "org.opencontainers.image.revision";
