//! The `matrix` binary: parse the command line, run it, exit with its code.

use clap::Parser;

fn main() {
    let cli = image_matrix::cli::Cli::parse();
    std::process::exit(image_matrix::run(cli));
}
