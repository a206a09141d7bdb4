//! `matrix verify`: start an image and check from outside that it does what the seed's
//! screenshots showed — SSH login with a banner, Chinese locale, CST, JupyterLab with
//! a token and a Chinese UI, TensorBoard — and that it leaks no credentials.
//!
//! SSH uses the system OpenSSH client (the client users have), driven by argv with
//! the password given through `sshpass -f FILE` (never on a command line), and with
//! strict host-key checking against the key read from the container.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::cli::VerifyArgs;
use crate::docker::{run_program, Docker};
use crate::manifest::{self, CellRecord, CheckResult, Verification};
use crate::scheduler::Cancel;

fn containers() -> &'static Mutex<Vec<(Docker, String)>> {
    static C: OnceLock<Mutex<Vec<(Docker, String)>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remove every container verify started (second Ctrl-C, or a panic path).
pub fn remove_all_containers() {
    let list = containers().lock().map(|l| l.clone()).unwrap_or_default();
    for (d, name) in list {
        d.remove_container(&name);
    }
}

/// A started container, removed when dropped whatever happens.
struct Container<'a> {
    docker: &'a Docker,
    name: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        self.docker.remove_container(&self.name);
        if let Ok(mut l) = containers().lock() {
            l.retain(|(_, n)| n != &self.name);
        }
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    crate::plan::hex(&buf)
}

/// A minimal HTTP/1.0 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let auth = token
        .map(|t| format!("Authorization: token {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no HTTP status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

struct Ports {
    ssh: u16,
    jupyter: u16,
    tensorboard: u16,
}

fn start<'d>(
    docker: &'d Docker,
    image: &str,
    secrets: &Path,
    ports: &Ports,
) -> Result<Container<'d>, String> {
    let name = format!("image-matrix-verify-{}", random_hex(6));
    if let Ok(mut l) = containers().lock() {
        l.push((docker.clone(), name.clone()));
    }
    let c = Container {
        docker,
        name: name.clone(),
    };
    let args: Vec<String> = vec![
        "--name".into(),
        name,
        "--network".into(),
        "host".into(),
        "-e".into(),
        format!("SSH_PORT={}", ports.ssh),
        "-e".into(),
        format!("JUPYTER_PORT={}", ports.jupyter),
        "-e".into(),
        format!("TENSORBOARD_PORT={}", ports.tensorboard),
        "-e".into(),
        "ROOT_PASSWORD_FILE=/run/image-matrix-verify/password".into(),
        "-e".into(),
        "JUPYTER_TOKEN_FILE=/run/image-matrix-verify/token".into(),
        "-v".into(),
        format!("{}:/run/image-matrix-verify:ro", secrets.display()),
        image.into(),
    ];
    docker.run_detached(&args)?;
    Ok(c)
}

fn ports() -> Result<Ports, String> {
    Ok(Ports {
        ssh: free_port()?,
        jupyter: free_port()?,
        tensorboard: free_port()?,
    })
}

struct Checks(Vec<CheckResult>);

