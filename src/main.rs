//! The `matrix` binary: parse the command line, run it, print an error if there is
//! one, and exit with the code the outcome or the error names.

use clap::Parser;

fn main() {
    let cli = image_matrix::cli::Cli::parse();
    let code = match image_matrix::run(cli) {
        Ok(done) => done.code(),
        Err(e) => {
            image_matrix::term::line(&e.report());
            e.exit_code()
        }
    };
    std::process::exit(code);
}
