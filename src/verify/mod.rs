//! Verification: start an image and check from outside that it does what the seed's
//! screenshots showed — SSH login with a banner, Chinese locale, CST, JupyterLab with
//! a token and a Chinese UI, TensorBoard — and that it leaks no credentials.
//!
//! SSH uses the system OpenSSH client (the client users have), driven by argv with
//! the password given through `sshpass -f FILE` (never on a command line), and with
//! strict host-key checking against the key read from the container. The checks
//! themselves are in [`checks`], one named function each.

mod checks;
mod custom;
mod framework;
pub mod http;

use std::sync::{Mutex, OnceLock};

use crate::docker::Docker;
use crate::engines::Engines;
use crate::manifest::{CellRecord, CheckResult, Verification};
use crate::sbom::Collected;
use crate::signals::Cancel;

pub use checks::find_secrets;

fn containers() -> &'static Mutex<Vec<(Docker, String)>> {
    static C: OnceLock<Mutex<Vec<(Docker, String)>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remove every container verify started (a second signal).
pub fn remove_all_containers() {
    let list = containers().lock().map(|l| l.clone()).unwrap_or_default();
    for (d, name) in list {
        d.remove_container(&name);
    }
}

/// How much longer than native deadlines are under emulation (QEMU user mode runs
/// Python several times slower).
pub const EMULATION_SLOWDOWN: u64 = 5;

/// Verify one image. `expect_python` comes from the cell (or the image's label);
/// `emulated` when the engine runs the image's platform under emulation.
pub fn verify_image(
    docker: &Docker,
    image: &str,
    expect_python: Option<&str>,
    ready_timeout: u64,
    emulated: bool,
    cancel: &Cancel,
) -> Verification {
    verify_and_list(
        docker,
        image,
        expect_python,
        ready_timeout,
        emulated,
        cancel,
    )
    .0
}

/// [`verify_image`], and the image's packages listed in the container it started
/// (None when no container ran): the SBOM of acceptance costs one `docker exec`.
pub fn verify_and_list(
    docker: &Docker,
    image: &str,
    expect_python: Option<&str>,
    ready_timeout: u64,
    emulated: bool,
    cancel: &Cancel,
) -> (Verification, Option<Collected>) {
    let started = std::time::Instant::now();
    let verified_at = Some(crate::manifest::now());
    let ready_timeout = if emulated {
        ready_timeout * EMULATION_SLOWDOWN
    } else {
        ready_timeout
    };
    let mut results = Vec::new();
    // The checks reach the container's services on 127.0.0.1: an engine on another
    // host would only time out, after a long wait, with a misleading message.
    if let Err(e) = docker.on_this_host() {
        results.push(CheckResult {
            name: "engine".into(),
            ok: false,
            detail: e,
            seconds: None,
        });
        let v = Verification {
            checks: results,
            emulated,
            verified_at,
            ..Verification::default()
        };
        return (v, None);
    }
    let mut ready_seconds = None;
    let mut packages = None;
    match checks::run_all(
        docker,
        image,
        expect_python,
        (ready_timeout, emulated),
        cancel,
        &mut results,
        &mut packages,
    ) {
        Ok(r) => ready_seconds = r,
        Err(e) => results.push(CheckResult {
            name: "verify".into(),
            ok: false,
            detail: e,
            seconds: None,
        }),
    }
    let ok = !results.is_empty() && results.iter().all(|c| c.ok);
    let v = Verification {
        ok,
        ready_seconds,
        checks: results,
        emulated,
        seconds: Some((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
        verified_at,
    };
    (v, packages)
}

/// Verify the given cells of a manifest in place (each on the engine that holds it);
/// a new result replaces the old one. `say` gets one progress line per image.
pub fn verify_records(
    engines: &Engines,
    cells: &mut [CellRecord],
    which: &[usize],
    ready_timeout: u64,
    cancel: &Cancel,
    say: &dyn Fn(&str),
) -> Vec<(String, Verification)> {
    let mut out = Vec::new();
    for &i in which {
        if cancel.is_set() {
            break;
        }
        let c = &mut cells[i];
        let Some(tag) = c.local_tag().map(str::to_string) else {
            continue;
        };
        let image = c.image_id.clone().unwrap_or_else(|| tag.clone());
        say(&format!("verifying {tag} ..."));
        let v = match engines.engine(c.engine.as_deref()) {
            Some(e) => verify_image(
                &e.docker,
                &image,
                Some(&c.coordinates.python),
                ready_timeout,
                e.emulates(&c.coordinates.platform),
                cancel,
            ),
            None => Verification {
                checks: vec![CheckResult {
                    name: "engine".into(),
                    ok: false,
                    detail: format!(
                        "engine {} that holds the image is not reachable",
                        c.engine.as_deref().unwrap_or_default()
                    ),
                    seconds: None,
                }],
                ..Verification::default()
            },
        };
        c.verification = Some(v.clone());
        out.push((tag, v));
    }
    out
}

/// The results as people read them.
pub fn table(report: &[(String, Verification)]) -> String {
    let mut s = String::new();
    for (image, v) in report {
        s.push_str(&format!(
            "{image}: {}{}\n",
            if v.ok { "PASS" } else { "FAIL" },
            v.seconds
                .map(|t| format!(" in {t:.1}s"))
                .unwrap_or_default()
        ));
        for c in &v.checks {
            // under emulation each check's time is worth seeing
            let took = c
                .seconds
                .filter(|_| v.emulated)
                .map(|t| format!(" ({t:.1}s)"))
                .unwrap_or_default();
            s.push_str(&format!(
                "  {:<4} {:<14} {}{took}\n",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            ));
        }
    }
    s
}
