//! `matrix man`: the manual page, generated from the clap definitions (roff). Printed
//! as `matrix.1`, or written as one page per command (`matrix-build.1`, …) into a
//! directory that `man` searches. The text after each command's options (examples,
//! exit codes) becomes sections of its own, kept line for line.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use super::print;
use crate::cli::{Cli, ManArgs};
use crate::error::{Error, Exit};

pub fn run(args: &ManArgs) -> Result<Exit, Error> {
    match &args.output {
        None => {
            let mut cmd = Cli::command();
            cmd.build();
            let text = page(&cmd).map_err(|source| Error::Output {
                what: "the manual page",
                source,
            })?;
            print("the manual page", &text)?;
        }
        Some(dir) => {
            let n = write_pages(dir)?;
            crate::term::line(&format!("wrote {n} manual pages into {}", dir.display()));
        }
    }
    Ok(Exit::Success)
}

/// One command's page. clap_mangen would run the examples together into one
/// paragraph, so each block of the after-help text (`Examples:`, `Exit codes:`, …)
/// is rendered here as its own section, without filling.
fn page(cmd: &clap::Command) -> std::io::Result<String> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut buf)?;
    }
    if let Some(after) = cmd.get_after_help() {
        buf.write_all(verbatim_sections(&after.to_string()).as_bytes())?;
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut buf)?;
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Blocks separated by blank lines; a block whose first line ends with `:` is a
/// section of that name (`Exit codes:` → `EXIT CODES`), the rest is kept as written.
fn verbatim_sections(text: &str) -> String {
    let mut out = String::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut lines = block.lines();
        let first = lines.next().unwrap_or_default();
        let (title, body): (String, Vec<&str>) = match first.strip_suffix(':') {
            Some(t) => (t.to_uppercase(), lines.collect()),
            None => ("NOTES".into(), block.lines().collect()),
        };
        out.push_str(&format!(".SH {}\n.nf\n", escape(&title)));
        for l in body {
            out.push_str(&escape(l));
            out.push('\n');
        }
        out.push_str(".fi\n");
    }
    out
}

/// A line as roff text: backslashes and dashes escaped, and a leading `.` or `'`
/// kept from being read as a request.
fn escape(line: &str) -> String {
    let s = line.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// matrix.1 and a page per command and sub-command, named as `man` finds them
/// (`matrix-manifest-merge.1`). Returns how many were written.
fn write_pages(dir: &Path) -> Result<usize, Error> {
    fn walk(cmd: &clap::Command, dir: &Path, n: &mut usize) -> Result<(), Error> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, dir, n)?;
        }
        let man = clap_mangen::Man::new(cmd.clone());
        let path = dir.join(man.get_filename());
        let text = page(cmd).map_err(|e| Error::write(&path, e))?;
        std::fs::write(&path, text).map_err(|e| Error::write(&path, e))?;
        *n += 1;
        Ok(())
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut n = 0;
    walk(&cmd, dir, &mut n)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_lists_the_commands_examples_and_exit_codes_line_by_line() {
        let mut cmd = Cli::command();
        cmd.build();
        let p = page(&cmd).unwrap();
        assert!(p.contains(".TH matrix 1"), "no title line:\n{p}");
        assert!(p.contains(".SH NAME\nmatrix \\- Plan, build"), "{p}");
        for sub in ["plan", "build", "verify", "push", "completions", "man"] {
            assert!(p.contains(&format!("matrix\\-{sub}(1)")), "{sub} missing");
        }
        assert!(
            p.contains(".SH EXIT CODES\n.nf\n  0    everything planned"),
            "{p}"
        );
        assert!(p.contains("130 by SIGINT (Ctrl\\-C)"), "{p}");
        assert!(p.contains(".SH EXAMPLES\n.nf\n  matrix plan\n"), "{p}");
    }

    #[test]
    fn a_leading_dot_is_not_a_request() {
        assert_eq!(escape(".hidden -x"), "\\&.hidden \\-x");
        assert_eq!(escape("a\\b"), "a\\eb");
    }

    #[test]
    fn one_page_per_command_is_written() {
        let d = tempfile::tempdir().unwrap();
        let n = write_pages(d.path()).unwrap();
        for name in ["matrix.1", "matrix-build.1", "matrix-manifest-merge.1"] {
            let text = std::fs::read_to_string(d.path().join(name)).unwrap();
            assert!(text.starts_with(".ie") && text.contains(".TH"), "{name}");
        }
        let build = std::fs::read_to_string(d.path().join("matrix-build.1")).unwrap();
        assert!(build.contains("\\-\\-progress"), "{build}");
        let files = std::fs::read_dir(d.path()).unwrap().count();
        assert_eq!(files, n);
        assert!(n >= 14, "{n} pages");
    }
}
