//! The checks of one verification, each a named step on a running container: ready,
//! SSH session (login, locale, timezone, Chinese, workdir, Python, conda, tools),
//! MOTD, JupyterLab (API, token, Chinese UI), TensorBoard, host keys, no secrets.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use super::containers;
use super::http;
use crate::docker::{run_program, Docker};
use crate::manifest::CheckResult;
use crate::sbom::Collected;
use crate::signals::Cancel;

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

/// A loopback port nobody listens on, and one this process has not handed out
/// before: verifications run side by side, and the kernel may offer a port again
/// once its probe socket is closed.
fn free_port() -> Result<u16, String> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port: {e}"))?;
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    Err("no free port that this run has not used already".into())
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    crate::plan::hex(&buf)
}

struct Ports {
    ssh: u16,
    jupyter: u16,
    tensorboard: u16,
    /// Each family service's port, by its port variable.
    services: std::collections::BTreeMap<String, u16>,
}

impl Ports {
    fn free(families: &super::custom::Families) -> Result<Ports, String> {
        let mut services = std::collections::BTreeMap::new();
        for (_, s) in families.services() {
            services.insert(s.port_env.clone(), free_port()?);
        }
        Ok(Ports {
            ssh: free_port()?,
            jupyter: free_port()?,
            tensorboard: free_port()?,
            services,
        })
    }
}

/// Collected results, each with the time since the previous one (the checks run one
/// after another).
struct Checks<'r>(&'r mut Vec<CheckResult>, Instant);

impl Checks<'_> {
    fn add(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        let now = Instant::now();
        self.0.push(CheckResult {
            name: name.into(),
            ok,
            detail: detail.into(),
            seconds: Some(((now - self.1).as_secs_f64() * 10.0).round() / 10.0),
        });
        self.1 = now;
    }
}

/// One verification's credentials (on disk only in a private temp dir mounted
/// read-only into the container) and the image under test.
struct Session<'d> {
    docker: &'d Docker,
    image: &'d str,
    secrets: tempfile::TempDir,
    password: String,
    token: String,
}

const BASE_URL: &str = "/jupyter/";

impl<'d> Session<'d> {
    fn new(docker: &'d Docker, image: &'d str) -> Result<Self, String> {
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
        Ok(Session {
            docker,
            image,
            secrets,
            password,
            token,
        })
    }

    fn dir(&self) -> &Path {
        self.secrets.path()
    }

    fn start(&self, ports: &Ports) -> Result<Container<'d>, String> {
        let name = format!("image-matrix-verify-{}", random_hex(6));
        if let Ok(mut l) = containers().lock() {
            l.push((self.docker.clone(), name.clone()));
        }
        let c = Container {
            docker: self.docker,
            name: name.clone(),
        };
        let env = |k: &str, v: String| ["-e".to_string(), format!("{k}={v}")];
        let mut args: Vec<String> = vec!["--name".into(), name, "--network".into(), "host".into()];
        args.extend(env("SSH_PORT", ports.ssh.to_string()));
        args.extend(env("JUPYTER_PORT", ports.jupyter.to_string()));
        args.extend(env("TENSORBOARD_PORT", ports.tensorboard.to_string()));
        for (var, port) in &ports.services {
            args.extend(env(var, port.to_string()));
        }
        args.extend(env(
            "ROOT_PASSWORD_FILE",
            "/run/image-matrix-verify/password".into(),
        ));
        args.extend(env(
            "JUPYTER_TOKEN_FILE",
            "/run/image-matrix-verify/token".into(),
        ));
        args.push("-v".into());
        args.push(format!(
            "{}:/run/image-matrix-verify:ro",
            self.dir().display()
        ));
        if super::framework::engine_has_gpus(self.docker) {
            args.push("--gpus".into());
            args.push("all".into());
        }
        args.push(self.image.into());
        self.docker.run_detached(&args)?;
        Ok(c)
    }

    fn ssh_args(&self, port: u16, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-f".into(),
            self.dir().join("password").display().to_string(),
            "ssh".into(),
            "-p".into(),
            port.to_string(),
        ];
        for o in [
            "StrictHostKeyChecking=yes".to_string(),
            format!(
                "UserKnownHostsFile={}",
                self.dir().join("known_hosts").display()
            ),
            "HostKeyAlgorithms=ssh-ed25519".into(),
            "PreferredAuthentications=password".into(),
            "PubkeyAuthentication=no".into(),
            "ConnectTimeout=10".into(),
            "LogLevel=ERROR".into(),
        ] {
            a.push("-o".into());
            a.push(o);
        }
        a.extend(extra.iter().map(|s| (*s).to_string()));
        a.push("root@127.0.0.1".into());
        a
    }
}

