//! `loketctl`: parse the command line, run it, print errors as
//! `error: CODE: message` and exit non-zero.

use clap::Parser as _;

#[tokio::main]
async fn main() {
    let cli = loket_cli::Cli::parse();
    if let Err(error) = loket_cli::run(cli).await {
        eprintln!("error: {error}");
        std::process::exit(error.exit_code());
    }
}
