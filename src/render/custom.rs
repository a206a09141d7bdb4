//! The build context of a user-defined family's image: a one-step Dockerfile `FROM`
//! its parent (the build argument `PARENT`, as for framework images), the layer's
//! package lists, its script, its services' run scripts and supervisor program, and
//! labels that carry its checks to `verify`.

use std::fmt::Write as _;
use std::sync::Arc;

use super::{lines, Bytes, Shared};
use crate::labels;
use crate::plan::custom::Layer;
use crate::plan::Cell;

pub(super) static INSTALL: &str = include_str!("../../init/family/install-family.sh");

/// (path, text, executable) of every file of a family image's context, with the extra
/// CA bundle's text if it is to be there (it is not part of identity).
pub fn files(c: &Cell, l: &Layer, extra_ca: Option<&Arc<Shared>>) -> Vec<(String, Bytes, bool)> {
    let f = |p: &str| format!("family/{p}");
    let names: Vec<String> = l
        .pip
        .iter()
        .filter_map(|p| crate::config::requirement::Requirement::parse(p).ok())
        .map(|r| r.name)
        .collect();
    let mut out: Vec<(String, Bytes, bool)> = vec![
        ("Dockerfile".into(), dockerfile(c, l).into(), false),
        (f("install-family.sh"), INSTALL.into(), true),
        (f("name"), format!("{}\n", l.family).into(), false),
        (f("requirements.txt"), lines(&l.pip).into(), false),
        (f("index-urls.txt"), lines(&l.index_urls).into(), false),
        (f("packages.txt"), lines(&names).into(), false),
        (f("conda.txt"), lines(&l.conda).into(), false),
        (
            f("conda-channels.txt"),
            lines(&l.conda_channels).into(),
            false,
        ),
        (f("apt.txt"), lines(&l.apt).into(), false),
    ];
    if let Some(s) = &l.script {
        out.push((f("script.sh"), s.text.as_str().to_string().into(), true));
    }
    if !l.services.is_empty() {
        out.push((f("supervisor.conf"), supervisor(l).into(), false));
        for s in &l.services {
            out.push((
                f(&format!("services/{}", s.name)),
                run_script(l, s).into(),
                true,
            ));
        }
    }
    if let Some(pem) = extra_ca {
        out.push((f("extra-ca.pem"), pem.into(), false));
    }
    out
}

/// A Dockerfile string: `\`, `"` and `$` escaped (values are literal, never expanded).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        if matches!(ch, '\\' | '"' | '$') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

fn dockerfile(c: &Cell, l: &Layer) -> String {
    let mut s = format!(
        "# Rendered by image-matrix for image {id} of family {family}; its parent is cell {parent}.\n\
         # Build with the context directory that holds this file: `docker build -t TAG .`\n\
         # (`matrix build` passes the parent's image ID as PARENT; by hand, pass its primary\n\
         # tag: `--build-arg PARENT=REPO:TAG`.)\n\
         ARG PARENT\n\
         FROM ${{PARENT}}\n\
         SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\n",
        id = c.id,
        family = l.family,
        parent = l.parent,
    );
    for (k, v) in &l.env {
        let _ = writeln!(s, "ENV {k}={}", quoted(v));
    }
    if let Some(v) = &l.version {
        let _ = writeln!(s, "ENV FAMILY_VERSION={}", quoted(v));
    }
    let checks = serde_json::to_string(&l.checks_label()).unwrap_or_default();
    let _ = write!(
        s,
        "COPY family/ /tmp/image-matrix/family/\n\
         RUN bash /tmp/image-matrix/family/install-family.sh && rm -rf /tmp/image-matrix\n\
         LABEL {family_label}{name}={version} \\\n      \
         {family_label}{name}.checks={checks} \\\n      \
         {parent_label}={parent} \\\n      \
         {cell_label}={id}\n",
        family_label = labels::FAMILY_PREFIX,
        name = l.family,
        version = quoted(l.version.as_deref().unwrap_or_default()),
        checks = quoted(&checks),
        parent_label = labels::PARENT,
        parent = quoted(&l.parent),
        cell_label = labels::CELL,
        id = quoted(&c.id),
    );
    s
}

/// One supervisord program per service, like the image's own.
fn supervisor(l: &Layer) -> String {
    let mut s = format!(
        "; Services of family {}, kept running by supervisord beside the image's own.\n",
        l.family
    );
    for svc in &l.services {
        let _ = write!(
            s,
            "\n[program:{family}-{name}]\n\
             command=/init/family/{family}/services/{name}\n\
             autorestart=true\n\
             startsecs=2\n\
             stopwaitsecs=5\n\
             stopasgroup=true\n\
             killasgroup=true\n\
             stdout_logfile=/dev/fd/1\n\
             stdout_logfile_maxbytes=0\n\
             redirect_stderr=true\n",
            family = l.family,
            name = svc.name,
        );
    }
    s
}

/// A service's run script: its port variable checked (or defaulted), then its command
/// by bash, in the image's Python environment.
fn run_script(l: &Layer, svc: &crate::plan::custom::Service) -> String {
    format!(
        "#!/bin/bash\n\
         # Service {name} of family {family}, under supervisord. Its port is ${var}\n\
         # (default {port}): `docker run -e {var}=PORT` moves it.\n\
         set -euo pipefail\n\
         export {var}=\"${{{var}:-{port}}}\"\n\
         if ! [[ \"${var}\" =~ ^[0-9]+$ ]] || [ \"${var}\" -lt 1 ] || [ \"${var}\" -gt 65535 ]; then\n  \
           echo \"[{family}] {var}=${var} is not a port number (1-65535)\" >&2; exit 64\n\
         fi\n\
         export PATH=\"/opt/miniconda3/bin:$PATH\"\n\
         cd /root\n\
         exec bash -c {command}\n",
        name = svc.name,
        family = l.family,
        var = svc.port_env,
        port = svc.port,
        command = crate::shell::quoted(&svc.command),
    )
}
