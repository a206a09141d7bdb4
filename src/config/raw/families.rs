//! `families:` as written: user-defined image families, each a layer on a parent (the
//! Miniconda cells, a framework's images, or another family's). Shapes only; what the
//! names, placeholders and files mean is checked by the planner (`plan/custom.rs`).

use super::{join, Walker};
use crate::config::yaml::Node;
use crate::diag::{Pos, Sp};

pub const FAMILY: &[&str] = &[
    "name",
    "parent",
    "repository",
    "tag",
    "versions",
    "pip",
    "index_urls",
    "conda",
    "conda_channels",
    "apt",
    "env",
    "script",
    "services",
    "checks",
];
pub const SERVICE: &[&str] = &["name", "command", "port", "port_env"];
pub const CHECK: &[&str] = &["run", "service", "path", "expect"];

#[derive(Debug, Clone)]
pub struct RawFamily {
    /// `families[0]`.
    pub key: String,
    pub at: Pos,
    pub name: Sp<String>,
    pub parent: Option<Sp<String>>,
    pub repository: Option<Sp<String>>,
    pub tag: Option<Sp<String>>,
    pub versions: Vec<Sp<String>>,
    pub pip: Vec<Sp<String>>,
    pub index_urls: Vec<Sp<String>>,
    pub conda: Vec<Sp<String>>,
    pub conda_channels: Vec<Sp<String>>,
    pub apt: Vec<Sp<String>>,
    /// (name, value) in the order written.
    pub env: Vec<(Sp<String>, Sp<String>)>,
    pub script: Option<Sp<String>>,
    pub services: Vec<RawService>,
    pub checks: Vec<RawCheck>,
}

#[derive(Debug, Clone)]
pub struct RawService {
    pub key: String,
    pub name: Sp<String>,
    pub command: Sp<String>,
    pub port: Sp<u64>,
    pub port_env: Option<Sp<String>>,
}

#[derive(Debug, Clone)]
pub struct RawCheck {
    pub key: String,
    pub at: Pos,
    pub run: Option<Sp<String>>,
    pub service: Option<Sp<String>>,
    pub path: Option<Sp<String>>,
    pub expect: Option<Sp<String>>,
}

impl Walker<'_> {
    pub(super) fn family(&mut self, node: &Node, key: String) -> Option<RawFamily> {
        let m = self.mapping(node, &key, FAMILY)?;
        let text = |w: &mut Self, f: &str| m.get(f).and_then(|n| w.string(n, &join(&key, f)));
        let Some(name) = text(self, "name") else {
            self.d.error(
                Some(node.at()),
                &key,
                "a family needs `name` (a lowercase word such as yolo)",
            );
            return None;
        };
        let list = |w: &mut Self, f: &str, packages: bool| {
            m.get(f)
                .map(|n| {
                    if packages {
                        w.package_names(n, &join(&key, f))
                    } else {
                        w.strings(n, &join(&key, f))
                    }
                })
                .unwrap_or_default()
        };
        let versions = match m.get("versions") {
            Some(n) => {
                let k = join(&key, "versions");
                self.not_empty(n, &k, "leave `versions` out for one image per parent");
                self.list(n, &k, |w, n, k| w.version(n, &k))
            }
            None => Vec::new(),
        };
        let out = RawFamily {
            parent: text(self, "parent"),
            repository: text(self, "repository"),
            tag: text(self, "tag"),
            versions,
            pip: list(self, "pip", true),
            index_urls: list(self, "index_urls", false),
            conda: list(self, "conda", true),
            conda_channels: list(self, "conda_channels", false),
            apt: list(self, "apt", true),
            env: m.get("env").map(|n| self.env(n, &key)).unwrap_or_default(),
            script: text(self, "script"),
            services: m
                .get("services")
                .map(|n| self.list(n, &join(&key, "services"), |w, n, k| w.service(n, k)))
                .unwrap_or_default(),
            checks: m
                .get("checks")
                .map(|n| self.list(n, &join(&key, "checks"), |w, n, k| w.check(n, k)))
                .unwrap_or_default(),
            at: node.at(),
            name,
            key,
        };
        Some(out)
    }

    fn env(&mut self, node: &Node, family: &str) -> Vec<(Sp<String>, Sp<String>)> {
        let key = join(family, "env");
        let Some(entries) = node.entries() else {
            self.d.error(
                Some(node.at()),
                &key,
                format!("expected a mapping of NAME: value, found {}", node.kind()),
            );
            return Vec::new();
        };
        entries
            .iter()
            .filter_map(|(k, v)| {
                let value = self.string(v, &join(&key, &k.text))?;
                Some((Sp::new(k.text.clone(), k.at), value))
            })
            .collect()
    }

    fn service(&mut self, node: &Node, key: String) -> Option<RawService> {
        let m = self.mapping(node, &key, SERVICE)?;
        let text = |w: &mut Self, f: &str| m.get(f).and_then(|n| w.string(n, &join(&key, f)));
        let name = text(self, "name");
        let command = text(self, "command");
        let port = m
            .get("port")
            .and_then(|n| self.uint(n, &join(&key, "port"), 1, 65535));
        let port_env = text(self, "port_env");
        match (name, command, port) {
            (Some(name), Some(command), Some(port)) => Some(RawService {
                key,
                name,
                command,
                port,
                port_env,
            }),
            // a value that is there but wrong was said by its reader
            _ if ["name", "command", "port"]
                .iter()
                .all(|k| m.get(k).is_some()) =>
            {
                None
            }
            _ => {
                self.d.error(
                    Some(node.at()),
                    &key,
                    "a service needs `name`, `command` and `port` (the port it listens on unless its `port_env` variable says another)",
                );
                None
            }
        }
    }

    fn check(&mut self, node: &Node, key: String) -> Option<RawCheck> {
        let m = self.mapping(node, &key, CHECK)?;
        let text = |w: &mut Self, f: &str| m.get(f).and_then(|n| w.string(n, &join(&key, f)));
        let c = RawCheck {
            at: node.at(),
            run: text(self, "run"),
            service: text(self, "service"),
            path: text(self, "path"),
            expect: text(self, "expect"),
            key: key.clone(),
        };
        if c.run.is_some() == c.service.is_some() {
            self.d.error(
                Some(c.at),
                &key,
                "a check is either `run: COMMAND` (with an optional `expect`: text its output must contain) or `service: NAME` (with an optional `path` to GET and `expect`)",
            );
            return None;
        }
        if c.run.is_some() && c.path.is_some() {
            self.d.error(
                c.path.as_ref().map(|p| p.at),
                &key,
                "`path` belongs to a `service` check (the HTTP path to GET)",
            );
            return None;
        }
        Some(c)
    }
}
