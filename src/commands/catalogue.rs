//! `matrix catalogue update`: fresher Miniconda installers and nvidia/cuda tags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::CatalogueUpdateArgs;
use crate::error::{Error, Exit};
use crate::manifest::io;
use crate::plan::catalogue::{self, CUDA_TAGS_FILE, INSTALLERS_FILE};
use crate::plan::listing::{self, Changes};

const MINICONDA: &str = "https://repo.anaconda.com/miniconda/";
const CUDA_DOCS: &str = "https://gitlab.com/nvidia/container-images/cuda/-/raw/master/doc/";

pub fn update(args: &CatalogueUpdateArgs) -> Result<Exit, Error> {
    let today = super::today();
    let today = format!("{}-{}-{}", &today[..4], &today[4..6], &today[6..]);
    let (miniconda, cuda) = match &args.from {
        Some(root) => (join(root, "miniconda/"), join(root, "cuda/")),
        None => (MINICONDA.to_string(), CUDA_DOCS.to_string()),
    };
    let installers = match fetch(&format!("{miniconda}.files.json")) {
        Ok(text) => listing::installers_from_json(&text)
            .map_err(|e| Error::Preflight(format!("{miniconda}.files.json: {e}")))?,
        Err(_) => listing::installers_from_html(
            &fetch(&format!("{miniconda}index.html"))
                .or_else(|_| fetch(&miniconda))
                .map_err(Error::Preflight)?,
        ),
    };
    if installers.is_empty() {
        return Err(Error::Preflight(format!(
            "{miniconda} lists no Linux Miniconda installer; nothing updated"
        )));
    }
    let supported =
        listing::cuda_tags(&fetch(&format!("{cuda}supported-tags.md")).map_err(Error::Preflight)?);
    let unsupported = listing::cuda_tags(
        &fetch(&format!("{cuda}unsupported-tags.md")).map_err(Error::Preflight)?,
    );
    if supported.is_empty() {
        return Err(Error::Preflight(format!(
            "{cuda}supported-tags.md lists no nvidia/cuda tag; nothing updated"
        )));
    }
    let (old_installers, old_tags) = catalogue::current();
    let (inst_text, inst) = listing::merge_installers(
        old_installers,
        &installers,
        &format!("{today} from {miniconda}"),
        args.accept_changed_sha256,
    );
    let (tags_text, tags) = listing::merge_tags(
        old_tags,
        &supported,
        &unsupported,
        &format!("{today} from {cuda}"),
    );
    say(&inst, &tags, args.accept_changed_sha256);
    // a published installer that changed is a finding, not a quiet success
    let refused = !inst.changed.is_empty() && !args.accept_changed_sha256;
    if args.dry_run {
        crate::term::line("dry run: nothing written");
        return Ok(Exit::from_ok(!refused));
    }
    let to = args
        .to
        .clone()
        .or_else(crate::plan::data::data_dir)
        .ok_or_else(|| Error::Usage("no data directory: give --to DIR (HOME is not set)".into()))?;
    for (file, text) in [(INSTALLERS_FILE, &inst_text), (CUDA_TAGS_FILE, &tags_text)] {
        let path = to.join(file);
        io::write_text(&path, text).map_err(|e| Error::write(&path, e))?;
    }
    crate::term::line(&format!(
        "wrote {} and {} under {}{}",
        INSTALLERS_FILE,
        CUDA_TAGS_FILE,
        to.display(),
        if to.parent().is_some_and(|p| p.join("Cargo.toml").is_file()) {
            " (rebuild the tool to build them in)"
        } else {
            " (plans read them from there)"
        }
    ));
    Ok(Exit::from_ok(!refused))
}

fn say(inst: &Changes, tags: &Changes, accepted: bool) {
    let list = |v: &[String]| {
        let mut s: Vec<&str> = v.iter().take(8).map(String::as_str).collect();
        if v.len() > 8 {
            s.push("…");
        }
        s.join(", ")
    };
    crate::term::line(&format!(
        "installers: {} new{}",
        inst.added.len(),
        if inst.added.is_empty() {
            String::new()
        } else {
            format!(" ({})", list(&inst.added))
        }
    ));
    if !inst.changed.is_empty() {
        crate::term::line(&format!(
            "warning: {} installer{} changed SHA256 upstream ({}); {}",
            inst.changed.len(),
            if inst.changed.len() == 1 { "" } else { "s" },
            list(&inst.changed),
            if accepted {
                "the new checksums were taken (--accept-changed-sha256)"
            } else {
                "the catalogue keeps the old checksums; check them, then rerun with --accept-changed-sha256"
            }
        ));
    }
    crate::term::line(&format!(
        "nvidia/cuda tags: {} new{}, {} changed status{}",
        tags.added.len(),
        if tags.added.is_empty() {
            String::new()
        } else {
            format!(" ({})", list(&tags.added))
        },
        tags.moved.len(),
        if tags.moved.is_empty() {
            String::new()
        } else {
            format!(" ({})", list(&tags.moved))
        }
    ));
}

fn join(root: &str, sub: &str) -> String {
    format!("{}/{sub}", root.trim_end_matches('/'))
}

/// The most a listing may be: Anaconda's `.files.json` is under 1 MB.
const MAX_LISTING: u64 = 32 << 20;

/// A URL with curl (http or https only, given as `--url` so that it is never read as an
/// option; no globbing, a time limit, a size limit), or a local regular file (not a
/// device or a FIFO, also bounded).
fn fetch(source: &str) -> Result<String, String> {
    if !source.contains("://") {
        return read_local(&PathBuf::from(source));
    }
    if !(source.starts_with("https://") || source.starts_with("http://")) {
        return Err(format!(
            "cannot fetch {source}: --from takes an http:// or https:// URL or a folder"
        ));
    }
    let max = MAX_LISTING.to_string();
    let args: Vec<String> = [
        "-fsSL",
        "--globoff",
        "--proto",
        "=http,https",
        "--max-time",
        "60",
        "--max-filesize",
        &max,
        "--url",
        source,
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect();
    let (code, out, err) =
        crate::docker::run_program(Path::new("curl"), &args, None, Duration::from_secs(90))?;
    if code != 0 {
        return Err(format!(
            "cannot fetch {source}: {}",
            String::from_utf8_lossy(&err).trim()
        ));
    }
    String::from_utf8(out).map_err(|_| format!("{source} is not UTF-8 text"))
}

fn read_local(p: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let meta = std::fs::metadata(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    if !meta.is_file() {
        return Err(format!("cannot read {}: not a regular file", p.display()));
    }
    let f = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(p)
        .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_LISTING + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    if bytes.len() as u64 > MAX_LISTING {
        return Err(format!(
            "cannot read {}: larger than {} MB, not a listing",
            p.display(),
            MAX_LISTING >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", p.display()))
}
