//! `matrix render`: one self-contained build context per selected cell.

use super::{load_plan, print, select};
use crate::cli::{Cli, RenderArgs};
use crate::error::{Error, Exit};
use crate::render;

pub fn run(cli: &Cli, args: &RenderArgs) -> Result<Exit, Error> {
    let plan = load_plan(cli, &args.select)?;
    let cells = select(&plan, &args.select);
    let renderer = render::Renderer::new(&plan.settings);
    for c in &cells {
        let ctx = renderer.render(c);
        let dir = args.output.join(&c.id);
        render::write(&ctx, &dir).map_err(|e| Error::write(&dir, e))?;
        if args.run_examples {
            write_examples(&plan.settings, c, &dir.join("run"))?;
        }
        print("the context list", &format!("{}\n", dir.display()))?;
    }
    crate::term::line(&format!(
        "rendered {} context{} under {}; build one with: docker build -t TAG {}/<id>",
        cells.len(),
        if cells.len() == 1 { "" } else { "s" },
        args.output.display(),
        args.output.display()
    ));
    Ok(Exit::Success)
}

/// `run/docker-run.sh` and `run/kubernetes.json` of one cell.
fn write_examples(
    s: &crate::config::settings::Settings,
    c: &crate::plan::Cell,
    dir: &std::path::Path,
) -> Result<(), Error> {
    use render::examples;
    std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
    let run = format!(
        "#!/bin/sh\n# Run {tag}; put the root password and the Jupyter token in ./secrets/password and ./secrets/token.\n{}\n",
        examples::docker_run(s, c),
        tag = c.primary_tag()
    );
    let k8s = format!(
        "{}\n",
        serde_json::to_string_pretty(&examples::kubernetes(s, c)).unwrap_or_default()
    );
    for (name, text) in [("docker-run.sh", run), ("kubernetes.json", k8s)] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::write(&path, e))?;
    }
    Ok(())
}
