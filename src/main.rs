use clap::Parser;

fn main() {
    let cli = image_matrix::cli::Cli::parse();
    std::process::exit(image_matrix::run(cli));
}
