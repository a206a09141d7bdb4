//! image-matrix: plan, build, verify and publish a matrix of ML container images.
//!
//! Data flows one way: CLI args → [`config`] (matrix.yaml → raw mirror → settings) →
//! [`plan`] (validated cells) → [`render`] (build contexts) → [`run`] (prepare →
//! scheduler → events) → [`manifest`]. Each subcommand is one file in [`commands`].
//! Only [`config::yaml`] names the YAML library, only [`docker`] spawns processes,
//! only [`term`] prints (the reporter draws through it), only [`manifest::io`]
//! writes manifests.

pub mod cli;
pub mod commands;
pub mod config;
pub mod coord;
pub mod diag;
pub mod docker;
pub mod downloads;
pub mod emulation;
pub mod engine;
pub mod engines;
pub mod error;
pub mod exit;
pub mod labels;
pub mod lock;
pub mod manifest;
pub mod plan;
pub mod provenance;
pub mod prune;
pub mod reference;
pub mod registry;
pub mod render;
pub mod report;
pub mod run;
pub mod sbom;
pub mod schema;
pub mod shell;
pub mod signals;
pub mod signing;
pub mod term;
pub mod verify;

/// The version and the commit it was built from (`build.rs`; "unknown" outside a
/// git checkout), e.g. `0.1.0 (1a2b3c4d5e6f)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("IMAGE_MATRIX_COMMIT"),
    ")"
);

/// Run a parsed command line.
pub fn run(cli: cli::Cli) -> Result<error::Exit, error::Error> {
    commands::run(cli)
}
