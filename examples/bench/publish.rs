//! `bench -- publish [--rounds N]`: the daemon-less publish step's wall time against a
//! loopback registry that requires a login (Debian's docker-registry, started here):
//! the local nightly's shape (4 cells: two single-platform cells and one amd64 +
//! arm64 tag group, 6 tags and one index) and a 100-tag manifest (50 cells, a primary
//! tag and a date alias each), each staged first as `build --stage` leaves them.
//! Per size: the first publish (every tag moved), a second (nothing changed), and the
//! same two with `--sign-key` (signatures and provenance too). N interleaved rounds
//! (default 3), min / median / max, load average recorded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use image_matrix::manifest::{CellRecord, Manifest, Staged, Status, Verification};
use image_matrix::registry::{client, Api, Repo};

const PASSWORD: &str = "bench-password";

/// Cells to stage: (id, architecture, tag group).
type Cells<'a> = [(String, &'a str, Option<&'a str>)];

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A small image (one layer, a config made distinct by `label`) stored in `repo` by
/// digest through the tool's own registry client; (manifest digest, config digest).
fn stage_image(reg: &client::Registry, repo: &Repo, arch: &str, label: &str) -> (String, String) {
    let layer = format!("layer {label}").into_bytes();
    let layer_digest = reg.put_blob(repo, &layer).expect("layer");
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux", "config": {"Labels": {"bench": label}},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap();
    let config_digest = reg.put_blob(repo, &config).expect("config");
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": image_matrix::registry::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": layer.len(), "digest": layer_digest}],
    }))
    .unwrap();
    let digest = image_matrix::registry::sha256_digest(&body);
    reg.put_manifest(repo, &digest, &body, image_matrix::registry::OCI_MANIFEST)
        .expect("manifest");
    (digest, config_digest)
}

/// A merged manifest of `cells` (id, arch, group), staged in `repo`-staging.
fn staged_manifest(
    reg: &client::Registry,
    repo: &str,
    cells: &[(String, &str, Option<&str>)],
    round: usize,
) -> Manifest {
    let staging = format!("{repo}-staging");
    let staging_repo = Repo::parse(&staging).unwrap();
    let mut m = Manifest::new("matrix.yaml", "0", None);
    m.repository = Some(repo.to_string());
    m.date = Some("20261207".into());
    for (id, arch, group) in cells {
        let mut c = CellRecord::new(id, Default::default());
        c.coordinates.platform = format!("linux/{arch}");
        c.status = Status::Built;
        c.verification = Some(Verification {
            ok: true,
            ..Default::default()
        });
        let name = group.unwrap_or(id);
        c.tags = vec![format!("{repo}:{name}"), format!("{repo}:{name}-20261207")];
        c.group = group.map(String::from);
        let (digest, config) = stage_image(reg, &staging_repo, arch, &format!("{id}-{round}"));
        c.image_id = Some(config.clone());
        c.staged = Some(Staged {
            repository: staging.clone(),
            tag: id.clone(),
            digest,
            config,
        });
        m.cells.push(c);
        m.planned.push(id.clone());
    }
    m
}

fn publish(dir: &Path, manifest: &Path, sign: bool) -> f64 {
    let mut cmd = Command::new(super::matrix_bin());
    cmd.current_dir(dir)
        .arg("publish")
        .arg(manifest)
        .env("DOCKER_CONFIG", dir.join("docker-config"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    if sign {
        cmd.args(["--sign-key", "release.key"])
            .env("IMAGE_MATRIX_SIGNING_PASSWORD", PASSWORD);
    }
    let t = Instant::now();
    let (ok, out) = super::run(&mut cmd);
    let secs = t.elapsed().as_secs_f64();
    assert!(ok, "publish failed: {out}");
    secs
}

fn stats(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    format!(
        "{:.2} / {:.2} / {:.2} s",
        s[0],
        s[s.len() / 2],
        s[s.len() - 1]
    )
}

pub fn run_bench(args: &[String]) {
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, out) = super::run(
        Command::new(super::root().join("scripts/local-registry.sh"))
            .arg(d.join("registry"))
            .arg("ci")
            .env("LOCAL_REGISTRY_PASSWORD", PASSWORD),
    );
    assert!(ok, "no registry: {out}");
    let port = out.trim().lines().last().unwrap_or_default().to_string();
    let pid = std::fs::read_to_string(d.join("registry/registry.pid")).unwrap_or_default();
    let host = format!("127.0.0.1:{port}");
    let config = d.join("docker-config");
    std::env::set_var("DOCKER_CONFIG", &config);
    image_matrix::registry::auth::store(&host, "ci", PASSWORD).expect("login");
    let mut keygen = Command::new(super::matrix_bin());
    keygen
        .current_dir(d)
        .args(["signature", "keygen", "--output", "release"])
        .env("IMAGE_MATRIX_SIGNING_PASSWORD", PASSWORD);
    assert!(super::run(&mut keygen).0, "keygen");
    let reg = client::Registry::new(
        &[&Repo::parse(&format!("{host}/x")).unwrap()],
        &client::Settings {
            insecure: Vec::new(),
            extra_ca: None,
            timeout: std::time::Duration::from_secs(30),
        },
    )
    .unwrap();
    let nightly: Vec<(String, &str, Option<&str>)> = vec![
        ("py3.10".into(), "amd64", None),
        ("py3.11".into(), "amd64", None),
        ("g-amd64".into(), "amd64", Some("g")),
        ("g-arm64".into(), "arm64", Some("g")),
    ];
    let hundred: Vec<(String, &str, Option<&str>)> = (0..50)
        .map(|i| (format!("cell{i:02}"), "amd64", None))
        .collect();
    let sizes: [(&str, &Cells); 2] = [
        ("local nightly (4 cells, 6 tags, 1 index)", &nightly),
        ("100 tags (50 cells)", &hundred),
    ];
    println!("bench publish: {rounds} rounds, load before: {}", load());
    let mut results: Vec<(String, Vec<f64>)> = Vec::new();
    for round in 0..rounds {
        for (si, (name, cells)) in sizes.iter().enumerate() {
            for sign in [false, true] {
                // a fresh repository per measurement: the first publish moves every tag
                let repo = format!("{host}/r{round}-{si}-{}/ml", u8::from(sign));
                let m = staged_manifest(&reg, &repo, cells, round);
                let file: PathBuf = d.join(format!("m-{round}-{si}-{sign}.json"));
                std::fs::write(&file, serde_json::to_vec(&m).unwrap()).unwrap();
                let first = publish(d, &file, sign);
                let again = publish(d, &file, sign);
                let how = if sign { ", signed" } else { "" };
                for (what, secs) in [("first", first), ("again (nothing changed)", again)] {
                    let key = format!("{name}{how}: {what}");
                    match results.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, v)) => v.push(secs),
                        None => results.push((key, vec![secs])),
                    }
                }
            }
        }
    }
    println!("| publish | min / median / max |");
    println!("|---|---|");
    for (k, v) in &results {
        println!("| {k} | {} |", stats(v));
    }
    println!("load after: {}", load());
    let _ = Command::new("kill").arg(pid.trim()).status();
}