impl Checks {
    fn add(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.0.push(CheckResult {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }
}

const SSH_SCRIPT: &str = r#"printf 'lang=%s\n' "$LANG"; locale 2>&1 | sed 's/^/locale: /'; locale -a 2>/dev/null | grep -ix 'zh_CN.utf8' | sed 's/^/avail: /'; printf 'tz=%s\n' "$(date +%Z)"; echo 'zh=中文'; printf 'pwd=%s\n' "$PWD"; python --version 2>&1 | sed 's/^/py: /'; conda --version 2>&1 | sed 's/^/conda: /'; command -v jupyter | sed 's/^/jupyter: /'; command -v tensorboard | sed 's/^/tensorboard: /'"#;

fn ssh_args(dir: &Path, port: u16, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-f".into(),
        dir.join("password").display().to_string(),
        "ssh".into(),
        "-p".into(),
        port.to_string(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", dir.join("known_hosts").display()),
        "-o".into(),
        "HostKeyAlgorithms=ssh-ed25519".into(),
        "-o".into(),
        "PreferredAuthentications=password".into(),
        "-o".into(),
        "PubkeyAuthentication=no".into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
    ];
    a.extend(extra.iter().map(|s| (*s).to_string()));
    a.push("root@127.0.0.1".into());
    a
}

/// Scan `docker history --no-trunc` / `docker inspect` text for credentials.
pub fn find_secrets(text: &str, known: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for k in known {
        if !k.is_empty() && text.contains(k) {
            found.push("a value given to the container at run time".to_string());
        }
    }
    for word in text.split(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == '\'') {
        let upper = word.to_ascii_uppercase();
        for key in ["PASSWORD=", "PASSWD=", "TOKEN=", "SECRET="] {
            if let Some(i) = upper.find(key) {
                let value = &word[i + key.len()..];
                // a file path or an empty value is not a secret
                if !value.is_empty() && !value.starts_with('/') && !value.starts_with('$') {
                    found.push(format!("`{}`", &word[..(i + key.len()).min(word.len())]));
                }
            }
        }
        if word.starts_with("root:")
            && word.len() > 5
            && !word[5..].starts_with('$')
            && !word[5..].starts_with('%')
        {
            found.push("a `root:PASSWORD` pair (chpasswd)".into());
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Verify one image. `expect_python` comes from the cell (or the image's label).
pub fn verify_image(
    docker: &Docker,
    image: &str,
    expect_python: Option<&str>,
    ready_timeout: u64,
    cancel: &Cancel,
) -> Verification {
    let mut checks = Checks(Vec::new());
    // The checks reach the container's services on 127.0.0.1: an engine on another
    // host would only time out, after a long wait, with a misleading message.
    if let Err(e) = docker.on_this_host() {
        checks.add("engine", false, e);
        return Verification {
            ok: false,
            ready_seconds: None,
            checks: checks.0,
        };
    }
    let result = verify_inner(
        docker,
        image,
        expect_python,
        ready_timeout,
        cancel,
        &mut checks,
    );
    let mut ready_seconds = None;
    match result {
        Ok(r) => ready_seconds = r,
        Err(e) => checks.add("verify", false, e),
    }
    let ok = !checks.0.is_empty() && checks.0.iter().all(|c| c.ok);
    Verification {
        ok,
        ready_seconds,
        checks: checks.0,
    }
}

fn verify_inner(
    docker: &Docker,
    image: &str,
    expect_python: Option<&str>,
    ready_timeout: u64,
    cancel: &Cancel,
    checks: &mut Checks,
) -> Result<Option<f64>, String> {
    let secrets = tempfile::Builder::new()
        .prefix("image-matrix-verify.")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let password = format!("pw-{}", random_hex(8));
    let token = random_hex(16);
    std::fs::write(secrets.path().join("password"), format!("{password}\n"))
        .map_err(|e| e.to_string())?;
    std::fs::write(secrets.path().join("token"), format!("{token}\n"))
        .map_err(|e| e.to_string())?;
    let p = ports()?;
    let t0 = Instant::now();
    let c = start(docker, image, secrets.path(), &p)?;
    let base = "/jupyter/";
    // Readiness: all three services answer, within the deadline.
    let deadline = t0 + Duration::from_secs(ready_timeout);
    let ready = loop {
        let j = http_get(p.jupyter, &format!("{base}api"), None).is_ok_and(|(s, _)| s == 200);
        let t = http_get(p.tensorboard, "/monitor/", None).is_ok_and(|(s, _)| s == 200);
        let s = TcpStream::connect(("127.0.0.1", p.ssh)).is_ok();
        if j && t && s {
            break Some(t0.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline || cancel.is_set() {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let Some(ready_s) = ready else {
        let logs = docker.logs(&c.name);
        let last: Vec<&str> = logs
            .lines()
            .rev()
            .take(8)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        checks.add(
            "ready",
            false,
            format!(
                "services did not all answer within {ready_timeout}s; last log lines: {}",
                last.join(" | ")
            ),
        );
        return Ok(None);
    };
    checks.add(
        "ready",
        true,
        format!("sshd, JupyterLab and TensorBoard answered {ready_s:.1}s after docker run"),
    );

    // Host key from the container, so that SSH checks it strictly.
    let key = docker.exec(&c.name, &["cat", "/etc/ssh/ssh_host_ed25519_key.pub"])?;
    let key_body = key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    std::fs::write(
        secrets.path().join("known_hosts"),
        format!("[127.0.0.1]:{} {key_body}\n", p.ssh),
    )
    .map_err(|e| e.to_string())?;

    let sshpass = Path::new("sshpass");
    let (code, out, err) = run_program(
        sshpass,
        &{
            let mut a = ssh_args(secrets.path(), p.ssh, &[]);
            a.push(SSH_SCRIPT.into());
            a
        },
        None,
        Duration::from_secs(30),
    )?;
    let text = String::from_utf8_lossy(&out).to_string();
    checks.add(
        "ssh-login",
        code == 0,
        if code == 0 {
            "password login as root works".to_string()
        } else {
            format!(
                "ssh exited with {code}: {}",
                String::from_utf8_lossy(&err).trim()
            )
        },
    );
    if code == 0 {
        let get = |prefix: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        let locale_warnings: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("locale: ") && l.contains("annot"))
            .collect();
        let lang = get("lang=");
        let avail = get("avail: ");
        let locale_ok = lang == "zh_CN.UTF-8" && locale_warnings.is_empty() && !avail.is_empty();
        checks.add(
            "locale",
            locale_ok,
            if locale_ok {
                "LANG=zh_CN.UTF-8 in the SSH session, locale generated".to_string()
            } else {
                format!(
                    "LANG={lang:?}, zh_CN.utf8 generated: {}, warnings: {}",
                    !avail.is_empty(),
                    locale_warnings.join("; ")
                )
            },
        );
        let tz = get("tz=");
        checks.add(
            "timezone",
            tz == "CST",
            format!("date +%Z in the SSH session: {tz}"),
        );
        let zh_ok = out
            .windows("zh=中文\n".len())
            .any(|w| w == "zh=中文\n".as_bytes());
        checks.add(
            "chinese",
            zh_ok,
            if zh_ok {
                "echo 中文 round-trips byte-exact".to_string()
            } else {
                "echo 中文 came back altered".to_string()
            },
        );
        let pwd = get("pwd=");
        checks.add("workdir", pwd == "/root", format!("login directory: {pwd}"));
        let py = get("py: ");
        let py_ok = py.starts_with("Python ")
            && expect_python.is_none_or(|want| {
                py.strip_prefix("Python ")
                    .is_some_and(|v| v == want || v.starts_with(&format!("{want}.")))
            });
        checks.add(
            "python",
            py_ok,
            format!("{py} (expected {})", expect_python.unwrap_or("any")),
        );
        let conda = get("conda: ");
        checks.add(
            "conda",
            conda.starts_with("conda "),
            format!("conda --version: {conda}"),
        );
        let (j, t) = (get("jupyter: "), get("tensorboard: "));
        checks.add(
            "tools-on-path",
            !j.is_empty() && !t.is_empty(),
            format!("jupyter: {j:?}, tensorboard: {t:?}"),
        );
    }
    // An interactive login shows the banner.
    let (_, motd_out, _) = run_program(
        sshpass,
        &ssh_args(secrets.path(), p.ssh, &["-tt"]),
        Some(b"exit\n"),
        Duration::from_secs(30),
    )?;
    let motd = String::from_utf8_lossy(&motd_out);
    checks.add(
        "motd",
        motd.contains("目录说明") && motd.contains("/root/tensorboard-logs"),
        "interactive SSH login shows the directory banner",
    );

    // JupyterLab.
    let api = http_get(p.jupyter, &format!("{base}api"), None)?;
    checks.add(
        "jupyter-api",
        api.0 == 200 && api.1.contains("version"),
        format!("GET {base}api: {}", api.0),
    );
    let anon = http_get(p.jupyter, &format!("{base}api/contents"), None)?;
    let authed = http_get(p.jupyter, &format!("{base}api/contents"), Some(&token))?;
    checks.add(
        "jupyter-auth",
        anon.0 == 403 && authed.0 == 200,
        format!(
            "{base}api/contents without token: {}, with token: {}",
            anon.0, authed.0
        ),
    );
    let settings = http_get(
        p.jupyter,
        &format!("{base}lab/api/settings/@jupyterlab/translation-extension:plugin"),
        Some(&token),
    )?;
    let default_locale = serde_json::from_str::<serde_json::Value>(&settings.1)
        .ok()
        .and_then(|v| {
            v.pointer("/schema/properties/locale/default")
                .and_then(|d| d.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default();
    checks.add(
        "jupyter-zh-ui",
        default_locale == "zh_CN",
        format!("default UI language: {default_locale:?}"),
    );

    // TensorBoard.
    let tb = http_get(p.tensorboard, "/monitor/", None)?;
    let logdir = http_get(p.tensorboard, "/monitor/data/logdir", None)?;
    checks.add(
        "tensorboard",
        tb.0 == 200 && logdir.1.contains("/root/tensorboard-logs"),
        format!("GET /monitor/: {}, logdir: {}", tb.0, logdir.1.trim()),
    );

    // A second container gets its own host keys.
    let p2 = ports()?;
    let c2 = start(docker, image, secrets.path(), &p2)?;
    let until = Instant::now() + Duration::from_secs(30);
    let key2 = loop {
        if let Ok(k) = docker.exec(&c2.name, &["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]) {
            break k;
        }
        if Instant::now() > until {
            break String::new();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let key2_body = key2
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    checks.add(
        "host-keys",
        !key2_body.is_empty() && key2_body != key_body,
        "two containers of the image have different SSH host keys",
    );
    drop(c2);

    // No credentials in the image's metadata or history.
    let history =
        docker.capture(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", image])?;
    let inspect = docker.capture(&["image", "inspect", image])?;
    let found = find_secrets(&format!("{history}\n{inspect}"), &[&password, &token]);
    checks.add(
        "no-secrets",
        found.is_empty(),
        if found.is_empty() {
            "docker history --no-trunc and docker inspect hold no password or token".to_string()
        } else {
            format!("found {}", found.join(", "))
        },
    );
    drop(c);
    Ok(Some(ready_s))
}

/// Verify the built cells of a manifest in place.
pub fn verify_records(
    engines: &crate::engine::Engines,
    cells: &mut [CellRecord],
    ready_timeout: u64,
    cancel: &Cancel,
) -> Vec<(String, Verification)> {
    let mut out = Vec::new();
    for c in cells
        .iter_mut()
        .filter(|c| c.status.succeeded() && c.verification.is_none())
    {
        if cancel.is_set() {
            break;
        }
        let Some(tag) = c.tags.first().cloned() else {
            continue;
        };
        crate::err(&format!("verifying {tag} ..."));
        let Some(docker) = engines.get(c.engine.as_deref()) else {
            let v = Verification {
                ok: false,
                ready_seconds: None,
                checks: vec![CheckResult {
                    name: "engine".into(),
                    ok: false,
                    detail: format!(
                        "engine {} that holds the image is not reachable",
                        c.engine.as_deref().unwrap_or_default()
                    ),
                }],
            };
            c.verification = Some(v.clone());
            out.push((tag, v));
            continue;
        };
        let v = verify_image(
            docker,
            &tag,
            Some(&c.coordinates.python),
            ready_timeout,
            cancel,
        );
        c.verification = Some(v.clone());
        out.push((tag, v));
    }
    out
}

pub fn table(report: &[(String, Verification)]) -> String {
    let mut s = String::new();
    for (image, v) in report {
        s.push_str(&format!(
            "{image}: {}\n",
            if v.ok { "PASS" } else { "FAIL" }
        ));
        for c in &v.checks {
            s.push_str(&format!(
                "  {:<4} {:<14} {}\n",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            ));
        }
    }
    s
}

pub fn run(args: &VerifyArgs) -> i32 {
    let path = args
        .manifest
        .clone()
        .unwrap_or_else(|| PathBuf::from("out/manifest.json"));
    let manifest_in = if args.images.is_empty() {
        match manifest::read(&path) {
            Ok(m) => Some(m),
            Err(e) => {
                crate::err(&format!("error: {e}"));
                return crate::exit::PREFLIGHT;
            }
        }
    } else {
        None
    };
    let recorded = manifest_in.as_ref().map_or(&[][..], |m| &m.engines[..]);
    let specs = crate::nightly::engine_specs(&args.docker, &[], recorded);
    let engines = match crate::nightly::connect(&args.docker, crate::cli::Builder::Auto, specs) {
        Ok(c) => c.engines,
        Err(code) => return code,
    };
    if run_program(
        Path::new("sshpass"),
        &["-V".to_string()],
        None,
        Duration::from_secs(5),
    )
    .is_err()
    {
        crate::err("error: verify needs `sshpass` and the OpenSSH client (apt-get install sshpass openssh-client)");
        return crate::exit::PREFLIGHT;
    }
    let cancel = Cancel::default();
    crate::nightly::install_signals(&cancel, remove_all_containers);
    let mut report = Vec::new();
    let mut manifest_out = None;
    if let Some(mut m) = manifest_in {
        let selected: Vec<usize> = (0..m.cells.len())
            .filter(|i| {
                args.filters
                    .iter()
                    .all(|f| record_matches(&m.cells[*i], &f.key, &f.pattern))
            })
            .collect();
        for i in selected {
            if !m.cells[i].status.succeeded() || cancel.is_set() {
                continue;
            }
            let mut one = [m.cells[i].clone()];
            report.extend(verify_records(
                &engines,
                &mut one,
                args.ready_timeout,
                &cancel,
            ));
            m.cells[i] = one[0].clone();
        }
        manifest_out = Some((path, m));
    } else {
        // Loose images are looked up on the first engine given.
        let docker = engines.first();
        for image in &args.images {
            let py = docker.label(image, "io.image-matrix.python");
            crate::err(&format!("verifying {image} ..."));
            report.push((
                image.clone(),
                verify_image(docker, image, py.as_deref(), args.ready_timeout, &cancel),
            ));
        }
    }
    if let Some((path, m)) = &manifest_out {
        if let Err(e) = manifest::write(path, m) {
            crate::err(&format!(
                "warning: cannot write results into {}: {e}",
                path.display()
            ));
        }
    }
    match args.format {
        crate::cli::VerifyFormat::Table => crate::out(&table(&report)),
        crate::cli::VerifyFormat::Json => {
            let v: Vec<serde_json::Value> = report.iter().map(|(i, v)| serde_json::json!({"image": i, "ok": v.ok, "ready_seconds": v.ready_seconds, "checks": v.checks})).collect();
            crate::out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            ));
        }
    }
    if cancel.is_set() {
        return crate::exit::INTERRUPTED;
    }
    if report.is_empty() {
        crate::err("error: nothing to verify (no built cells selected)");
        return crate::exit::FAILED;
    }
    if report.iter().all(|(_, v)| v.ok) {
        crate::exit::OK
    } else {
        crate::exit::FAILED
    }
}

fn record_matches(c: &CellRecord, key: &str, pattern: &str) -> bool {
    let pat = wildmatch::WildMatch::new(pattern);
    let k = &c.coordinates;
    let v: Vec<&str> = match key {
        "python" => vec![&k.python],
        "id" => vec![&c.id],
        "platform" => vec![&k.platform],
        "variant" => vec![&k.variant],
        "os" => vec![&k.os],
        "base" => vec![&k.base],
        "miniconda" => vec![&k.miniconda],
        "cuda" => vec![k.cuda.as_deref().unwrap_or("none")],
        "tag" => c.tags.iter().map(String::as_str).collect(),
        _ => vec![],
    };
    v.iter().any(|x| pat.matches(x))
}

#[cfg(test)]
mod tests {
    use super::find_secrets;

    #[test]
    fn secrets_in_history_are_found() {
        let seed = r#"/bin/sh -c mkdir /var/run/sshd &&     echo "root:123456" | chpasswd"#;
        assert_eq!(
            find_secrets(seed, &[]),
            ["a `root:PASSWORD` pair (chpasswd)"]
        );
        assert!(!find_secrets("ENV JUPYTER_TOKEN=abc", &[]).is_empty());
        assert!(find_secrets(
            "ROOT_PASSWORD_FILE=/run/secrets/pw printf 'root:%s\\n' chpasswd -e",
            &[]
        )
        .is_empty());
        assert!(!find_secrets("label x=pw-1234", &["pw-1234"]).is_empty());
        assert!(find_secrets(
            "RUN bash /tmp/image-matrix/system/setup-system.sh",
            &["pw-1"]
        )
        .is_empty());
    }
}