/// Run every check; returns the seconds until the services answered (None when they
/// never did). An `Err` is a failure to run the checks at all.
pub fn run_all(
    docker: &Docker,
    image: &str,
    expect_python: Option<&str>,
    (ready_timeout, emulated): (u64, bool),
    cancel: &Cancel,
    results: &mut Vec<CheckResult>,
    packages: &mut Option<Collected>,
) -> Result<Option<f64>, String> {
    let mut checks = Checks(results, Instant::now());
    let s = Session::new(docker, image)?;
    let families = super::custom::Families::of(docker, image)?;
    let p = Ports::free(&families)?;
    let t0 = Instant::now();
    let c = s.start(&p)?;
    // the host-keys check's second container boots beside the first and is removed
    // as soon as it shows its key: its boot is off the verification's critical path
    std::thread::scope(|scope| {
        let second = scope.spawn(|| second_key(&s, &families, ready_timeout, cancel));
        let ready_s = ready(&s, &c, &p, t0, ready_timeout, cancel, &mut checks);
        // the image's packages, while its container runs (not a check: an SBOM that could
        // not be made never fails verification); its time is not the next check's
        if !cancel.is_set() {
            let t = Instant::now();
            let output =
                docker.exec_script(&c.name, crate::sbom::SCRIPT, crate::sbom::timeout(emulated));
            *packages = Some(Collected {
                output,
                seconds: t.elapsed().as_secs_f64(),
            });
            checks.1 = Instant::now();
        }
        let Some(ready_s) = ready_s else {
            return Ok(None);
        };
        let key = host_key(&s, &c, &p)?;
        ssh_session(&s, &p, expect_python, &mut checks)?;
        motd(&s, &p, &mut checks)?;
        jupyter(&s, &p, &mut checks)?;
        tensorboard(&p, &mut checks)?;
        let second = second
            .join()
            .unwrap_or_else(|_| Err("the second container's thread panicked".into()));
        judge_keys(&key, second?, ready_timeout, &mut checks);
        no_secrets(&s, &mut checks)?;
        if let Some(e) = super::framework::Expect::of(docker, image) {
            let out = super::framework::run(docker, &c.name, &e);
            for (name, ok, detail) in super::framework::judge(&e, &out) {
                checks.add(&name, ok, detail);
            }
        }
        if !families.is_empty() {
            // services had the whole readiness deadline; a slow one gets it again
            let deadline = Instant::now() + Duration::from_secs(ready_timeout);
            let exec_timeout = Duration::from_secs(ready_timeout.max(60));
            for (name, ok, detail) in super::custom::run(
                docker,
                &c.name,
                &families,
                &p.services,
                deadline,
                exec_timeout,
            ) {
                checks.add(&name, ok, detail);
            }
        }
        drop(c);
        Ok(Some(ready_s))
    })
}

