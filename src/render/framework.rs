//! The build context of a framework image: a one-step Dockerfile `FROM` its parent
//! Miniconda image, the pinned requirements and the indexes the plan chose. The parent
//! comes in as the build argument `PARENT`: `matrix build` passes the parent's image ID
//! (the image it just built or found current), a hand-made `docker build` of the
//! rendered context passes the parent's primary tag. The Dockerfile names no tag: a
//! tag is not part of the image's identity (scheme 2's named the parent's tag as the
//! default).

use std::sync::Arc;

use super::{Bytes, Rendering, Shared};
use crate::labels;
use crate::plan::family::Framework;
use crate::plan::Cell;

pub(super) static INSTALL: &str = include_str!("../../init/framework/install-framework.sh");

/// (path, text, executable) of every file of a framework image's context, with the
/// extra CA bundle's text if it is to be there (it is not part of identity).
pub fn files(
    c: &Cell,
    f: &Framework,
    extra_ca: Option<&Arc<Shared>>,
    rendering: Rendering,
) -> Vec<(&'static str, Bytes, bool)> {
    let mut out = vec![
        ("Dockerfile", dockerfile(c, f, rendering).into(), false),
        ("framework/install-framework.sh", INSTALL.into(), true),
        (
            "framework/requirements.txt",
            super::lines(&f.requirements).into(),
            false,
        ),
        (
            "framework/index-urls.txt",
            super::lines(&f.index_urls).into(),
            false,
        ),
    ];
    if let Some(pem) = extra_ca {
        out.push(("framework/extra-ca.pem", pem.into(), false));
    }
    out
}

fn dockerfile(c: &Cell, f: &Framework, rendering: Rendering) -> String {
    let versions: Vec<String> = f
        .packages
        .iter()
        .map(|p| {
            format!(
                "{}{}=\"{}\"",
                labels::FRAMEWORK_VERSION_PREFIX,
                p.name,
                p.version
            )
        })
        .collect();
    format!(
        "# Rendered by image-matrix for framework image {id}; its parent is cell {parent}.\n\
         # Build with the context directory that holds this file: `docker build -t TAG .`\n\
         {parent_arg}\
         FROM ${{PARENT}}\n\
         SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\n\
         COPY framework/ /tmp/image-matrix/framework/\n\
         RUN bash /tmp/image-matrix/framework/install-framework.sh && rm -rf /tmp/image-matrix\n\
         LABEL {framework}=\"{name}\" \\\n      \
         {wheel_label}=\"{wheel}\" \\\n      \
         {parent_label}=\"{parent}\" \\\n      \
         {versions} \\\n      \
         {cell_label}=\"{id}\"\n",
        framework = labels::FRAMEWORK,
        wheel_label = labels::FRAMEWORK_WHEEL,
        parent_label = labels::PARENT,
        cell_label = labels::CELL,
        id = c.id,
        parent = f.parent,
        parent_arg = match rendering {
            Rendering::Current => "# (`matrix build` passes the parent's image ID as PARENT; by hand, \
                 pass its primary tag: `--build-arg PARENT=REPO:TAG`.)\n\
                 ARG PARENT\n"
                .to_string(),
            Rendering::Scheme2 => format!(
                "# (PARENT defaults to the parent's primary tag; `matrix build` passes its image ID.)\n\
                 ARG PARENT={}\n",
                f.parent_tag
            ),
        },
        name = f.name.name(),
        wheel = f.wheel,
        versions = versions.join(" \\\n      "),
    )
}
