//! `matrix schema NAME`: one of the JSON Schemas the tool ships (`schemas/`).

use super::print;
use crate::cli::SchemaArgs;
use crate::error::{Error, Exit};

pub fn run(args: &SchemaArgs) -> Result<Exit, Error> {
    let text = crate::schema::text(&args.name).ok_or_else(|| {
        Error::Usage(format!(
            "no schema `{}` (expected one of: {})",
            args.name,
            crate::schema::NAMES.join(", ")
        ))
    })?;
    print("the schema", &text)?;
    Ok(Exit::Success)
}