/// All three services answer, within the deadline.
fn ready(
    s: &Session,
    c: &Container,
    p: &Ports,
    t0: Instant,
    ready_timeout: u64,
    cancel: &Cancel,
    checks: &mut Checks,
) -> Option<f64> {
    let deadline = t0 + Duration::from_secs(ready_timeout);
    loop {
        let j = http::get(p.jupyter, &format!("{BASE_URL}api"), None).is_ok_and(|(s, _)| s == 200);
        let t = http::get(p.tensorboard, "/monitor/", None).is_ok_and(|(s, _)| s == 200);
        // sshd is asked through the container's socket table, not by connecting: since
        // OpenSSH 9.8, connections that never authenticate earn their source a penalty
        // (PerSourcePenalties), and a probe every 100 ms would lock verify out
        let h = j && t && listening(s.docker, &c.name, p.ssh);
        if j && t && h {
            let secs = t0.elapsed().as_secs_f64();
            checks.add(
                "ready",
                true,
                format!("sshd, JupyterLab and TensorBoard answered {secs:.1}s after docker run"),
            );
            return Some(secs);
        }
        if Instant::now() > deadline || cancel.is_set() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = s.docker.logs(&c.name);
    let last: Vec<&str> = logs.lines().rev().take(8).collect::<Vec<_>>();
    let last: Vec<&str> = last.into_iter().rev().collect();
    checks.add(
        "ready",
        false,
        format!(
            "services did not all answer within {ready_timeout}s; last log lines: {}",
            last.join(" | ")
        ),
    );
    None
}

/// Whether something in the container listens on TCP `port` (/proc/net/tcp{,6}).
fn listening(docker: &Docker, container: &str, port: u16) -> bool {
    let Ok(table) = docker.exec(container, &["cat", "/proc/net/tcp", "/proc/net/tcp6"]) else {
        return false;
    };
    let want = format!(":{port:04X}");
    table.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
    })
}

/// The container's SSH host key, written to known_hosts so that SSH checks it strictly.
fn host_key(s: &Session, c: &Container, p: &Ports) -> Result<String, String> {
    let key = s
        .docker
        .exec(&c.name, &["cat", "/etc/ssh/ssh_host_ed25519_key.pub"])?;
    let body = key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    std::fs::write(
        s.dir().join("known_hosts"),
        format!("[127.0.0.1]:{} {body}\n", p.ssh),
    )
    .map_err(|e| e.to_string())?;
    Ok(body)
}

const SSH_SCRIPT: &str = r#"printf 'lang=%s\n' "$LANG"; locale 2>&1 | sed 's/^/locale: /'; locale -a 2>/dev/null | grep -ix 'zh_CN.utf8' | sed 's/^/avail: /'; printf 'tz=%s\n' "$(date +%Z)"; echo 'zh=中文'; printf 'pwd=%s\n' "$PWD"; python --version 2>&1 | sed 's/^/py: /'; conda --version 2>&1 | sed 's/^/conda: /'; command -v jupyter | sed 's/^/jupyter: /'; command -v tensorboard | sed 's/^/tensorboard: /'"#;

/// A password login, then what the session sees.
fn ssh_session(
    s: &Session,
    p: &Ports,
    expect_python: Option<&str>,
    checks: &mut Checks,
) -> Result<(), String> {
    let mut args = s.ssh_args(p.ssh, &[]);
    args.push(SSH_SCRIPT.into());
    let (code, out, err) = run_program(Path::new("sshpass"), &args, None, Duration::from_secs(30))?;
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
        session_facts(&out, expect_python, checks);
    }
    Ok(())
}

