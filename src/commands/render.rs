//! `matrix render`: one self-contained build context per selected cell.

use super::{load_plan, print, select};
use crate::cli::{Cli, RenderArgs};
use crate::error::{Error, Exit};
use crate::render;

pub fn run(cli: &Cli, args: &RenderArgs) -> Result<Exit, Error> {
    let plan = load_plan(cli, &args.select)?;
    let cells = select(&plan, &args.select);
    for c in &cells {
        let ctx = render::render(&plan.settings, c);
        let dir = args.output.join(&c.id);
        render::write(&ctx, &dir).map_err(|e| Error::write(&dir, e))?;
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
