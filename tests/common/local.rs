//! The matrices of the real-Docker tests: cells on local bases, their installers
//! fetched from the stand-in mirror on loopback, built on the host network. A test
//! says what its matrix has of its own (repository, tag, axes, other installers,
//! engines); the rest, the same in each, is written here once.

use super::Mirror;

/// The installer `Mirror::start` serves and most matrices list.
const INSTALLER: &str = "Miniconda3-py311_24.5.0-0-Linux-x86_64.sh";

/// A `matrix.yaml` of a real-Docker test, in the order of its keys: `version`,
/// `image`, the test's axes and rules, `installers`, `sources`, `build`, then what
/// the test adds after them.
pub struct LocalMatrix {
    repository: String,
    tag: String,
    image: Vec<String>,
    axes: String,
    installers: Vec<String>,
    mirror: String,
    sha256: String,
    sources: Vec<String>,
    rest: String,
}

impl LocalMatrix {
    /// Images `repository:tag` (`tag` a template: `conda3-python{python}-{base}`),
    /// their installers from `mirror`.
    pub fn new(repository: &str, tag: &str, mirror: &Mirror) -> LocalMatrix {
        let url = format!("http://127.0.0.1:{}/", mirror.port);
        LocalMatrix::served(repository, tag, &url, &mirror.sha)
    }

    /// [`LocalMatrix::new`] with the installers from `mirror_url` (ending in `/`),
    /// expected to have `sha256`.
    pub fn served(repository: &str, tag: &str, mirror_url: &str, sha256: &str) -> LocalMatrix {
        LocalMatrix {
            repository: repository.to_string(),
            tag: tag.to_string(),
            image: Vec::new(),
            axes: String::new(),
            installers: vec![INSTALLER.to_string()],
            mirror: mirror_url.to_string(),
            sha256: sha256.to_string(),
            sources: Vec::new(),
            rest: String::new(),
        }
    }

    /// One more key of `image:` after the tag (`aliases: ["{tag}-nightly"]`).
    pub fn image(mut self, line: &str) -> LocalMatrix {
        self.image.push(line.to_string());
        self
    }

    /// The axes and rules (`bases:`, `python:`, `variants:`, `include:` …), as YAML
    /// ending in a newline.
    pub fn axes(mut self, yaml: &str) -> LocalMatrix {
        self.axes = yaml.to_string();
        self
    }

    /// The installers listed, each with the mirror's SHA256, instead of [`INSTALLER`].
    pub fn installers(mut self, files: &[&str]) -> LocalMatrix {
        self.installers = files.iter().map(|f| f.to_string()).collect();
        self
    }

    /// One more key of `sources:` (`pytorch_index: pypi`).
    pub fn source(mut self, line: &str) -> LocalMatrix {
        self.sources.push(line.to_string());
        self
    }

    /// YAML after `build:` (`engines:` …).
    pub fn then(mut self, yaml: &str) -> LocalMatrix {
        self.rest = yaml.to_string();
        self
    }

    pub fn yaml(&self) -> String {
        let mut y = format!(
            "version: 1\nimage:\n  repository: {}\n  tag: \"{}\"\n",
            self.repository, self.tag
        );
        for line in &self.image {
            y.push_str(&format!("  {line}\n"));
        }
        y.push_str(&self.axes);
        y.push_str("installers:\n");
        for file in &self.installers {
            y.push_str(&format!(
                "  - file: {file}\n    sha256: \"{}\"\n",
                self.sha256
            ));
        }
        y.push_str(&format!(
            "sources:\n  installer_mirrors: [\"{}\"]\n  ca_bundle: /etc/ssl/certs/ca-certificates.crt\n",
            self.mirror
        ));
        for line in &self.sources {
            y.push_str(&format!("  {line}\n"));
        }
        y.push_str("build:\n  network: host\n");
        y.push_str(&self.rest);
        y
    }
}
