//! The build manifest: what a run did, per cell. The only module that writes it.
//!
//! Written atomically (temp file in the same directory, fsync, rename) after every
//! cell finishes, so that a crash at any moment leaves the previous complete version.
//! Schema version 1 is documented in the README.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub const SCHEMA: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Built,
    UpToDate,
    Failed,
    TimedOut,
    Cancelled,
    NotStarted,
    Excluded,
}

impl Status {
    pub fn succeeded(self) -> bool {
        matches!(self, Status::Built | Status::UpToDate)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Built => "built",
            Status::UpToDate => "up-to-date",
            Status::Failed => "failed",
            Status::TimedOut => "timed-out",
            Status::Cancelled => "cancelled",
            Status::NotStarted => "not-started",
            Status::Excluded => "excluded",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Coordinates {
    pub python: String,
    pub miniconda: String,
    pub base: String,
    pub os: String,
    pub cuda: Option<String>,
    pub cudnn: Option<String>,
    pub flavor: Option<String>,
    pub platform: String,
    pub variant: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Installer {
    pub file: String,
    pub sha256: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verification {
    pub ok: bool,
    pub ready_seconds: Option<f64>,
    pub checks: Vec<CheckResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pushed {
    pub tag: String,
    pub digest: Option<String>,
    pub ok: bool,
    pub attempts: u32,
    pub error: Option<String>,
}

/// A build lost because its engine stopped answering; the cell went back to the queue.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Requeue {
    pub engine: String,
    pub reason: String,
    /// Time spent on that engine before the cell was taken away from it.
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CellRecord {
    pub id: String,
    pub tags: Vec<String>,
    pub coordinates: Coordinates,
    pub installer: Option<Installer>,
    pub input_hash: Option<String>,
    /// Hashes of the context's parts (`Dockerfile`, `system`, `conda`, `variant`,
    /// `image`), so that `plan --diff` can say what changed.
    #[serde(default)]
    pub input_parts: std::collections::BTreeMap<String, String>,
    pub status: Status,
    pub attempts: u32,
    pub exit_code: Option<i32>,
    pub duration_seconds: f64,
    pub log: Option<String>,
    pub image_id: Option<String>,
    pub size_bytes: Option<u64>,
    /// Why it failed, was cancelled or excluded, in one line.
    pub reason: Option<String>,
    pub verification: Option<Verification>,
    #[serde(default)]
    pub pushed: Vec<Pushed>,
    /// The engine that built the image (or holds it, for up-to-date cells); push and
    /// verify go there.
    #[serde(default)]
    pub engine: Option<String>,
    /// Engines this cell was taken away from because they went down.
    #[serde(default)]
    pub requeued: Vec<Requeue>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DockerInfo {
    pub client: String,
    pub server: String,
    pub builder: String,
}

/// One engine of the run: how to reach it again, and whether it stayed up.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EngineRecord {
    pub name: String,
    pub target: crate::engine::Target,
    pub jobs: usize,
    pub server: String,
    /// Why it was marked down during the run.
    pub down: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub version: u32,
    pub tool: String,
    pub tool_version: String,
    pub started: String,
    pub finished: Option<String>,
    pub matrix: String,
    pub matrix_sha256: String,
    pub docker: Option<DockerInfo>,
    /// CPU time (user + system) the tool itself used, without its children.
    #[serde(default)]
    pub tool_cpu_seconds: Option<f64>,
    /// The engines cells were built on (empty: the client's default engine).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<EngineRecord>,
    pub cells: Vec<CellRecord>,
}

impl Manifest {
    pub fn new(matrix: &str, matrix_sha256: &str, docker: Option<DockerInfo>) -> Self {
        Manifest {
            version: SCHEMA,
            tool: "image-matrix".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            started: now(),
            finished: None,
            matrix: matrix.into(),
            matrix_sha256: matrix_sha256.into(),
            docker,
            tool_cpu_seconds: None,
            engines: Vec::new(),
            cells: Vec::new(),
        }
    }

    pub fn count(&self, s: Status) -> usize {
        self.cells.iter().filter(|c| c.status == s).count()
    }
}

/// This process's own CPU time in seconds (children excluded).
pub fn own_cpu_seconds() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full rusage struct into the pointer we give it.
    let u = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) != 0 {
            return 0.0;
        }
        u.assume_init()
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Write atomically: temp file beside the target, fsync, rename, fsync the directory.
pub fn write(path: &Path, m: &Manifest) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".manifest.")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, m).map_err(std::io::Error::other)?;
    tmp.write_all(b"\n")?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub fn read(path: &Path) -> Result<Manifest, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read manifest {}: {e}", path.display()))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}:{}: not a manifest: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    if m.version != SCHEMA {
        return Err(format!(
            "{}: manifest version {} is not supported (expected {SCHEMA})",
            path.display(),
            m.version
        ));
    }
    Ok(m)
}

/// Merge shard manifests: one matrix (same SHA256), each cell once. A cell present in
/// several inputs must be recorded identically in all of them (excluded cells are);
/// otherwise the merge is refused, naming the cell and the files.
pub fn merge(inputs: Vec<(String, Manifest)>) -> Result<Manifest, String> {
    let mut it = inputs.into_iter();
    let (first_name, mut out) = it.next().ok_or("nothing to merge")?;
    let mut origin: std::collections::HashMap<String, String> = out
        .cells
        .iter()
        .map(|c| (c.id.clone(), first_name.clone()))
        .collect();
    for (name, m) in it {
        if m.matrix_sha256 != out.matrix_sha256 {
            return Err(format!(
                "{name} was built from another matrix (sha256 {}…) than {first_name} ({}…)",
                &m.matrix_sha256[..12.min(m.matrix_sha256.len())],
                &out.matrix_sha256[..12.min(out.matrix_sha256.len())]
            ));
        }
        out.started = out.started.clone().min(m.started.clone());
        out.finished = match (out.finished.take(), m.finished.clone()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        out.tool_cpu_seconds = match (out.tool_cpu_seconds, m.tool_cpu_seconds) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        // Engines are named per shard run; keep each name once (the first shard's
        // target), since a cell records only the name.
        for e in m.engines {
            if !out.engines.iter().any(|x| x.name == e.name) {
                out.engines.push(e);
            }
        }
        for c in m.cells {
            match out.cells.iter().find(|x| x.id == c.id) {
                Some(existing) if *existing == c => {}
                Some(_) => {
                    return Err(format!(
                        "cell {} differs between {} and {name}; refusing to merge",
                        c.id, origin[&c.id]
                    ))
                }
                None => {
                    origin.insert(c.id.clone(), name.clone());
                    out.cells.push(c);
                }
            }
        }
    }
    Ok(out)
}

pub fn merge_files(paths: &[std::path::PathBuf]) -> Result<Manifest, String> {
    let mut inputs = Vec::new();
    for p in paths {
        inputs.push((p.display().to_string(), read(p)?));
    }
    merge(inputs)
}
