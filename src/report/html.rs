//! The HTML page of a run: one self-contained file.

use std::path::Path;

use crate::manifest::Manifest;

pub fn page(m: &Manifest, previous: Option<&Manifest>, _path: &Path) -> String {
    let body = super::markdown::summary(m, previous);
    format!(
        "<!doctype html><meta charset=utf-8><title>image-matrix report</title><pre>{}</pre>",
        body.replace('&', "&amp;").replace('<', "&lt;")
    )
}
