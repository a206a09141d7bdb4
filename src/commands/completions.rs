//! `matrix completions SHELL`: the shell's completion script, generated from the
//! clap definitions (so it always knows every command and option of this build).

use clap::CommandFactory;

use super::print;
use crate::cli::{Cli, CompletionsArgs};
use crate::error::{Error, Exit};

pub fn run(args: &CompletionsArgs) -> Result<Exit, Error> {
    print("the completion script", &script(args.shell))?;
    Ok(Exit::Success)
}

/// The script as text: clap_complete panics when its writer fails, so it writes into
/// memory and `print` handles a closed pipe.
pub fn script(shell: clap_complete::Shell) -> String {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "matrix", &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_that_names_the_subcommands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let s = script(shell);
            for sub in ["plan", "build", "verify", "push", "completions", "man"] {
                assert!(s.contains(sub), "{shell:?} script lacks `{sub}`");
            }
        }
    }
}