fn session_facts(out: &[u8], expect_python: Option<&str>, checks: &mut Checks) {
    let text = String::from_utf8_lossy(out).to_string();
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
    let (lang, avail) = (get("lang="), get("avail: "));
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
    let zh = "zh=中文\n".as_bytes();
    let zh_ok = out.windows(zh.len()).any(|w| w == zh);
    checks.add(
        "chinese",
        zh_ok,
        if zh_ok {
            "echo 中文 round-trips byte-exact"
        } else {
            "echo 中文 came back altered"
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

/// An interactive login shows the banner.
fn motd(s: &Session, p: &Ports, checks: &mut Checks) -> Result<(), String> {
    let (_, out, _) = run_program(
        Path::new("sshpass"),
        &s.ssh_args(p.ssh, &["-tt"]),
        Some(b"exit\n"),
        Duration::from_secs(30),
    )?;
    let motd = String::from_utf8_lossy(&out);
    checks.add(
        "motd",
        motd.contains("目录说明") && motd.contains("/root/tensorboard-logs"),
        "interactive SSH login shows the directory banner",
    );
    Ok(())
}

/// JupyterLab: its API, a token that is required, and the Chinese UI by default.
fn jupyter(s: &Session, p: &Ports, checks: &mut Checks) -> Result<(), String> {
    let api = http::get(p.jupyter, &format!("{BASE_URL}api"), None)?;
    checks.add(
        "jupyter-api",
        api.0 == 200 && api.1.contains("version"),
        format!("GET {BASE_URL}api: {}", api.0),
    );
    let anon = http::get(p.jupyter, &format!("{BASE_URL}api/contents"), None)?;
    let authed = http::get(
        p.jupyter,
        &format!("{BASE_URL}api/contents"),
        Some(&s.token),
    )?;
    checks.add(
        "jupyter-auth",
        anon.0 == 403 && authed.0 == 200,
        format!(
            "{BASE_URL}api/contents without token: {}, with token: {}",
            anon.0, authed.0
        ),
    );
    let settings = http::get(
        p.jupyter,
        &format!("{BASE_URL}lab/api/settings/@jupyterlab/translation-extension:plugin"),
        Some(&s.token),
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
    Ok(())
}

fn tensorboard(p: &Ports, checks: &mut Checks) -> Result<(), String> {
    let tb = http::get(p.tensorboard, "/monitor/", None)?;
    let logdir = http::get(p.tensorboard, "/monitor/data/logdir", None)?;
    checks.add(
        "tensorboard",
        tb.0 == 200 && logdir.1.contains("/root/tensorboard-logs"),
        format!("GET /monitor/: {}, logdir: {}", tb.0, logdir.1.trim()),
    );
    Ok(())
}

/// The SSH host key of a second container of the image (empty when it made none in
/// time). It has as long to make one as the first has to answer (`ready_timeout`,
/// already stretched under emulation, where key generation runs several times
/// slower); the container is removed once it has shown it.
fn second_key(
    s: &Session,
    families: &super::custom::Families,
    ready_timeout: u64,
    cancel: &Cancel,
) -> Result<String, String> {
    let p2 = Ports::free(families)?;
    let c2 = s.start(&p2)?;
    // one exec that waits inside the container: an exec every 100 ms until the key is
    // there costs the engine a process or three each time, beside the first
    // container's boot
    let script = format!(
        "f=/etc/ssh/ssh_host_ed25519_key.pub; i=0; \
         while [ ! -s \"$f\" ] && [ \"$i\" -lt {} ]; do sleep 0.1; i=$((i+1)); done; cat \"$f\"",
        ready_timeout * 10
    );
    let wait = Duration::from_secs(ready_timeout + 10);
    let key2 = if cancel.is_set() {
        String::new()
    } else {
        s.docker
            .exec_script(&c2.name, &script, wait)
            .unwrap_or_default()
    };
    drop(c2);
    Ok(key2
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

/// A second container of the image has a host key of its own.
fn judge_keys(first: &str, second: String, ready_timeout: u64, checks: &mut Checks) {
    let detail = if second.is_empty() {
        format!("a second container had no SSH host key after {ready_timeout}s")
    } else if second == first {
        "a second container has the same SSH host key as the first".to_string()
    } else {
        "two containers of the image have different SSH host keys".to_string()
    };
    checks.add("host-keys", !second.is_empty() && second != first, detail);
}

/// No credentials in the image's metadata or history.
fn no_secrets(s: &Session, checks: &mut Checks) -> Result<(), String> {
    let history = s.docker.capture(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        s.image,
    ])?;
    let inspect = s.docker.capture(&["image", "inspect", s.image])?;
    let found = find_secrets(&format!("{history}\n{inspect}"), &[&s.password, &s.token]);
    checks.add(
        "no-secrets",
        found.is_empty(),
        if found.is_empty() {
            "docker history --no-trunc and docker inspect hold no password or token".to_string()
        } else {
            format!("found {}", found.join(", "))
        },
    );
    Ok(())
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
