//! Checks of a user-defined family's image, read from its labels (so `matrix verify
//! IMAGE` needs no matrix): every family on the image's way from its Miniconda cell
//! brings its services (each started on a free loopback port through its port
//! variable) and its checks — a command whose output must contain a text, or a
//! service that must answer (an HTTP path with status 200 and a text in its body, or
//! a TCP connection).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::docker::Docker;
use crate::labels;
use crate::plan::custom::{Check, Checks};

/// The families an image's labels name, with what each asks `verify` to check.
pub struct Families(pub Vec<(String, Checks)>);

impl Families {
    pub fn of(docker: &Docker, image: &str) -> Result<Families, String> {
        let (l, _) = docker.labels_and_env(image)?;
        Families::from_labels(&l)
    }

    fn from_labels(l: &BTreeMap<String, String>) -> Result<Families, String> {
        let mut out = Vec::new();
        for (k, v) in l {
            let Some(name) = k
                .strip_prefix(labels::FAMILY_PREFIX)
                .and_then(|n| n.strip_suffix(labels::FAMILY_CHECKS_SUFFIX))
            else {
                continue;
            };
            let checks: Checks = serde_json::from_str(v)
                .map_err(|e| format!("the image's label {k} is not a family's checks: {e}"))?;
            out.push((name.to_string(), checks));
        }
        Ok(Families(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (port variable, default port) of every service.
    pub fn services(&self) -> impl Iterator<Item = (&str, &crate::plan::custom::Service)> {
        self.0
            .iter()
            .flat_map(|(f, c)| c.services.iter().map(move |s| (f.as_str(), s)))
    }
}

/// What a check found: (name, ok, detail).
pub type Found = (String, bool, String);

/// Run every family's checks in `container`; services are reached on the ports
/// `ports` gives (by port variable), waiting for each until `deadline`.
pub fn run(
    docker: &Docker,
    container: &str,
    families: &Families,
    ports: &BTreeMap<String, u16>,
    deadline: Instant,
    exec_timeout: Duration,
) -> Vec<Found> {
    let mut out = Vec::new();
    for (family, c) in &families.0 {
        for check in &c.checks {
            out.push(match (&check.run, &check.service) {
                (Some(cmd), _) => command(docker, container, family, cmd, check, exec_timeout),
                (None, Some(name)) => {
                    let port = c
                        .services
                        .iter()
                        .find(|s| &s.name == name)
                        .and_then(|s| ports.get(&s.port_env).copied());
                    match port {
                        Some(p) => service(family, name, p, check, deadline),
                        None => (
                            format!("{family} {name}"),
                            false,
                            format!("the image names no service {name} of family {family}"),
                        ),
                    }
                }
                (None, None) => (
                    format!("{family} check"),
                    false,
                    "a check with neither `run` nor `service`".into(),
                ),
            });
        }
    }
    out
}

fn command(
    docker: &Docker,
    container: &str,
    family: &str,
    cmd: &str,
    check: &Check,
    timeout: Duration,
) -> Found {
    let script = format!("exec bash -lc {}", crate::shell::quoted(cmd));
    let name = format!("{family} run");
    match docker.exec_script(container, &script, timeout) {
        Ok(out) => judge_output(name, cmd, &out, check.expect.as_deref()),
        Err(e) => (name, false, format!("`{cmd}` failed: {}", last_line(&e))),
    }
}

fn judge_output(name: String, cmd: &str, out: &str, expect: Option<&str>) -> Found {
    match expect {
        Some(want) if !out.contains(want) => (
            name,
            false,
            format!("`{cmd}` printed `{}`, not `{want}`", last_line(out)),
        ),
        Some(want) => (name, true, format!("`{cmd}` printed `{want}`")),
        None => (name, true, format!("`{cmd}` exited 0")),
    }
}

fn last_line(s: &str) -> &str {
    s.trim().lines().last().unwrap_or("").trim()
}

fn service(family: &str, name: &str, port: u16, check: &Check, deadline: Instant) -> Found {
    let label = format!("{family} {name}");
    let mut last = String::from("nothing answered");
    loop {
        match &check.path {
            Some(path) => match super::http::get(port, path, None) {
                Ok((200, body)) => match check.expect.as_deref() {
                    Some(want) if !body.contains(want) => {
                        last = format!(
                            "GET {path} answered 200 without `{want}`: {}",
                            last_line(&body)
                        );
                    }
                    _ => {
                        return (
                            label,
                            true,
                            format!("GET {path} on port {port} answered 200"),
                        )
                    }
                },
                Ok((status, _)) => last = format!("GET {path} answered {status}"),
                Err(e) => last = e,
            },
            None => {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return (label, true, format!("port {port} accepts connections"));
                }
            }
        }
        if Instant::now() > deadline {
            return (label, false, format!("port {port}: {last}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_come_from_their_labels_and_a_bad_label_is_said() {
        let mut l = BTreeMap::new();
        l.insert(
            "io.image-matrix.family.yolo".to_string(),
            "8.3.0".to_string(),
        );
        l.insert(
            "io.image-matrix.family.yolo.checks".to_string(),
            r#"{"services":[],"checks":[{"run":"python -c 'import yaml'","expect":"ok"}]}"#
                .to_string(),
        );
        l.insert(
            "io.image-matrix.framework".to_string(),
            "pytorch".to_string(),
        );
        let f = Families::from_labels(&l).unwrap();
        assert_eq!(f.0.len(), 1);
        assert_eq!(f.0[0].0, "yolo");
        assert_eq!(f.0[0].1.checks[0].expect.as_deref(), Some("ok"));
        l.insert(
            "io.image-matrix.family.bad.checks".to_string(),
            "{".to_string(),
        );
        let e = Families::from_labels(&l).err().unwrap();
        assert!(e.contains("io.image-matrix.family.bad.checks"), "{e}");
    }

    #[test]
    fn a_command_passes_only_with_its_expected_text() {
        let (_, ok, _) = judge_output("f run".into(), "x", "a\n6.0.2\n", Some("6.0"));
        assert!(ok);
        let (_, ok, detail) = judge_output("f run".into(), "x", "a\n5.4\n", Some("6.0"));
        assert!(!ok);
        assert!(detail.contains("printed `5.4`, not `6.0`"), "{detail}");
    }

    #[test]
    fn a_service_that_never_answers_fails_at_its_deadline() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let check = Check {
            run: None,
            service: Some("api".into()),
            path: Some("/health".into()),
            expect: Some("ok".into()),
        };
        let (_, ok, detail) = service("demo", "api", port, &check, Instant::now());
        assert!(!ok);
        assert!(detail.starts_with(&format!("port {port}:")), "{detail}");
    }
}
